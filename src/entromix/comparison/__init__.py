"""Comparing revisions: paired tests of two runs' test predictions (``entromix compare``)."""
