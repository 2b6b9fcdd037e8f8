"""The score stage: JSD, calibration, out-of-fold scoring, the area under the margin, and the
finished fold models kept so that an interrupted run resumes.
May import: ``entromix.common``, ``entromix.modeling``."""
