from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmbench.data.cache import prepare_data
from lmbench.data.shards import byte_safe, iter_shards, split_units
from lmbench.data.sources.local import read_units
from lmbench.errors import SpecError

from .helpers import experiment

# Texts where cutting bytes could go wrong: CRLF and lone CR (text mode reads both as \n), a CRLF that a read cuts
# in two, a separator that overlaps itself, multi-byte characters at every offset, empty pieces, no final newline.
TEXTS = {
    "plain": "one\ntwo\n\nthree\n",
    "no final newline": "one\ntwo",
    "crlf": "one\r\ntwo\r\n\r\nthree\rfour\r",
    "empty": "",
    "only newlines": "\n\n\n",
    "unicode": "naïve café\n😀 emoji\n\u2028 line sep stays\n" * 7,
    "separators": "<|endoftext|>a story<|endoftext|>\n  another  \n<|endoftext|><|endoftext|>end",
    "separator at end": "a<|endoftext|>b<|endoftext|>",
    "overlapping": "a\n\n\nb\n\n\n\nc\n\nd\r\n\r\ne",
}


@pytest.mark.parametrize("unit,separator", [("line", "<|endoftext|>"), ("separator", "<|endoftext|>"),
                                            ("separator", "\n\n"), ("separator", "aa"), ("separator", "\r")])
@pytest.mark.parametrize("shard_bytes", [1, 2, 3, 5, 8, 64, 1 << 20])
@pytest.mark.parametrize("counted", [True, False])
def test_shards_hold_the_documents_text_mode_reads(unit: str, separator: str, shard_bytes: int, counted: bool,
                                                   tmp_path: Path) -> None:
    """Cut at any read size, the shards' documents are those of the text-mode reader, in order; counted shards
    know how many they hold and the raw index of the first (numbered across files), uncounted ones are byte
    ranges where that is exact (lines, a separator without newlines that cannot overlap itself)."""
    files = []
    for i, text in enumerate([*TEXTS.values(), "xaaay aa aaaa b"]):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_bytes(text.encode("utf-8"))
    expected = [doc for f in files for doc in read_units(f, unit, separator)]
    got, index = [], 0
    shards = list(iter_shards(files, unit, separator, "utf-8", shard_bytes=shard_bytes, counted=counted))
    for shard in shards:
        docs = split_units(shard.read().decode("utf-8"), unit, separator, shard.last)
        if counted:
            assert len(docs) == shard.num_docs and shard.first_index == index and shard.data is not None
            index += shard.num_docs
        got += docs
    assert got == expected
    ranged = not counted and (unit == "line" or separator == "<|endoftext|>")
    assert all((s.data is None) == ranged for s in shards)


@pytest.mark.parametrize("window", [1, 5, 30, 64])
@pytest.mark.parametrize("shard_bytes", [1, 7, 40])
def test_range_shards_find_the_cut_at_any_window(window: int, shard_bytes: int, tmp_path: Path) -> None:
    """Byte ranges found by reading a small window backwards (and forwards past a long document) cover the file
    exactly, each ending just after a separator, also one that straddles a window's edge."""
    from lmbench.data.shards import _range_shards

    path = tmp_path / "t.txt"
    text = "a<|endoftext|>" + "b" * 100 + "<|endoftext|>cc<|endoftext|><|endoftext|>" + "d" * 37 + "<|endoftext|>e"
    path.write_bytes(text.encode("utf-8"))
    shards = list(_range_shards(path, b"<|endoftext|>", shard_bytes, window))
    assert shards[0].start == 0 and shards[-1].stop == len(text) and shards[-1].last
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
    assert all(text[:s.stop].endswith("<|endoftext|>") for s in shards[:-1])
    assert [d for s in shards for d in split_units(s.read().decode(), "separator", "<|endoftext|>", s.last)] == \
        text.split("<|endoftext|>")


