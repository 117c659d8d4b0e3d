"""Comparing samplers: diversity, repetition, length, EOS rate, perplexity of the samples, speed.

All counts are pooled over a sampler's samples before dividing (never a mean of per-sample ratios), and the
perplexities are exp(total NLL in nats / total scored tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from lmbench.data.batching import IGNORE_INDEX
from lmbench.models.base import LanguageModel
from lmbench.sampling.search import eval_mode
from lmbench.tokenizers.base import Tokenizer

Reference = LanguageModel | tuple[LanguageModel, Tokenizer]


def ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams / all n-grams, pooled over `sequences` (Li et al., 2016); NaN when there are none."""
    grams = [g for seq in sequences for g in ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repeated_ngram_rate(sequences: Sequence[Sequence[int]], n: int = 4) -> float:
    """Fraction of n-grams that repeat an earlier n-gram of the same sequence, pooled; NaN when there are none."""
    repeated = total = 0
    for seq in sequences:
        grams = ngrams(seq, n)
        repeated += len(grams) - len(set(grams))
        total += len(grams)
    return repeated / total if total else math.nan


def continuation_nll(model: LanguageModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                     device: torch.device | str | None = None, batch_size: int = 16) -> tuple[float, int]:
    """(total NLL in nats, number of tokens) of each continuation given its prompt as context.

    Scored through `model.step` from a fresh state, so models with a bounded context (the transformer past its
    block_size) score each token with the window they would have seen while generating it.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode(), eval_mode(model):
        for first in range(0, len(pairs), batch_size):
            nll, num = _batch_nll(model, pairs[first : first + batch_size], device)
            total_nll, total_tokens = total_nll + nll, total_tokens + num
    return total_nll, total_tokens


def _batch_nll(model: LanguageModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
               device: torch.device) -> tuple[float, int]:
    seqs = [list(p) + list(c) for p, c in pairs]
    length = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    labels = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)  # labels[:, t] = target of position t
    for row, ((prompt, cont), seq) in enumerate(zip(pairs, seqs)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        if cont:
            labels[row, len(prompt) - 1 : len(seq) - 1] = torch.tensor(list(cont))
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    logits, _ = model.step(ids, model.init_state(len(seqs), device), attention_mask=mask)  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return float(nll), int((labels != IGNORE_INDEX).sum())


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers map the same ids to the same tokens (so one model's ids mean the same to the other)."""
    return a is b or (type(a) is type(b) and a.vocab_size == b.vocab_size and a.tokens() == b.tokens())


def sampler_metrics(rows: Sequence[dict[str, Any]], model: LanguageModel, tokenizer: Tokenizer,
                    reference: Reference | None = None, *, device: torch.device | str | None = None,
                    batch_size: int = 16) -> pd.DataFrame:
    """One row per sampler (in order of appearance) from `sample_texts` rows.

    Columns: sampler, num_samples, mean_length (new tokens, EOS excluded), eos_fraction, distinct_1/2/3,
    rep_4gram, self_ppl (the samples under `model`, prompt as context, EOS included), reference_ppl (under the
    reference model: a LanguageModel sharing `tokenizer`, or (model, its tokenizer), NaN with a note when the
    vocabularies differ), tokens_per_s (all new tokens / all generation time), note.
    """
    ref_model, ref_note = _reference(reference, tokenizer)
    frames = []
    for name in dict.fromkeys(r["sampler"] for r in rows):
        part = [r for r in rows if r["sampler"] == name]
        frames.append(_one_sampler(name, part, model, ref_model, ref_note, device, batch_size))
    return pd.DataFrame(frames)


def _reference(reference: Reference | None, tokenizer: Tokenizer) -> tuple[LanguageModel | None, str]:
    if reference is None:
        return None, "no reference model"
    if isinstance(reference, tuple):
        ref_model, ref_tokenizer = reference
        if not same_vocabulary(ref_tokenizer, tokenizer):
            return None, "reference model has another tokenizer: reference_ppl not comparable"
        return ref_model, ""
    return reference, ""


def _one_sampler(name: str, part: list[dict[str, Any]], model: LanguageModel, ref_model: LanguageModel | None,
                 ref_note: str, device: torch.device | str | None, batch_size: int) -> dict[str, Any]:
    content = [r["new_ids"][:-1] if r["ended_with_eos"] else r["new_ids"] for r in part]
    pairs = [(r["prompt_ids"], r["new_ids"]) for r in part]
    nll, num = continuation_nll(model, pairs, device, batch_size)
    row: dict[str, Any] = {
        "sampler": name,
        "num_samples": len(part),
        "mean_length": sum(map(len, content)) / len(part),
        "eos_fraction": sum(bool(r["ended_with_eos"]) for r in part) / len(part),
        **{f"distinct_{n}": distinct_n(content, n) for n in (1, 2, 3)},
        "rep_4gram": repeated_ngram_rate(content, 4),
        "self_ppl": math.exp(nll / num) if num else math.nan,
        "reference_ppl": math.nan,
        "tokens_per_s": _tokens_per_s(part),
        "note": ref_note,
    }
    if ref_model is not None:
        row["reference_ppl"] = _perplexity(ref_model, pairs, device, batch_size)
    return row


def _perplexity(model: LanguageModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                device: torch.device | str | None, batch_size: int) -> float:
    nll, num = continuation_nll(model, pairs, device, batch_size)
    return math.exp(nll / num) if num else math.nan


def reference_scores(rows: Sequence[dict[str, Any]], tokenizer: Tokenizer, reference: Reference, *,
                     device: torch.device | str | None = None, batch_size: int = 16) -> dict[str, tuple[float, str]]:
    """sampler -> (reference_ppl, note) of `sample_texts` rows made with `tokenizer`, as `sampler_metrics` computes
    them: for a reference that finished after the cell whose samples these are."""
    ref_model, note = _reference(reference, tokenizer)
    out = {}
    for name in dict.fromkeys(r["sampler"] for r in rows):
        pairs = [(r["prompt_ids"], r["new_ids"]) for r in rows if r["sampler"] == name]
        out[name] = (_perplexity(ref_model, pairs, device, batch_size) if ref_model is not None else math.nan, note)
    return out


def _tokens_per_s(part: list[dict[str, Any]]) -> float:
    """All new tokens / all generation time; each row's share of its batch time is num_new_tokens / tokens_per_s."""
    tokens = sum(r["num_new_tokens"] for r in part)
    seconds = sum(r["num_new_tokens"] / r["tokens_per_s"] for r in part if r.get("tokens_per_s"))
    return tokens / seconds if seconds > 0 else math.nan
