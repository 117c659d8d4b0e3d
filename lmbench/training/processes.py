"""The processes of a launch (`accelerate launch`, torchrun or one plain process) and Accelerate's singletons.

Accelerate keeps its process, precision and gradient state in class-level singletons (`PartialState`,
`AcceleratorState`, `GradientState`). A grid runs many cells in one process, each with its own precision and
accumulation, so the runner resets them before every cell. That needs Accelerate's private `_reset_state` and
`_shared_state`: `reset_accelerate` is the one place that touches them, and tests/training/test_processes.py fails
loudly if a new Accelerate release renames or changes them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch


def launched_world_size() -> int:
    """WORLD_SIZE set by accelerate launch / torchrun (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def force_cpu() -> bool:
    """True for a multi-process launch on a machine without CUDA: accelerate only starts its gloo (MULTI_CPU)
    process group when asked for the CPU (`accelerate launch --multi_gpu` / torchrun alone give 1-process
    states there), so every PartialState/Accelerator of the runner passes cpu=force_cpu()."""
    return launched_world_size() > 1 and not torch.cuda.is_available()


def partial_state() -> Any:
    """accelerate's PartialState for this launch (gloo process group on a CPU-only multi-process launch)."""
    from accelerate import PartialState

    return PartialState(cpu=force_cpu())


def reset_accelerate() -> None:
    """Reset Accelerate's singletons where a previous user left them unusable for the next cell:

    - AcceleratorState and GradientState always, so that each cell of a grid run in one process chooses its own
      mixed precision and gradient accumulation;
    - PartialState too when a finished cell's end_training destroyed the process group, or when something
      initialised it as one process inside a multi-process launch (PartialState() without cpu=True on CPU).
    """
    from accelerate.state import AcceleratorState, GradientState, PartialState

    reset_partial = False
    if PartialState._shared_state != {}:
        state = PartialState()
        lost_group = state.num_processes > 1 and not torch.distributed.is_initialized()
        reset_partial = lost_group or state.num_processes != launched_world_size()
    AcceleratorState._reset_state(reset_partial_state=reset_partial)
    GradientState._reset_state()


class _TiedWeightsNotice(logging.Filter):
    """Drop accelerate's per-checkpoint warning about tied weights stored once (safetensors); loading restores them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


def quiet_accelerate() -> None:
    """Silence Accelerate's warning about tied weights at every checkpoint (once per process)."""
    logger = logging.getLogger("accelerate.utils.other")
    if not any(isinstance(f, _TiedWeightsNotice) for f in logger.filters):
        logger.addFilter(_TiedWeightsNotice())
