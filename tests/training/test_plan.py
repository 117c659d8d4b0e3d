"""Batch plans: which dataset items each optimizer step reads."""

from __future__ import annotations

import numpy as np
import pytest

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


def _spec(batch_size: int = 3, **data: object) -> object:
    from lmbench.spec import to_spec

    return to_spec({"name": "p", "seed": 4, "train": {"max_steps": 1, "batch_size": batch_size},
                    "model": {"family": "lstm"}, "data": {"block_size": 4, **data}})


def _split(docs: list[list[int]], prompt_lens: list[int] | None = None) -> object:
    from lmbench.data.cache import SplitStats, TokenSplit

    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    tokens = np.array([t for d in docs for t in d], dtype=np.uint16)
    prompts = None if prompt_lens is None else np.array(prompt_lens, dtype=np.int64)
    return TokenSplit(tokens, offsets, prompts, SplitStats(len(docs), len(tokens), 0, 0, 0))


class _Tok:
    bos_id, eos_id, pad_id = 1, 2, 0


DOCS = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14], [15, 16], [17, 18, 19]]


def test_make_train_data_packed() -> None:
    """Packed windows: shuffled for a stateless model, StreamSampler lanes (carried state) for a recurrent one;
    block_size targets per item; items collate by stacking."""
    import torch

    from lmbench.data.batching import PackedDataset
    from lmbench.training.plan import make_train_data

    shuffled = make_train_data(_spec(), _split(DOCS), _Tok(), carries_state=False)
    assert isinstance(shuffled.dataset, PackedDataset) and shuffled.plan.kind == "shuffle"
    # 15 tokens + 5 EOS = 20 stream positions: (20 - 1) // 4 = 4 windows of 4 inputs and 4 labels
    assert (shuffled.plan.num_items, shuffled.plan.batch_size, shuffled.plan.seed) == (4, 3, 4)
    assert shuffled.tokens_per_item == 4.0 and shuffled.carry is False
    carried = make_train_data(_spec(), _split(DOCS), _Tok(), carries_state=True)
    assert carried.plan.kind == "stream" and carried.carry is True
    items = [carried.dataset[i] for i in (0, 1)]
    stacked = carried.collate(items)
    assert torch.equal(stacked["input_ids"], torch.stack([it["input_ids"] for it in items]))
    indices = np.array([1, 0])
    assert torch.equal(carried.batch(indices)["labels"], carried.dataset.batch(indices)["labels"])
    assert carried.num_targets(indices) == 8


def test_make_train_data_documents() -> None:
    """Documents: length buckets when asked (and seeded), else a shuffle; targets per item leave prompts out; a
    recurrent model carries no state across documents; a batch larger than the documents is a spec error."""
    from lmbench.data.batching import DocumentDataset
    from lmbench.errors import SpecError
    from lmbench.training.plan import make_train_data

    plain = make_train_data(_spec(batching="documents", block_size=8), _split(DOCS), _Tok(), carries_state=True)
    assert isinstance(plain.dataset, DocumentDataset) and plain.plan.kind == "shuffle" and plain.carry is False
    assert plain.tokens_per_item == pytest.approx((4 + 2 + 7 + 3 + 4) / 5)  # each doc + EOS, under the block
    bucketed = make_train_data(_spec(batching="documents", block_size=8, bucket_by_length=True),
                               _split(DOCS, prompt_lens=[1, 0, 2, 1, 0]), _Tok(), carries_state=False)
    assert bucketed.plan.kind == "bucket" and bucketed.plan.lengths.tolist() == [4, 2, 7, 3, 4]
    assert bucketed.tokens_per_item == pytest.approx((3 + 2 + 5 + 2 + 4) / 5)
    batch = bucketed.collate([bucketed.dataset[0], bucketed.dataset[1]])
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]  # padded with the tokenizer's pad id
    with pytest.raises(SpecError, match="6 is larger than the 5 training documents") as err:
        make_train_data(_spec(6, batching="documents"), _split(DOCS), _Tok(), carries_state=False)
    assert err.value.path == "train.batch_size"


def test_micro_batch_size_splits_the_global_batch() -> None:
    from lmbench.training.plan import BatchPlan, TrainData

    data = TrainData(None, BatchPlan("shuffle", 100, 12, 0), None, False, 1.0)
    assert [data.micro_batch_size(p, a) for p, a in ((1, 1), (2, 3), (4, 3), (12, 1))] == [12, 2, 1, 1]
    for processes, accum in ((5, 1), (2, 5), (24, 1)):
        with pytest.raises(ValueError, match=f"a global batch of 12 does not split into {processes} processes x "
                                             f"{accum} accumulation steps"):
            data.micro_batch_size(processes, accum)


