"""Logit processors: the same outputs as transformers' processors on random logits, and the edge cases."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lmbench.sampling import filters
from lmbench.spec import SamplerSpec

from .helpers import LEFT_PADDING_AWARE_PENALTY, skip_before

V = 30


def random_scores(seed: int, rows: int = 6, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, V, generator=g) * scale


def random_history(seed: int, rows: int = 6, length: int = 12, vocab: int = 8) -> torch.Tensor:
    """Small id range so that n-grams repeat."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (rows, length), generator=g)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("value", [0.3, 0.7, 1.5])
def test_temperature_matches_transformers(seed: int, value: float) -> None:
    scores = random_scores(seed)
    expected = TemperatureLogitsWarper(value)(None, scores.clone())
    torch.testing.assert_close(filters.temperature(scores, value), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k, keep", [(1, 1), (5, 1), (1, 2), (V + 5, 1)])
def test_top_k_matches_transformers(seed: int, k: int, keep: int) -> None:
    scores = random_scores(seed)
    expected = TopKLogitsWarper(k, min_tokens_to_keep=keep)(None, scores.clone())
    torch.testing.assert_close(filters.top_k(scores, k, keep), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p, keep", [(0.01, 1), (0.5, 1), (0.9, 1), (0.95, 2), (1.0, 1)])
def test_top_p_matches_transformers(seed: int, p: float, keep: int) -> None:
    scores = random_scores(seed)
    expected = TopPLogitsWarper(p, min_tokens_to_keep=keep)(None, scores.clone())
    torch.testing.assert_close(filters.top_p(scores, p, keep), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p, keep", [(0.05, 1), (0.3, 1), (0.9, 2), (1.0, 1)])
def test_min_p_matches_transformers(seed: int, p: float, keep: int) -> None:
    scores = random_scores(seed)
    expected = MinPLogitsWarper(p, min_tokens_to_keep=keep)(None, scores.clone())
    torch.testing.assert_close(filters.min_p(scores, p, keep), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(seed: int, penalty: float) -> None:
    scores, history = random_scores(seed), random_history(seed)
    expected = RepetitionPenaltyLogitsProcessor(penalty)(history, scores.clone())
    torch.testing.assert_close(filters.repetition_penalty(scores, history, penalty), expected)


def test_repetition_penalty_ignores_left_padding_like_transformers() -> None:
    skip_before(LEFT_PADDING_AWARE_PENALTY, "a per-row prompt_ignore_length")
    scores, history = random_scores(0, rows=2), random_history(0, rows=2)
    pads = torch.tensor([3, 0])  # leading pads per row (transformers' prompt_ignore_length from the mask)
    expected = RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=pads)(history, scores.clone())
    masked = history.clone()
    masked[0, :3] = -1
    torch.testing.assert_close(filters.repetition_penalty(scores, masked, 1.5), expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 2, 3, 13])
def test_no_repeat_ngram_matches_transformers(seed: int, n: int) -> None:
    scores, history = random_scores(seed), random_history(seed, vocab=4)
    expected = NoRepeatNGramLogitsProcessor(n)(history, scores.clone())
    torch.testing.assert_close(filters.no_repeat_ngram(scores, history, n), expected)


def test_no_repeat_ngram_bans_the_completing_token() -> None:
    history = torch.tensor([[5, 6, 7, 5, 6]])
    out = filters.no_repeat_ngram(torch.zeros(1, 10), history, 3)
    assert torch.isinf(out[0, 7]) and torch.isfinite(out[0, :7]).all() and torch.isfinite(out[0, 8:]).all()
    padded = torch.tensor([[-1, -1, 5, 6, 7, 5, 6]])  # windows over padding never ban anything
    torch.testing.assert_close(filters.no_repeat_ngram(torch.zeros(1, 10), padded, 3), out)


def test_top_p_always_keeps_the_most_likely_token() -> None:
    scores = torch.tensor([[10.0, 0.0, 0.0, 0.0]])  # p(top) ~ 0.9999 > any p
    out = filters.top_p(scores, 0.01)
    assert torch.isfinite(out[0, 0]) and torch.isinf(out[0, 1:]).all()


def test_top_p_is_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = lambda p: torch.isfinite(filters.top_p(probs.log(), p)).sum().item()  # noqa: E731
    assert [kept(p) for p in (0.4, 0.5, 0.6, 0.8, 0.81, 0.96)] == [1, 1, 2, 2, 3, 4]


def test_process_applies_warpers_only_when_sampling() -> None:
    scores, history = random_scores(1), random_history(1)
    greedy = SamplerSpec(kind="greedy", top_k=2, temperature=0.5, repetition_penalty=1.3)
    torch.testing.assert_close(filters.process(scores, history, greedy),
                               filters.repetition_penalty(scores, history, 1.3))
    sample = SamplerSpec(kind="sample", top_k=5, top_p=0.8, temperature=0.7, min_p=0.05, repetition_penalty=1.3,
                         no_repeat_ngram_size=2)
    expected = scores.clone()
    for proc in (RepetitionPenaltyLogitsProcessor(1.3), NoRepeatNGramLogitsProcessor(2), TemperatureLogitsWarper(0.7),
                 TopKLogitsWarper(5), TopPLogitsWarper(0.8), MinPLogitsWarper(0.05)):
        expected = proc(history, expected)
    torch.testing.assert_close(filters.process(scores, history, sample), expected)


def test_beam_sampling_keeps_two_tokens() -> None:
    scores = torch.tensor([[10.0, 0.0, -1.0]])
    s = SamplerSpec(kind="beam_sample", num_beams=2, top_k=1)
    assert torch.isfinite(filters.process(scores, None, s)).sum() == 2


def kept(scores: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in scores]


def test_filters_keep_one_token_by_default_and_more_when_asked() -> None:
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    assert kept(filters.top_k(scores, 1)) == [[0]]
    assert kept(filters.top_k(scores, 1, min_tokens_to_keep=3)) == [[0, 1, 2]]
    assert kept(filters.min_p(scores, 1.0)) == [[0]]
    assert kept(filters.min_p(scores, 1.0, min_tokens_to_keep=3)) == [[0, 1, 2]]  # more than the rows (1)
    assert kept(filters.top_p(scores, 1e-6)) == [[0]]


def test_min_p_keeps_tokens_exactly_at_the_threshold() -> None:
    tied = torch.tensor([[0.0, 0.0, float("-inf")]])  # probabilities 0.5, 0.5, 0: both at p x max for p = 1
    assert kept(filters.min_p(tied, 1.0)) == [[0, 1]]


def test_no_repeat_ngram_edges() -> None:
    scores = torch.zeros(1, 5)
    assert torch.equal(filters.no_repeat_ngram(scores, torch.tensor([[3, 3, 3]]), 0), scores)  # n = 0: off
    banned = filters.no_repeat_ngram(scores, torch.tensor([[3, 3]]), 2)  # history exactly n long: (3, 3) seen
    assert kept(banned) == [[0, 1, 2, 4]]
    assert torch.equal(filters.no_repeat_ngram(scores, torch.tensor([[3]]), 2), scores)  # shorter than n


def test_process_at_settings_that_differ_from_the_defaults_by_one_step() -> None:
    """temperature 2 halves the scores; a ban of 1-grams bans every token seen; a repetition penalty of 2 needs
    the history; min_p keeps two tokens for beams; top_p 1.0 changes nothing."""
    scores = torch.tensor([[4.0, 1.0, 0.5, -2.0]])
    history = torch.tensor([[2, 2]])
    hot = filters.process(scores, None, SamplerSpec(kind="sample", temperature=2.0))
    torch.testing.assert_close(hot, scores / 2, rtol=0, atol=0)
    banned = filters.process(scores, history, SamplerSpec(kind="greedy", no_repeat_ngram_size=1))
    assert banned[0, 2] == float("-inf") and torch.equal(banned[0, [0, 1, 3]], scores[0, [0, 1, 3]])
    assert filters.needs_history(SamplerSpec(kind="greedy", repetition_penalty=2.0))
    assert not filters.needs_history(SamplerSpec(kind="greedy"))
    beams = filters.process(scores, None, SamplerSpec(kind="beam_sample", num_beams=2, min_p=0.9))
    assert torch.isfinite(beams[0]).tolist() == [True, True, False, False]  # one dominant token, yet two kept
    same = filters.process(scores, None, SamplerSpec(kind="sample", top_p=1.0))
    torch.testing.assert_close(same, scores, rtol=0, atol=0)


@pytest.mark.parametrize("scale, p, keep", [(6.0, 0.9, 1), (4.0, 0.5, 1), (4.0, 0.95, 2), (3.0, 0.9, 1),
                                            (8.0, 0.99, 3), (6.0, 0.01, 3)])
def test_top_p_from_candidates_matches_transformers_on_a_large_vocabulary(scale: float, p: float, keep: int) -> None:
    """Peaked rows of an 8,192-token vocabulary: the nucleus comes from the candidates (scale 3 needs the
    second, larger set), the same tokens as transformers' full sort."""
    g = torch.Generator().manual_seed(int(scale * 10))
    scores = torch.randn(8, 8192, generator=g) * scale
    assert filters.top_p_candidates(scores, p, keep) is not None
    expected = TopPLogitsWarper(p, min_tokens_to_keep=keep)(None, scores.clone())
    torch.testing.assert_close(filters.top_p(scores, p, keep), expected, rtol=0, atol=0)  # the same scores kept


def test_top_p_candidates_grow_then_give_way_to_the_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    peaked, flat = torch.randn(4, 8192, generator=g) * 3.0, torch.randn(4, 8192, generator=g)
    sizes = []
    topk = torch.topk
    monkeypatch.setattr(filters.torch, "topk", lambda x, k, dim: sizes.append(k) or topk(x, k, dim=dim))
    assert filters.top_p_candidates(peaked, 0.9) is not None and sizes == [256, 768]
    sizes.clear()
    assert filters.top_p_candidates(flat, 0.9) is None and sizes == [256]  # far below p / 2: straight to the sort
    expected = TopPLogitsWarper(0.9)(None, flat.clone())
    torch.testing.assert_close(filters.top_p(flat, 0.9), expected)
