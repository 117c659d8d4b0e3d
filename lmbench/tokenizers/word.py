"""Word tokenizer: a vocabulary of whole words (and punctuation marks) from the train split.

Normalisation, exactly (``encode``):
1. ``lowercase``: the text is lower-cased with ``str.lower``.
2. Special symbols (``<pad> <bos> <eos> <unk>`` and the configured `specials`, e.g. ``<sep>``) that occur literally in
   the text are single tokens with their own ids; WikiText's literal ``<unk>`` therefore maps to the unk id.
3. The rest is split into tokens by the backend:
   - ``pretokenized: true``: on whitespace only (``str.split``), for corpora that are already tokenized, such as
     WikiText (``@-@``, ``@,@``, ``@.@`` and ``'s`` stay tokens of their own);
   - ``backend: regex``: `WORD_PATTERN`: abbreviations (``e.g.``, ``U.S.``), numbers with inner separators
     (``3.14``, ``1,000``, ``12:30``), words with inner hyphens or apostrophes (``don't``, ``state-of-the-art``),
     runs of ``!``/``?`` and ``...``, and any other single non-space symbol;
   - ``backend: razdel``: ``razdel.tokenize`` (Russian and English rules; it splits ``don't`` into ``don ' t``),
     except that abbreviations (``e.g.``) are kept whole as in the regex backend.
   Whitespace is not kept: newlines and runs of spaces disappear.
4. Words outside the vocabulary map to ``<unk>``; each encode call logs one warning listing a few of them.

Vocabulary: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, the extra `specials`, then the training words by
descending count (ties in string order) that occur at least `min_freq` times, cut at `max_size` entries in all.

Detokenizer (``decode``), exactly: ids of ``<pad>``, ``<bos>`` and ``<eos>`` are dropped; tokens are joined by one
space except that
- no space goes before closing punctuation (tokens made of ``, . ! ? ; : ) ] } % … » ”``), before tokens that
  start with an apostrophe (``'``, ``'s``, ``'re``, ``’ll``), or before ``n't``;
- no space goes after opening brackets and quotes (``( [ { « “``) or after an apostrophe token that sits between a
  word and a contraction suffix (razdel's ``don ' t`` -> ``don't``);
- a straight double quote ``"`` alternates: an odd one opens (no space after), an even one closes (no space before);
  the PTB-style quote tokens (two backticks, two apostrophes) open and close, and are written as ``"``;
- WikiText's ``@-@``, ``@,@`` and ``@.@`` are written as ``-``, ``,`` and ``.`` with no space on either side;
- when `lowercase` is set, the first letter of the text and the first word after a sentence end (a token made of
  ``. ! ? …`` only, quotes and brackets in between allowed) are capitalised.
- the unk id is written as ``<unk>``.
So ``decode(encode(x)) == x`` for ordinary single-spaced prose with known words, such as
``Hello, world! It's (really) fine.``; with `lowercase`, that sentence in any casing decodes to exactly this.
"""

from __future__ import annotations

import itertools
import logging
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmbench.errors import SpecError, choice_error, range_error
from lmbench.tokenizers.base import SPECIAL_TOKENS, TOKENIZERS, Tokenizer, VocabList, warn_unknown
from lmbench.tokenizers.char import _check_specials

logger = logging.getLogger(__name__)
VOCAB_FILE = "word_vocab.json"
BACKENDS = ("regex", "razdel")

ABBREVIATION = r"(?:[^\W\d_]\.){2,}"  # e.g. U.S. i.e.
WORD_PATTERN = ABBREVIATION + (  # abbreviations first
    r"|\d+(?:[.,:]\d+)+"  # numbers with inner separators: 3.14 1,000 12:30
    r"|\w+(?:[-'’]\w+)*"  # words, hyphenated words, contractions
    r"|\.\.\.|[!?]+"  # ellipsis, ?! !!
    r"|[^\w\s]"  # any other symbol
)

CLOSING = frozenset(",.!?;:)]}%…»”")
OPENING = frozenset({"(", "[", "{", "«", "“", "``"})
SENTENCE_END = frozenset(".!?…")
JOINERS = {"@-@": "-", "@,@": ",", "@.@": "."}
APOSTROPHES = ("'", "’")
SUFFIXES = frozenset({"s", "t", "m", "d", "re", "ll", "ve"})


