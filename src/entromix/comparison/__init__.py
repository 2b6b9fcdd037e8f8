"""Reviewing runs: paired tests of two revisions' test predictions (``entromix compare``): DeLong
for ROC-AUC, a paired bootstrap for the tuned operating point, McNemar at 0.5, t-intervals over seeds.
May import: ``entromix.common`` (it reads the evaluate stage's files, not its code)."""
