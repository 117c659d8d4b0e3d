"""Splits (seeded by document, tail, native) and filters."""

from __future__ import annotations

import hashlib

from pathlib import Path

import pytest

from lmbench.data.corpus import assign_split, iter_documents, split_names, tail_bounds, unit_hash
from lmbench.data.sources import Document
from lmbench.errors import SpecError

from .helpers import LINES, data_spec, write_lines


@pytest.fixture
def lines_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "lines.txt", [f"doc {i:04d} " + "abc " * (i % 7) for i in range(1000)])


def texts(spec, split: str) -> list[str]:
    return [d.text for d in iter_documents(spec, split)]


def test_seeded_split_is_deterministic_disjoint_and_close_to_the_fractions(lines_file: Path) -> None:
    spec = data_spec(source="text", path=str(lines_file), val_fraction=0.2, test_fraction=0.1, split_seed=7)
    assert split_names(spec) == ["train", "validation", "test"]
    parts = {s: texts(spec, s) for s in split_names(spec)}
    assert parts == {s: texts(spec, s) for s in split_names(spec)}  # same seed, same split
    everything = lines_file.read_text("utf-8").splitlines()
    assert sorted(sum(parts.values(), [])) == sorted(everything)  # disjoint and complete
    assert abs(len(parts["validation"]) / 1000 - 0.2) < 0.04
    assert abs(len(parts["test"]) / 1000 - 0.1) < 0.03
    assert parts["train"] == [t for t in everything if t in set(parts["train"])]  # source order kept
    other = data_spec(source="text", path=str(lines_file), val_fraction=0.2, test_fraction=0.1, split_seed=8)
    assert texts(other, "validation") != parts["validation"]


def test_split_assignment_ignores_other_filters(lines_file: Path) -> None:
    """The split of a document depends on (seed, index) only, so min_chars does not move documents around."""
    full = set(texts(data_spec(source="text", path=str(lines_file)), "validation"))
    short_dropped = set(texts(data_spec(source="text", path=str(lines_file), min_chars=20), "validation"))
    assert short_dropped <= full and short_dropped == {t for t in full if len(t) >= 20}


def test_unit_hash_is_pinned_and_splits_by_cumulative_fractions() -> None:
    """unit_hash is blake2b-64 of "seed/part/..." over 2**64 (the same on every machine and Python), and
    assign_split gives validation below the validation fraction, test up to validation + test, train above."""
    key = int.from_bytes(hashlib.blake2b(b"42/split/0", digest_size=8).digest(), "little")
    assert unit_hash(42, "split", 0) == key / 2**64 == pytest.approx(0.5564145015885165, abs=1e-15)
    assert unit_hash(1, "x") == pytest.approx(0.16538902009275666, abs=1e-15)
    # seed 0: u = 0.284, 0.377, 0.027, 0.157, 0.064, 0.148, 0.580, 0.627, 0.906, 0.521, 0.949, 0.078
    carved = {"validation": 0.3, "test": 0.2}
    assert [assign_split(0, i, carved) for i in range(12)] == [
        "validation", "test", "validation", "validation", "validation", "validation",
        "train", "train", "train", "train", "train", "validation"]
    assert {assign_split(42, i, {}) for i in range(50)} == {"train"}


def test_tail_split_of_one_document(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1001))
    path = tmp_path / "one.txt"
    path.write_text(text, "utf-8")
    spec = data_spec(source="text", path=str(path), unit="file", split="tail", val_fraction=0.1)
    train, val = texts(spec, "train"), texts(spec, "validation")
    assert train == [text[:900]] and val == [text[900:]]  # nanoGPT: data[:int(n * 0.9)]


def test_tail_split_across_documents(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "l.txt", ["aaaa", "bbbb", "cccc", "dddd", "eeee"])  # 20 characters
    spec = data_spec(source="text", path=str(path), split="tail", val_fraction=0.3, test_fraction=0.15)
    assert texts(spec, "train") == ["aaaa", "bbbb", "ccc"]
    assert texts(spec, "validation") == ["c", "dddd", "e"]
    assert texts(spec, "test") == ["eee"]
    assert tail_bounds(20, {"validation": 0.3, "test": 0.15}) == {"train": (0, 11), "validation": (11, 17),
                                                                  "test": (17, 20)}


def test_filters(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "f.txt", ["Short", "A Medium line", "", "A Much Longer Line Here", "Tiny"])
    base = dict(source="text", path=str(path), val_fraction=0.0)
    assert texts(data_spec(**base), "train") == ["Short", "A Medium line", "A Much Longer Line Here", "Tiny"]
    assert texts(data_spec(**base, limit=2), "train") == ["Short", "A Medium line"]
    assert texts(data_spec(**base, min_chars=6, max_chars=15), "train") == ["A Medium line"]
    assert texts(data_spec(**base, lowercase=True, limit=1), "train") == ["short"]
    chained = data_spec(**base, replace={"Short": "Long", "Long": "Longer"}, limit=1)
    assert texts(chained, "train") == ["Longer"]  # replacements apply in order


def test_subsample_is_seeded(lines_file: Path) -> None:
    spec = data_spec(source="text", path=str(lines_file), subsample=0.3, val_fraction=0.0)
    kept = texts(spec, "train")
    assert kept == texts(spec, "train") and abs(len(kept) / 1000 - 0.3) < 0.05


def test_empty_split_after_filtering_names_the_filters(lines_file: Path) -> None:
    spec = data_spec(source="text", path=str(lines_file), min_chars=10_000)
    with pytest.raises(SpecError, match="empty after filtering") as err:
        list(iter_documents(spec, "train"))
    assert err.value.path == "data" and "min_chars=10000" in err.value.message


def test_native_splits_ignore_fractions_and_carve_only_what_is_missing(tmp_path: Path) -> None:
    train = str(write_lines(tmp_path / "train.txt", LINES))
    valid = str(write_lines(tmp_path / "valid.txt", ["v"]))
    both = data_spec(source="text", files={"train": train, "validation": valid}, val_fraction=0.3)
    assert split_names(both) == ["train", "validation"]
    assert texts(both, "train") == LINES and texts(both, "validation") == ["v"]
    carved = data_spec(source="text", files={"train": train, "validation": valid}, test_fraction=0.2)
    assert split_names(carved) == ["train", "validation", "test"]
    assert sorted(texts(carved, "train") + texts(carved, "test")) == sorted(LINES)
    train_only = data_spec(source="text", files={"train": train}, val_fraction=0.5)
    assert split_names(train_only) == ["train", "validation"]
    with pytest.raises(SpecError, match="no 'test' split"):
        list(iter_documents(train_only, "test"))


def test_limit_applies_to_each_native_split(tmp_path: Path) -> None:
    train = str(write_lines(tmp_path / "train.txt", LINES))
    test = str(write_lines(tmp_path / "test.txt", LINES[::-1]))
    spec = data_spec(source="text", files={"train": train, "test": test}, val_fraction=0.0, limit=3)
    assert texts(spec, "train") == LINES[:3] and texts(spec, "test") == LINES[::-1][:3]


def test_prompts_are_transformed_too(tmp_path: Path) -> None:
    stories = write_lines(tmp_path / "s.txt", ["The Story"])
    prompts = write_lines(tmp_path / "p.txt", ["The Prompt"])
    spec = data_spec(source="prompt_story", path=str(stories), prompt_path=str(prompts), lowercase=True,
                     val_fraction=0.0)
    assert list(iter_documents(spec, "train")) == [Document("the story", "the prompt")]
