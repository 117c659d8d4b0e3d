"""The transformer's decoding cache: per-layer keys and values in preallocated buffers, appended in place.

A `KVState` reads positions [0, num_past) of a `KVBuffers` (per layer K and V, each (B, H, capacity, hd)).
States derived from one another share buffers while they only append: the state whose `num_past` equals the
buffers' written `end` writes its new positions in place; any other state (a branch stepped from an older state)
copies its prefix into fresh buffers first. So every state stays valid after it is stepped or reordered, as the
decoding interface requires, while a loop that drops its old state neither concatenates nor allocates per token:

- appending writes into spare capacity (capacity doubles, capped at block_size, when it runs out);
- `reorder` (beams) gathers the rows into a buffer set of the same decoding lineage (`KVPool`) that no live state
  reads any more (states are tracked with weak references), so beam search ping-pongs between two buffer sets.

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
    """The buffer sets of one decoding lineage (a prefill and every state derived from it)."""

    def __init__(self) -> None:
        self.sets: list[KVBuffers] = []

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

    def __post_init__(self) -> None:
        if self.buffers is not None:
            self.buffers.users.add(self)

    @property
    def num_past(self) -> int:
        return self.mask.size(1)

    def layer(self, i: int) -> KV:
        """Layer i's (B, H, num_past, hd) keys and values (views of the buffers)."""
        assert self.buffers is not None
        k, v = self.buffers.layers[i]
        return k[:, :, : self.num_past], v[:, :, : self.num_past]

    def reorder(self, index: Tensor) -> "KVState":
        index = index.to(self.mask.device)
        mask, ids = self.mask.index_select(0, index), self.ids.index_select(0, index)
        if self.buffers is None:
            return KVState(mask, ids, None, self.pool, self.dense)
        n, src = self.num_past, self.buffers
        dst = self.pool.acquire(src, len(src.layers), index.numel(), src.capacity)
        for (k, v), (dk, dv) in zip(src.layers, dst.layers):
            torch.index_select(k[:, :, :n], 0, index, out=dk[:, :, :n])
            torch.index_select(v[:, :, :n], 0, index, out=dv[:, :, :n])
        dst.end = n
        return KVState(mask, ids, dst, self.pool, self.dense)


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
        capacity = min(self.block_size, max(need, 2 * (old.capacity if old is not None else 0), MIN_CAPACITY))
        new = self.state.pool.acquire(k, self.num_layers, k.size(0), max(capacity, need))
        if old is not None:
            for i in range(self.num_layers):
                for src, dst in zip(self.state.layer(i), new.layers[i]):
                    dst[:, :, : self.start].copy_(src)
        return new

    def result(self, mask: Tensor, ids: Tensor, dense: bool | None = None) -> KVState:
        assert self.buffers is not None
        self.buffers.end = mask.size(1)
        return KVState(mask, ids, self.buffers, self.state.pool, dense)

    def bound(self, layer: int) -> Callable[[Tensor, Tensor], KV]:
        return lambda k, v: self(layer, k, v)
