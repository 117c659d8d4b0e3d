"""Decoding loops over the LanguageModel step/state interface: greedy, multinomial, beam search, beam sampling.

Batched and cached: the prompts are left-padded into one (B, P) batch and prefilled once; each new token costs
one `model.step` on (N, 1) ids, where N = B x num_return_sequences (sampling) or B x num_beams (beams, which
live in the batch dimension and are re-selected with `state.reorder`). The prefix is never recomputed.

Semantics follow transformers 5.x `generate` (generation/utils.py `_sample` and `_beam_search`):
- greedy/sample: processors on the last logits, argmax or one multinomial draw per row; rows that emitted EOS
  are padded; the loop stops when every row has emitted EOS or after `max_new_tokens`.
- beam/beam_sample: processors on log-softmax(logits); scores accumulate; 2 x num_beams candidates per prompt
  (top-k, or drawn without replacement from softmax(running score + log-probs) when sampling, then sorted by
  score); a candidate among the best num_beams ending in EOS, or reaching max_new_tokens, enters the finished set with score / num_new_tokens**length_penalty
  (num_new_tokens counts the EOS); the best num_beams non-finished candidates continue. A prompt stops taking
  hypotheses once num_beams are finished and the best running score (divided by the current length**lp, or by
  max_new_tokens**lp for early_stopping="never" with lp > 0) cannot beat the worst finished one; with
  early_stopping=True it also stops as soon as num_beams are finished. (SamplerSpec defaults to True,
  transformers' GenerationConfig to False.) A beam kind with num_beams = 1 is greedy/multinomial decoding,
  as in transformers. Warpers (temperature, top-k/p, min-p) act only for the sampling kinds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbench.models.base import LanguageModel
from lmbench.progress import bar
from lmbench.sampling.draws import multinomial
from lmbench.sampling.filters import needs_history, process
from lmbench.sampling.kinds import sampler_kind
from lmbench.sampling.packed import packed_linears
from lmbench.spec import DataSpec, SampleSpec, SamplerSpec
from lmbench.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)

BIG_NEGATIVE = -1.0e9  # transformers' "impossible" score (finite, so sums stay ordered)


def generate(model: LanguageModel, prompt_ids: list[list[int]], sampler: SamplerSpec, *, max_new_tokens: int,
             eos_id: int | None, pad_id: int, seed: int = 0,
             device: torch.device | str | None = None) -> list[list[list[int]]]:
    """Continue every prompt; returns, per prompt, `num_return_sequences` lists of new ids (EOS included when
    emitted, nothing after it). Beams return the best hypotheses first.

    `seed` seeds a private torch.Generator: the same seed gives the same samples, whatever the global RNG.
    """
    tokens, lengths = generate_tensors(model, prompt_ids, sampler, max_new_tokens=max_new_tokens, eos_id=eos_id,
                                       pad_id=pad_id, seed=seed, device=device)
    rows, sizes = tokens.tolist(), lengths.tolist()
    return [[seq[:n] for seq, n in zip(rows[b], sizes[b])] for b in range(len(rows))]


def generate_tensors(model: LanguageModel, prompt_ids: list[list[int]], sampler: SamplerSpec, *,
                     max_new_tokens: int, eos_id: int | None, pad_id: int, seed: int = 0,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """`generate` without the conversion to lists: (B, R, max_new_tokens) ids (pad after the end) and (B, R)
    lengths, R = num_return_sequences."""
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (prepend BOS for an empty prompt)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = -1 if eos_id is None else eos_id  # -1 never matches a token
    beams = sampler_kind(sampler).beams and sampler.num_beams > 1
    rows = len(prompt_ids) * (sampler.num_beams if beams else sampler.num_return_sequences)
    with torch.inference_mode(), eval_mode(model), packed_linears(model, rows):
        ids, mask = left_pad(prompt_ids, pad_id, device)
        if beams:
            return _beam_search(model, ids, mask, sampler, max_new_tokens, eos, pad_id, generator)
        tokens, lengths = _decode(model, ids, mask, sampler, max_new_tokens, eos, pad_id, generator)
        num_return = sampler.num_return_sequences
        return tokens.view(len(prompt_ids), num_return, -1), lengths.view(len(prompt_ids), num_return)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """model.eval() inside the block, the previous mode restored after (dropout off while decoding)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def left_pad(prompt_ids: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """(B, P) left-padded ids and their (B, P) 0/1 mask, or None when all prompts have the same length."""
    length = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), length), dtype=torch.long)
    for row, prompt in enumerate(prompt_ids):
        ids[row, length - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, length - len(prompt):] = 1
    padded = bool((mask == 0).any())
    return ids.to(device), (mask.to(device) if padded else None)


