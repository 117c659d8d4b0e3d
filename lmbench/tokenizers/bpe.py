"""Subword tokenizer: sentencepiece BPE or unigram, trained in memory on the train split.

Ids as in the WritingPrompts notebook: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3, then the user-defined
symbols (``<sep>`` ...; each one token wherever it occurs in text), then the learned pieces.

Exact round trip: training uses the ``identity`` normalisation rule with ``add_dummy_prefix`` and
``remove_extra_whitespaces`` off, so ``decode(encode(x)) == x`` for any text made of covered characters: runs of
spaces, leading/trailing spaces, tabs and newlines survive (with `split_newlines`, ``"\\n"`` is a user-defined
symbol: always in the vocabulary, one token per line break, never merged into a piece). Exceptions: characters
outside `character_coverage` become ``<unk>`` (decoded as ``<unk>``) unless `byte_fallback` is on, and the
character ``▁`` (U+2581, sentencepiece's space marker) decodes as a space.
"""

from __future__ import annotations

import io
import itertools
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbench.errors import SpecError, choice_error, range_error
from lmbench.tokenizers.base import SEP_TOKEN, TOKENIZERS, Tokenizer, read_meta, write_meta

MODEL_FILE = "sentencepiece.model"
MODEL_TYPES = ("bpe", "unigram")
NORMALIZATIONS = ("identity", "nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf")
PIECES = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
NEWLINE = "\n"


@dataclass
class BPEConfig:
    model_type: str = "bpe"  # bpe | unigram
    vocab_size: int = 8000  # pieces in all, special tokens and user-defined symbols included
    user_defined_symbols: list[str] = field(default_factory=list)  # e.g. ["<sep>"]: always one token
    character_coverage: float = 0.9995  # fraction of characters covered; the rest -> <unk> (or bytes)
    byte_fallback: bool = False  # uncovered characters -> UTF-8 byte pieces instead of <unk> (adds 256 pieces)
    split_newlines: bool = True  # "\n" is a user-defined symbol (see the module docstring)
    normalization_rule_name: str = "identity"  # identity keeps decode(encode(x)) == x
    max_sentence_length: int = 1 << 20  # bytes; longer training documents are skipped by sentencepiece
    input_sentence_size: int = 0  # train on at most this many documents (sampled); 0 = all
    shuffle_input_sentence: bool = True  # sample input_sentence_size documents at random, not the first ones
    seed: int = 0  # the document sample (drawn by lmbench) and sentencepiece's random generator


