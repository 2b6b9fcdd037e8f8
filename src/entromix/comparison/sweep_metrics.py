"""The one table of the metrics a sweep report reads: column, dotted metrics key, header.

Every key of ``metrics/*.json`` that :mod:`entromix.comparison.sweep_tables` shows, and the keys
:mod:`entromix.comparison.exports` uses to tell a finished experiment, come from :data:`METRICS`
(and :data:`POOL_KEYS`, the synthetic pool per tier); nothing else spells a metrics key. What
each ``report`` of a sweep file shows is :data:`REPORT_COLUMNS`:

* ``score``: the scorer's out-of-fold ROC-AUC and how well its JSD ranks the known synthetic
  tiers (score-stage-only sweeps);
* ``scores``: the same AUROCs for every quality score the score stage computes (``ensemble``
  = the reference JSD, ``knn``, ``mahalanobis``, ``rank_mean``), from ``tier_auroc_by_score``;
* ``val``: validation metrics, for choosing a recipe (never test);
* ``test``: the test metrics of a comparison, with the validation AUC beside them and the
  synthetic images admitted per known tier;
* ``gate``: how well the scorer ranked the tiers next to what the gate then did downstream (test
  AUC and the images admitted per tier), for scorer changes run through the whole pipeline.
"""

from __future__ import annotations

TIERS = ("good", "degraded", "hallucinated")
#: the quality scores of the score stage (metrics/score.json ``tier_auroc_by_score``)
SCORES = ("ensemble", "knn", "mahalanobis", "rank_mean")

#: (column, metrics key, header) of every figure a table can show.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("oof_auc", "score.oof_auc", "scorer OOF ROC-AUC"),
    ("auroc_halluc", "score.tier_auroc_hallucinated_vs_good", "JSD AUROC hallucinated vs good"),
    ("auroc_degraded", "score.tier_auroc_degraded_vs_good", "JSD AUROC degraded vs good"),
    ("temperature", "score.temperature", "temperature"),
    *(
        (f"auroc_{tier}_{name}", f"score.tier_auroc_by_score.{name}.{tier}_vs_good", f"{name}: {tier} vs good")
        for name in SCORES
        for tier in ("hallucinated", "degraded")
    ),
    ("val_auc_final", "train.final.val_auc", "val ROC-AUC, last epoch"),
    ("val_loss_final", "train.final.val_loss", "val loss, last epoch"),
    ("val_bacc_final", "train.final.val_balanced_accuracy", "val bal. acc. at 0.5, last epoch"),
    ("val_auc_best", "train.best.val_auc", "val ROC-AUC, best epoch"),
    ("best_epoch", "train.best_epoch", "best epoch"),
    ("test_auc", "evaluate.test.roc_auc", "test ROC-AUC"),
    ("test_bacc_tuned", "evaluate.test.at_tuned.balanced_accuracy", "test bal. acc., tuned"),
    ("test_sens_tuned", "evaluate.test.at_tuned.sensitivity", "test sens., tuned"),
    ("test_spec_tuned", "evaluate.test.at_tuned.specificity", "test spec., tuned"),
    ("test_bacc_050", "evaluate.test.at_050.balanced_accuracy", "test bal. acc. at 0.5"),
    *((f"admitted_{tier}", f"train.synthetic.{tier}.eligible_final", tier) for tier in TIERS),
)
COLUMNS = tuple(column for column, _, _ in METRICS)
KEYS = {column: key for column, key, _ in METRICS}
HEADERS = {column: header for column, _, header in METRICS}
#: the synthetic images of each tier the curriculum could draw from (one number per run, not averaged)
POOL_KEYS = {f"pool_{tier}": f"train.synthetic.{tier}.pool" for tier in TIERS}
#: an experiment counts as finished when its metrics have one of these (the evaluate or the score stage ran)
FINISHED_KEYS = (KEYS["test_auc"], KEYS["oof_auc"])

REPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "score": ("oof_auc", "auroc_halluc", "auroc_degraded", "temperature"),
    "scores": ("oof_auc", *(f"auroc_{t}_{n}" for n in SCORES for t in ("hallucinated", "degraded"))),
    "val": ("val_auc_final", "val_loss_final", "val_bacc_final", "val_auc_best", "best_epoch"),
    "test": (
        "test_auc",
        "test_bacc_tuned",
        "test_sens_tuned",
        "test_spec_tuned",
        "test_bacc_050",
        "val_auc_final",
        "best_epoch",
    ),
    "gate": ("auroc_halluc", "auroc_degraded", "oof_auc", "test_auc", "test_bacc_tuned", "val_auc_final"),
}