def _prefill(model: LanguageModel, ids: Tensor, mask: Tensor | None, copies: int,
             max_new_tokens: int) -> tuple[Tensor, object]:
    """Consume the (B, P) prompts once, then repeat each row `copies` times -> (B*copies, V) last logits, state.

    Only the last position's logits are asked for: the (B, P, V) prompt logits are most of a prefill's cost
    with a large vocabulary. The state is told the final length, so a cache can hold it from the start.
    """
    start = model.init_state(ids.size(0), ids.device, max_length=ids.size(1) + max_new_tokens)
    logits, state = model.step(ids, start, attention_mask=mask, logits_to_keep=1)
    last = logits[:, -1].float()  # (B, V)
    if copies > 1:
        expand = torch.arange(ids.size(0), device=ids.device).repeat_interleave(copies)
        state, last = state.reorder(expand), last.index_select(0, expand)
    return last, state


def _history(ids: Tensor, mask: Tensor | None, copies: int, extra: int) -> Tensor:
    """(B*copies, P + extra) id buffer for the processors: the prompt (pads as -1), room for `extra` new ids."""
    prompt = ids if mask is None else ids.masked_fill(mask == 0, -1)
    prompt = prompt.repeat_interleave(copies, dim=0)
    return torch.cat([prompt, prompt.new_full((prompt.size(0), extra), -1)], dim=1)


def _full_mask(mask: Tensor | None, copies: int, extra: int) -> Tensor | None:
    """The prompt mask repeated per copy and extended with ones for `extra` new tokens (None: no padding)."""
    if mask is None:
        return None
    mask = mask.repeat_interleave(copies, dim=0)
    return torch.cat([mask, mask.new_ones((mask.size(0), extra))], dim=1)


