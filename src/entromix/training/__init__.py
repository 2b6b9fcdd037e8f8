"""The train stage: the curriculum, its gate, the batch sampler, EntroMixLoss, resume state, the loop.
May import: ``entromix.common``, ``entromix.modeling``, ``entromix.scoring``."""