@dataclass
class WordConfig:
    backend: str = "regex"  # regex | razdel (ignored when pretokenized)
    pretokenized: bool = False  # split on whitespace only (WikiText is already tokenized)
    lowercase: bool = False
    min_freq: int = 1  # keep training words seen at least this many times
    max_size: int | None = None  # largest vocabulary, special tokens included; None = no limit
    specials: list[str] = field(default_factory=list)  # extra special tokens, e.g. ["<sep>"]


@TOKENIZERS.register("word")
class WordTokenizer(VocabList, Tokenizer):
    """Words -> ids with an ``<unk>`` fallback and a readable detokenizer; see the module docstring."""

    vocab_file = VOCAB_FILE

    Config = WordConfig
    kind = "word"

    def __init__(self, vocab: Sequence[str], config: WordConfig) -> None:
        self.config = config
        self._set_vocab(vocab, config.specials)
        symbols = sorted({*SPECIAL_TOKENS, *config.specials}, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in symbols) + ")")
        # razdel splits "e.g." into "e . g .": keep abbreviations whole, like the regex backend does
        self._razdel_keep_re = re.compile("(" + "|".join([*(re.escape(s) for s in symbols), ABBREVIATION]) + ")")
        self._word_re = re.compile(WORD_PATTERN)

    @classmethod
    def check_spec(cls, config: WordConfig, spec: Any) -> None:
        if config.backend not in BACKENDS:
            raise choice_error("tokenizer.params.backend", config.backend, BACKENDS)
        if config.min_freq < 1:
            raise range_error("tokenizer.params.min_freq", config.min_freq, ">= 1")
        _check_specials("tokenizer.params.specials", config.specials)
        num_specials = len({*SPECIAL_TOKENS, *config.specials})
        if config.max_size is not None and config.max_size <= num_specials:
            raise range_error("tokenizer.params.max_size", config.max_size,
                              f"> {num_specials} (the number of special tokens), or null")
        if config.backend == "razdel" and not config.pretokenized:
            try:
                import razdel  # noqa: F401
            except ImportError:
                raise SpecError("tokenizer.params.backend", "razdel is not installed: pip install 'lmbench[razdel]' "
                                                            "(or backend: regex)") from None

    @classmethod
    def train(cls, texts: Iterable[str], config: WordConfig) -> WordTokenizer:
        cls.check_spec(config, None)
        head = list(SPECIAL_TOKENS) + [s for s in config.specials if s not in SPECIAL_TOKENS]
        splitter = cls(head, config)  # a vocabulary of specials only: used for its splitting rules
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(splitter.split(text))
        for symbol in head:
            counts.pop(symbol, None)
        words = sorted((w for w, n in counts.items() if n >= config.min_freq), key=lambda w: (-counts[w], w))
        if config.max_size is not None:
            words = words[: max(config.max_size - len(head), 0)]
        return cls(head + words, config)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def tokens_are_words(self) -> bool:  # type: ignore[override]
        return self.config.pretokenized  # one id per str.split word, unknown ones and literal specials included

    def split(self, text: str) -> list[str]:
        """Steps 1-3 of the normalisation: the token strings of `text`, before the vocabulary lookup."""
        if self.config.lowercase:
            text = text.lower()
        if self.config.pretokenized:
            return text.split()
        if self.config.backend == "regex" and "<" not in text:
            return self._word_re.findall(text)  # fast path: no special symbol can occur
        keep_re = self._razdel_keep_re if self.config.backend == "razdel" else self._special_re
        tokens: list[str] = []
        for i, part in enumerate(keep_re.split(text)):
            if i % 2:
                tokens.append(part)
            elif part and not part.isspace():
                tokens.extend(self._split_plain(part))
        return tokens

    def _split_plain(self, text: str) -> list[str]:
        if self.config.backend == "razdel":
            import razdel

            return [t.text for t in razdel.tokenize(text)]
        return self._word_re.findall(text)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Split each text, then one dict lookup per token; unknown words -> unk_id with one warning per call."""
        get, unk = self._stoi.get, self.unk_id
        out: list[list[int]] = []
        unknown: list[str] = []
        num_tokens = 0
        for text in texts:
            words = self.split(text)
            ids = [get(w, unk) for w in words]
            if unk in ids:
                unknown.extend(w for w, i in zip(words, ids) if i == unk and w not in self._stoi)
            num_tokens += len(ids)
            out.append(ids)
        warn_unknown(logger, self.kind, unknown, num_tokens)
        return out

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`encode_batch` with each text's lookups done by `map` straight into one C array (no list per text, no
        string kept past its text: as fast per word as a plain loop that keeps nothing). An unknown word gets an
        id no word has until the end, so that a literal "<unk>" in the text is not taken for one."""
        missing = len(self._itos)
        get, default = self._stoi.get, itertools.repeat(missing)
        ids, lengths = array("I"), array("q")
        extend, append, total = ids.extend, lengths.append, 0
        split = str.split if self.config.pretokenized and not self.config.lowercase else self.split
        for text in texts:
            extend(map(get, split(text), default))
            append(len(ids) - total)
            total = len(ids)
        flat = np.frombuffer(ids, dtype=np.uint32) if total else np.zeros(0, dtype=np.uint32)
        counts = np.frombuffer(lengths, dtype=np.int64) if texts else np.zeros(0, dtype=np.int64)
        unknown = flat == missing
        if unknown.any():
            flat = np.where(unknown, np.uint32(self.unk_id), flat)
            self._warn_unknown_in(texts, counts, unknown)
        return flat, counts

    def _warn_unknown_in(self, texts: Sequence[str], lengths: np.ndarray, unknown: np.ndarray, shown: int = 5) -> None:
        """The unknown-word warning of `encode_flat`: every unknown word counted, the first few distinct ones shown
        (read again from the texts that hold them, until enough are found)."""
        docs = np.unique(np.searchsorted(np.cumsum(lengths), np.flatnonzero(unknown), side="right"))
        words: list[str] = []
        for i in docs.tolist():
            words += [w for w in self.split(texts[i]) if w not in self._stoi]
            if len(set(words)) >= shown:
                break
        warn_unknown(logger, self.kind, words, int(lengths.sum()), shown, count=int(unknown.sum()))

    def decode(self, ids: Sequence[int]) -> str:
        itos, drop = self._itos, self._drop
        return detokenize([itos[i] for i in ids if i not in drop], capitalize=self.config.lowercase)


