"""The Tokenizer base: default batch/flat/token methods, the meta file, unknown-token warnings, VocabList files."""

from __future__ import annotations

import locale
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lmbench.tokenizers.base import META_FILE, Tokenizer, read_meta, warn_unknown, write_meta
from lmbench.tokenizers.char import VOCAB_FILE, CharConfig, CharTokenizer

LETTERS = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"]


class _Letters(Tokenizer):
    """The least a Tokenizer must define: every other method is the base class's default."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def train(cls, texts: Iterable[str], config: object) -> _Letters:
        return cls()

    @property
    def vocab_size(self) -> int:
        return len(LETTERS)

    def encode(self, text: str) -> list[int]:
        return [LETTERS.index(ch) if ch in "abc" else self.unk_id for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(LETTERS[i] for i in ids if i not in (self.pad_id, self.bos_id, self.eos_id))

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path) -> _Letters:
        raise NotImplementedError


def test_default_batch_flat_and_token_methods() -> None:
    tok = _Letters()
    assert tok.encode_batch(["cab", "", "ax"]) == [[6, 4, 5], [], [4, 3]]
    flat, lengths = tok.encode_flat(["cab", "", "ax"])
    assert flat.dtype == np.uint32 and flat.tolist() == [6, 4, 5, 4, 3]
    assert lengths.dtype == np.int64 and lengths.tolist() == [3, 0, 2]
    assert tok.tokens() == ["", "", "", "<unk>", "a", "b", "c"]  # decode drops pad, bos and eos


@dataclass
class _Config:
    zeta: int = 7
    alpha: str = "café"


def test_write_meta_makes_missing_folders_and_writes_sorted_indented_ascii_json(tmp_path: Path) -> None:
    directory = tmp_path / "runs" / "r1" / "tokenizer"
    write_meta(directory, "toy", _Config())
    text = (directory / META_FILE).read_bytes().decode("ascii")  # non-ASCII is escaped: the same in any locale
    assert text == '{\n  "config": {\n    "alpha": "caf\\u00e9",\n    "zeta": 7\n  },\n  "kind": "toy"\n}\n'
    assert read_meta(directory) == ("toy", {"alpha": "café", "zeta": 7})


def test_warn_unknown_counts_every_unknown_and_shows_the_first_distinct_ones(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("lmbench.tests.warn_unknown")
    unknown = ["q", "r", "q", "s", "t", "u", "v", "w"]  # 8 unknown tokens, 7 distinct
    with caplog.at_level(logging.WARNING, logger=logger.name):
        warn_unknown(logger, "toy", [], 20)  # nothing unknown: no warning
        warn_unknown(logger, "toy", unknown, 20)
        warn_unknown(logger, "toy", unknown, 20, max_shown=2)
    assert [r.getMessage() for r in caplog.records] == [
        "toy tokenizer: 8 of 20 tokens unknown, mapped to <unk> (e.g. 'q', 'r', 's', 't', 'u')",
        "toy tokenizer: 8 of 20 tokens unknown, mapped to <unk> (e.g. 'q', 'r')",
    ]


def test_sep_id_is_set_only_when_sep_is_a_configured_special() -> None:
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>", "<sep>", "a"]
    assert CharTokenizer(vocab, CharConfig()).sep_id is None  # "<sep>" in the vocabulary but not declared
    assert CharTokenizer(vocab, CharConfig(specials=["<sep>"])).sep_id == 4
    assert CharTokenizer(vocab[:4] + ["a"], CharConfig()).sep_id is None


def test_vocab_file_is_utf8_json_with_characters_unescaped(tmp_path: Path) -> None:
    tok = CharTokenizer.train(["né 日"], CharConfig())
    tok.save(tmp_path / "a" / "b")  # missing folders are made
    raw = (tmp_path / "a" / "b" / VOCAB_FILE).read_bytes()
    assert raw == '["<pad>", "<bos>", "<eos>", "<unk>", " ", "n", "é", "日"]'.encode("utf-8")


@pytest.mark.skipif(bool(sys.flags.utf8_mode), reason="Python's UTF-8 mode ignores the locale's encoding")
def test_save_and_load_use_utf8_under_an_ascii_locale(tmp_path: Path) -> None:
    """A saved tokenizer is the same files whatever the locale: written and read as UTF-8, never the locale's
    encoding (here ASCII, which cannot hold "é" or "日")."""
    tok = CharTokenizer.train(["né 日"], CharConfig())
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        tok.save(tmp_path)
        loaded = CharTokenizer.load(tmp_path)
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    assert loaded.tokens() == ["<pad>", "<bos>", "<eos>", "<unk>", " ", "n", "é", "日"]
    assert loaded.encode("日né") == [7, 5, 6]
