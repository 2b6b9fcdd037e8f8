"""The ingest stage: discover, decode, dedupe, group, split and store the images (``prepare`` plans it,
``decode`` stores the images, ``ingest_config`` holds its settings, ``ingest_metrics`` counts them).
May import: ``entromix.common``."""
