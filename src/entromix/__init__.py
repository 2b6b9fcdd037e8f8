"""entromix: curriculum training of medical image classifiers on real plus synthetic images.

Stages (one thin script each under ``pipeline/``), and the subpackage that holds each one's logic:
demo (``demo``) -> ingest (``data``) -> score (``scoring``) -> train (``training``) -> evaluate
(``evaluation``); ``common`` and ``modeling`` are shared. A package imports only earlier ones.
"""

__version__ = "0.1.0"