@TOKENIZERS.register("bpe")
class BPETokenizer(Tokenizer):
    """A sentencepiece model; see the module docstring for ids and the round-trip guarantee."""

    Config = BPEConfig
    kind = "bpe"
    threaded = True  # the library's batch encode uses every core

    def __init__(self, model_proto: bytes, config: BPEConfig) -> None:
        import sentencepiece as spm

        self.config = config
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        sp = self._sp
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()
        self.sep_id = sp.piece_to_id(SEP_TOKEN) if SEP_TOKEN in config.user_defined_symbols else None

    @classmethod
    def check_spec(cls, config: BPEConfig, spec: Any) -> None:
        path = "tokenizer.params"
        if config.model_type not in MODEL_TYPES:
            raise choice_error(f"{path}.model_type", config.model_type, MODEL_TYPES)
        if config.normalization_rule_name not in NORMALIZATIONS:
            raise choice_error(f"{path}.normalization_rule_name", config.normalization_rule_name, NORMALIZATIONS)
        _check_symbols(f"{path}.user_defined_symbols", config.user_defined_symbols)
        num_fixed = len(_symbols(config)) + len(PIECES) + (256 if config.byte_fallback else 0)
        if config.vocab_size <= num_fixed:
            raise range_error(f"{path}.vocab_size", config.vocab_size,
                              f"> {num_fixed} (special tokens, user-defined symbols and byte pieces)")
        if not 0 < config.character_coverage <= 1:
            raise range_error(f"{path}.character_coverage", config.character_coverage, "in (0, 1]")
        if config.max_sentence_length < 1:
            raise range_error(f"{path}.max_sentence_length", config.max_sentence_length, ">= 1")
        if config.input_sentence_size < 0:
            raise range_error(f"{path}.input_sentence_size", config.input_sentence_size, ">= 0 (0: all)")

    @classmethod
    def train(cls, texts: Iterable[str], config: BPEConfig) -> BPETokenizer:
        import sentencepiece as spm

        cls.check_spec(config, None)
        spm.set_random_generator_seed(config.seed)
        model = io.BytesIO()
        docs: Iterable[str] = _non_empty(texts)
        if config.input_sentence_size:  # sentencepiece's own sample ignores the seed: a new one in every process
            docs = sample_documents(docs, config.input_sentence_size, config.seed, config.shuffle_input_sentence)
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(docs), model_writer=model,
                                           **_trainer_args(config))
        except RuntimeError as exc:  # "INTERNAL: src/...cc(744) [...] Vocabulary size too high (250). Please ..."
            reason = str(exc).rpartition("] ")[2].strip() or str(exc)
            raise SpecError("tokenizer.params.vocab_size", f"sentencepiece cannot train: {reason}") from None
        return cls(model.getvalue(), config)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    num_threads: int | None = None  # batch-encode threads (the token cache sets data.num_workers); None: all cores

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """sentencepiece's batch encode (C++, multi-threaded)."""
        return self._sp.encode(list(texts), out_type=int, num_threads=self.num_threads or _num_threads())

    def decode(self, ids: Sequence[int]) -> str:
        """Pad, BOS and EOS decode to nothing; user-defined symbols (``<sep>``) to their text."""
        return self._sp.decode(list(ids))

    def tokens(self) -> list[str]:
        """sentencepiece pieces; a leading ``▁`` (U+2581) marks a preceding space."""
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def save(self, directory: Path) -> None:
        write_meta(directory, self.kind, self.config)
        (Path(directory) / MODEL_FILE).write_bytes(self._proto)

    @classmethod
    def load(cls, directory: Path) -> BPETokenizer:
        _, params = read_meta(directory)
        return cls((Path(directory) / MODEL_FILE).read_bytes(), BPEConfig(**params))


def _symbols(config: BPEConfig) -> list[str]:
    """User-defined symbols passed to sentencepiece: the configured ones, plus "\\n" with split_newlines."""
    symbols = list(config.user_defined_symbols)
    if config.split_newlines and NEWLINE not in symbols:
        symbols.append(NEWLINE)
    return symbols


def _trainer_args(config: BPEConfig) -> dict[str, Any]:
    return dict(
        model_type=config.model_type,
        vocab_size=config.vocab_size,
        user_defined_symbols=_symbols(config),
        character_coverage=config.character_coverage,
        byte_fallback=config.byte_fallback,
        normalization_rule_name=config.normalization_rule_name,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        max_sentence_length=config.max_sentence_length,
        input_sentence_size=0,  # the sample is drawn before (sample_documents)
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        pad_piece=PIECES["pad"], unk_piece=PIECES["unk"], bos_piece=PIECES["bos"], eos_piece=PIECES["eos"],
        unk_surface=PIECES["unk"],
        num_threads=_num_threads(),
        minloglevel=2,  # sentencepiece logs every step to stderr otherwise
    )


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    return (t for t in texts if t)


def sample_documents(texts: Iterable[str], size: int, seed: int, shuffle: bool = True) -> list[str]:
    """At most `size` of the documents: a uniform random sample (reservoir sampling, Algorithm R, drawn with
    `random.Random(seed)`: the same sample on every machine and in every process), or the first `size` ones."""
    iterator = iter(texts)
    kept = list(itertools.islice(iterator, size))
    if not shuffle:
        return kept
    rng = random.Random(seed)
    for seen, text in enumerate(iterator, start=size + 1):
        slot = rng.randrange(seen)
        if slot < size:
            kept[slot] = text
    return kept


def _num_threads() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def _check_symbols(path: str, symbols: Sequence[str]) -> None:
    """sentencepiece joins the symbol list with commas, so a symbol may not contain one."""
    for i, symbol in enumerate(symbols):
        if not symbol or "," in symbol:
            raise SpecError(f"{path}[{i}]", f"{symbol!r} must be non-empty and contain no comma")
        if symbol in PIECES.values():
            raise SpecError(f"{path}[{i}]", f"{symbol!r} is already a special token (pad, unk, bos, eos)")
    if len(set(symbols)) != len(symbols):
        raise SpecError(path, f"{list(symbols)} lists a symbol twice")
