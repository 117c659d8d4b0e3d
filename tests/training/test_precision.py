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


def test_auto_on_cuda_is_bf16_where_native_else_fp16_with_loss_scaling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cuda_bf16", lambda: True)
    assert precision.resolve_mixed_precision("auto", 100, "cuda") == ("bf16", "auto: CUDA device with bf16")
    monkeypatch.setattr(precision, "cuda_bf16", lambda: False)  # a V100 or T4: bf16 only emulated
    assert precision.resolve_mixed_precision("auto", 100, "cuda")[0] == "fp16"
    assert precision.resolve_mixed_precision("no", 100, "cuda") == ("no", "requested")


def test_native_bf16_means_compute_capability_8(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(precision, "_takes_emulation", lambda: False)  # an older torch: capability decides
    for major, native in ((7, False), (8, True), (9, True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda major=major: (major, 0))
        assert precision.cuda_bf16() is native
    asked = {}
    monkeypatch.setattr(precision, "_takes_emulation", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: asked.update(kw) or False)
    assert precision.cuda_bf16() is False and asked == {"including_emulation": False}
