"""The launch's processes and Accelerate's singletons (reset_accelerate leans on Accelerate's private state)."""

from __future__ import annotations

import pytest
import torch

from lmbench.training.processes import force_cpu, launched_world_size, partial_state, reset_accelerate


def test_force_cpu_only_for_multi_process_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_world_size() == 1 and not force_cpu()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_world_size() == 2
    assert force_cpu() == (not torch.cuda.is_available())


def test_accelerate_still_has_the_private_state_that_reset_accelerate_uses() -> None:
    """If this fails, Accelerate changed its singletons: update reset_accelerate (and this test) together."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    assert isinstance(PartialState._shared_state, dict)
    for cls in (AcceleratorState, GradientState):
        assert callable(getattr(cls, "_reset_state", None)), f"{cls.__name__}._reset_state is gone"
        assert isinstance(cls._shared_state, dict)


def test_each_cell_gets_its_own_precision_and_accumulation() -> None:
    """Two Accelerators in one process (two cells of a grid) with different settings: without the reset the
    second silently keeps the first one's mixed precision and accumulation steps."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    reset_accelerate()
    first = Accelerator(cpu=True, mixed_precision="bf16", gradient_accumulation_steps=4)
    assert (first.mixed_precision, first.gradient_accumulation_steps) == ("bf16", 4)
    reset_accelerate()
    assert AcceleratorState._shared_state == {} and GradientState._shared_state == {}
    second = Accelerator(cpu=True, mixed_precision="no", gradient_accumulation_steps=1)
    assert (second.mixed_precision, second.gradient_accumulation_steps) == ("no", 1)
    assert partial_state().num_processes == 1  # the process state survives a one-process reset


def test_reset_keeps_a_live_process_state() -> None:
    from accelerate.state import PartialState

    state = partial_state()
    reset_accelerate()
    assert PartialState._shared_state != {} and partial_state().device == state.device
