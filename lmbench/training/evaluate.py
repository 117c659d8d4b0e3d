"""Corpus-level evaluation: sums of NLL (nats) and of the units they cover, reduced once.

Every split is scored in full, never a handful of random batches:

- `packed` data: the split is one stream (each document followed by EOS, as in training); every token after
  the first is a target.
- `documents` data: each document is BOS + doc + EOS; the document's tokens and its EOS are targets, minus the
  prompt (prompt_story data), exactly as in training.

Transformers see at most `block_size` tokens: a sequence longer than that is scored with a sliding window of
`block_size` moved by `stride`; each window scores only the targets no earlier window scored, so every target
is scored once, with at least block_size - stride tokens of context (the HF "perplexity of fixed-length models"
recipe; the last window is aligned to the sequence end for the most context). Models that carry state
(`LanguageModel.carries_state`: rnn/lstm/gru) carry it over the whole sequence instead, run in `block_size`
chunks. A stream is cut into `batch_size` contiguous rows, each scored from a fresh state.

Reported (lm-evaluation-harness definitions; nats throughout):
loss = nll/tokens, ppl = exp(loss), bpb = nll/(ln 2 x bytes), bits_per_char = nll/(ln 2 x chars),
word_ppl = exp(nll/words), where bytes/chars/words are those of the split's raw text (`SplitStats`).

Per unit (held-out splits with units in the token cache: documents, or fixed-size chunks of a single-text
corpus): the NLL and target count of every unit, so that a report can bootstrap over units and pair two cells
on the same text (`UnitScores`; their sums are the split's totals). A document's EOS target belongs to its last
unit; prompt targets to none.

Distributed: the items (windows, documents, rows) are sharded over the processes by accelerate's
`prepare_data_loader`; per-item (nll, tokens) sums (and per-target NLL with unit ids) are gathered with
`gather_for_metrics`, which drops the duplicates that pad the last batch, and summed in float64.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lmbench.data.batching import IGNORE_INDEX
from lmbench.models.base import LanguageModel
from lmbench.progress import bar
from lmbench.spec import ExperimentSpec

LN2 = math.log(2.0)


@dataclass(frozen=True)
class UnitScores:
    """Per evaluation unit of a split: the cache's unit table (doc, chunk, tokens in the cache, bytes, chars, words)
    and the NLL (nats) and scored targets of each unit."""

    table: np.ndarray  # (num_units, 6) int64, lmbench.data.cache.UNIT_COLUMNS
    nll_nats: np.ndarray  # (num_units,) float64
    num_targets: np.ndarray  # (num_units,) int64

    def frame(self) -> Any:
        """A pandas DataFrame: doc, chunk, nll_nats, tokens (scored targets), bytes, chars, words."""
        import pandas as pd

        t = self.table
        return pd.DataFrame({"doc": t[:, 0], "chunk": t[:, 1], "nll_nats": self.nll_nats,
                             "tokens": self.num_targets, "bytes": t[:, 3], "chars": t[:, 4], "words": t[:, 5]})


@dataclass(frozen=True)
class EvalResult:
    """Sums over a whole split: NLL in nats, scored tokens, and bytes/chars/words of the text they cover."""

    nll_nats: float
    num_tokens: int
    num_bytes: int = 0
    num_chars: int = 0
    num_words: int = 0
    unk_rate: float | None = None  # share of the split's tokens that are <unk> (word tokenizers); None = none
    units: UnitScores | None = None  # per-unit sums (held-out splits whose cache has units)

    @property
    def loss(self) -> float:
        """Mean NLL per token, nats."""
        return self.nll_nats / self.num_tokens if self.num_tokens else math.nan

    @property
    def ppl(self) -> float:
        return _exp(self.loss)

    @property
    def bpb(self) -> float:
        """Bits per UTF-8 byte of the raw text (tokenizer-independent)."""
        return self.nll_nats / (LN2 * self.num_bytes) if self.num_bytes else math.nan

    @property
    def bits_per_char(self) -> float:
        return self.nll_nats / (LN2 * self.num_chars) if self.num_chars else math.nan

    @property
    def word_ppl(self) -> float:
        """exp(NLL / words): lm-eval's word_perplexity (words = whitespace-separated words of the raw text)."""
        return _exp(self.nll_nats / self.num_words) if self.num_words else math.nan

    def metrics(self, prefix: str) -> dict[str, float | int]:
        """{prefix_loss, prefix_ppl, prefix_bpb, prefix_bits_per_char, prefix_word_ppl, prefix_nll_nats,
        prefix_tokens} for summary.json and metrics.jsonl."""
        unk = {} if self.unk_rate is None else {f"{prefix}_unk_rate": self.unk_rate}
        return {
            **unk,
            f"{prefix}_loss": self.loss,
            f"{prefix}_ppl": self.ppl,
            f"{prefix}_bpb": self.bpb,
            f"{prefix}_bits_per_char": self.bits_per_char,
            f"{prefix}_word_ppl": self.word_ppl,
            f"{prefix}_nll_nats": self.nll_nats,
            f"{prefix}_tokens": self.num_tokens,
        }


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# ------------------------------------------------------------------------------------------- item layout
def window_spans(num_positions: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over `num_positions` input positions: (begin, end, score_from) per window.

    Feed positions [begin, end) and score the targets of [score_from, end); the scored ranges tile
    [0, num_positions) exactly once. Windows start every `stride` positions; the last one ends at
    `num_positions` and starts block_size earlier (most context).
    """
    if not 0 < stride <= block_size:
        raise ValueError(f"stride must be in (0, block_size={block_size}], got {stride}")
    spans: list[tuple[int, int, int]] = []
    begin, scored = 0, 0
    while scored < num_positions:
        end = min(begin + block_size, num_positions)
        spans.append((max(0, end - block_size), end, scored))
        scored = end
        begin += stride
    return spans


def row_spans(num_positions: int, num_rows: int) -> list[tuple[int, int]]:
    """Cut [0, num_positions) into `num_rows` contiguous, nearly equal (begin, end) rows (no empty row)."""
    num_rows = max(1, min(num_rows, num_positions))
    bounds = np.linspace(0, num_positions, num_rows + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def stream_arrays(split: Any, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) int64 of the split as one stream: each document then EOS; prompt targets -> -100."""
    tokens = np.asarray(split.tokens, dtype=np.int64)
    offsets = np.asarray(split.doc_offsets, dtype=np.int64)
    stream = np.insert(tokens, offsets[1:], eos_id)  # EOS after every document
    targets = stream[1:].copy()
    prompt_lens = getattr(split, "prompt_lens", None)
    if prompt_lens is not None:
        starts = offsets[:-1] + np.arange(len(offsets) - 1)  # document starts in the stream
        for start, length in zip(starts, np.asarray(prompt_lens, dtype=np.int64)):
            lo, hi = max(start - 1, 0), start - 1 + length  # targets at stream positions start..start+len-1
            targets[lo:max(hi, lo)] = IGNORE_INDEX
    return stream[:-1], targets


def document_arrays(split: Any, index: int, bos_id: int, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) int64 of BOS + doc + EOS; the prompt's targets are -100."""
    doc = np.asarray(split.doc(index), dtype=np.int64)
    seq = np.concatenate([[bos_id], doc, [eos_id]]).astype(np.int64)
    targets = seq[1:].copy()
    prompt_lens = getattr(split, "prompt_lens", None)
    if prompt_lens is not None:
        targets[: int(prompt_lens[index])] = IGNORE_INDEX
    return seq[:-1], targets


def stream_units(split: Any) -> np.ndarray:
    """(num_targets,) int64 unit of each target of `stream_arrays` (EOS: the unit of the document it ends)."""
    units = np.insert(split.token_units(), np.asarray(split.doc_offsets, dtype=np.int64)[1:], split.doc_last_unit())
    return units[1:]


def document_units(split: Any, index: int, token_units: np.ndarray, last_unit: np.ndarray) -> np.ndarray:
    """(len(doc) + 1,) int64 unit of each target of `document_arrays` (doc tokens, then EOS)."""
    a, b = int(split.doc_offsets[index]), int(split.doc_offsets[index + 1])
    return np.append(token_units[a:b], last_unit[index])


Sequence3 = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # inputs, targets, target units (or None)


class SpanItems(Dataset):
    """Items (sequence id, begin, end, score_from) cut from sequences that `get_sequence(id)` builds lazily.

    An item is {"input_ids": (t,), "labels": (t,)} with labels before `score_from` set to -100, plus "units" (t,)
    (-1 where a label is -100) when the sequences carry unit ids.
    """

    def __init__(self, spans: list[tuple[int, int, int, int]], get_sequence: Callable[[int], Sequence3]) -> None:
        self.spans, self.get_sequence = spans, get_sequence
        self._cache: tuple[int, Sequence3] | None = None

    def __len__(self) -> int:
        return len(self.spans)

    def _sequence(self, seq_id: int) -> Sequence3:
        if self._cache is None or self._cache[0] != seq_id:
            self._cache = (seq_id, self.get_sequence(seq_id))
        return self._cache[1]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        seq_id, begin, end, score_from = self.spans[i]
        inputs, targets, units = self._sequence(seq_id)
        labels = torch.from_numpy(targets[begin:end].copy())
        labels[: max(0, score_from - begin)] = IGNORE_INDEX
        item = {"input_ids": torch.from_numpy(inputs[begin:end].copy()), "labels": labels}
        if units is not None:
            item["units"] = torch.from_numpy(units[begin:end].copy()).masked_fill(labels == IGNORE_INDEX, -1)
        return item


def pad_items(items: list[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the longest item: input_ids with pad_id, labels with -100 (units with -1) -> (B, T) each."""
    length = max(int(item["input_ids"].numel()) for item in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    units = torch.full((len(items), length), -1, dtype=torch.long) if "units" in items[0] else None
    for row, item in enumerate(items):
        n = item["input_ids"].numel()
        ids[row, :n], labels[row, :n] = item["input_ids"], item["labels"]
        if units is not None:
            units[row, :n] = item["units"]
    batch = {"input_ids": ids, "labels": labels}
    return batch if units is None else {**batch, "units": units}


def build_items(split: Any, *, mode: str, recurrent: bool, block_size: int, stride: int, num_rows: int,
                bos_id: int, eos_id: int, whole: bool = False) -> SpanItems:
    """The evaluation items of `split` (see the module docstring), longest first to bound padding; with unit ids
    when the split has units. `whole`: every document in one piece (models that must see it all at once)."""
    has_units = getattr(split, "units", None) is not None
    if mode == "packed":
        inputs, targets = stream_arrays(split, eos_id)
        stream = (inputs, targets, stream_units(split) if has_units else None)
        get: Callable[[int], Sequence3] = lambda _: stream  # noqa: E731  (one sequence: the whole stream)
        lengths = [len(inputs)]
    elif mode == "documents":
        token_units, last_unit = (split.token_units(), split.doc_last_unit()) if has_units else (None, None)

        def get(i: int) -> Sequence3:
            units = document_units(split, i, token_units, last_unit) if has_units else None
            return (*document_arrays(split, i, bos_id, eos_id), units)

        offsets = np.asarray(split.doc_offsets, dtype=np.int64)
        lengths = (np.diff(offsets) + 1).tolist()  # BOS + doc (inputs), i.e. doc + EOS (targets)
    else:
        raise ValueError(f"unknown eval mode {mode!r}")
    spans: list[tuple[int, int, int, int]] = []
    for seq_id, n in enumerate(lengths):
        if recurrent and mode == "packed":
            spans += [(seq_id, a, b, a) for a, b in row_spans(n, num_rows)]
        elif recurrent or (whole and mode == "documents"):
            spans.append((seq_id, 0, n, 0))
        else:
            spans += [(seq_id, a, b, s) for a, b, s in window_spans(n, block_size, stride)]
    spans.sort(key=lambda s: s[2] - s[1], reverse=True)  # stable: equal lengths keep their order
    return SpanItems(spans, get)


# ------------------------------------------------------------------------------------------- scoring
def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """(B, T, V) logits, (B, T) labels -> (B, T) NLL in nats (float32; 0 where labels == -100)."""
    flat = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return flat.view(labels.shape)


def target_nll(model: LanguageModel, batch: dict[str, Tensor], *, recurrent: bool, chunk: int) -> Tensor:
    """(B, T) float64 NLL (nats) of every target of a right-padded batch, 0 where labels are -100.

    Transformers: one forward (right pads cannot affect earlier positions under causal attention).
    Recurrent models: `chunk`-token pieces with the state carried from piece to piece.
    """
    ids, labels = batch["input_ids"], batch["labels"]
    if not recurrent:
        return token_nll(model(ids), labels).double()
    pieces = []
    state = model.init_state(ids.size(0), ids.device)
    for start in range(0, ids.size(1), chunk):
        piece = slice(start, start + chunk)
        logits, state = model.forward_with_state(ids[:, piece], state)
        pieces.append(token_nll(logits, labels[:, piece]).double())
    return torch.cat(pieces, dim=1)


def row_sums(nll: Tensor, labels: Tensor) -> Tensor:
    """(B, T) target NLL and labels -> (B, 2) float64 [nll_nats, scored tokens] per row."""
    return torch.stack([nll.sum(1), (labels != IGNORE_INDEX).sum(1).double()], dim=1)


class UnitTotals:
    """Per-unit NLL and target sums on the model's device, from (B, T) target NLL and unit ids (-1: none)."""

    def __init__(self, table: np.ndarray, device: torch.device) -> None:
        self.table = table
        self.nll = torch.zeros(len(table), dtype=torch.float64, device=device)
        self.count = torch.zeros(len(table), dtype=torch.float64, device=device)

    def add(self, nll: Tensor, units: Tensor) -> None:
        keep = units >= 0
        index = units[keep]
        self.nll.index_add_(0, index, nll[keep])
        self.count.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))

    def result(self) -> UnitScores:
        return UnitScores(self.table, self.nll.cpu().numpy(), self.count.cpu().numpy().round().astype(np.int64))


def _batches(items: SpanItems, batch_size: int, pad_id: int, accelerator: Any) -> Iterator[dict[str, Tensor]]:
    cuda = accelerator is not None and accelerator.device.type == "cuda"
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=lambda b: pad_items(b, pad_id),
                        pin_memory=cuda)  # pinned batches copy to the GPU asynchronously (non_blocking)
    if accelerator is None:
        yield from loader
        return
    from accelerate.data_loader import prepare_data_loader

    yield from prepare_data_loader(loader, accelerator.device, num_processes=accelerator.num_processes,
                                   process_index=accelerator.process_index, put_on_device=True, rng_types=None,
                                   even_batches=True, non_blocking=cuda)


