"""lmbench.sampling.draws: torch.multinomial's draws, with the log taken on the support only."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lmbench.sampling import draws
from lmbench.sampling.filters import top_k, top_p


def _nucleus_probs(rows: int, vocab_size: int, seed: int) -> Tensor:
    logits = torch.randn(rows, vocab_size, generator=torch.Generator().manual_seed(seed)) * 4
    return top_p(logits, 0.9).softmax(dim=-1)


@pytest.fixture
def races(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the draws that took the sparse race."""
    taken: list[int] = []
    draws.matches_torch()  # cached: its own races are not counted
    race = draws._race
    monkeypatch.setattr(draws, "_race", lambda *a: taken.append(1) or race(*a))
    return taken


@pytest.mark.parametrize("num_samples", [1, 4])
def test_sparse_draws_equal_torch_multinomial_and_leave_the_generator_where_it_leaves_it(
        races: list[int], num_samples: int) -> None:
    probs = _nucleus_probs(16, 20_000, seed=0)
    assert 0 < int((probs > 0).sum()) < draws.MAX_SUPPORT_FRACTION * probs.numel()
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(20):
        assert torch.equal(draws.multinomial(probs, num_samples, ours),
                           torch.multinomial(probs, num_samples, generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert len(races) == 20


def test_the_global_generator_is_replayed_too(races: list[int]) -> None:
    probs = top_k(torch.randn(8, 5_000), 20).softmax(dim=-1)
    torch.manual_seed(3)
    got = [draws.multinomial(probs, 1) for _ in range(5)]
    torch.manual_seed(3)
    assert all(torch.equal(g, torch.multinomial(probs, 1)) for g in got)
    assert len(races) == 5


def test_a_dense_row_set_is_left_to_torch(races: list[int]) -> None:
    probs = torch.rand(4, 300)
    ours, theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(draws.multinomial(probs, 1, ours), torch.multinomial(probs, 1, generator=theirs))
    assert races == []


def test_more_samples_than_support_take_the_zeros_torch_takes(races: list[int]) -> None:
    probs = torch.zeros(3, 1_000)
    probs[:, [3, 7, 500]] = torch.tensor([0.5, 0.3, 0.2])
    ours, theirs = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for _ in range(5):
        assert torch.equal(draws.multinomial(probs, 6, ours), torch.multinomial(probs, 6, generator=theirs))
    assert len(races) == 5


def test_torch_still_rejects_a_row_without_mass(races: list[int]) -> None:
    probs = _nucleus_probs(3, 4_000, seed=1)
    probs[1] = 0
    with pytest.raises(RuntimeError):
        draws.multinomial(probs, 1)
    probs[1] = probs[0]
    probs[1, 0] = float("nan")
    with pytest.raises(RuntimeError):
        draws.multinomial(probs, 1)
    assert races == []


def test_where_torch_draws_differently_its_own_draw_is_used(races: list[int],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert draws.matches_torch()  # this torch: the exponential race of ATen's Sampling.cpp
    monkeypatch.setattr(draws, "matches_torch", lambda: False)
    probs = _nucleus_probs(4, 4_000, seed=2)
    ours, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(draws.multinomial(probs, 1, ours), torch.multinomial(probs, 1, generator=theirs))
    assert races == []


def test_the_check_notices_a_different_draw_or_a_different_generator_advance(monkeypatch: pytest.MonkeyPatch) -> None:
    race = draws._race
    check = draws.matches_torch.__wrapped__
    assert check()

    calls: list[int] = []

    def one_more_uniform_at_the_end(probs: Tensor, num_samples: int, generator: torch.Generator | None,
                                    *a: Tensor) -> Tensor:
        ids = race(probs, num_samples, generator, *a)
        calls.append(1)
        if len(calls) == 3:  # the same ids, only the generator state after differs
            torch.empty(1).uniform_(generator=generator)
        return ids

    monkeypatch.setattr(draws, "_race", one_more_uniform_at_the_end)
    assert not check()
    monkeypatch.setattr(draws, "_race", lambda probs, num_samples, *a: race(probs.flip(-1), num_samples, *a))
    assert not check()
