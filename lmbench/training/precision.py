"""Mixed precision: what `train.mixed_precision=auto` resolves to on this machine (`resolve_mixed_precision`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

MIN_PARAMS_FOR_BF16 = 2_000_000  # below this, autocast overhead outweighs faster matmuls on CPU (measured)
# Per family where it was measured lower: a transformer's bf16 training step on the CPU (with the matrix-product
# attention of lmbench.models.attention) was 1.1x its fp32 step at 0.21M parameters, 2.0x at 0.42M and 1.8x at
# 0.81M (scripts/bench/train_throughput.py, 2-core AMD EPYC with avx512_bf16).
MIN_PARAMS_FOR_BF16_BY_FAMILY = {"transformer": 200_000}
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cuda_bf16() -> bool:
    """The current CUDA device computes in bf16 natively (Ampere, compute capability 8.0, or newer); torch's own
    is_bf16_supported() also says yes for older GPUs that only emulate it, slowly."""
    return torch.cuda.is_bf16_supported(including_emulation=False) if _takes_emulation() else \
        torch.cuda.get_device_capability()[0] >= 8


def _takes_emulation() -> bool:
    import inspect

    return "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters


LAUNCHER_ENV = "ACCELERATE_MIXED_PRECISION"  # set by `accelerate launch --mixed_precision` / `accelerate config`


def launcher_precision() -> str | None:
    """The mixed precision the launcher chose (`accelerate launch --mixed_precision X`, or the precision of an
    `accelerate config`), None when it chose none. "no" counts as none: `accelerate launch` sets it by default,
    so it cannot be told from an explicit `--mixed_precision no`."""
    value = os.environ.get(LAUNCHER_ENV, "").strip().lower()
    return value if value and value != "no" else None


def resolve_mixed_precision(requested: str, num_params: int, device_type: str | None = None,
                            launcher: str | None = None, family: str | None = None) -> tuple[str, str]:
    """(mixed_precision, reason) with the launcher's choice (`launcher`, see launcher_precision) taken into
    account: under `auto` the launcher's explicit choice wins; an explicit spec value wins over a different
    launcher value, and the reason says so (the runner warns)."""
    if launcher is not None:
        if requested == "auto":
            return launcher, f"auto: the launcher's mixed_precision={launcher} ({LAUNCHER_ENV})"
        if requested != launcher:
            return requested, (f"requested: train.mixed_precision={requested} overrides the launcher's "
                               f"mixed_precision={launcher} ({LAUNCHER_ENV})")
    return _resolve(requested, num_params, device_type, family)


def _resolve(requested: str, num_params: int, device_type: str | None = None,
             family: str | None = None) -> tuple[str, str]:
    """(mixed_precision, reason). `auto` is bf16 where it runs fast and pays off, else `no`:

    CUDA with bf16 support (compute capability >= 8.0), and fp16 on older GPUs (Accelerate then scales the loss
    with a GradScaler and skips the steps whose gradients overflow); or a CPU with native bf16 dot products (AMX `amx_bf16`, or AVX-512 `avx512_bf16`,
    which oneDNN uses for ~3.5x the fp32 matmul rate on this project's machine) AND a model of at least
    MIN_PARAMS_FOR_BF16 parameters (smaller models are bound by overheads that autocast only adds to; the model
    `family`'s own MIN_PARAMS_FOR_BF16_BY_FAMILY where it has one).
    """
    if requested != "auto":
        return requested, "requested"
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        if cuda_bf16():
            return "bf16", "auto: CUDA device with bf16"
        return "fp16", "auto: CUDA device without bf16 (fp16 with loss scaling)"
    if device_type != "cpu":
        return "no", f"auto: {device_type} device"
    flags = cpu_flags() & set(FAST_BF16_CPU_FLAGS)
    if not flags:
        return "no", "auto: CPU without amx_bf16/avx512_bf16"
    least = MIN_PARAMS_FOR_BF16_BY_FAMILY.get(family or "", MIN_PARAMS_FOR_BF16)
    if num_params < least:
        return "no", f"auto: {num_params:,} parameters < {least:,} (bf16 does not pay off)"
    return "bf16", f"auto: CPU with {'/'.join(sorted(flags))} and {num_params:,} parameters"

