"""Mixed precision: what `auto` resolves to."""

from __future__ import annotations

import pytest

from lmbench.training import precision


def test_auto_mixed_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert precision.resolve_mixed_precision("auto", 10_000_000, "cpu")[0] == "bf16"
    assert precision.resolve_mixed_precision("auto", 100_000, "cpu")[0] == "no"  # too small to benefit
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert precision.resolve_mixed_precision("auto", 10_000_000, "cpu") == ("no", "auto: CPU without amx_bf16/avx512_bf16")
    assert precision.resolve_mixed_precision("fp16", 10, "cpu") == ("fp16", "requested")
