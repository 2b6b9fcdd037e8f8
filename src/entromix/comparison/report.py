"""The comparison of two revisions (or of two sets of seed-paired revisions) and its Markdown.

One pair (``entromix compare A B``): on the test images both revisions predicted,

* ROC-AUC: DeLong's test for two correlated ROC curves (difference, CI, p);
* sensitivity, specificity and balanced accuracy at each revision's own tuned threshold (its
  ``prediction`` column): the stratified paired bootstrap;
* the decisions at 0.5: McNemar's exact test on the images only one of the two got wrong.

Several pairs (``entromix compare A1,A2,A3 B1,B2,B3``, e.g. the same two strategies at seeds 0, 1,
2): the table above for each pair, and for each metric the per-seed differences with their mean
and t-interval (the spread between training runs, which one test set's interval does not hold).
Pairs must share their seeds (train.seed, score.seed, ingest.scarce_seed): that is what makes them
paired. A difference whose interval holds 0 is "within noise".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entromix.common.errors import DataError
from entromix.comparison.revisions import SEED_KEYS, Revision, check_same_test_set
from entromix.comparison.stats import delong_test, mcnemar_exact, paired_bootstrap, t_interval, verdict

# metric key -> row title; every one is "higher is better"
METRICS = {
    "roc_auc": "ROC-AUC (DeLong)",
    "sensitivity": "sensitivity, tuned threshold (paired bootstrap)",
    "specificity": "specificity, tuned threshold (paired bootstrap)",
    "balanced_accuracy": "balanced accuracy, tuned threshold (paired bootstrap)",
}


@dataclass(frozen=True)
class Settings:
    resamples: int = 2000
    seed: int = 0
    level: float = 0.95


def params_difference(a: Revision, b: Revision) -> dict[str, tuple[object, object]]:
    """The params.yaml keys whose values differ between A and B: ``{key: (value_a, value_b)}``."""
    if not a.params or not b.params:
        return {}
    keys = sorted(set(a.params) | set(b.params))
    return {k: (a.params.get(k), b.params.get(k)) for k in keys if a.params.get(k) != b.params.get(k)}


def compare_pair(a: Revision, b: Revision, settings: Settings = Settings()) -> dict:
    """Everything about one pair, JSON-ready (module docstring)."""
    check_same_test_set(a, b)
    y = a.predictions["label"].to_numpy()
    m, n = int(y.sum()), int(len(y) - y.sum())
    if m == 0 or n == 0:
        raise DataError(
            f"the test set of {a.label} has {m} malignant and {n} benign images; the comparison needs both."
        )
    pa, pb = a.predictions["probability"].to_numpy(), b.predictions["probability"].to_numpy()
    dl = delong_test(y, pa, pb, settings.level)
    boot = paired_bootstrap(
        y,
        a.predictions["prediction"].to_numpy(),
        b.predictions["prediction"].to_numpy(),
        settings.resamples,
        settings.seed,
        settings.level,
    )
    metrics = {
        "roc_auc": {
            "a": dl["auc_a"],
            "b": dl["auc_b"],
            "difference": dl["difference"],
            "ci": list(dl["ci"]),
            "p_value": dl["p_value"],
            "test": "DeLong",
            "se": dl["se"],
            "z": dl["z"],
        }
    }
    for name, row in boot.items():
        metrics[name] = {**row, "ci": list(row["ci"]), "test": "paired bootstrap"}
    for row in metrics.values():
        row["verdict"] = verdict(tuple(row["ci"]))
    mc = mcnemar_exact(y, (pa >= 0.5).astype(int), (pb >= 0.5).astype(int))
    mc["verdict"] = (
        "within noise"
        if mc["p_value"] >= 1 - settings.level
        else ("B better" if mc["errors_b"] < mc["errors_a"] else "B worse")
    )
    return {
        "a": _revision_json(a),
        "b": _revision_json(b),
        "test_set": {"images": len(y), "malignant": m, "benign": n},
        "metrics": metrics,
        "at_050": {**mc, "test": "McNemar exact"},
        "params_differ": {k: list(v) for k, v in params_difference(a, b).items()},
    }


def _revision_json(r: Revision) -> dict:
    return {"name": r.name, "sha": r.sha, "threshold": r.threshold, "seeds": r.seeds()}


def compare_seeds(
    pairs: list[tuple[Revision, Revision]], settings: Settings = Settings(), spread: dict | None = None
) -> dict:
    """The per-pair comparisons and, per metric, the mean of the per-seed differences with its
    t-interval. With several pairs each must share its seeds and no two pairs the same ones (one
    pair may differ in its seeds: its params difference then lists them).

    ``spread``: a recorded seed-to-seed spread (:func:`entromix.comparison.review.seed_spread`).
    When it was measured on the same test set, a single pair's differences are set against it: a
    difference within 2 sd of a difference of two seeds (2 x sqrt(2) x sd) is "within seed spread",
    not a finding, whatever the test images' interval says."""
    _check_seed_pairing(pairs)
    results = [compare_pair(a, b, settings) for a, b in pairs]
    applied = None
    if spread is not None and len(pairs) == 1:
        applied = _apply_seed_spread(results[0], pairs[0][0], spread)
    summary = {}
    for name in METRICS:
        diffs = np.array([r["metrics"][name]["difference"] for r in results])
        t = t_interval(diffs, settings.level)
        summary[name] = {
            "differences": diffs.tolist(),
            "mean_a": float(np.mean([r["metrics"][name]["a"] for r in results])),
            "mean_b": float(np.mean([r["metrics"][name]["b"] for r in results])),
            **t,
            "ci": list(t["ci"]) if t["ci"] is not None else None,
            "verdict": verdict(t["ci"]),
            "pairs_beyond_noise": sum(r["metrics"][name]["verdict"] != "within noise" for r in results),
        }
    return {
        "pairs": results,
        "seeds": summary,
        "seed_spread": None
        if applied is None
        else {k: applied[k] for k in ("n", "experiments", "recorded", "test_images") if k in applied},
        "settings": {"resamples": settings.resamples, "seed": settings.seed, "level": settings.level},
    }