def test_shards_number_documents_on_from_a_start(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    shards = list(iter_shards([path, path], "line", "", "utf-8", first_index=10, shard_bytes=2))
    assert [s.first_index for s in shards] == [10, 11, 12, 13, 13, 14, 15, 16]
    assert [s.last for s in shards] == [False, False, False, True] * 2 and shards[0].path == path


def test_byte_safe_encodings() -> None:
    assert byte_safe("utf-8") and byte_safe("UTF8") and byte_safe("latin-1") and byte_safe("cp1252")
    assert not byte_safe("utf-16") and not byte_safe("utf-8-sig") and not byte_safe("shift_jis")
    assert not byte_safe("no-such-codec")


FILTERS = {
    "none": {},
    "limit": {"limit": 900},
    "subsample and lengths": {"subsample": 0.6, "min_chars": 12, "max_chars": 60},
    "replace and lowercase": {"replace": {"cat": "dog"}, "lowercase": True},
    "native splits": {"files": "native"},
    "native splits, subsample": {"files": "native", "subsample": 0.5},
    "native splits, limit": {"files": "native", "limit": 700, "min_chars": 20},
    "test carved too": {"test_fraction": 0.1},
}


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("tokenizer", [{"kind": "char"}, {"kind": "word", "params": {"lowercase": True}}])
def test_sharded_build_equals_one_process(name: str, tokenizer: dict, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes reading small shards (CRLF text, two files) write the same token files, offsets, units and
    statistics as one process reading documents, under every filter and split."""
    from lmbench.data import cache as cache_module
    from lmbench.data import shards as shards_module

    monkeypatch.setattr(cache_module, "iter_shards", _small_shards(shards_module.iter_shards))
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "Ünïcode", "don't", "e.g.", "3.14", "!"]
    lines = [" ".join(rng.choice(words, rng.integers(1, 20))) for _ in range(2000)]
    (tmp_path / "a.txt").write_bytes("\r\n".join(lines[:1100]).encode("utf-8") + b"\r\n")
    (tmp_path / "b.txt").write_bytes("\n".join(lines[1100:]).encode("utf-8"))
    data = {k: v for k, v in FILTERS[name].items() if k != "files"}
    if "files" in FILTERS[name]:
        data["files"] = {"train": str(tmp_path / "*.txt"), "validation": str(tmp_path / "b.txt")}
    else:
        data |= {"path": str(tmp_path / "*.txt"), "val_fraction": 0.2}
    built = []
    for workers in (1, 2):
        spec = experiment({"source": "text", **data, "num_workers": workers,
                           "cache_dir": str(tmp_path / f"cache{workers}")}, tokenizer)
        built.append(prepare_data(spec, progress=False))
    one, two = built
    assert "read_with" not in one.meta["splits"]["train"] and two.meta["splits"]["train"]["workers"] == 2
    for split, entry in two.meta["splits"].items():  # a pass's seconds are shared out by the bytes each split read
        passed = [two.meta["splits"][name] for name in entry["read_with"]]
        assert entry["tokenize_bytes"] == one.meta["splits"][split]["tokenize_bytes"] > 0
        assert abs(sum(e["tokenize_seconds"] for e in passed) - entry["wall_seconds"]) <= 1e-3 * len(passed)
        assert abs(entry["tokenize_seconds"] - entry["wall_seconds"] * entry["tokenize_bytes"]
                   / sum(e["tokenize_bytes"] for e in passed)) <= 1e-4
    assert list(one.splits) == list(two.splits)
    for split in one.splits:
        assert one.splits[split].stats == two.splits[split].stats, split
        for suffix in ("tokens.bin", "offsets.npy", "units.npy"):
            a, b = one.cache_dir / f"{split}.{suffix}", two.cache_dir / f"{split}.{suffix}"
            assert a.is_file() == b.is_file() and (not a.is_file() or a.read_bytes() == b.read_bytes()), (split, suffix)


def _small_shards(real):  # noqa: ANN001, ANN202
    def shards(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return real(*args, **kwargs, shard_bytes=997)
    return shards


def test_an_undecodable_byte_in_a_shard_names_the_file_and_offset(tmp_path: Path) -> None:
    """A byte that is not UTF-8 past the head the spec check reads (in the validation file, which the tokenizer's
    training does not read): the worker's decode error becomes the reader's SpecError, naming the file and the
    byte offset, and no cache is left."""
    train, validation = tmp_path / "train.txt", tmp_path / "valid.txt"
    good = "".join(f"line {i} of a story\n" for i in range(8000)).encode("utf-8")
    train.write_bytes(good)
    validation.write_bytes(good + b"bad \xff byte\n" + good)
    spec = experiment({"source": "text", "files": {"train": str(train), "validation": str(validation)},
                       "num_workers": 2, "cache_dir": str(tmp_path / "cache")}, {"kind": "char"})
    with pytest.raises(SpecError, match=rf"valid\.txt is not utf-8 text \(byte {len(good) + 4:,} cannot"):
        prepare_data(spec, progress=False)
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_a_split_emptied_by_the_filters_is_named(tmp_path: Path) -> None:
    train, validation = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("".join(f"a long line number {i}\n" for i in range(3000)), encoding="utf-8")
    validation.write_text("".join(f"line {i}\n" for i in range(3000)), encoding="utf-8")
    spec = experiment({"source": "text", "files": {"train": str(train), "validation": str(validation)},
                       "min_chars": 16, "num_workers": 2, "cache_dir": str(tmp_path / "cache")}, {"kind": "char"})
    with pytest.raises(SpecError, match="split 'validation' is empty after filtering"):
        prepare_data(spec, progress=False)


def test_a_worker_that_fails_mid_pass_stops_the_build_without_hanging(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards take their places in the token file in turn: when one worker fails, the shards after it (waiting
    for their turn, or queued) are released, the error reaches the caller, and no cache is left."""
    import multiprocessing

    from lmbench.data import cache as cache_module
    from lmbench.data import shards as shards_module

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the failing encoder is patched into forked workers")
    real = cache_module.encode_shard

    def failing(tokenizer, shard, *args):  # noqa: ANN001, ANN002, ANN202
        if shard.first_index >= 3000:
            raise RuntimeError("encoder failed on a later shard")
        return real(tokenizer, shard, *args)

    monkeypatch.setattr(cache_module, "encode_shard", failing)
    monkeypatch.setattr(cache_module, "iter_shards", _small_shards(shards_module.iter_shards))
    path = tmp_path / "c.txt"
    path.write_text("".join(f"line {i} of a story\n" for i in range(8000)), encoding="utf-8")
    spec = experiment({"source": "text", "path": str(path), "val_fraction": 0.1, "num_workers": 2,
                       "cache_dir": str(tmp_path / "cache")}, {"kind": "char"})
    with pytest.raises(RuntimeError, match="encoder failed on a later shard"):
        prepare_data(spec, progress=False)
    assert not any((tmp_path / "cache").glob("*/meta.json")) and not any((tmp_path / "cache").glob(".*.tmp-*"))
