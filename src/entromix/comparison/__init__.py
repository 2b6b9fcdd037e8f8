"""Reviewing runs: paired tests of two revisions' test predictions (``entromix compare``): DeLong
for ROC-AUC, a paired bootstrap for the tuned operating point, McNemar at 0.5, t-intervals over seeds;
reviews as DVC experiments (``entromix review``, ``entromix exp-show``); strategy sweeps
(``sweeps/*.yaml``) run as DVC experiments and tabulated into RESULTS.md (``entromix sweep``,
``entromix results``).
May import: ``entromix.common`` (it reads the pipeline's output files, not the stages' code).
"""
