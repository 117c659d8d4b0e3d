"""The transformer's decoding cache: per-layer keys and values in preallocated buffers, appended in place.

A `KVState` reads positions [0, num_past) of a `KVBuffers` (per layer K and V, each (B, H, capacity, hd)).
States derived from one another share buffers while they only append: the state whose `num_past` equals the
buffers' written `end` writes its new positions in place; any other state (a branch stepped from an older state)
copies its prefix into fresh buffers first. So every state stays valid after it is stepped or reordered, as the
decoding interface requires, while a loop that drops its old state neither concatenates nor allocates per token:

- appending writes into spare capacity: the first buffers hold the longest length the decoding loop announced
  (`init_state(..., max_length)`, capped at block_size), so a loop that announces it never grows them; without
  it capacity doubles, capped at block_size, when it runs out (each growth copies the whole cache);
- `reorder` (beams) gathers the rows into a buffer set of the same decoding lineage (`KVPool`) that no live state
  reads any more (states are tracked with weak references), so a loop that keeps old states ping-pongs between
  two buffer sets;
- `reorder(index, reuse=True)` (beam search, which drops the old state) moves no row that can stay: a sequence's
  first continuation keeps its parent's buffer row, and only each further copy of a parent is written, into the
  row of a sequence that was dropped. Rows and sequences then differ; `rows` maps one to the other, and the
  transformer runs its blocks in buffer order and puts the rows back in sequence order before the head. With five
  beams about a fifth of the rows are copied per token instead of all of them (measured on GPT-2's 30M shape).

Decoding is inference: backpropagating through several `step` calls is not supported (the in-place appends bump
the buffers' autograd version, and backward raises). Training uses `forward`, which has no cache.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

KV = tuple[Tensor, Tensor]  # keys, values: (B, H, T, hd) each
MIN_CAPACITY = 32


class KVBuffers:
    """Per-layer (K, V) buffers of one shape, how far they are written, and the live states that read them."""

    def __init__(self, layers: list[KV]) -> None:
        self.layers = layers
        self.end = 0
        self.users: weakref.WeakSet[KVState] = weakref.WeakSet()

    @property
    def batch_size(self) -> int:
        return self.layers[0][0].size(0)

    @property
    def capacity(self) -> int:
        return self.layers[0][0].size(2)

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0][0].dtype

    def fits(self, like: "KVBuffers | Tensor", batch_size: int, capacity: int) -> bool:
        ref = like.layers[0][0] if isinstance(like, KVBuffers) else like
        k = self.layers[0][0]
        return (k.size(0) == batch_size and k.size(2) == capacity and k.size(1) == ref.size(1)
                and k.size(3) == ref.size(3) and k.dtype == ref.dtype and k.device == ref.device)


class KVPool:
    """The buffer sets of one decoding lineage (a prefill and every state derived from it), and the capacity
    its first buffers get (`reserve`: the longest length announced; 0 when none was)."""

    def __init__(self, reserve: int = 0) -> None:
        self.sets: list[KVBuffers] = []
        self.reserve = reserve

    def acquire(self, like: KVBuffers | Tensor, num_layers: int, batch_size: int, capacity: int) -> KVBuffers:
        """Buffers no live state reads, shaped like `like` (buffers, or one layer's new (B, H, t, hd) keys) with
        `batch_size` rows and `capacity` positions: reused when free, otherwise allocated. Free sets of other
        shapes are released."""
        self.sets = [b for b in self.sets if len(b.users) or b.fits(like, batch_size, capacity)]
        for buffers in self.sets:
            if not len(buffers.users):
                buffers.end = 0
                return buffers
        ref = like.layers[0][0] if isinstance(like, KVBuffers) else like
        shape = (batch_size, ref.size(1), capacity, ref.size(3))
        layers = [(ref.new_empty(shape), ref.new_empty(shape)) for _ in range(num_layers)]
        buffers = KVBuffers(layers)
        self.sets.append(buffers)
        return buffers


@dataclass(eq=False)
class KVState:
    """The cache (or None before the first step and past block_size), the (B, T_past) 0/1 mask and the ids
    consumed so far (decoding past block_size re-encodes a cropped window from them)."""

    mask: Tensor
    ids: Tensor
    buffers: KVBuffers | None = None
    pool: KVPool = field(default_factory=KVPool)
    dense: bool | None = None  # the mask is all ones (True), has a pad (False), unknown (None): known, decoding
    # skips a host-synchronising mask.all() per token
    rows: Tensor | None = None  # (B,) the buffer row of each sequence (mask/ids row); None: row i is sequence i

    def __post_init__(self) -> None:
        if self.buffers is not None:
            self.buffers.users.add(self)
        self._order: Tensor | None = None

    @property
    def order(self) -> Tensor | None:
        """(B,) the sequence in each buffer row (the inverse of `rows`), or None when they are the same."""
        if self.rows is not None and self._order is None:
            self._order = torch.argsort(self.rows)
        return self._order

    @property
    def num_past(self) -> int:
        return self.mask.size(1)

    def layer(self, i: int) -> KV:
        """Layer i's (B, H, num_past, hd) keys and values (views of the buffers)."""
        assert self.buffers is not None
        k, v = self.buffers.layers[i]
        return k[:, :, : self.num_past], v[:, :, : self.num_past]

    def reorder(self, index: Tensor, reuse: bool = False) -> "KVState":
        """Row i of the result is sequence index[i] of this state. This state stays valid, unless `reuse`: the
        caller drops it, and the rows are rearranged in its own buffers (see the module docstring)."""
        index = index.to(self.mask.device)
        mask, ids = self.mask.index_select(0, index), self.ids.index_select(0, index)
        if self.buffers is None:
            return KVState(mask, ids, None, self.pool, self.dense)
        n, src = self.num_past, self.buffers
        if reuse and index.numel() == src.batch_size and src.end == n and len(src.users) == 1:
            return KVState(mask, ids, src, self.pool, self.dense, self._rows_in_place(index.tolist()))
        if self.rows is not None:
            index = self.rows.index_select(0, index)  # sequences -> their buffer rows
        dst = self.pool.acquire(src, len(src.layers), index.numel(), src.capacity)
        for (k, v), (dk, dv) in zip(src.layers, dst.layers):
            torch.index_select(k[:, :, :n], 0, index, out=dk[:, :, :n])
            torch.index_select(v[:, :, :n], 0, index, out=dv[:, :, :n])
        dst.end = n
        return KVState(mask, ids, dst, self.pool, self.dense)

    def _rows_in_place(self, parents: list[int]) -> Tensor | None:
        """The buffer row of each new sequence (sequence i continues sequence parents[i]): the first continuation
        of a sequence keeps its row; each further one gets the row of a sequence with no continuation, into which
        the parent's keys and values are copied (a dropped row is never a parent's, so no copy reads a row that
        another one writes). None when every sequence keeps its own row."""
        assert self.buffers is not None
        old = list(range(len(parents))) if self.rows is None else self.rows.tolist()
        new: list[int | None] = [None] * len(parents)
        kept: set[int] = set()
        for i, p in enumerate(parents):
            if old[p] not in kept:
                new[i] = old[p]
                kept.add(old[p])
        free = [r for r in old if r not in kept]
        n = self.num_past
        for i, p in enumerate(parents):
            if new[i] is None:
                new[i] = row = free.pop()
                for k, v in self.buffers.layers:
                    k[row, :, :n].copy_(k[old[p], :, :n])
                    v[row, :, :n].copy_(v[old[p], :, :n])
        if new == list(range(len(parents))):
            return None
        return torch.tensor(new, device=self.mask.device)


class KVWriter:
    """Appends one step's new keys and values to `state`'s cache, layer by layer; `result` is the next state.

    Called as `writer(layer, k, v)` with (B, H, t, hd) new keys/values -> that layer's keys/values for all
    num_past + t positions (views of the buffers)."""

    def __init__(self, state: KVState, num_layers: int, block_size: int) -> None:
        self.state, self.num_layers, self.block_size = state, num_layers, block_size
        self.buffers: KVBuffers | None = None
        self.start = state.num_past

    def __call__(self, layer: int, k: Tensor, v: Tensor) -> KV:
        if layer == 0:
            self.buffers = self._buffers_for(k)
        assert self.buffers is not None
        stop = self.start + k.size(2)
        kb, vb = self.buffers.layers[layer]
        kb[:, :, self.start:stop] = k
        vb[:, :, self.start:stop] = v
        return kb[:, :, :stop], vb[:, :, :stop]

    def _buffers_for(self, k: Tensor) -> KVBuffers:
        """The state's own buffers when it owns their written end and they have room; else fresh ones holding a
        copy of the prefix."""
        old, need = self.state.buffers, self.start + k.size(2)
        if old is not None and old.end == self.start and old.capacity >= need and old.dtype == k.dtype:
            return old
        grown = 2 * old.capacity if old is not None else max(self.state.pool.reserve, MIN_CAPACITY)
        capacity = min(self.block_size, max(need, grown))
        new = self.state.pool.acquire(k, self.num_layers, k.size(0), max(capacity, need))
        if old is not None:
            for i in range(self.num_layers):
                for src, dst in zip(self.state.layer(i), new.layers[i]):
                    dst[:, :, : self.start].copy_(src)
        return new

    def result(self, mask: Tensor, ids: Tensor, dense: bool | None = None) -> KVState:
        assert self.buffers is not None
        self.buffers.end = mask.size(1)
        return KVState(mask, ids, self.buffers, self.state.pool, dense, self.state.rows)

    def bound(self, layer: int) -> Callable[[Tensor, Tensor], KV]:
        return lambda k, v: self(layer, k, v)
