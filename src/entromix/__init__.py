"""entromix: curriculum training of medical image classifiers on real plus synthetic images.

Stages (one thin script each under ``pipeline/``, logic here):
demo -> ingest -> score -> train -> evaluate.
"""

__version__ = "0.1.0"
