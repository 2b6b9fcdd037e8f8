"""How well predict's OOD flag separates two sets of images, from two `entromix predict` CSVs.

    python scripts/ood_report.py --in-dist test.csv --ood foreign.csv [--model models/deploy/model.pt] [--json out.json]

``--in-dist``: predictions on images like the training data (a held-out test split); ``--ood``:
predictions on images from elsewhere. Prints (and writes with ``--json``) the AUROC of
``ood_distance`` for telling the two apart (1 = every foreign image farther than every
in-distribution one, 0.5 = no better than chance), the share of each set flagged (``ood`` = 1: the
in-distribution share is the false-alarm rate, the foreign share the detection rate), the image
counts and, with ``--model``, the threshold, its val quantile and the share of val it flags (read
from the checkpoint's ``ood`` entry, with ``torch.load(weights_only=True)``). Rows with an
``error`` (unreadable files) are counted and left out. Nothing here is tuned on the foreign set:
the threshold comes from val (the evaluate stage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def read_predictions(path: Path, name: str) -> tuple[pd.DataFrame, int]:
    """The classified rows of an `entromix predict` CSV and how many rows were unreadable."""
    if not path.is_file():
        sys.exit(f"ood_report: {name} {path} does not exist; write it with `entromix predict <images> --out {path}`.")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in ("ood_distance", "ood", "error") if c not in frame.columns]
    if missing:
        sys.exit(
            f"ood_report: {path} has no {', '.join(missing)} column(s): it was written by an older entromix "
            "predict, or from a checkpoint without OOD statistics (rerun the evaluate stage, then predict)."
        )
    failed = frame["error"].notna() & (frame["error"].astype(str) != "")
    classified = frame[~failed]
    if classified["ood_distance"].isna().any():
        sys.exit(f"ood_report: {path} has rows without ood_distance: the model it used has no OOD statistics.")
    return classified, int(failed.sum())


def separation(in_dist: pd.DataFrame, ood: pd.DataFrame) -> dict:
    """AUROC of ood_distance (foreign = positive) and the flagged share of each set."""
    y = np.r_[np.zeros(len(in_dist)), np.ones(len(ood))]
    d = np.r_[in_dist["ood_distance"].to_numpy(float), ood["ood_distance"].to_numpy(float)]
    return {
        "auroc": round(float(roc_auc_score(y, d)), 4) if 0 < len(ood) and 0 < len(in_dist) else None,
        "in_dist_flag_rate": round(float(in_dist["ood"].astype(int).mean()), 4) if len(in_dist) else None,
        "ood_flag_rate": round(float(ood["ood"].astype(int).mean()), 4) if len(ood) else None,
        "n_in_dist": len(in_dist),
        "n_ood": len(ood),
    }


def model_settings(path: Path) -> dict:
    import torch

    entry = torch.load(path, map_location="cpu", weights_only=True).get("ood")
    if not isinstance(entry, dict):
        sys.exit(f"ood_report: {path} has no OOD statistics; rerun the evaluate stage (dvc repro evaluate).")
    keys = ("score", "features", "threshold", "quantile", "val_flag_rate", "n_train", "n_val")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items() if k in keys}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-dist", required=True, type=Path, help="entromix predict CSV of in-distribution images")
    parser.add_argument("--ood", required=True, type=Path, help="entromix predict CSV of foreign images")
    parser.add_argument(
        "--model", type=Path, default=None, help="the checkpoint used (adds its threshold and val rate)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    in_dist, failed_in = read_predictions(args.in_dist, "--in-dist")
    ood, failed_ood = read_predictions(args.ood, "--ood")
    report = {**separation(in_dist, ood), "unreadable_in_dist": failed_in, "unreadable_ood": failed_ood}
    if args.model is not None:
        report["model"] = model_settings(args.model)
    print(
        f"OOD flag: AUROC {report['auroc']} ({report['n_in_dist']} in-distribution vs {report['n_ood']} foreign "
        f"images); flagged: {report['in_dist_flag_rate']:.1%} of in-distribution, {report['ood_flag_rate']:.1%} of "
        f"foreign; unreadable: {failed_in} / {failed_ood}"
    )
    if "model" in report:
        m = report["model"]
        print(
            f"model: {m.get('score')} distance on the {m.get('features')} features, threshold "
            f"{m.get('threshold')} (val {m.get('quantile')} quantile) "
            f"flags {m.get('val_flag_rate', float('nan')):.1%} of {m.get('n_val')} val images"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
