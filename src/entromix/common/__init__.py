"""Shared by every stage: params, errors, atomic writes, devices, the image store, stage I/O, run_stage and
the DVCLive log of the training stages.
May import: nothing of entromix outside ``common``."""
