"""The ingest stage: discover, decode, dedupe, group, split and store the images (``prepare`` runs it).
May import: ``entromix.common``."""