def _check_seed_pairing(pairs: list[tuple[Revision, Revision]]) -> None:
    """With several pairs, each must share its seeds (A and B) and no two pairs the same ones."""
    for i, (a, b) in enumerate(pairs, 1):
        sa, sb = a.seeds(), b.seeds()
        if len(pairs) > 1 and sa != sb:
            raise DataError(
                f"pair {i} is not paired: {a.label} has seeds {sa or 'unknown'} and {b.label} has {sb or 'unknown'} "
                f"({', '.join(SEED_KEYS)}). List A and B in the same seed order, e.g. "
                "'entromix compare exp-a-s0,exp-a-s1 exp-b-s0,exp-b-s1' or a {seed} pattern with --seeds."
            )
    seen = [tuple(sorted(a.seeds().items())) for a, _ in pairs]
    if len(pairs) > 1 and len(set(seen)) < len(seen):
        repeated = [dict(s) for s in seen if seen.count(s) > 1][0]
        raise DataError(
            f"two pairs have the same seeds {repeated or '(none recorded)'}: they are not independent replicates. "
            "Give each pair its own train.seed / score.seed."
        )


def _apply_seed_spread(result: dict, a: Revision, spread: dict) -> dict | None:
    """Set a single pair's differences (``result``, changed in place) against a recorded seed spread
    measured on the same test set as ``a``; return the spread applied, or None when it was measured
    on another test set."""
    # imported here: review imports this module
    from entromix.comparison.review import test_set_id

    if spread.get("test_set") != test_set_id(a):
        return None
    for name, row in result["metrics"].items():
        sd = (spread["metrics"].get(name) or {}).get("sd")
        if sd is None:
            continue
        row["seed_sd"] = sd
        row["within_seed_spread"] = bool(abs(row["difference"]) <= 2 * np.sqrt(2) * sd)
        if row["verdict"] != "within noise" and row["within_seed_spread"]:
            row["verdict"] = "within seed spread"
    return spread


# ---------------------------------------------------------------- Markdown (for a PR comment)


def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _ci(ci) -> str:
    return "-" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _verdict(v: str) -> str:
    return v if v.startswith("within") else f"**{v}**"


