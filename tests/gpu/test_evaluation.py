"""Evaluation on the GPU equals evaluation on the CPU: one trained checkpoint, loaded on each device
(checkpoint.load_run) and scored by the Evaluator over the same splits.

In IEEE fp32 (TF32 off) the NLL agrees to 1e-4. Under torch's defaults cuDNN runs fp32 RNNs in TF32 on Ampere
and newer (torch.backends.cudnn.allow_tf32 is True; cuBLAS matmuls are not), so the recurrent families agree
to 5e-3 there; TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 (NGC images) puts every matmul in TF32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbench.data import prepare_data
from lmbench.training.checkpoint import load_run
from lmbench.training.evaluate import EvalResult, Evaluator
from lmbench.training.processes import force_cpu, reset_accelerate

from .helpers import assert_on, cell_cfg, run_keeping_parts

pytestmark = pytest.mark.gpu

SPLITS = ["validation", "test"]
RECURRENT = {"rnn", "lstm", "gru"}
IEEE_RTOL, TF32_RTOL = 1e-4, 5e-3


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """TF32 off for cuDNN (RNNs) and cuBLAS (matmuls), restored after."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        if before[0]:
            torch.backends.cudnn.allow_tf32 = False
        if before[1]:
            torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        if before[0]:
            torch.backends.cudnn.allow_tf32 = True
        if before[1]:
            torch.backends.cuda.matmul.allow_tf32 = True


def tf32_forced() -> bool:
    return os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "0") not in ("", "0")


def default_rtol(family: str, device: torch.device) -> float:
    """GPU vs CPU under torch's TF32 defaults (see the module docstring)."""
    if device.type != "cuda":
        return IEEE_RTOL
    tf32 = tf32_forced() or torch.backends.cuda.matmul.allow_tf32 or \
        (family in RECURRENT and torch.backends.cudnn.allow_tf32)
    return TF32_RTOL if tf32 else IEEE_RTOL


def evaluate_on(run_dir: Path, device: torch.device, *, with_accelerator: bool) -> dict[str, EvalResult]:
    """The run's checkpoint loaded on `device` and scored over SPLITS (on the GPU through an Accelerator, which
    places the batches as the runner does; on the CPU without one)."""
    model, tokenizer, spec = load_run(run_dir, device)
    assert_on(model, device)
    accelerator: Any = None
    if with_accelerator:
        from accelerate import Accelerator

        reset_accelerate()
        accelerator = Accelerator(cpu=force_cpu() or device.type == "cpu", mixed_precision="no")
        assert accelerator.device.type == device.type
    data = prepare_data(spec, progress=False)
    return Evaluator(data.splits, tokenizer, spec, accelerator).evaluate(model, SPLITS)


@pytest.mark.parametrize(("family", "batching"), [("transformer", "packed"), ("lstm", "packed"), ("hf", "packed"),
                                                  ("transformer", "documents"), ("gru", "documents")])
def test_gpu_metrics_equal_cpu_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_device: torch.device,
                                       family: str, batching: str) -> None:
    """fp32: the same targets and bytes, and the same NLL (sliding windows for the transformers, carried state
    in chunks or packed padded documents for the recurrent ones) in IEEE fp32 and under torch's defaults; the
    runner's own final validation on the GPU agrees too."""
    cfg = cell_cfg(tmp_path, family, "no", data={"batching": batching}, sample={"samplers": []},
                   eval={"batch_size": 3, "stride": 5})
    run_dir = tmp_path / "run"
    summary, _ = run_keeping_parts(cfg, run_dir, monkeypatch)
    assert summary["status"] == "completed", summary.get("error")
    on_cpu = evaluate_on(run_dir, torch.device("cpu"), with_accelerator=False)
    with ieee_fp32():
        ieee = evaluate_on(run_dir, gpu_device, with_accelerator=True)
    default = evaluate_on(run_dir, gpu_device, with_accelerator=True)
    rtol = default_rtol(family, gpu_device)
    for on_gpu, tol in ((ieee, TF32_RTOL if tf32_forced() else IEEE_RTOL), (default, rtol)):
        assert list(on_cpu) == list(on_gpu) == SPLITS
        for name in SPLITS:
            cpu, gpu = on_cpu[name], on_gpu[name]
            assert (gpu.num_tokens, gpu.num_bytes, gpu.num_chars) == (cpu.num_tokens, cpu.num_bytes, cpu.num_chars)
            assert gpu.num_tokens > 0
            assert gpu.nll_nats == pytest.approx(cpu.nll_nats, rel=tol), (name, tol)
            assert gpu.bpb == pytest.approx(cpu.bpb, rel=tol)
            assert gpu.ppl == pytest.approx(cpu.ppl, rel=tol * (1 + cpu.loss))  # exp: d ppl / ppl = d loss
    assert summary["val_loss"] == pytest.approx(on_cpu["validation"].loss, rel=rtol)
    assert summary["test_bpb"] == pytest.approx(on_cpu["test"].bpb, rel=rtol)