def _decode(model: LanguageModel, ids: Tensor, mask: Tensor | None, s: SamplerSpec, max_new_tokens: int,
            eos_id: int, pad_id: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Greedy or multinomial decoding -> (N, max_new_tokens) ids and (N,) lengths, N = B x num_return_sequences."""
    num_prompt = ids.size(1)
    copies = s.num_return_sequences
    next_logits, state = _prefill(model, ids, mask, copies, max_new_tokens)
    num_rows = next_logits.size(0)
    full_mask = _full_mask(mask, copies, max_new_tokens)
    history = _history(ids, mask, copies, max_new_tokens) if needs_history(s) else None
    out = torch.full((num_rows, max_new_tokens), pad_id, dtype=torch.long, device=ids.device)
    lengths = torch.full((num_rows,), max_new_tokens, dtype=torch.long, device=ids.device)
    finished = torch.zeros(num_rows, dtype=torch.bool, device=ids.device)
    sampling = sampler_kind(s).sampling
    for t in range(max_new_tokens):
        scores = process(next_logits, None if history is None else history[:, : num_prompt + t], s)  # (N, V)
        if sampling:
            next_ids = multinomial(scores.softmax(dim=-1), 1, generator).squeeze(1)
        else:
            next_ids = scores.argmax(dim=-1)
        next_ids = next_ids.masked_fill(finished, pad_id)  # (N,)
        out[:, t] = next_ids
        if history is not None:
            history[:, num_prompt + t] = next_ids
        just_ended = (next_ids == eos_id) & ~finished
        lengths.masked_fill_(just_ended, t + 1)
        finished |= just_ended
        if t + 1 == max_new_tokens or bool(finished.all()):
            break
        step_mask = None if full_mask is None else full_mask[:, : num_prompt + t + 1]
        logits, state = model.step(next_ids[:, None], state, attention_mask=step_mask)
        next_logits = logits[:, -1].float()
    return out, lengths


def _take(tensor: Tensor, index: Tensor) -> Tensor:
    """Rows of the beam dimension: (B, M, ...) gathered with (B, K) indices -> (B, K, ...)."""
    shape = index.shape + tensor.shape[2:]
    return tensor.gather(1, index.view(*index.shape, *([1] * (tensor.dim() - 2))).expand(shape))


def _beam_search(model: LanguageModel, ids: Tensor, mask: Tensor | None, s: SamplerSpec, max_new_tokens: int,
                 eos_id: int, pad_id: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Beam search / beam sampling -> (B, R, max_new_tokens) ids and (B, R) lengths of the best R hypotheses."""
    num_prompts, num_prompt = ids.shape
    k = s.num_beams
    num_candidates = 2 * k  # transformers: max(2, 1 + number of EOS ids) x num_beams
    device = ids.device
    next_logits, state = _prefill(model, ids, mask, k, max_new_tokens)  # (B*K, V)
    vocab_size = next_logits.size(-1)
    full_mask = _full_mask(mask, k, max_new_tokens)
    prompt_history = _history(ids, mask, k, 0) if needs_history(s) else None
    sampling = sampler_kind(s).sampling

    running = torch.full((num_prompts, k, max_new_tokens), pad_id, dtype=torch.long, device=device)
    running_scores = torch.zeros(num_prompts, k, device=device)
    running_scores[:, 1:] = BIG_NEGATIVE  # only the first beam's tokens are candidates at the first step
    done = _Finished(num_prompts, k, max_new_tokens, pad_id, device)
    improvable = torch.ones(num_prompts, 1, dtype=torch.bool, device=device)
    is_top_k = torch.arange(num_candidates, device=device) < k  # (C,)
    beam_offset = torch.arange(num_prompts, device=device)[:, None] * k  # (B, 1)

    for t in range(max_new_tokens):
        log_probs = F.log_softmax(next_logits, dim=-1)  # (B*K, V)
        if prompt_history is not None:
            history = torch.cat([prompt_history, running.view(num_prompts * k, -1)[:, :t]], dim=1)
            log_probs = process(log_probs, history, s)
        else:
            log_probs = process(log_probs, None, s)
        # In place: log_probs is this step's own tensor, and a fresh (B*K, V) result per step costs as much
        # as the add itself on CPU.
        total = log_probs.view(num_prompts, k, vocab_size).add_(running_scores[:, :, None]).view(num_prompts, -1)
        if sampling:
            flat = multinomial(total.softmax(dim=-1), num_candidates, generator)  # (B, C)
            # Best first, as top-k gives them: the first K candidates are the ones that may finish (transformers
            # >= 5.24 sorts the same way; earlier releases kept the draw order).
            cand_scores, order = total.gather(1, flat).sort(dim=1, descending=True)
            flat = flat.gather(1, order)
        else:
            cand_scores, flat = torch.topk(total, num_candidates, dim=1)
        source, token = flat // vocab_size, flat % vocab_size  # (B, C) beam each candidate extends, its token
        candidates = _take(running, source)  # (B, C, max_new)
        candidates[:, :, t] = token
        ends = token == eos_id
        if t + 1 == max_new_tokens:
            ends = torch.ones_like(ends)

        # The best K candidates that did not end keep running.
        open_scores = cand_scores + ends.float() * BIG_NEGATIVE
        keep = torch.topk(open_scores, k, dim=1).indices  # (B, K)
        running, running_scores = _take(candidates, keep), open_scores.gather(1, keep)
        beam_index = (source.gather(1, keep) + beam_offset).view(-1)  # (B*K,) rows of the state to continue
        next_ids = token.gather(1, keep).view(-1, 1)  # (B*K, 1)

        # Candidates among the top K that ended may enter the finished set (skipped when none did: merging
        # only BIG_NEGATIVE scores cannot displace a finished hypothesis).
        ended = ends & is_top_k
        if merge_unconditionally(ended) or bool(ended.any()):
            done.add(candidates, cand_scores, ended, t + 1, s, improvable)
        improvable = improvable & done.can_improve(running_scores, t + 1, max_new_tokens, s)
        stop = ~improvable.any() | ends.all()
        if s.early_stopping is True:
            stop = stop | done.full.all()
        if bool(stop):  # the stopping test: the one host sync per token
            break
        step_mask = None if full_mask is None else full_mask[:, : num_prompt + t + 1]
        # reuse: the old state is dropped here, so the cache may rearrange its own rows (copies fewer of them)
        logits, state = model.step(next_ids, state.reorder(beam_index, reuse=True), attention_mask=step_mask)
        next_logits = logits[:, -1].float()
    r = s.num_return_sequences
    return done.tokens[:, :r], done.lengths[:, :r]


def merge_unconditionally(ended: Tensor) -> bool:
    """On an accelerator, merge every step's candidates into the finished set: asking first whether any ended
    is a host sync that stalls the queue, and a merge with none ended changes nothing (its candidates all score
    BIG_NEGATIVE lower). On CPU the question is cheap and skipping the merge is not."""
    return ended.device.type != "cpu"


class _Finished:
    """The K best finished hypotheses per prompt, kept sorted by length-penalised score (transformers'
    `_update_finished_beams` / `_check_early_stop_heuristic`)."""

    def __init__(self, num_prompts: int, k: int, max_new_tokens: int, pad_id: int, device: torch.device) -> None:
        self.k = k
        self.tokens = torch.full((num_prompts, k, max_new_tokens), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.zeros(num_prompts, k, dtype=torch.long, device=device)
        self.scores = torch.full((num_prompts, k), BIG_NEGATIVE, device=device)
        self.full = torch.zeros(num_prompts, k, dtype=torch.bool, device=device)  # slot holds a real hypothesis

    def add(self, candidates: Tensor, cand_scores: Tensor, ended: Tensor, num_new: int, s: SamplerSpec,
            improvable: Tensor) -> None:
        """Merge the (B, C) `ended` candidates (their tokens (B, C, T), summed log-probs) into the set."""
        scores = cand_scores / (num_new ** s.length_penalty)
        if s.early_stopping is True:
            scores = scores + (self.full.all(dim=-1, keepdim=True)).float() * BIG_NEGATIVE
        scores = scores + (~improvable).float() * BIG_NEGATIVE
        scores = scores + (~ended).float() * BIG_NEGATIVE
        merged = torch.cat([self.scores, scores], dim=1)  # (B, K + C)
        pick = torch.topk(merged, self.k, dim=1).indices
        self.scores = merged.gather(1, pick)
        self.tokens = _take(torch.cat([self.tokens, candidates], dim=1), pick)
        new_lengths = torch.full_like(cand_scores, num_new, dtype=torch.long)
        self.lengths = torch.cat([self.lengths, new_lengths], dim=1).gather(1, pick)
        self.full = torch.cat([self.full, ended], dim=1).gather(1, pick)

    def can_improve(self, running_scores: Tensor, num_new: int, max_new_tokens: int, s: SamplerSpec) -> Tensor:
        """(B, 1): could the best running beam still beat the worst finished one (always, until K are finished)?"""
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_length = max_new_tokens
        else:
            best_length = num_new
        best_possible = running_scores[:, :1] / (best_length ** s.length_penalty)
        worst = torch.where(self.full, self.scores.min(dim=1, keepdim=True).values, BIG_NEGATIVE)
        return (best_possible > worst).any(dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------- texts

def sampler_name(s: SamplerSpec) -> str:
    """`s.name`, else the kind and its non-default parameters: ``greedy``, ``sample(top_p=0.95)``,
    ``beam(num_beams=5)`` (num_beams is always named for beams)."""
    if s.name:
        return s.name
    default = SamplerSpec(kind=s.kind)
    parts = [f"{f}={getattr(s, f)}" for f in sampler_kind(s).name_fields
             if getattr(s, f) != getattr(default, f) or f == "num_beams"]
    return f"{s.kind}({', '.join(parts)})" if parts else s.kind


def prompt_start_id(data: DataSpec, tokenizer: Tokenizer) -> int:
    """The token every prompt starts with, as in training: BOS for `documents` batches (BOS + doc + EOS), EOS
    for `packed` streams, where a document starts after the previous one's EOS."""
    return tokenizer.bos_id if data.batching == "documents" else tokenizer.eos_id


def sample_texts(model: LanguageModel, tokenizer: Tokenizer, sample_spec: SampleSpec,
                 device: torch.device | str | None = None, *, start_id: int | None = None,
                 batch_size: int = 64) -> list[dict[str, Any]]:
    """Generate from every prompt with every sampler of `sample_spec`; one row per text (samples.jsonl).

    Each prompt is `start_id` (default: the tokenizer's BOS; see `prompt_start_id`) + its tokens; unknown words
    become <unk> (the tokenizer warns). Stochastic samplers draw `num_samples` x `num_return_sequences` texts
    per prompt; greedy and beam search are deterministic and run once (num_return_sequences texts).
    `sample_spec.dtype` sets the decoding precision (`decode_precision`).
    Row keys: sampler, sampler_params, prompt, index, text (prompt + continuation, detokenised),
    continuation, prompt_ids, new_ids (EOS included when emitted), num_new_tokens, ended_with_eos,
    tokens_per_s (new tokens / wall time of the batch that made it), seed.
    """
    start = tokenizer.bos_id if start_id is None else start_id
    prompts = list(sample_spec.prompts)
    prompt_ids = [[start, *ids] for ids in tokenizer.encode_batch(prompts)]
    rows: list[dict[str, Any]] = []
    device_type = torch.device(device).type if device is not None else next(model.parameters()).device.type
    with bar(len(sample_spec.samplers), "sampling", "sampler") as progress, \
            decode_precision(sample_spec.dtype, device_type):
        for sampler in sample_spec.samplers:
            rows.extend(_sampler_rows(model, tokenizer, sampler, sample_spec, prompts, prompt_ids, device,
                                      batch_size))
            progress.update(1)
    return rows


def decode_precision(dtype: str, device_type: str) -> contextlib.AbstractContextManager[Any]:
    """`sample.dtype` around decoding: `auto` leaves the caller's precision as it is (the runner samples under the
    run's autocast), `fp32` turns autocast off, `bf16` turns it on (bf16 matmuls, fp32 weights kept)."""
    if dtype == "auto":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def _sampler_rows(model: LanguageModel, tokenizer: Tokenizer, sampler: SamplerSpec, sample_spec: SampleSpec,
                  prompts: Sequence[str], prompt_ids: list[list[int]], device: torch.device | str | None,
                  batch_size: int) -> list[dict[str, Any]]:
    deterministic = not sampler_kind(sampler).sampling
    repeats = 1 if deterministic else sample_spec.num_samples
    if deterministic and sample_spec.num_samples > 1:
        log.info("%s is deterministic: one run per prompt instead of %d samples", sampler_name(sampler),
                 sample_spec.num_samples)
    jobs = [(p, rep) for p in range(len(prompts)) for rep in range(repeats)]  # (prompt, repeat)
    name, params, eos = sampler_name(sampler), dataclasses.asdict(sampler), tokenizer.eos_id
    rows: list[dict[str, Any]] = []
    for chunk_no, first in enumerate(range(0, len(jobs), batch_size)):
        chunk = jobs[first : first + batch_size]
        seed = sample_spec.seed + chunk_no
        started = time.perf_counter()
        outputs = generate(model, [prompt_ids[p] for p, _ in chunk], sampler, max_new_tokens=sample_spec.max_new_tokens,
                           eos_id=eos, pad_id=tokenizer.pad_id, seed=seed, device=device)
        wall_s = time.perf_counter() - started
        tokens_per_s = sum(len(ids) for out in outputs for ids in out) / max(wall_s, 1e-9)
        for (p, rep), out in zip(chunk, outputs):
            for r, new_ids in enumerate(out):
                rows.append({
                    "sampler": name, "sampler_params": params, "prompt": prompts[p], "index": rep * len(out) + r,
                    "text": tokenizer.decode(prompt_ids[p] + new_ids), "continuation": tokenizer.decode(new_ids),
                    "prompt_ids": prompt_ids[p], "new_ids": new_ids, "num_new_tokens": len(new_ids),
                    "ended_with_eos": bool(new_ids) and new_ids[-1] == eos, "tokens_per_s": tokens_per_s,
                    "seed": seed,
                })
    return rows
