"""The Tokenizer interface: text <-> ids, trained on the train split only, saved next to every run."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from lmbench.registry import Registry


class Tokenizer(abc.ABC):
    """Pure text <-> ids. Never imports models.

    Every tokenizer has pad, bos, eos and unk ids (adding special tokens where the underlying library has none);
    `sep_id` is set where the configuration declares a separator symbol such as ``<sep>``.
    Subclasses define a `Config` dataclass (validated from `tokenizer.params`) and register under `TOKENIZERS`.
    """

    Config: ClassVar[type]
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