def detokenize(tokens: Sequence[str], capitalize: bool = False) -> str:
    """Join word tokens into readable text by the rules in the module docstring ("prettify")."""
    parts: list[str] = []
    glue_next = True  # no space before the next token (start of text, after an opener)
    quote_open = False
    pending_capital = capitalize
    for i, token in enumerate(tokens):
        no_space_before = glue_next
        glue_next = False
        if token in JOINERS:
            token, no_space_before, glue_next = JOINERS[token], True, True
        elif token in ('"', "``", "''"):
            opens = token == "``" or (token == '"' and not quote_open)
            token, quote_open = '"', opens
            no_space_before = no_space_before or not opens
            glue_next = opens
        elif _is_closing(token) or token == "n't" or token.startswith(APOSTROPHES):
            no_space_before = True
            glue_next = token in APOSTROPHES and _is_contraction(tokens, i)
        elif token in OPENING:
            glue_next = True
        if pending_capital and any(c.isalnum() for c in token):
            token, pending_capital = _capitalize(token), False
        if capitalize and token and all(c in SENTENCE_END for c in token):
            pending_capital = True
        parts.append(token if no_space_before else " " + token)
    return "".join(parts)


def _is_closing(token: str) -> bool:
    return bool(token) and all(c in CLOSING for c in token)


def _is_contraction(tokens: Sequence[str], i: int) -> bool:
    """An apostrophe token between a word and a suffix: razdel's ``don ' t`` or ``it ' s``."""
    return 0 < i < len(tokens) - 1 and tokens[i - 1][-1:].isalnum() and tokens[i + 1] in SUFFIXES


def _capitalize(token: str) -> str:
    return token[:1].upper() + token[1:] if token[:1].isalpha() else token
