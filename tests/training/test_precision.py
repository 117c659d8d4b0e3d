"""Mixed precision: what `auto` resolves to."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.training import precision


def test_auto_mixed_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert precision.resolve_mixed_precision("auto", 10_000_000, "cpu")[0] == "bf16"
    assert precision.resolve_mixed_precision("auto", 100_000, "cpu")[0] == "no"  # too small to benefit
    # a transformer pays off from 0.2M parameters (its bf16 attention is matrix products), the others from 2M
    assert precision.resolve_mixed_precision("auto", 400_000, "cpu", family="transformer")[0] == "bf16"
    assert precision.resolve_mixed_precision("auto", 400_000, "cpu", family="lstm") == (
        "no", "auto: 400,000 parameters < 2,000,000 (bf16 does not pay off)")
    assert precision.resolve_mixed_precision("auto", 150_000, "cpu", family="transformer")[0] == "no"
    assert precision.resolve_mixed_precision("auto", 200_000, "cpu", family="transformer")[0] == "bf16"  # from 0.2M
    assert precision.resolve_mixed_precision("auto", 199_999, "cpu", family="transformer")[0] == "no"
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


def test_the_launchers_choice_wins_under_auto_and_an_explicit_spec_wins_with_a_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.LAUNCHER_ENV, "no")  # accelerate launch's default: no choice made
    assert precision.launcher_precision() is None
    monkeypatch.setenv(precision.LAUNCHER_ENV, "FP16")
    assert precision.launcher_precision() == "fp16"
    assert precision.resolve_mixed_precision("auto", 10, "cpu", launcher="fp16") == (
        "fp16", "auto: the launcher's mixed_precision=fp16 (ACCELERATE_MIXED_PRECISION)")
    chosen, reason = precision.resolve_mixed_precision("bf16", 10, "cpu", launcher="fp16")
    assert chosen == "bf16" and "train.mixed_precision=bf16 overrides the launcher's mixed_precision=fp16" in reason
    assert precision.resolve_mixed_precision("fp16", 10, "cpu", launcher="fp16") == ("fp16", "requested")


def test_summary_records_the_launchers_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from lmbench.spec import to_spec
    from lmbench.training.runner import run_cell

    from .test_trainer import tiny_cfg

    monkeypatch.setenv(precision.LAUNCHER_ENV, "bf16")
    cfg = tiny_cfg(tmp_path, train={"max_steps": 1, "eval_every": None})
    summary = run_cell(to_spec(cfg), tmp_path / "auto", cell_name="auto")
    assert (summary["mixed_precision"], summary["mixed_precision_reason"]) == (
        "bf16", "auto: the launcher's mixed_precision=bf16 (ACCELERATE_MIXED_PRECISION)")
    cfg["train"]["mixed_precision"] = "no"
    with caplog.at_level("WARNING"):
        summary = run_cell(to_spec(cfg), tmp_path / "spec", cell_name="spec")
    assert summary["mixed_precision"] == "no"
    assert "train.mixed_precision=no overrides the launcher's mixed_precision=bf16" in caplog.text
