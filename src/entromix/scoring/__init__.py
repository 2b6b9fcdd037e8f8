"""The score stage: JSD, calibration, out-of-fold scoring and the area under the margin.
May import: ``entromix.common``, ``entromix.modeling``."""
