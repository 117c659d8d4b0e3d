"""Host-to-device copies of training batches (trainer.to_device): pinned + non_blocking on CUDA only."""

from __future__ import annotations

import pytest
import torch

from lmbench.training.trainer import to_device


def test_on_cpu_nothing_is_pinned_or_copied() -> None:
    batch = {"input_ids": torch.arange(6).view(2, 3), "labels": torch.arange(6).view(2, 3)}
    moved = to_device(batch, torch.device("cpu"))
    assert all(moved[k] is batch[k] for k in batch)  # .to(cpu) of a CPU tensor is the tensor itself
    assert not any(v.is_pinned() for v in moved.values())


@pytest.mark.gpu
def test_on_cuda_batches_are_pinned_then_copied_asynchronously(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    calls = []
    real_to = torch.Tensor.to

    def spy(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append((self.is_pinned(), kwargs.get("non_blocking")))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    moved = to_device({"input_ids": torch.arange(6).view(2, 3)}, torch.device("cuda"))
    assert moved["input_ids"].is_cuda and calls == [(True, True)]
