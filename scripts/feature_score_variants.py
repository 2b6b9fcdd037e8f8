"""Measure quality-score variants beyond the score stage's own (issue 25's search), on known tiers.

    # in a project folder whose ingest stage ran (data/prepared/ with a tiers file) and whose
    # params.yaml holds the scorer to measure; one dump per project (about 3 min on 2 CPU cores):
    python scripts/feature_score_variants.py dump PROJECT_DIR DUMP.pkl
    # the AUROC of every variant, hallucinated vs good and degraded vs good, mean and std over dumps:
    python scripts/feature_score_variants.py report DUMP.pkl [DUMP.pkl ...]

``dump`` runs the score stage's own function (``score_training_images``) and records, through its
``predict`` (``entromix.scoring.folds.FoldPredict``), for every fold model the logits, the
penultimate features and the spatial mean and standard deviation of each ResNet stage's output
(``layer1`` .. ``layer4``) for its held-out real images, the synthetic pool and the real images it
trained on. ``report`` scores the synthetic images with each variant
against the fold model's own training images (mean over the folds) and measures it on the tiers:

* the stage's scores: ``ensemble`` (the JSD), ``knn``, ``mahalanobis``, ``rank_mean``;
* Mahalanobis distance per ResNet stage (mean- or std-pooled), on all stages' pooled values
  together, and with L2-normalised penultimate features (Lee et al. 2018 score every stage);
* kNN with 1 or 3 neighbours, the distance to the own class alone, a class-weighted 10-NN vote;
* logit scores: the negative margin of the label, the energy ``-logsumexp`` (Liu et al. 2020),
  the fold models' disagreement (mutual information, std of ``p_true``), the feature norm;
* rank means of the JSD with each of these.

Measurement only: nothing here is read by the pipeline.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score

from entromix.common.params import load_params, section
from entromix.common.stage_io import load_prepared
from entromix.scoring.config import ScoreConfig
from entromix.scoring.feature_space import knn_scores, l2_normalise, mahalanobis_scores, percentile_ranks
from entromix.scoring.folds import FOLD_PARTS, fold_predictor, make_folds
from entromix.scoring.out_of_fold import score_training_images

STAGES = ("layer1", "layer2", "layer3", "layer4")


def dump(project: Path, out: Path) -> None:
    """Score ``project`` with its params.yaml and pickle every fold's logits and pooled features."""
    os.chdir(project)
    config = section(load_params("params.yaml"), "score", ScoreConfig, "params.yaml")
    if not config.model.startswith("resnet"):
        sys.exit("feature_score_variants: the per-stage features need a torchvision ResNet (score.model).")
    device = torch.device("cpu")
    predict = fold_predictor(config, device)  # the stage's own: logits and penultimate features
    records: dict[tuple[int, str], dict[str, np.ndarray]] = {}

    def recording_predict(k, part, model, images):
        """The stage's prediction of fold ``k``'s ``part``, recorded with each ResNet stage's pooled
        output from the same forward passes."""
        store: dict[str, list[np.ndarray]] = {}
        hooks = []
        for name in STAGES:

            def hook(_module, _args, output, name=name):
                output = output.float()
                store.setdefault(f"{name}_mean", []).append(output.mean((2, 3)).cpu().numpy())
                store.setdefault(f"{name}_std", []).append(output.std((2, 3)).cpu().numpy())

            hooks.append(getattr(model, name).register_forward_hook(hook))
        try:
            logits, features = predict(k, part, model, images)
        finally:
            for hook in hooks:
                hook.remove()
        records[(k, part)] = {"logits": logits, "pen": features, **{n: np.concatenate(v) for n, v in store.items()}}
        return logits, features

    prepared = load_prepared(Path("data/prepared"))
    result = score_training_images(
        config, prepared.images, prepared.manifest, device, log=lambda s: None,
        label_space=prepared.label_space, predict=recording_predict,
    )  # fmt: skip
    manifest = prepared.manifest
    real = manifest[(manifest["is_syn"] == 0) & (manifest["split"] == "train")].reset_index(drop=True)
    syn = manifest[manifest["is_syn"] == 1]
    # per fold: held-out, synthetic, own training images (the reference; predicted with synthetic images only)
    calls = [records[(k, part)] for k in range(config.folds) for part in FOLD_PARTS if (k, part) in records]
    payload = {
        "calls": calls,
        "fold": make_folds(real, config.folds, config.seed),
        "real_labels": real["label"].to_numpy(),
        "syn_labels": syn["label"].to_numpy(),
        "scores": result.synthetic_scores,
        "tiers": prepared.tiers,
    }
    with open(out, "wb") as handle:
        pickle.dump(payload, handle)
    print(f"feature_score_variants: wrote {out}")


