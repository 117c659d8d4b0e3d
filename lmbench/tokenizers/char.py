"""Character tokenizer: the sorted set of characters of the train split, after four special tokens.

Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then the optional extra `specials` (e.g. ``<sep>``, each
one token, matched literally in text), then every character seen in training, in sorted (code point) order.
A character never seen in training encodes to ``<unk>`` (with one logged warning per encode call), and
``decode`` writes ``<unk>`` for it, so ``decode(encode(x)) == x`` holds for every text made of known characters
(``x.lower()`` when `lowercase` is set).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmbench.errors import SpecError
from lmbench.tokenizers.base import SPECIAL_TOKENS, TOKENIZERS, Tokenizer, VocabList, warn_unknown

logger = logging.getLogger(__name__)
VOCAB_FILE = "char_vocab.json"


@dataclass
class CharConfig:
    lowercase: bool = False  # lower-case text before encoding (and before building the vocabulary)
    specials: list[str] = field(default_factory=list)  # extra one-token symbols such as "<sep>", matched in text


@TOKENIZERS.register("char")
class CharTokenizer(VocabList, Tokenizer):
    """One id per character; see the module docstring for the id layout."""

    vocab_file = VOCAB_FILE

    Config = CharConfig
    kind = "char"

    def __init__(self, vocab: Sequence[str], config: CharConfig) -> None:
        self.config = config
        self._set_vocab(vocab, config.specials)
        self._special_re = _specials_regex(config.specials)
        self._id_table: np.ndarray | None = None  # see _table

    @classmethod
    def check_spec(cls, config: CharConfig, spec: Any) -> None:
        _check_specials("tokenizer.params.specials", config.specials)

    @classmethod
    def train(cls, texts: Iterable[str], config: CharConfig) -> CharTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(text.lower() if config.lowercase else text)
        head = list(SPECIAL_TOKENS) + [s for s in config.specials if s not in SPECIAL_TOKENS]
        return cls(head + sorted(chars - set(head)), config)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Dict lookups per character; about 50 ms per MB of text in CPython."""
        get, unk = self._stoi.get, self.unk_id
        out = [[get(c, unk) for c in self._pieces(t)] for t in texts]
        num_unk = sum(ids.count(unk) for ids in out)
        if num_unk:
            unknown = [c for t in texts for c in self._pieces(t) if c not in self._stoi]
            warn_unknown(logger, self.kind, unknown, sum(map(len, out)))
        return out

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`encode_batch` as one numpy lookup of the code points in a table (no configured specials; with them the
        per-character path): a few ms per MB."""
        if self._special_re is not None:
            return super().encode_flat(texts)
        if self.config.lowercase:
            texts = [t.lower() for t in texts]  # before the lengths: lower() may change a text's length
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.take(self._table(), points, mode="clip")  # a code point past the table: its last slot, unk
        unknown = ids == self.unk_id
        if unknown.any():
            warn_unknown(logger, self.kind, [chr(c) for c in points[unknown].tolist()], len(ids))
        return ids, lengths

    def _table(self) -> np.ndarray:
        """uint32 id of every code point up to the largest one in the vocabulary; one more slot (unk) for the
        rest."""
        if self._id_table is None:
            singles = {ord(s): i for i, s in enumerate(self._itos) if len(s) == 1}
            table = np.full(max(singles, default=0) + 2, self.unk_id, dtype=np.uint32)
            table[list(singles)] = list(singles.values())
            self._id_table = table
        return self._id_table

    def _pieces(self, text: str) -> Sequence[str]:
        """The characters of `text` (lower-cased when configured), with each configured special kept whole."""
        if self.config.lowercase:
            text = text.lower()
        if self._special_re is None:
            return text
        pieces: list[str] = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:
                pieces.append(part)
            else:
                pieces.extend(part)
        return pieces

    def decode(self, ids: Sequence[int]) -> str:
        itos, drop = self._itos, self._drop
        return "".join(itos[i] for i in ids if i not in drop)


def _specials_regex(specials: Sequence[str]) -> re.Pattern[str] | None:
    """A capturing pattern that splits text around the given symbols (longest first), or None for no symbols."""
    if not specials:
        return None
    alternatives = "|".join(re.escape(s) for s in sorted(set(specials), key=len, reverse=True))
    return re.compile(f"({alternatives})")


def _check_specials(path: str, specials: Sequence[str]) -> None:
    for i, symbol in enumerate(specials):
        if not symbol or symbol.isspace():
            raise SpecError(f"{path}[{i}]", f"{symbol!r} is empty or whitespace; a special symbol needs visible text")
    if len(set(specials)) != len(specials):
        raise SpecError(path, f"{list(specials)} lists a symbol twice")
