"""The evaluate stage: test-set metrics, bootstrap intervals, the tuned threshold and the figures.
May import: ``entromix.common``, ``entromix.modeling``, ``entromix.scoring``, ``entromix.training``."""