@torch.no_grad()
def evaluate_split(
    model: LanguageModel,
    split: Any,
    *,
    mode: str = "packed",
    block_size: int,
    stride: int | None = None,
    batch_size: int = 16,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    accelerator: Any = None,
    autocast: Any = None,
) -> EvalResult:
    """Score every target of `split` (a TokenSplit) once; sums over all processes when `accelerator` is given.

    `model` is the bare LanguageModel (unwrapped); it is put in eval mode and restored afterwards. `batch_size`
    is the global number of items per batch (and the number of rows a recurrent model cuts a stream into);
    each process takes batch_size // num_processes of them. `autocast` is a context-manager factory
    (e.g. `accelerator.autocast`) for mixed precision; None runs in the parameters' dtype.
    """
    recurrent = model.carries_state
    stride = stride or max(1, block_size // 2)
    items = build_items(split, mode=mode, recurrent=recurrent, block_size=block_size, stride=min(stride, block_size),
                        num_rows=batch_size, bos_id=bos_id, eos_id=eos_id,
                        whole=getattr(model, "whole_sequences", False))
    num_processes = accelerator.num_processes if accelerator is not None else 1
    per_process = max(1, batch_size // num_processes)
    was_training = model.training
    model.eval()
    total: Tensor | None = None  # on the model's device: one copy to the host at the end, not one per batch
    per_unit: UnitTotals | None = None
    main = accelerator is None or accelerator.is_main_process
    progress = bar(math.ceil(len(items) / (per_process * num_processes)), "evaluating", "batch", main=main)
    try:
        for batch in _batches(items, per_process, pad_id, accelerator):
            with autocast() if autocast is not None else contextlib.nullcontext():
                nll = target_nll(model, batch, recurrent=recurrent, chunk=block_size)
            sums = row_sums(nll, batch["labels"])
            units = batch.get("units")
            if accelerator is not None:
                sums = accelerator.gather_for_metrics(sums)
                if units is not None:  # rows of different lengths on each process: pad, then gather
                    nll = accelerator.gather_for_metrics(accelerator.pad_across_processes(nll, dim=1))
                    units = accelerator.gather_for_metrics(accelerator.pad_across_processes(units, dim=1,
                                                                                            pad_index=-1))
            if units is not None:
                per_unit = per_unit or UnitTotals(split.units, nll.device)
                per_unit.add(nll, units)
            total = sums.sum(0) if total is None else total + sums.sum(0)
            progress.update(1)
    finally:
        progress.close()
        model.train(was_training)
    total = total.cpu() if total is not None else torch.zeros(2, dtype=torch.float64)
    stats = split.stats
    return EvalResult(float(total[0]), int(round(float(total[1]))), int(stats.num_bytes), int(stats.num_chars),
                      int(stats.num_words), units=None if per_unit is None else per_unit.result())


# ------------------------------------------------------------------------------------------- one cell
SPLIT_PREFIX = {"train": "train", "validation": "val", "test": "test"}  # metric names: val_loss, test_bpb, ...


class Evaluator:
    """Full passes over one cell's splits with its data and eval settings; used for the periodic evaluations
    during training and the final one alike, so both score the same targets the same way.

    `<unk>` shares (word tokenizers) are counted once per split, the first time the split is evaluated: they
    depend on the tokens only, not on the model.
    """

    def __init__(self, splits: dict[str, Any], tokenizer: Any, spec: ExperimentSpec, accelerator: Any = None) -> None:
        self.splits, self.tokenizer, self.accelerator = splits, tokenizer, accelerator
        self.data, self.eval = spec.data, spec.eval
        self._unk_rates: dict[str, float | None] = {}

    def evaluate(self, model: LanguageModel, split_names: list[str]) -> dict[str, EvalResult]:
        """Results of the named splits that exist and have tokens (all processes take part), in the given order."""
        tok, acc = self.tokenizer, self.accelerator
        results = {}
        for name in split_names:
            split = self.splits.get(name)
            if split is None or split.stats.num_tokens == 0:
                continue
            result = evaluate_split(model, split, mode=self.data.batching, block_size=self.data.block_size,
                                    stride=self.eval.stride, batch_size=self.eval.batch_size, bos_id=tok.bos_id,
                                    eos_id=tok.eos_id, pad_id=tok.pad_id, accelerator=acc,
                                    autocast=None if acc is None else acc.autocast)
            results[name] = replace(result, unk_rate=self.unk_rate(name))
        return results

    def unk_rate(self, name: str) -> float | None:
        """Share of split `name`'s tokens that are `<unk>`; None when the tokenizer has no separate `<unk>`.

        `<unk>` targets are cheap to predict but stand for whole words, so bits per byte flatters models that
        use them; reports show the share beside the metrics."""
        if name not in self._unk_rates:
            tok, split = self.tokenizer, self.splits[name]
            if tok.unk_id in (tok.eos_id, tok.pad_id, tok.bos_id):
                self._unk_rates[name] = None
            else:
                unk = int(np.count_nonzero(np.asarray(split.tokens) == tok.unk_id))
                self._unk_rates[name] = unk / max(1, split.stats.num_tokens)
        return self._unk_rates[name]


def flatten_results(results: dict[str, EvalResult], prefix: str = "") -> dict[str, Any]:
    """{val_loss, val_ppl, ..., test_bpb, ...} of several splits (with `prefix`, e.g. untrained_val_loss)."""
    out: dict[str, Any] = {}
    for name, result in results.items():
        out.update(result.metrics(prefix + SPLIT_PREFIX.get(name, name)))
    return out