def knn_own_distance(reference, reference_labels, query, query_labels, k) -> np.ndarray:
    distance = 1 - l2_normalise(query) @ l2_normalise(reference).T
    out = np.empty(len(query))
    for i, label in enumerate(query_labels):
        d = np.sort(distance[i, reference_labels == label])
        out[i] = d[: min(k, len(d))].mean()
    return out


def weighted_vote(reference, reference_labels, query, query_labels, k) -> np.ndarray:
    """1 - the class-weighted share (weights 1 / class count) of the k nearest that share the label."""
    distance = 1 - l2_normalise(query) @ l2_normalise(reference).T
    nearest = reference_labels[np.argsort(distance, axis=1)[:, :k]]
    weight = {c: 1 / (reference_labels == c).sum() for c in np.unique(reference_labels)}
    w = np.vectorize(weight.get)(nearest)
    return 1 - (w * (nearest == query_labels[:, None])).sum(1) / w.sum(1)


def variant_scores(payload: dict) -> dict[str, np.ndarray]:
    calls, fold, real_labels, syn_labels = (
        payload["calls"],
        payload["fold"],
        payload["real_labels"],
        payload["syn_labels"],
    )
    folds = len(calls) // 3
    per_fold: dict[str, list[np.ndarray]] = {}
    for k in range(folds):
        syn, own = calls[3 * k + 1], calls[3 * k + 2]
        labels = real_labels[fold != k]
        add = lambda name, value: per_fold.setdefault(name, []).append(value)  # noqa: E731
        for stage in STAGES:
            for pool in ("mean", "std"):
                key = f"{stage}_{pool}"
                add(
                    f"mahalanobis {key}",
                    mahalanobis_scores(own[key].astype(float), labels, syn[key].astype(float), syn_labels),
                )
        every = [f"{s}_{p}" for s in STAGES for p in ("mean", "std")]
        add("mahalanobis all stages", mahalanobis_scores(
            np.hstack([own[key] for key in every]).astype(float), labels,
            np.hstack([syn[key] for key in every]).astype(float), syn_labels))  # fmt: skip
        add("mahalanobis L2-normalised", mahalanobis_scores(
            l2_normalise(own["pen"]), labels, l2_normalise(syn["pen"]), syn_labels))  # fmt: skip
        for n in (1, 3):
            add(f"knn k={n}", knn_scores(own["pen"], labels, syn["pen"], syn_labels, n))
        add("knn own-class distance", knn_own_distance(own["pen"], labels, syn["pen"], syn_labels, 10))
        add("knn class-weighted 10-NN vote", weighted_vote(own["pen"], labels, syn["pen"], syn_labels, 10))
        add("feature norm (negative)", -np.linalg.norm(syn["pen"], axis=1))
    scores = {name: np.mean(values, axis=0) for name, values in per_fold.items()}
    logits = np.stack([calls[3 * k + 1]["logits"] for k in range(folds)]).astype(float)  # (K, N, C)
    probs = softmax(logits, -1)
    own_logit = np.take_along_axis(logits, syn_labels[None, :, None], -1)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, syn_labels[None, :, None], -np.inf, -1)
    entropy = lambda p: -(p * np.log(p + 1e-12)).sum(-1)  # noqa: E731
    scores["negative margin"] = -(own_logit - others.max(-1)).mean(0)
    scores["energy -logsumexp"] = (-logsumexp(logits, -1)).mean(0)
    scores["fold disagreement (mutual information)"] = entropy(probs.mean(0)) - entropy(probs).mean(0)
    scores["fold disagreement (std of p_true)"] = np.take_along_axis(probs, syn_labels[None, :, None], -1)[..., 0].std(
        0
    )
    table = payload["scores"]
    for name in ("ensemble", "knn", "mahalanobis", "rank_mean"):
        scores[f"stage: {name}"] = table[name].to_numpy()
    jsd = percentile_ranks(table["ensemble"].to_numpy())
    for name in ("mahalanobis all stages", "mahalanobis layer1_mean", "knn own-class distance", "negative margin"):
        scores[f"rank mean: JSD + {name}"] = (jsd + percentile_ranks(scores[name])) / 2
    return scores


