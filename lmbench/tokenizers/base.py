"""The Tokenizer interface: text <-> ids, trained on the train split only, saved next to every run."""

from __future__ import annotations

import abc
import array
import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lmbench.registry import Registry

META_FILE = "lmbench_tokenizer.json"  # {"kind": ..., "config": {...}} written by every `save`, read by `load_tokenizer`
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3 for char and word (and bpe pieces)
SEP_TOKEN = "<sep>"  # sep_id is set when a kind's configured symbols include it


class Tokenizer(abc.ABC):
    """Pure text <-> ids. Never imports models.

    Every tokenizer has pad, bos, eos and unk ids (adding special tokens where the underlying library has none);
    `sep_id` is set where the configuration declares a separator symbol such as ``<sep>``.
    Subclasses define a `Config` dataclass (validated from `tokenizer.params`) and register under `TOKENIZERS`.
    """

    Config: ClassVar[type]
    kind: ClassVar[str]  # the registry name, written to META_FILE by `save`
    # True when `encode_batch` already runs on every core (a library with its own thread pool): the token cache
    # then calls it in-process; otherwise it encodes batches in worker processes (data.num_workers).
    threaded: ClassVar[bool] = False
    # True when every id stands for exactly one whitespace-separated word of the text (str.split's words): the
    # token cache then counts words as ids instead of scanning the text again.
    tokens_are_words: bool = False
    config: Any  # the typed Config this tokenizer was trained with
    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int
    sep_id: int | None = None

    @classmethod
    def check_spec(cls, config: Any, spec: Any) -> None:
        """Raise SpecError for field ranges and combinations that are wrong with this Config in `spec`
        (an ExperimentSpec), e.g. GloVe vectors with a char tokenizer. Called before any data is read."""

    @classmethod
    @abc.abstractmethod
    def train(cls, texts: Iterable[str], config: Any) -> "Tokenizer":
        """Build the vocabulary from an iterator of training documents (streamed; may be consumed once)."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without BOS/EOS (the batcher adds those)."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Batched encode; subclasses backed by a fast library override this."""
        return [self.encode(t) for t in texts]

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids of every text back to back as uint32, ids per text as int64): what the token cache stores, equal
        to `encode_batch`. Subclasses with a vectorised encoder override this."""
        seqs = self.encode_batch(texts)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        flat = array.array("I")  # extending a C array from each list: about 1.7x np.fromiter over a chain
        for seq in seqs:
            flat.extend(seq)
        return np.frombuffer(flat, dtype=np.uint32) if flat.itemsize == 4 else np.asarray(flat, np.uint32), lengths

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Readable text of `ids`; special tokens are dropped."""

    def tokens(self) -> list[str]:
        """The token string of every id, in id order (used to look words up in pretrained vectors)."""
        return [self.decode([i]) for i in range(self.vocab_size)]

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything `load` needs into `directory` (created if missing)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path) -> "Tokenizer": ...


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer.kind")


def write_meta(directory: Path, kind: str, config: Any) -> None:
    """Write META_FILE naming the kind and its Config (a dataclass) into `directory` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "config": dataclasses.asdict(config)}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_meta(directory: Path) -> tuple[str, dict[str, Any]]:
    """(kind, config dict) from `directory`/META_FILE; FileNotFoundError when the directory holds no tokenizer."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved lmbench tokenizer in {directory} ({META_FILE} is missing)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    return str(meta["kind"]), dict(meta.get("config") or {})


def warn_unknown(logger: logging.Logger, kind: str, unknown: Sequence[str], num_tokens: int, max_shown: int = 5,
                 count: int | None = None) -> None:
    """One warning per encode call: how many of `num_tokens` tokens were unknown (`count`, else every entry of
    `unknown`), and the first few distinct ones."""
    if not unknown:
        return
    shown = list(dict.fromkeys(unknown))[:max_shown]
    logger.warning("%s tokenizer: %d of %d tokens unknown, mapped to <unk> (e.g. %s)",
                   kind, len(unknown) if count is None else count, num_tokens, ", ".join(repr(u) for u in shown))


class VocabList:
    """Id tables, save and load of a tokenizer whose vocabulary is a list of strings with the special tokens
    first (char, word); the subclass names its `vocab_file` and has `kind`, `config` and `Config`."""

    vocab_file: ClassVar[str]

    def _set_vocab(self, vocab: Sequence[str], specials: Sequence[str]) -> None:
        self._itos = list(vocab)
        self._stoi = {s: i for i, s in enumerate(self._itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self._stoi[s] for s in SPECIAL_TOKENS)
        self.sep_id = self._stoi.get(SEP_TOKEN) if SEP_TOKEN in specials else None
        self._drop = {self.pad_id, self.bos_id, self.eos_id}  # dropped by decode

    def tokens(self) -> list[str]:
        return list(self._itos)

    def save(self, directory: Path) -> None:
        write_meta(directory, self.kind, self.config)  # type: ignore[attr-defined]
        (Path(directory) / self.vocab_file).write_text(json.dumps(self._itos, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Any:
        _, params = read_meta(directory)
        vocab = json.loads((Path(directory) / cls.vocab_file).read_text(encoding="utf-8"))
        return cls(vocab, cls.Config(**params))  # type: ignore[attr-defined,call-arg]
