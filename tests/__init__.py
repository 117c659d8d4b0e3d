"""lmbench tests; the layout mirrors the package (tests/<subpackage>/test_<module>.py)."""
