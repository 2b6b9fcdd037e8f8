"""The counts of an ingest plan for ``metrics/ingest.json``: :func:`ingest_metrics`.

Per split and label, per source folder (expected, found, dropped as duplicates, skipped as bad,
ingested, ignored), so a user can see where every file of their folders went.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from entromix.data.discover import SPLITS
from entromix.data.ingest_config import IngestConfig
from entromix.data.prepare import IngestPlan
from entromix.data.scarce import UNLABELLED


def ingest_metrics(plan: IngestPlan) -> dict:
    """Counts for ``metrics/ingest.json`` (all keys under ``ingest`` so they stay unique)."""
    config = plan.config
    manifest = plan.manifest
    real = manifest[manifest["is_syn"] == 0]
    syn = manifest[manifest["is_syn"] == 1]
    label_names = dict(enumerate(config.labels))

    def by_label(frame: pd.DataFrame) -> dict[str, int]:
        counts = frame["label"].map(label_names).value_counts()
        return {name: int(counts.get(name, 0)) for name in config.labels} | {"total": int(len(frame))}

    dropped = plan.duplicates
    folders: dict[str, dict[str, int]] = {}
    for source, found in plan.discoveries.items():
        root = str(found.root)
        in_manifest = manifest[manifest["source"] == root]
        for report in found.folders:
            prefix = "" if report.folder == "." else report.folder + "/"  # "." : the unlabelled folder itself
            ingested = int(in_manifest["path"].str.startswith(prefix).sum())
            dup = int(((dropped["source"] == root) & dropped["path"].str.startswith(prefix)).sum())
            bad = int(((plan.skipped["source"] == root) & plan.skipped["path"].str.startswith(prefix)).sum())
            folders[f"{source}/{report.folder}"] = {
                "expected": report.expected,
                "found": ingested + dup + bad,
                "duplicates_dropped": dup,
                "bad_images_skipped": bad,
                "ingested": ingested,
                "ignored_files": report.ignored,
            } | ({"excluded": True} if report.excluded else {})
    return {
        "ingest": {
            "images": int(len(manifest)),
            "image_size": config.image_size,
            "real": {split: by_label(real[real["split"] == split]) for split in SPLITS},
            "real_by_class": {
                split: {c: int(n) for c, n in real[real["split"] == split]["class"].value_counts().sort_index().items()}
                for split in SPLITS
            },
            "synthetic": by_label(syn),
            "duplicates_dropped": {
                "within_split": int((dropped["reason"] == "within_split").sum()),
                "across_splits": int((dropped["reason"] == "across_splits").sum()),
            },
            "groups": int(real["group"].replace("", np.nan).nunique()),
            "scarce": {
                "label": config.scarce_label,
                "limit": config.scarce_train_images,
                "dropped": int(plan.scarce_dropped),
            },
            "bad_images_skipped": int(len(plan.skipped)),  # which and why: data/prepared/skipped.csv
            "ignored_files": sum(f["ignored_files"] for f in folders.values())
            + sum(len(d.ignored_top_level) for d in plan.discoveries.values()),
            "excluded_by_class_map": {name: info["expected"] for name, info in folders.items() if info.get("excluded")},
            "folders": folders,
        }
        | ({"unlabelled": int((manifest["split"] == UNLABELLED).sum())} if _has_unlabelled(config) else {})
    }


def _has_unlabelled(config: IngestConfig) -> bool:
    return config.unlabelled_dir is not None or (config.scarce_unlabelled and config.scarce_train_images is not None)
