"""Batch plans: which dataset items each optimizer step reads."""

from __future__ import annotations

import numpy as np

from lmbench.training.plan import BatchPlan


def test_batch_plans_are_seeded_epoch_orders() -> None:
    plan = BatchPlan("shuffle", 10, 3, seed=1)
    assert plan.steps_per_epoch == 3
    epoch0 = np.concatenate([plan.batch(0, i) for i in range(3)])
    assert len(set(epoch0.tolist())) == 9
    assert np.array_equal(plan.batch(0, 1), BatchPlan("shuffle", 10, 3, seed=1).batch(0, 1))
    assert not np.array_equal(plan.batch(1, 0), plan.batch(0, 0))
    stream = BatchPlan("stream", 12, 3, seed=1)
    lanes = np.stack([stream.batch(0, i) for i in range(stream.steps_per_epoch)])  # (steps, rows)
    assert (np.diff(lanes, axis=0) == 1).all()  # row r reads consecutive windows
    bucket = BatchPlan("bucket", 20, 4, seed=0, lengths=np.arange(20))
    got = np.concatenate([bucket.batch(0, i) for i in range(bucket.steps_per_epoch)])
    assert sorted(got.tolist()) == list(range(20))