def pair_markdown(result: dict, level: float, single: bool = False) -> list[str]:
    """One pair's table. ``single``: the whole comparison is this one pair, one training run per
    side, and the table says so (and sets the differences against a recorded seed spread)."""
    a, b = result["a"], result["b"]
    t = result["test_set"]
    pct = f"{level:.0%}"
    spread = single and any("seed_sd" in r for r in result["metrics"].values())
    lines = [
        f"A = `{a['name']}`{_sha(a)}, B = `{b['name']}`{_sha(b)}; {t['images']} test images "
        f"({t['malignant']} malignant, {t['benign']} benign), the same in both. Thresholds (tuned on val): "
        f"A {_f(a['threshold'])}, B {_f(b['threshold'])}.",
        "",
        f"| metric | A | B | B - A | {pct} CI (test images) | p |"
        + (" seed sd of one config |" if spread else "")
        + " |",
        "|---|---|---|---|---|---|---|" + ("---|" if spread else ""),
    ]
    for key, title in METRICS.items():
        r = result["metrics"][key]
        lines.append(
            f"| {title} | {_f(r['a'])} | {_f(r['b'])} | {_f(r['difference'], True)} | {_ci(r['ci'])} | "
            f"{_p(r['p_value'])} |" + (f" {_f(r.get('seed_sd'))} |" if spread else "") + f" {_verdict(r['verdict'])} |"
        )
    mc = result["at_050"]
    lines.append(
        f"| errors at threshold 0.5 (McNemar exact; only A wrong {mc['only_a_wrong']}, only B wrong "
        f"{mc['only_b_wrong']}) | {mc['errors_a']} | {mc['errors_b']} | {mc['errors_b'] - mc['errors_a']:+d} | - | "
        f"{_p(mc['p_value'])} |" + (" - |" if spread else "") + f" {_verdict(mc['verdict'])} |"
    )
    if single:
        lines += [
            "",
            "**One draw per side**: A and B are one training run each, so these tests say whether the two trained "
            "models differ on these test images, not whether the change helps: two seeds of one configuration "
            "differ as well. For that, review at several seeds: `entromix review -S key=value --seeds 5`.",
        ]
    if spread:
        lines += [
            "",
            "Seed-to-seed spread of the same config on this data (`results/seed_spread.json`, "
            f"{result.get('spread_note', 'recorded by entromix review')}): a difference within 2 sqrt(2) sd "
            "(what two seeds of one configuration differ by) is **within seed spread**, not a finding.",
        ]
    if result["params_differ"]:
        shown = [f"`{k}`: {va!r} -> {vb!r}" for k, (va, vb) in result["params_differ"].items()]
        lines += ["", "Params that differ (A -> B): " + "; ".join(shown) + "."]
    return lines


def _sha(r: dict) -> str:
    return "" if not r["sha"] or r["sha"].startswith(r["name"]) else f" ({r['sha'][:7]})"


def to_markdown(report: dict) -> str:
    level = report["settings"]["level"]
    pct = f"{level:.0%}"
    pairs = report["pairs"]
    out = ["## entromix compare", ""]
    if len(pairs) == 1:
        spread = report.get("seed_spread")
        if spread:
            pairs[0]["spread_note"] = f"{spread['n']} seeds, recorded {spread['recorded']}"
        out += pair_markdown(pairs[0], level, single=True)
    else:
        # the seed-level answer first: it is the one a review rests on
        out += [
            f"**{len(pairs)} seed-paired runs per side**: the mean of the per-seed differences B - A with its "
            f"t-interval over seeds (the spread between training runs, which one test set's interval does not hold).",
            "",
            f"| metric | mean A | mean B | mean B - A | sd | {pct} t-interval (seeds) | p | pairs beyond noise | |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, title in METRICS.items():
            s = report["seeds"][key]
            out.append(
                f"| {title} | {_f(s['mean_a'])} | {_f(s['mean_b'])} | {_f(s['mean'], True)} | {_f(s['sd'])} | "
                f"{_ci(s['ci'])} | {_p(s['p_value'])} | {s['pairs_beyond_noise']} of {s['n']} | "
                f"{_verdict(s['verdict'])} |"
            )
        out += [
            "",
            f"Per seed, B - A ({pct} CI over the test images in brackets; each pair shares its seeds and test set):",
            "",
        ]
        head = "| seed | A | B | " + " | ".join(f"{_short(k)}: B - A [{pct} CI]" for k in METRICS) + " |"
        out += [head, "|" + "---|" * (3 + len(METRICS))]
        for r in pairs:
            seeds = ", ".join(f"{k.split('.')[0]} {v}" for k, v in r["a"]["seeds"].items()) or "-"
            cells = [f"{_f(r['metrics'][k]['difference'], True)} {_ci(r['metrics'][k]['ci'])}" for k in METRICS]
            out.append(f"| {seeds} | `{r['a']['name']}` | `{r['b']['name']}` | " + " | ".join(cells) + " |")
        if pairs[0]["params_differ"]:
            diff = pairs[0]["params_differ"]
            shown = [f"`{k}`: {va!r} -> {vb!r}" for k, (va, vb) in diff.items()]
            out += ["", "Params that differ in the first pair (A -> B): " + "; ".join(shown) + "."]
    s = report["settings"]
    out += [
        "",
        f"_Within noise: the {pct} interval holds 0. Bootstrap: {s['resamples']} stratified resamples of the test "
        f"images, seed {s['seed']}. ROC-AUC: DeLong's test for correlated ROC curves._",
    ]
    return "\n".join(out) + "\n"


def _short(key: str) -> str:
    return {"roc_auc": "ROC-AUC", "sensitivity": "sens.", "specificity": "spec.", "balanced_accuracy": "bal. acc."}[key]
