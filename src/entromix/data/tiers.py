"""The optional synthetic-quality side file: the true tier of each synthetic image.

A CSV with columns ``filename,tier[,detail]``, ``filename`` relative to the synthetic-images
folder (the demo writes ``data/demo/synthetic_quality.csv``; ``leukemia_dev`` ships one). It is
for measuring the scorer only: ingest maps it to manifest ids in
``data/prepared/synthetic_tiers.csv`` and the score stage reports how well the JSD ranks the
tiers. Nothing is ever trained or gated on it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from entromix.common.errors import DataError, listing
from entromix.data.user_csv import read_user_csv

TIER_COLUMNS = ["id", "filename", "tier", "detail"]


def read_tiers(csv_path: str | Path, synthetic: pd.DataFrame) -> pd.DataFrame:
    """Map the tier file onto the ingested synthetic images.

    Args:
        synthetic: manifest rows of the synthetic images (columns id, path).

    Returns:
        TIER_COLUMNS, one row per tiered synthetic image that ingest kept.
    """
    csv_path = Path(csv_path)
    table = read_user_csv(csv_path, "tier file", "ingest.tiers_csv", ["filename", "tier"], "filename")
    if "detail" not in table.columns:
        table["detail"] = ""
    ids = dict(zip(synthetic["path"], synthetic["id"]))
    unknown = [f for f in table["filename"] if f not in ids]
    if unknown:
        raise DataError(
            f"{csv_path}: {len(unknown)} row(s) name files that are not ingested synthetic images: "
            f"{listing(unknown)}. Filenames must be relative to the synthetic folder."
        )
    table["id"] = table["filename"].map(ids).astype(int)
    return table[TIER_COLUMNS].sort_values("id").reset_index(drop=True)
