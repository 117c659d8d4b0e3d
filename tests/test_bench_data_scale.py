"""scripts/bench/data_scale.py: the goal lines' ratios and verdicts, on runs pinned by hand."""

from __future__ import annotations

import pytest

from . import bench_scripts


@pytest.fixture(scope="module")
def ds():  # noqa: ANN201
    return bench_scripts.load("data_scale")


def _run(mb_per_s: float) -> dict[str, float]:
    return {"file_bytes": 100e6, "tokenize_s": 100 / mb_per_s}  # 100 MB at mb_per_s


def test_goal_lines(ds) -> None:  # noqa: ANN001
    """char/word: the goal is the plain encoder that writes its ids (1.6x); counting-only and one-process ratios
    are shown for reference, without a verdict. BPE kinds: 0.9x the raw library. Sizes under 100 MB: no goal."""
    rows = [
        {"size_mb": 100, "kind": "word", "pipeline": _run(64.0), "raw": _run(50.0), "raw_write": _run(40.0),
         "one_process": _run(32.0)},
        {"size_mb": 1000, "kind": "char", "pipeline": _run(150.0), "raw": _run(100.0), "raw_write": _run(100.0),
         "one_process": _run(100.0)},
        {"size_mb": 100, "kind": "hf", "pipeline": _run(9.0), "raw": _run(10.0)},
        {"size_mb": 1000, "kind": "bpe", "pipeline": _run(8.0), "raw": _run(10.0)},
        {"size_mb": 10, "kind": "bpe", "pipeline": _run(1.0), "raw": _run(10.0)},
    ]
    lines = ds.goal_lines({"rows": rows, "growth": {}})
    assert len(lines) == 4
    assert "writing its ids (the cache's job) 1.60x (goal 1.6x: met)" in lines[0]
    assert "counting its ids only (nothing written) 1.28x; against lmbench in one process" in lines[0]
    assert "(scaling over the cores) 2.00x" in lines[0] and "not met" not in lines[0]
    assert "writing its ids (the cache's job) 1.50x (goal 1.6x: **not met**)" in lines[1]
    assert lines[2].endswith("raw library 0.90x (goal 0.9x: met)")
    assert lines[3].endswith("raw library 0.80x (goal 0.9x: **not met**)")
