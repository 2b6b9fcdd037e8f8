"""Shared by every stage: params, errors, atomic writes, devices, the image store, stage I/O and run_stage.
May import: nothing of entromix outside ``common``."""
