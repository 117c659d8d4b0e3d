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
        self.stream_length = int(offsets[-1]) + num_docs  # every document followed by EOS
        self.eos_positions = offsets[1:] + np.arange(num_docs, dtype=np.int64)  # stream position of each EOS
        self.num_windows = max((self.stream_length - 1 - offset) // block_size, 0)

    def __len__(self) -> int:
        return self.num_windows

    @property
    def _tokens(self) -> np.ndarray:
        """The tokens as a plain array view: slicing a memmap object costs more than the copy (a property, so
        that pickling the dataset still sends the memory map's file, not its tokens)."""
        return np.asarray(self.split.tokens)

    def stream(self, start: int, stop: int) -> np.ndarray:
        """Stream tokens at positions [start, stop) as int64, (stop - start,)."""
        return self.rows(np.array([start], dtype=np.int64), stop - start)[0]

    def rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(len(starts), length) int64: the stream tokens at positions [s, s + length) for each s in `starts`.

        Vectorised over the batch: the stream positions of a row that are not EOS hold one contiguous run of
        tokens, starting at token s - E(s), where E(s) counts the EOS positions before s. One binary search per
        row end finds E, the EOS inside each row are scattered into a mask, and the runs are copied as slices of
        the memory map (no per-token index)."""
        starts = np.asarray(starts, dtype=np.int64)
        n = len(starts)
        tokens = self._tokens
        if not len(tokens):
            return np.full((n, length), self.eos_id, dtype=np.int64)
        if n and not (0 <= starts.min() and starts.max() + length <= self.stream_length):
            raise IndexError(f"rows of {length} from {starts.tolist()} leave the stream of {self.stream_length}")
        eos = self.eos_positions
        bounds = np.searchsorted(eos, np.concatenate((starts, starts + length)), side="left")
        first, counts = bounds[:n], bounds[n:] - bounds[:n]  # EOS before each row, EOS inside it
        begin, runs = (starts - first).tolist(), (length - counts).tolist()
        ids = np.empty((n, length), dtype=np.int64)
        if not counts.any():
            for r, b in enumerate(begin):
                ids[r] = tokens[b:b + length]
            return ids
        is_eos = np.zeros((n, length), dtype=bool)
        row = np.repeat(np.arange(n), counts)
        k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(first, counts)
        is_eos[row, eos[k] - starts[row]] = True
        ids[~is_eos] = np.concatenate([tokens[b:b + m] for b, m in zip(begin, runs)])  # row-major: each row's run
        ids[is_eos] = self.eos_id
        return ids

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Windows `indices` read together (`rows`); DataLoader and the Trainer fetch a batch this way."""
        index = np.asarray(indices, dtype=np.int64)
        if len(index) and not (0 <= index.min() and index.max() < self.num_windows):
            bad = index[(index < 0) | (index >= self.num_windows)][0]
            raise IndexError(f"window {bad} out of range for {self.num_windows} windows")
        seqs = torch.from_numpy(self.rows(self.offset + index * self.block_size, self.block_size + 1))
        return [{"input_ids": seq[:-1], "labels": seq[1:]} for seq in seqs]  # (T,), (T,) views of one array

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The collated batch of windows `indices` (what stacking their items gives), built in one piece:
        input_ids and labels (n, T)."""
        index = np.asarray(indices, dtype=np.int64)
        seqs = torch.from_numpy(self.rows(self.offset + index * self.block_size, self.block_size + 1))
        return {"input_ids": seqs[:, :-1].contiguous(), "labels": seqs[:, 1:].contiguous()}

    def num_targets(self, indices: Sequence[int]) -> int:
        """Scored labels of windows `indices`: every position of every window."""
        return len(indices) * self.block_size


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

    def __init__(self, split: TokenSplit, block_size: int, bos_id: int, eos_id: int, pad_id: int = 0) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.split = split
        self.block_size = block_size
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id  # of `batch` (collate_documents takes its own)

    def __len__(self) -> int:
        return self.split.num_docs

    @property
    def _tokens(self) -> np.ndarray:
        """Plain array views of the memory maps (cheaper to index than memmap objects; properties, so that pickling
        the dataset still sends the files, not the tokens)."""
        return np.asarray(self.split.tokens)

    @property
    def _offsets(self) -> np.ndarray:
        return np.asarray(self.split.doc_offsets, dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        """Input length of every item, (num_docs,): min(doc tokens + 1, block_size)."""
        return np.minimum(self.split.doc_lengths() + 1, self.block_size)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """`collate_documents(pad_id)` of items `indices`, built in one piece from the memory map: position j of
        row r holds seq_r[j] (input) and seq_r[j + 1] (label), where seq_r = BOS + document + EOS."""
        index = np.asarray(indices, dtype=np.int64)
        offsets = self._offsets
        starts = offsets[index]
        lengths = offsets[index + 1] - starts
        n = np.minimum(lengths + 1, self.block_size)  # inputs (= labels) of each row
        width = int(n.max()) if len(index) else 0
        tokens = self._tokens
        # column c holds token starts + c - 1, i.e. seq[c] for 1 <= c <= length (the ends are overwritten below)
        at = starts[:, None] + np.arange(-1, width, dtype=np.int64)[None, :]
        seq = np.take(tokens, at, mode="clip") if len(tokens) else np.zeros(at.shape, dtype=np.int64)
        rows = np.arange(len(index))
        input_ids = seq[:, :-1].astype(np.int64)
        labels = seq[:, 1:].astype(np.int64)
        input_ids[:, :1] = self.bos_id
        ends = lengths < n  # the EOS fits: label position `length`
        labels[rows[ends], lengths[ends]] = self.eos_id
        valid = np.arange(width, dtype=np.int64)[None, :] < n[:, None]
        np.putmask(input_ids, ~valid, self.pad_id)
        scored = valid
        if self.split.prompt_lens is not None:
            scored = valid & (np.arange(width)[None, :] >= np.asarray(self.split.prompt_lens)[index][:, None])
        np.putmask(labels, ~scored, IGNORE_INDEX)
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(valid.astype(np.int64)),
                "labels": torch.from_numpy(labels)}

    def _lengths(self, index: np.ndarray) -> np.ndarray:
        """Token counts of documents `index` (two reads of the offsets, not a pass over all of them)."""
        return self._offsets[index + 1] - self._offsets[index]

    def num_targets(self, indices: Sequence[int]) -> int:
        """Scored labels of items `indices` (no pads, no prompt or <sep>), from the lengths alone."""
        index = np.asarray(indices, dtype=np.int64)
        n = np.minimum(self._lengths(index) + 1, self.block_size)
        if self.split.prompt_lens is not None:
            n = n - np.minimum(np.asarray(self.split.prompt_lens)[index], n)
        return int(n.sum())

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