def test_bucket_plans_drop_short_batches_and_follow_seed_and_epoch() -> None:
    lengths = np.random.default_rng(0).integers(1, 50, 21)
    plan = BatchPlan("bucket", 21, 4, seed=0, lengths=lengths)
    assert plan.steps_per_epoch == 5
    epoch = [plan.batch(0, i) for i in range(5)]
    assert all(len(b) == 4 and b.dtype == np.int64 for b in epoch) and len(set(np.concatenate(epoch))) == 20
    assert [b.tolist() for b in epoch] != [BatchPlan("bucket", 21, 4, seed=1, lengths=lengths).batch(0, i).tolist()
                                           for i in range(5)]
    assert [plan.batch(1, i).tolist() for i in range(5)] != [b.tolist() for b in epoch]
    assert [plan.batch(0, i).tolist() for i in range(5)] == [b.tolist() for b in epoch]  # back to epoch 0
    sorted_within = [lengths[b] for b in epoch]
    assert all((np.diff(x) <= 0).all() for x in sorted_within)  # each batch longest first (from a sorted pool)


def test_stream_plan_batch_b_holds_window_b_of_every_lane() -> None:
    """12 windows, 3 lanes of 4 consecutive windows (0-3, 4-7, 8-11): batch b is window b of each lane."""
    stream = BatchPlan("stream", 12, 3, seed=1)
    batches = [stream.batch(0, i) for i in range(stream.steps_per_epoch)]
    assert [b.tolist() for b in batches] == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]
    assert all(b.dtype == np.int64 for b in batches)


def test_bucket_plan_with_no_full_batch_reads_nothing() -> None:
    plan = BatchPlan("bucket", 3, 4, seed=0, lengths=np.array([5, 1, 3]))
    assert plan.steps_per_epoch == 0
    empty = plan.batch(0, 0)
    assert empty.shape == (0,) and empty.dtype == np.int64


def test_an_epoch_order_is_drawn_once_for_all_its_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = []
    default_rng = np.random.default_rng

    def counting_rng(seed: object) -> np.random.Generator:
        draws.append(seed)
        return default_rng(seed)

    monkeypatch.setattr(np.random, "default_rng", counting_rng)
    plan = BatchPlan("shuffle", 9, 3, seed=5)
    for i in range(3):
        plan.batch(0, i)
    assert draws == [(5, 0)]
    plan.batch(1, 0)
    plan.batch(1, 2)
    assert draws == [(5, 0), (5, 1)]


class _PadTok:
    bos_id, eos_id, pad_id = 1, 2, 4  # a pad id unlike DocumentDataset's default (0)


def test_make_train_data_documents_batch_with_the_tokenizer_ids() -> None:
    """The dataset's one-piece batch uses the tokenizer's BOS, EOS and pad; the plan has the spec's seed."""
    from lmbench.training.plan import make_train_data

    for bucket in (False, True):
        data = make_train_data(_spec(2, batching="documents", block_size=8, bucket_by_length=bucket), _split(DOCS),
                               _PadTok(), carries_state=False)
        assert data.plan.seed == 4 and data.plan.kind == ("bucket" if bucket else "shuffle")
        batch = data.batch(np.array([0, 1]))
        assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 4, 4]]
        assert batch["labels"].tolist() == [[5, 6, 7, 2], [8, 2, -100, -100]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
        collated = data.collate([data.dataset[1], data.dataset[0]])
        assert collated["input_ids"].tolist() == [[1, 8, 4, 4], [1, 5, 6, 7]]


def test_make_train_data_of_no_documents_is_a_spec_error() -> None:
    from lmbench.errors import SpecError
    from lmbench.training.plan import make_train_data

    with pytest.raises(SpecError, match="3 is larger than the 0 training documents"):
        make_train_data(_spec(batching="documents"), _split([]), _Tok(), carries_state=False)


def test_packed_items_collate_one_at_a_time() -> None:
    """A micro-batch of one window (micro-batch size 1) stacks into a (1, T) batch. The stream is
    5 6 7 E 8 E 9 10 11 ... (E = EOS 2), so window 1 reads positions 4-8."""
    from lmbench.training.plan import make_train_data

    data = make_train_data(_spec(), _split(DOCS), _Tok(), carries_state=False)
    one = data.collate([data.dataset[1]])
    assert one["input_ids"].tolist() == [[8, 2, 9, 10]] and one["labels"].tolist() == [[2, 9, 10, 11]]
