"""Classifiers and how they are fitted: architectures, augmentation, the shared training epoch, metrics.
May import: ``entromix.common``."""
