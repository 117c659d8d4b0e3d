"""The builtin corpus: CPython's own prose, deterministic, no files and no network."""

from __future__ import annotations

from lmbench.data import builtin_corpus
from lmbench.data.sources import make_source

from .helpers import data_spec


def test_builtin_corpus_is_deterministic_and_sizeable() -> None:
    first = [d.text for d in make_source(data_spec(source="builtin")).documents("train")]
    assert first == list(builtin_corpus.builtin_texts())
    assert len(first) > 1000 and 0.8e6 < sum(map(len, first)) < 2e6
    assert all(len(t) >= builtin_corpus.MIN_CHARS for t in first)
    fp = builtin_corpus.builtin_fingerprint()
    assert fp["num_docs"] == len(first) and len(fp["sha256"]) == 64 and fp["python"].count(".") == 2
    assert list(builtin_corpus.MODULES) == sorted(builtin_corpus.MODULES)
