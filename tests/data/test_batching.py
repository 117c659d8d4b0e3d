"""Batching invariants: packed windows tile the stream, stream rows are contiguous, only story tokens are scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lmbench.data.batching import (IGNORE_INDEX, DocumentDataset, LengthBucketSampler, PackedDataset, StreamSampler,
                                   collate_documents)
from lmbench.data.cache import SplitStats, TokenSplit

PAD, BOS, EOS, SEP = 0, 1, 2, 3


def make_split(docs: list[list[int]], prompt_lens: list[int] | None = None) -> TokenSplit:
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    tokens = np.array([t for d in docs for t in d], dtype=np.uint16)
    stats = SplitStats(len(docs), len(tokens), 0, 0, 0)
    return TokenSplit(tokens, offsets, None if prompt_lens is None else np.array(prompt_lens, dtype=np.int64), stats)


def random_docs(num_docs: int = 40, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(10, 100, size=int(rng.integers(0, 30))).tolist() for _ in range(num_docs)]


def stream_of(docs: list[list[int]]) -> list[int]:
    return [t for d in docs for t in d + [EOS]]


@pytest.mark.parametrize("block_size", [1, 5, 16])
def test_packed_windows_cover_the_stream_in_order(block_size: int) -> None:
    docs = random_docs()
    stream = stream_of(docs)
    ds = PackedDataset(make_split(docs), block_size, EOS)
    assert len(ds) == (len(stream) - 1) // block_size
    inputs = torch.cat([ds[i]["input_ids"] for i in range(len(ds))]).tolist()
    labels = torch.cat([ds[i]["labels"] for i in range(len(ds))]).tolist()
    assert inputs == stream[: len(ds) * block_size]
    assert labels == stream[1: len(ds) * block_size + 1]  # labels are the next tokens
    item = ds[0]
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (block_size,)


def test_packed_windows_read_together_equal_the_materialised_stream() -> None:
    """`__getitems__` (one vectorised gather for a batch, any order, repeats) gives the windows of the stream
    written out in full, with empty documents and windows spanning several documents."""
    rng = np.random.default_rng(1)
    docs = [rng.integers(4, 50, rng.integers(0, 9)).tolist() for _ in range(60)]
    stream = stream_of(docs)
    ds = PackedDataset(make_split(docs), 7, EOS, offset=3)
    indices = [5, 0, len(ds) - 1, 5, 17]
    for i, item in zip(indices, ds.__getitems__(indices)):
        start = 3 + i * 7
        assert item["input_ids"].tolist() == stream[start:start + 7]
        assert item["labels"].tolist() == stream[start + 1:start + 8]
    assert ds.__getitems__([]) == []
    with pytest.raises(IndexError):
        ds.__getitems__([0, len(ds)])


def test_packed_offset_and_empty_documents() -> None:
    docs = [[], [11, 12], [], [13]]  # stream: EOS 11 12 EOS EOS 13 EOS
    ds = PackedDataset(make_split(docs), 2, EOS, offset=1)
    assert ds.stream(0, 7).tolist() == [EOS, 11, 12, EOS, EOS, 13, EOS]
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == [[11, 12], [EOS, EOS]]
    assert len(PackedDataset(make_split([[], []]), 4, EOS)) == 0
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("num_processes", [1, 2])
def test_stream_sampler_rows_are_contiguous(num_processes: int) -> None:
    num_windows, batch_size = 103, 4
    sampler = StreamSampler(num_windows, batch_size, num_processes)
    order = list(sampler)
    assert len(order) == len(sampler) == sampler.steps * batch_size * num_processes
    assert len(set(order)) == len(order) and max(order) < num_windows
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for process in range(num_processes):  # accelerate deals global batches round-robin
        mine = batches[process::num_processes]
        for row in range(batch_size):
            column = [b[row] for b in mine]
            assert column == list(range(column[0], column[0] + len(column)))


def test_stream_sampler_with_a_dataloader_carries_the_stream() -> None:
    docs = random_docs(60, seed=1)
    ds = PackedDataset(make_split(docs), 6, EOS)
    loader = DataLoader(ds, batch_size=3, sampler=StreamSampler(len(ds), 3))
    rows: list[list[int]] = [[], [], []]
    for batch in loader:
        for r in range(3):
            rows[r] += batch["input_ids"][r].tolist()
    stream = stream_of(docs)
    for row in rows:  # each row reads a contiguous stretch of the stream
        start = next(i for i in range(len(stream)) if stream[i:i + len(row)] == row)
        assert start % 6 == 0


def test_document_items_mask_pads_and_prompts() -> None:
    # doc = prompt (2 ids) + SEP + story; prompt_lens count the prompt and SEP
    docs = [[50, 51, SEP, 60, 61, 62], [52, SEP, 63], [70, 71, 72, 73]]
    split = make_split(docs, prompt_lens=[3, 2, 0])
    ds = DocumentDataset(split, block_size=16, bos_id=BOS, eos_id=EOS)
    batch = collate_documents([ds[i] for i in range(len(ds))], pad_id=PAD)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, 7)
    assert batch["input_ids"][0].tolist() == [BOS, 50, 51, SEP, 60, 61, 62]
    assert batch["labels"][0].tolist() == [-100, -100, -100, 60, 61, 62, EOS]
    assert batch["input_ids"][1].tolist() == [BOS, 52, SEP, 63, PAD, PAD, PAD]
    assert batch["labels"][1].tolist() == [-100, -100, 63, EOS, -100, -100, -100]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0]
    scored = batch["labels"] != IGNORE_INDEX
    assert not (scored & (batch["attention_mask"] == 0)).any()  # no pad in the loss
    story_targets = {60, 61, 62, 63, 70, 71, 72, 73, EOS}
    assert set(batch["labels"][scored].tolist()) <= story_targets  # no prompt token or SEP is ever a target
    assert int(scored.sum()) == 3 + 1 + 1 + 1 + 4 + 1  # every story token and each EOS
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long


def test_document_truncation_and_lengths() -> None:
    split = make_split([[10] * 20, [11] * 3, []])
    ds = DocumentDataset(split, block_size=8, bos_id=BOS, eos_id=EOS)
    assert ds.lengths.tolist() == [8, 4, 1] == [len(ds[i]["input_ids"]) for i in range(3)]
    assert ds[0]["labels"].tolist() == [10] * 8  # truncated: EOS is cut off
    assert ds[2]["input_ids"].tolist() == [BOS] and ds[2]["labels"].tolist() == [EOS]


@pytest.mark.parametrize("prompted", [False, True])
@pytest.mark.parametrize("block_size", [3, 64])
def test_batches_built_in_one_piece_equal_collated_items(prompted: bool, block_size: int) -> None:
    """`batch` (vectorised over the memory map) is exactly collate_documents / stacking of the items, with
    truncation (documents of exactly block_size tokens too: their EOS is cut off), empty documents, prompts
    longer than the block; `num_targets` counts its scored labels."""
    docs = random_docs(30, seed=3) + [[], [11] * 3, [12] * 64]
    rng = np.random.default_rng(4)
    prompts = [int(rng.integers(0, len(d) + 2)) for d in docs] if prompted else None
    indices = [30, 4, 4, 17, 0, 29, 8, 31, 32]
    split = make_split(docs, prompts)
    documents = DocumentDataset(split, block_size, BOS, EOS, PAD)
    expected = collate_documents([documents[i] for i in indices], PAD)
    got = documents.batch(np.array(indices))
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == torch.long and torch.equal(got[key], expected[key]), key
    assert documents.num_targets(np.array(indices)) == int((expected["labels"] != IGNORE_INDEX).sum())
    packed = PackedDataset(split, block_size, EOS, offset=1)
    windows = [0, len(packed) - 1, 2]
    stacked = {k: torch.stack([packed[i][k] for i in windows]) for k in ("input_ids", "labels")}
    got = packed.batch(np.array(windows))
    assert all(torch.equal(got[k], stacked[k]) and got[k].is_contiguous() for k in stacked)
    assert packed.num_targets(np.array(windows)) == len(windows) * block_size


def test_length_bucket_sampler() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, size=237)
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=3, pool_batches=4)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(237))
    assert batches == list(sampler)  # same seed and epoch, same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.mean([np.ptp(lengths[rng.permutation(237)[:8]]) for _ in range(50)]) / 2
    dropped = LengthBucketSampler(lengths, batch_size=8, drop_last=True, pool_batches=4)
    assert len(list(dropped)) == len(dropped) and all(len(b) == 8 for b in dropped)
    ordered = list(LengthBucketSampler(lengths, batch_size=8, shuffle=False))
    assert all(lengths[b[0]] >= lengths[b[-1]] for b in ordered)


def test_rows_reach_the_final_eos_and_an_empty_split_is_all_eos() -> None:
    """A row that ends on the stream's last position (the final EOS) reads it, whatever the token dtype; a split
    with documents but no tokens is a stream of EOS."""
    docs = [[11, 12], [13, 14, 15]]
    dataset = PackedDataset(make_split(docs), 3, EOS)
    stream = stream_of(docs)  # 11 12 EOS 13 14 15 EOS
    assert dataset.stream_length == len(stream) == 7
    assert dataset.rows(np.array([4, 0]), 3).tolist() == [stream[4:7], stream[0:3]]
    assert dataset.stream(5, 7).tolist() == [15, EOS] and dataset.stream(1, 4).dtype == np.int64
    assert len(dataset) == 2 and dataset[1]["input_ids"].tolist() == [13, 14, 15]  # windows [0, 3], [3, 6]
    assert dataset[1]["labels"].tolist() == [14, 15, EOS]
    empty = PackedDataset(make_split([[], [], []]), 2, EOS)
    assert empty.rows(np.array([0, 1]), 2).tolist() == [[EOS, EOS], [EOS, EOS]] and len(empty) == 1


def test_out_of_range_windows_name_the_first_bad_index() -> None:
    dataset = PackedDataset(make_split(random_docs(5)), 4, EOS)
    n = len(dataset)
    assert [len(item["input_ids"]) for item in dataset.__getitems__([0, n - 1])] == [4, 4]
    with pytest.raises(IndexError, match=f"window {n} out of range for {n} windows"):
        dataset.__getitems__([0, n, n + 1])
    with pytest.raises(IndexError, match=f"window -1 out of range for {n} windows"):
        dataset.__getitems__([-1, -2])
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        PackedDataset(make_split([[1]]), 0, EOS)
    assert len(PackedDataset(make_split([[1, 2, 3]]), 1, EOS)) == 3


def test_argument_checks_of_samplers_and_documents() -> None:
    assert len(list(StreamSampler(4, 1))) == 4
    for bad in ((4, 0, 1), (4, 1, 0)):
        with pytest.raises(ValueError, match="batch_size and num_processes must be >= 1"):
            StreamSampler(bad[0], bad[1], num_processes=bad[2])
    assert len(list(LengthBucketSampler([3, 1, 2], 1, pool_batches=1))) == 3
    for batch_size, pool in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="batch_size and pool_batches must be >= 1"):
            LengthBucketSampler([3, 1, 2], batch_size, pool_batches=pool)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        DocumentDataset(make_split([[1]]), 0, BOS, EOS)
    one = DocumentDataset(make_split([[7, 8]]), 1, BOS, EOS)  # a block of one: BOS -> first token
    assert one[0]["input_ids"].tolist() == [BOS] and one[0]["labels"].tolist() == [7]
    padded = DocumentDataset(make_split([[7, 8, 9], [5]]), 8, BOS, EOS)  # pad id defaults to 0
    assert padded.batch([0, 1])["input_ids"].tolist() == [[BOS, 7, 8, 9], [BOS, 5, 0, 0]]
    empty = padded.batch([])
    assert empty["input_ids"].shape == (0, 0) and padded.num_targets([]) == 0


def test_length_buckets_by_default_shuffle_in_pools_of_50_batches_and_sort_stably() -> None:
    lengths = np.arange(202)
    ordered = list(LengthBucketSampler(lengths, 2, shuffle=False))
    # pools of 50 batches x 2 items: 0-99, 100-199, 200-201, each sorted longest first
    assert ordered[0] == [99, 98] and ordered[50] == [199, 198] and ordered[100] == [201, 200]
    assert list(LengthBucketSampler(lengths, 2, seed=0)) != ordered  # shuffle is the default
    same = list(LengthBucketSampler(np.full(200, 7), 4, shuffle=False))
    assert same == [list(range(i, i + 4)) for i in range(0, 200, 4)]  # equal lengths keep their order
    for n, batch_size, pool in ((10, 4, 50), (8, 4, 50), (9, 4, 50), (21, 2, 3), (24, 2, 3), (5, 1, 2)):
        sampler = LengthBucketSampler(np.arange(n), batch_size, pool_batches=pool)
        assert len(sampler) == len(list(sampler)), (n, batch_size, pool)
        dropped = LengthBucketSampler(np.arange(n), batch_size, pool_batches=pool, drop_last=True)
        assert len(dropped) == len(list(dropped)) == sum(1 for b in sampler if len(b) == batch_size)


def test_documents_of_an_empty_split_are_bos_then_eos() -> None:
    ds = DocumentDataset(make_split([[], []]), block_size=4, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    batch = ds.batch([0, 1])
    assert batch["input_ids"].tolist() == [[BOS], [BOS]] and batch["labels"].tolist() == [[EOS], [EOS]]


def test_length_buckets_draw_their_pools_at_random_with_seed_0_by_default() -> None:
    """Pools of 10 out of 200 distinct lengths: shuffled, a batch's two items come from anywhere in the data;
    taken in order, from one run of 10 consecutive indices."""
    lengths = np.arange(200)
    shuffled = list(LengthBucketSampler(lengths, 2, pool_batches=5))
    assert max(max(b) - min(b) for b in shuffled) > 10
    in_order = list(LengthBucketSampler(lengths, 2, pool_batches=5, shuffle=False))
    assert max(max(b) - min(b) for b in in_order) < 10
    assert shuffled == list(LengthBucketSampler(lengths, 2, pool_batches=5, seed=0))
    assert shuffled != list(LengthBucketSampler(lengths, 2, pool_batches=5, seed=1))


def test_ties_in_a_pool_keep_their_order() -> None:
    """300 items of 5 lengths in one pool, not shuffled: longest first, and equal lengths in index order."""
    lengths = np.tile([3, 1, 2, 5, 4], 60)
    order = [i for b in LengthBucketSampler(lengths, 300, shuffle=False) for i in b]
    assert order == [i for n in (5, 4, 3, 2, 1) for i in range(300) if lengths[i] == n]


def test_datasets_pickle_their_memory_map_not_its_tokens(tmp_path) -> None:  # noqa: ANN001
    """DataLoader workers under spawn get each dataset with the split's memory map (its file), not a pickled copy
    of every token, and read the same batches from it."""
    import pickle

    rng = np.random.default_rng(5)
    split = make_split([rng.integers(10, 100, size=200).tolist() for _ in range(50)])
    path = tmp_path / "tokens.bin"
    split.tokens.tofile(path)
    split.tokens = np.memmap(path, dtype=np.uint16, mode="r", shape=split.tokens.shape)
    for dataset in (PackedDataset(split, 8, EOS), DocumentDataset(split, 8, BOS, EOS, PAD)):
        blob = pickle.dumps(dataset)
        assert len(blob) < split.tokens.nbytes / 2, type(dataset).__name__
        clone = pickle.loads(blob)
        assert isinstance(clone.split.tokens, np.memmap)
        got, expected = clone.batch(np.array([3, 0, 7])), dataset.batch(np.array([3, 0, 7]))
        assert all(torch.equal(got[k], expected[k]) for k in expected)
