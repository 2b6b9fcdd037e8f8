"""Redraw docs/demo_grid.png: the default demo dataset, one row per class and synthetic tier.

    .venv/bin/python scripts/demo_grid.py [out_png]

Draws the dataset into a temporary folder (the pipeline's own demo stage writes data/), so it
never touches DVC outputs.
"""

import sys
import tempfile
from pathlib import Path

from entromix.demo import DemoConfig, generate_demo, save_preview_grid


def main(png: str = "docs/demo_grid.png") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate_demo(DemoConfig(), tmp)
        path = save_preview_grid(tmp, png)
    print(f"wrote {path} ({Path(path).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(*sys.argv[1:2])
