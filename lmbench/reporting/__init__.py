"""Reporting: a results folder (or W&B project) read into runs (load.py), aggregated into pandas tables
(tables.py), drawn (plots.py) and rendered as report.md / report.html (report.py). Reads files only, never
models or training code, so a folder copied from a cluster works."""
