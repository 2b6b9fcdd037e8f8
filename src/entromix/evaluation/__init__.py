"""The evaluate stage: test-set metrics, bootstrap intervals, the tuned threshold and the figures
(among them the synthetic pool gallery and Grad-CAM of test errors).
May import: ``entromix.common``, ``entromix.modeling``, ``entromix.scoring``, ``entromix.training``."""