def report(paths: list[Path]) -> None:
    rows = []
    for path in paths:
        with open(path, "rb") as handle:
            payload = pickle.load(handle)
        ids = payload["scores"]["id"]
        tiers = pd.DataFrame({"id": ids}).merge(payload["tiers"][["id", "tier"]], on="id", how="left")["tier"]
        t = tiers.fillna("").to_numpy()
        for name, values in variant_scores(payload).items():
            for bad in ("hallucinated", "degraded"):
                keep = (t == bad) | (t == "good")
                rows.append(
                    {
                        "dump": path.stem,
                        "score": name,
                        "tier": bad,
                        "auroc": roc_auc_score(t[keep] == bad, values[keep]),
                    }
                )
    frame = pd.DataFrame(rows)
    table = frame.groupby(["score", "tier"])["auroc"].agg(["mean", "std"]).unstack("tier")
    names = ", ".join(sorted(frame["dump"].unique()))
    print(f"AUROC vs the good tier, mean +- std over {frame['dump'].nunique()} dumps ({names})\n")
    print("| score | hallucinated vs good | degraded vs good |\n|---|---|---|")
    for name, row in table.sort_values(("mean", "hallucinated"), ascending=False).iterrows():
        print(
            f"| {name} | {row[('mean', 'hallucinated')]:.3f} +- {row[('std', 'hallucinated')]:.3f} | "
            f"{row[('mean', 'degraded')]:.3f} +- {row[('std', 'degraded')]:.3f} |"
        )


def report_by_detail(paths: list[Path]) -> None:
    """The stage's scores against the good tier, per kind of damage (the tiers file's ``detail``)."""
    rows = []
    for path in paths:
        with open(path, "rb") as handle:
            payload = pickle.load(handle)
        if "detail" not in payload["tiers"]:
            return
        table = payload["scores"].merge(payload["tiers"][["id", "tier", "detail"]], on="id", how="left")
        good = table["tier"] == "good"
        for detail in sorted(set(table.loc[table["tier"] != "good", "detail"].dropna())):
            bad = table["detail"] == detail
            for name in ("ensemble", "knn", "mahalanobis", "rank_mean"):
                keep = good | bad
                rows.append({"detail": detail, "score": name, "auroc": roc_auc_score(bad[keep], table.loc[keep, name])})
    frame = pd.DataFrame(rows).groupby(["detail", "score"])["auroc"].mean().unstack("score")
    print("\nAUROC of the stage's scores per kind of damage against the good tier (mean over the dumps)\n")
    print("| damage | " + " | ".join(frame.columns) + " |\n|---|" + "---|" * len(frame.columns))
    for detail, row in frame.iterrows():
        print(f"| {detail} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("project", type=Path)
    d.add_argument("out", type=Path)
    r = sub.add_parser("report")
    r.add_argument("dumps", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.project, args.out.resolve())
    else:
        report(args.dumps)
        report_by_detail(args.dumps)


if __name__ == "__main__":
    main()
