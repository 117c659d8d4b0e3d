"""Batches from token splits (pure: no model, no IO beyond the memory map).

Two modes (`data.batching`):

- `packed`: the split is one stream ``doc0 EOS doc1 EOS ...``; item i is the window [i*T, i*T + T] of T + 1
  stream tokens, giving `input_ids` (T,) and `labels` (T,) shifted by one. Windows tile the stream in order, so
  sequential reading (StreamSampler) lets recurrent models carry state from one batch to the next.
- `documents`: item i is ``BOS + doc_i + EOS`` truncated to block_size + 1 tokens; `collate_documents` pads a
  batch on the right to its longest item. Labels are -100 on pads and, for prompt/story data, on the prompt and
  `<sep>`, so only story tokens (and the final EOS) are scored.

Labels are already shifted: labels[t] is the target of position t, and -100 is never scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lmbench.data.cache import TokenSplit

IGNORE_INDEX = -100


class PackedDataset(Dataset):
    """Contiguous windows of `block_size` tokens over the EOS-separated stream of a split.

    The stream is never materialised: a window's positions are mapped to (document, offset) with a binary search
    over the document starts, so memory stays at the size of the offsets. `offset` shifts every window by that
    many stream positions (e.g. a different offset per epoch sees other window boundaries).
    """

    def __init__(self, split: TokenSplit, block_size: int, eos_id: int, offset: int = 0) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.split = split
        self.block_size = block_size
        self.eos_id = eos_id
        self.offset = offset
        offsets = np.asarray(split.doc_offsets, dtype=np.int64)
        num_docs = len(offsets) - 1
        self.doc_offsets = offsets
        self.doc_starts = offsets[:-1] + np.arange(num_docs, dtype=np.int64)  # stream position of each doc's start
        self.doc_lengths = np.diff(offsets)
        self.stream_length = int(offsets[-1]) + num_docs  # every document followed by EOS
        self.num_windows = max((self.stream_length - 1 - offset) // block_size, 0)

    def __len__(self) -> int:
        return self.num_windows

    def stream(self, start: int, stop: int) -> np.ndarray:
        """Stream tokens at positions [start, stop) as int64, (stop - start,)."""
        positions = np.arange(start, stop, dtype=np.int64)
        doc = np.searchsorted(self.doc_starts, positions, side="right") - 1
        within = positions - self.doc_starts[doc]
        is_eos = within == self.doc_lengths[doc]
        tokens = self.split.tokens
        index = np.minimum(self.doc_offsets[doc] + within, max(len(tokens) - 1, 0))
        ids = np.asarray(tokens[index], dtype=np.int64) if len(tokens) else np.zeros_like(positions)
        return np.where(is_eos, self.eos_id, ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.num_windows:
            raise IndexError(f"window {i} out of range for {self.num_windows} windows")
        start = self.offset + i * self.block_size
        seq = torch.from_numpy(self.stream(start, start + self.block_size + 1))
        return {"input_ids": seq[:-1], "labels": seq[1:]}  # (T,), (T,)


class StreamSampler(Sampler[int]):
    """Window order in which row r of consecutive batches reads a contiguous stretch of the stream (TBPTT).

    The windows are cut into `batch_size * num_processes` lanes of `steps` consecutive windows each; batch b
    holds window b of every lane. Use it with ``DataLoader(dataset, batch_size=batch_size, sampler=...)``.
    With `num_processes` > 1 (accelerate hands global batches to processes round-robin), process p's row r is
    lane p * batch_size + r, so rows stay contiguous on every process. Leftover windows (fewer than one per lane)
    are dropped.
    """

    def __init__(self, num_windows: int, batch_size: int, num_processes: int = 1) -> None:
        if batch_size < 1 or num_processes < 1:
            raise ValueError("batch_size and num_processes must be >= 1")
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.num_lanes = batch_size * num_processes
        self.steps = num_windows // self.num_lanes  # batches per process and epoch

    def __iter__(self) -> Iterator[int]:
        for step in range(self.steps):
            for process in range(self.num_processes):
                for row in range(self.batch_size):
                    yield (process * self.batch_size + row) * self.steps + step

    def __len__(self) -> int:
        return self.steps * self.num_lanes


class DocumentDataset(Dataset):
    """``BOS + document + EOS`` per item, truncated to `block_size` + 1 tokens, as (input_ids, labels) with
    labels -100 on the prompt and `<sep>` (prompt/story data). Items have different lengths; see
    `collate_documents`."""

    def __init__(self, split: TokenSplit, block_size: int, bos_id: int, eos_id: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.split = split
        self.block_size = block_size
        self.bos_id = bos_id
        self.eos_id = eos_id

    def __len__(self) -> int:
        return self.split.num_docs

    @property
    def lengths(self) -> np.ndarray:
        """Input length of every item, (num_docs,): min(doc tokens + 1, block_size)."""
        return np.minimum(self.split.doc_lengths() + 1, self.block_size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        doc = np.asarray(self.split.doc(i), dtype=np.int64)
        seq = np.concatenate(([self.bos_id], doc, [self.eos_id]))[: self.block_size + 1]
        labels = seq[1:].copy()
        if self.split.prompt_lens is not None:
            labels[: int(self.split.prompt_lens[i])] = IGNORE_INDEX  # targets seq[1..P] are prompt + <sep>
        return {"input_ids": torch.from_numpy(seq[:-1].copy()), "labels": torch.from_numpy(labels)}


def collate_documents(items: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad items to the longest: input_ids (B, T) with pad_id, attention_mask (B, T) 1 = real,
    labels (B, T) with -100 on pads (and wherever the item already had -100)."""
    num_rows, length = len(items), max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((num_rows, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((num_rows, length), dtype=torch.long)
    labels = torch.full((num_rows, length), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        attention_mask[row, :n] = 1
        labels[row, :n] = item["labels"]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of documents of similar length (less padding), as a batch sampler.

    Each epoch: shuffle the indices (seeded by seed and epoch), cut them into pools of `batch_size *
    pool_batches`, sort each pool by length (longest first), cut pools into batches and shuffle the batch order.
    Without `shuffle`, indices are taken in order and batches keep their order. Call `set_epoch` per epoch.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 50, drop_last: bool = False) -> None:
        if batch_size < 1 or pool_batches < 1:
            raise ValueError("batch_size and pool_batches must be >= 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        pool_size = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), pool_size):
            pool = order[start:start + pool_size]
            pool = pool[np.argsort(-self.lengths[pool], kind="stable")]
            batches += [pool[i:i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from batches

    def __len__(self) -> int:
        pools, rest = divmod(len(self.lengths), self.batch_size * self.pool_batches)
        full = pools * self.pool_batches + rest // self.batch_size  # only the last pool can end short
        return full + (0 if self.drop_last or rest % self.batch_size == 0 else 1)
