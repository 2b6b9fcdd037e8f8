"""Built-in demo data: procedurally drawn blood smears (lymphocytes vs lymphoblasts) in patients,
plus a synthetic pool of good, degraded and hallucinated images with its ground-truth tiers.

``cells`` draws one image (pure numpy) under a ``stain`` and, for the degraded tier, spoils it
with ``degradations``; ``generate`` writes the dataset and its CSVs.
May import: ``entromix.common``.
"""

from entromix.demo.generate import DemoConfig, DemoSummary, generate_demo, save_preview_grid

__all__ = ["DemoConfig", "DemoSummary", "generate_demo", "save_preview_grid"]
