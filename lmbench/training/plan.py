"""Which batches each optimizer step reads (the training side of the data: lmbench.data builds the splits).

Each optimizer step consumes global batch `step` of a seeded, per-epoch order (shuffled windows or documents,
length buckets, or StreamSampler lanes for recurrent models on packed data), so the data position is a pure
function of the step, and 1 process or N processes see the same global batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmbench.spec import ExperimentSpec


@dataclass
class BatchPlan:
    """Which dataset items form global batch `index` of epoch `epoch`: a pure, seeded function.

    kind: shuffle (a permutation per epoch), stream (StreamSampler lanes, same every epoch) or bucket
    (LengthBucketSampler batches per epoch). Incomplete global batches are dropped.
    """

    kind: str
    num_items: int
    batch_size: int
    seed: int
    lengths: np.ndarray | None = None
    _cache: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        if self.kind == "bucket":
            from lmbench.data.batching import LengthBucketSampler

            return len(LengthBucketSampler(self.lengths, self.batch_size, seed=self.seed, drop_last=True))
        return self.num_items // self.batch_size  # shuffle; stream: lanes of num_items // batch_size windows

    def batch(self, epoch: int, index: int) -> np.ndarray:
        order = self._order(epoch)
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def _order(self, epoch: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.kind == "shuffle":
            order = np.random.default_rng((self.seed, epoch)).permutation(self.num_items)
        elif self.kind == "stream":
            from lmbench.data.batching import StreamSampler

            order = np.fromiter(iter(StreamSampler(self.num_items, self.batch_size)), dtype=np.int64)
        else:
            from lmbench.data.batching import LengthBucketSampler

            sampler = LengthBucketSampler(self.lengths, self.batch_size, shuffle=True, seed=self.seed, drop_last=True)
            sampler.set_epoch(epoch)
            order = np.concatenate([np.asarray(b, dtype=np.int64) for b in sampler] or [np.zeros(0, np.int64)])
        self._cache = (epoch, order)
        return order


@dataclass
class TrainData:
    """The training split as the Trainer reads it: items, which items form each global batch, how a micro-batch
    is collated, and whether recurrent state runs on from one step to the next."""

    dataset: Any
    plan: BatchPlan
    collate: Any
    carry: bool  # a model that carries state on a packed stream: carry it across steps (truncated BPTT)
    tokens_per_item: float  # mean targets per item (schedule/ETA estimate for max_tokens)

    def batch(self, indices: np.ndarray) -> dict[str, Tensor]:
        """The collated batch of items `indices` (a micro-batch), built in one piece from the memory map."""
        return self.dataset.batch(indices)

    def num_targets(self, indices: np.ndarray) -> int:
        """Scored labels of items `indices` (a global batch), from the lengths alone."""
        return self.dataset.num_targets(indices)

    def micro_batch_size(self, num_processes: int, grad_accum_steps: int) -> int:
        """Sequences per forward: the global batch split over processes and accumulation steps (the spec was
        checked to divide evenly before anything ran: `lmbench.spec.check_batch_split`)."""
        micro, rest = divmod(self.plan.batch_size, num_processes * grad_accum_steps)
        if rest or micro < 1:
            raise ValueError(f"a global batch of {self.plan.batch_size} does not split into {num_processes} "
                             f"processes x {grad_accum_steps} accumulation steps")
        return micro


def make_train_data(spec: ExperimentSpec, split: Any, tokenizer: Any, carries_state: bool) -> TrainData:
    from lmbench.data.batching import DocumentDataset, PackedDataset, collate_documents

    d, B = spec.data, spec.train.batch_size
    if d.batching == "packed":
        dataset = PackedDataset(split, d.block_size, tokenizer.eos_id)
        plan = BatchPlan("stream" if carries_state else "shuffle", len(dataset), B, spec.seed)
        collate, per_item = _stack, float(d.block_size)
    else:
        dataset = DocumentDataset(split, d.block_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
        lengths = np.asarray(dataset.lengths)
        plan = BatchPlan("bucket" if d.bucket_by_length else "shuffle", len(dataset), B, spec.seed, lengths)
        pad_id = tokenizer.pad_id
        collate = lambda items: collate_documents(items, pad_id)  # noqa: E731
        # targets, not inputs: prompt + <sep> positions are not scored and do not count toward max_tokens
        per_item = dataset.num_targets(np.arange(len(dataset))) / len(dataset) if len(dataset) else 0.0
    if plan.steps_per_epoch < 1:
        from lmbench.errors import SpecError

        raise SpecError("train.batch_size", f"{B} is larger than the {plan.num_items} training "
                                            f"{'windows' if d.batching == 'packed' else 'documents'}")
    return TrainData(dataset, plan, collate, carries_state and d.batching == "packed", per_item)


def _stack(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}
