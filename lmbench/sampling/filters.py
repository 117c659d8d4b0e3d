"""Pure logit processors with transformers' semantics (generation/logits_process.py, transformers 5.x).

Every function takes `scores` (N, V) float (logits, or log-probabilities in beam search) and returns a new
tensor; removed tokens get -inf. `history` is the (N, L) long tensor of ids seen so far (prompt + generated);
negative entries (left padding) are ignored.

Order, as transformers builds its processor list: repetition penalty, no-repeat n-gram (both always), then the
warpers, only when sampling: temperature, top-k, top-p, min-p.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmbench.sampling.kinds import sampler_kind
from lmbench.spec import SamplerSpec

NEG_INF = float("-inf")


def _spare_column(history: Tensor, vocab_size: int) -> Tensor:
    """Map ignored (negative) and out-of-vocabulary ids to `vocab_size`, a spare column dropped afterwards."""
    return torch.where((history < 0) | (history >= vocab_size), vocab_size, history)


def temperature(scores: Tensor, value: float) -> Tensor:
    """scores / T. T < 1 sharpens, T > 1 flattens (TemperatureLogitsWarper)."""
    return scores / value


def top_k(scores: Tensor, k: int, min_tokens_to_keep: int = 1) -> Tensor:
    """Keep the k highest scores (ties with the k-th are kept too), as TopKLogitsWarper."""
    k = min(max(k, min_tokens_to_keep), scores.size(-1))
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (N, 1)
    return scores.masked_fill(scores < kth, NEG_INF)


TOP_P_CANDIDATES = 256  # the first candidate set of the CPU nucleus search (x 3 per retry)
# x 3, not x 4: torch's CPU topk is a heap partial sort while k <= V / 64 and an nth_element above it; for 16
# rows of 50,257 tokens k = 768 takes 2.5 ms, and k = 1,024 3.7 ms (as much as 4,096).


def top_p(scores: Tensor, p: float, min_tokens_to_keep: int = 1) -> Tensor:
    """Nucleus: the smallest set of most likely tokens whose probability reaches p (TopPLogitsWarper).

    Sorted ascending, a token is removed when the mass of it and everything less likely is <= 1 - p; the
    `min_tokens_to_keep` most likely tokens always stay.

    On the CPU, where sorting a 50k vocabulary costs more than a small model's whole step (2 ms a row), the
    nucleus is looked for among the most likely candidates first (`top_p_candidates`); the full sort runs only
    for distributions too flat for that.
    """
    if scores.device.type == "cpu" and scores.size(-1) >= 8 * TOP_P_CANDIDATES:
        kept = top_p_candidates(scores, p, min_tokens_to_keep)
        if kept is not None:
            return kept
    sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # (N, V), ascending order
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return scores.masked_fill(remove, NEG_INF)


def top_p_candidates(scores: Tensor, p: float, min_tokens_to_keep: int = 1) -> Tensor | None:
    """`top_p(scores, p)` from the k most likely tokens instead of a full sort (k = 256, then 768, 2,304 and
    so on to V / 4 while they hold at least p / 2 of every row's mass), or None when they do not hold p of
    some row's. The kept scores are scattered into a -inf tensor: one write of the vocabulary, where a mask
    and masked_fill take three (4 ms a step for 16 rows of 50,257 on a 2-core CPU, masked_fill alone 2).

    The same rule: the mass of a token and everything less likely is 1 - (the mass of the tokens more likely
    than it), so a candidate is removed when the mass above it is >= p; every token outside the candidates is
    removed once the candidates' mass is >= p (the most likely outsider has all of it above). Equal to the
    sorted computation up to float rounding of the sums."""
    vocab_size = scores.size(-1)
    log_total = torch.logsumexp(scores.float(), dim=-1, keepdim=True)  # (N, 1)
    k = max(TOP_P_CANDIDATES, min_tokens_to_keep)
    while k <= vocab_size // 4:
        top, index = torch.topk(scores, k, dim=-1)  # descending
        probs = (top.float() - log_total).exp()  # (N, k)
        cumulative = probs.cumsum(dim=-1)
        mass = float(cumulative[:, -1].min())
        if mass >= p:
            remove_top = (cumulative - probs) >= p  # the mass strictly more likely than each candidate
            remove_top[:, :min_tokens_to_keep] = False
            kept = torch.full_like(scores, NEG_INF)
            return kept.scatter_(-1, index, top.masked_fill(remove_top, NEG_INF))
        if mass < p / 2:  # far too flat for a few more candidates: sort
            return None
        k *= 3
    return None


def min_p(scores: Tensor, p: float, min_tokens_to_keep: int = 1) -> Tensor:
    """Remove tokens whose probability is below p x the top token's probability (MinPLogitsWarper)."""
    probs = scores.softmax(dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    keep = torch.topk(probs, min(min_tokens_to_keep, probs.size(-1)), dim=-1).indices
    remove.scatter_(-1, keep, False)
    return scores.masked_fill(remove, NEG_INF)


def repetition_penalty(scores: Tensor, history: Tensor, penalty: float) -> Tensor:
    """Every id in `history`: positive scores / penalty, negative scores x penalty (CTRL; transformers'
    RepetitionPenaltyLogitsProcessor). Penalty > 1 discourages repeats."""
    vocab_size = scores.size(-1)
    seen = torch.zeros(scores.size(0), vocab_size + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, _spare_column(history, vocab_size), True)
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen[:, :vocab_size], penalised, scores)


def no_repeat_ngram(scores: Tensor, history: Tensor, n: int) -> Tensor:
    """Ban every token that would complete an n-gram already present in `history` (NoRepeatNGramLogitsProcessor).

    Windows that touch ignored (padding) positions never ban anything.
    """
    length = history.size(1)
    if n <= 0 or length < n:
        return scores
    vocab_size = scores.size(-1)
    prefix = history[:, length + 1 - n :]  # (N, n-1), the current suffix
    windows = history.unfold(1, n, 1)  # (N, L-n+1, n)
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1) & (windows >= 0).all(dim=-1)
    banned = torch.zeros(scores.size(0), vocab_size + 1, dtype=torch.bool, device=scores.device)
    last = _spare_column(windows[..., -1], vocab_size)
    banned.scatter_(1, torch.where(matches, last, vocab_size), True)
    return scores.masked_fill(banned[:, :vocab_size], NEG_INF)


def needs_history(s: SamplerSpec) -> bool:
    """Whether `process` reads `history` for this sampler (repetition penalty or n-gram blocking)."""
    return s.repetition_penalty != 1.0 or s.no_repeat_ngram_size > 0


def process(scores: Tensor, history: Tensor | None, s: SamplerSpec) -> Tensor:
    """All processors of sampler `s` in transformers' order. Warpers apply only to sampling kinds, and keep at
    least 2 tokens with beams (one EOS + one continuation), as transformers does."""
    if s.repetition_penalty != 1.0:
        assert history is not None
        scores = repetition_penalty(scores, history, s.repetition_penalty)
    if s.no_repeat_ngram_size > 0:
        assert history is not None
        scores = no_repeat_ngram(scores, history, s.no_repeat_ngram_size)
    if not sampler_kind(s).sampling:
        return scores
    keep = 2 if s.num_beams > 1 else 1
    if s.temperature != 1.0:
        scores = temperature(scores, s.temperature)
    if s.top_k is not None and s.top_k != 0:
        scores = top_k(scores, s.top_k, keep)
    if s.top_p is not None and s.top_p < 1.0:
        scores = top_p(scores, s.top_p, keep)
    if s.min_p is not None:
        scores = min_p(scores, s.min_p, keep)
    return scores
