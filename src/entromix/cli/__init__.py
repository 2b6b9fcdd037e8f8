"""The ``entromix`` command line: ``predict``, ``export`` and ``compare`` (``entromix.cli.main``).
May import: every other ``entromix`` package (it sits on top of them all)."""
