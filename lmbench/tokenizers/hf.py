"""Hugging Face tokenizers: any `transformers.AutoTokenizer` (hub id or local directory), or a byte-level BPE
trained here with the `tokenizers` library (how TinyStories runs without hub access).

Special ids follow GPT-2, which has one special token ``<|endoftext|>`` and no BOS or pad:
``eos_id`` is the tokenizer's EOS (``<|endoftext|>`` is added when it has none); ``bos_id``, ``pad_id`` and
``unk_id`` are the tokenizer's own where it has them and otherwise the EOS id, so for GPT-2 and for the trained
byte-level BPE ``bos_id == eos_id == pad_id == unk_id``. ``decode`` drops those ids and keeps every other token
(``<sep>`` stays visible), without clean-up of spaces, so ``decode(encode(x)) == x`` for byte-level BPE whenever
`x` holds none of the dropped special strings. `extra_special_tokens` (e.g. ``["<sep>"]``) are added as single
tokens; ``sep_id`` is the id of ``<sep>`` when listed there, else the tokenizer's own sep token (BERT's ``[SEP]``).
Loading a hub id needs the network (or the local Hugging Face cache); tests only use local directories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbench.errors import SpecError, range_error
from lmbench.tokenizers.base import SEP_TOKEN, TOKENIZERS, Tokenizer, read_meta, write_meta

ENDOFTEXT = "<|endoftext|>"
NUM_BYTES = 256  # the byte-level alphabet


@dataclass
class HFConfig:
    name_or_path: str | None = None  # hub id ("gpt2") or local tokenizer directory; required unless training
    revision: str | None = None  # hub revision (branch, tag or commit) to pin
    train_from_scratch: bool = False  # train a byte-level BPE on the train split (like name_or_path's, if given)
    vocab_size: int = 8192  # train_from_scratch only; special tokens included
    min_frequency: int = 2  # train_from_scratch only: merges seen fewer times are not learned
    extra_special_tokens: list[str] = field(default_factory=list)  # added as single tokens, e.g. ["<sep>"]


@TOKENIZERS.register("hf")
class HFTokenizer(Tokenizer):
    """A `transformers` tokenizer behind the lmbench interface; see the module docstring for special ids."""

    Config = HFConfig
    kind = "hf"
    threaded = True  # the library's batch encode uses every core

    def __init__(self, hf_tokenizer: Any, config: HFConfig) -> None:
        self.config = config
        self.hf = hf_tokenizer
        _add_tokens(hf_tokenizer, config.extra_special_tokens)
        if hf_tokenizer.eos_token_id is None:
            hf_tokenizer.add_special_tokens({"eos_token": ENDOFTEXT})
        self.eos_id = int(hf_tokenizer.eos_token_id)
        self.bos_id = _or(hf_tokenizer.bos_token_id, self.eos_id)
        self.pad_id = _or(hf_tokenizer.pad_token_id, self.eos_id)
        self.unk_id = _or(hf_tokenizer.unk_token_id, self.eos_id)
        if SEP_TOKEN in config.extra_special_tokens:
            self.sep_id = int(hf_tokenizer.convert_tokens_to_ids(SEP_TOKEN))
        else:
            self.sep_id = hf_tokenizer.sep_token_id
        self._drop = {self.pad_id, self.bos_id, self.eos_id}
        self._backend = hf_tokenizer.backend_tokenizer if getattr(hf_tokenizer, "is_fast", False) else None

    @classmethod
    def check_spec(cls, config: HFConfig, spec: Any) -> None:
        path = "tokenizer.params"
        name = config.name_or_path
        if name is None and not config.train_from_scratch:
            raise SpecError(f"{path}.name_or_path", "required field is missing (a hub id such as 'gpt2' or a "
                                                    "local tokenizer directory), unless train_from_scratch: true")
        if name is not None and _looks_like_path(name) and not Path(name).expanduser().is_dir():
            raise SpecError(f"{path}.name_or_path", f"{name!r} is not a directory (nor a hub id like 'gpt2')")
        if config.train_from_scratch:
            minimum = NUM_BYTES + 1 + len(config.extra_special_tokens)
            if config.vocab_size <= minimum:
                raise range_error(f"{path}.vocab_size", config.vocab_size,
                                  f"> {minimum} (256 bytes and the special tokens)")
            if config.min_frequency < 1:
                raise range_error(f"{path}.min_frequency", config.min_frequency, ">= 1")
        for i, token in enumerate(config.extra_special_tokens):
            if not token.strip():
                raise SpecError(f"{path}.extra_special_tokens[{i}]", f"{token!r} is empty or whitespace")

    @classmethod
    def train(cls, texts: Iterable[str], config: HFConfig) -> HFTokenizer:
        """Load `name_or_path` (texts unused), or train a byte-level BPE on `texts` when train_from_scratch."""
        cls.check_spec(config, None)
        if not config.train_from_scratch:
            return cls(_from_pretrained(config.name_or_path, config.revision), config)
        if config.name_or_path is not None:  # same pipeline as an existing tokenizer, new merges
            base = _from_pretrained(config.name_or_path, config.revision)
            return cls(base.train_new_from_iterator(texts, vocab_size=config.vocab_size,
                                                    new_special_tokens=list(config.extra_special_tokens)), config)
        return cls(train_byte_level_bpe(texts, config.vocab_size, config.min_frequency,
                                        config.extra_special_tokens), config)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The Rust tokenizer's batch encode (parallel, no offsets) when there is one; no BOS/EOS."""
        backend = self._backend
        if backend is not None and backend.truncation is None and backend.padding is None:
            # encode_batch_fast (tokenizers >= 0.20; pyproject's floor is 0.22): encode_batch without the offsets
            return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]
        return self.hf(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if int(i) not in self._drop]
        return self.hf.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def tokens(self) -> list[str]:
        """The library's token strings (byte-level BPE marks a preceding space with ``Ġ``)."""
        return [str(t) for t in self.hf.convert_ids_to_tokens(list(range(self.vocab_size)))]

    def save(self, directory: Path) -> None:
        """A transformers tokenizer directory (loadable with AutoTokenizer) plus lmbench's meta file."""
        self.hf.save_pretrained(str(directory))
        write_meta(directory, self.kind, self.config)

    @classmethod
    def load(cls, directory: Path) -> HFTokenizer:
        _, params = read_meta(directory)
        return cls(_from_pretrained(str(directory), None), HFConfig(**params))


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                         extra_special_tokens: Sequence[str] = ()) -> Any:
    """A GPT-2-style byte-level BPE trained on `texts`, as a `PreTrainedTokenizerFast`.

    ``<|endoftext|>`` is id 0 and is the BOS, EOS and unk token (no pad, as in GPT-2); the extra special
    tokens follow it. Every byte is in the initial alphabet, so no text is ever unknown.
    """
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rust = RustTokenizer(models.BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    rust.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [ENDOFTEXT, *(t for t in extra_special_tokens if t != ENDOFTEXT)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    rust.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=rust, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                   unk_token=ENDOFTEXT)


def _from_pretrained(name_or_path: str | None, revision: str | None) -> Any:
    """AutoTokenizer.from_pretrained with a one-line SpecError when the tokenizer cannot be found or fetched."""
    from transformers import AutoTokenizer

    from lmbench.hub import from_hub

    assert name_or_path is not None
    path = Path(name_or_path).expanduser()
    source = str(path) if path.is_dir() else name_or_path
    try:
        return from_hub(lambda **kw: AutoTokenizer.from_pretrained(source, revision=revision, **kw),
                        field="tokenizer.params.name_or_path", what="tokenizer", name=name_or_path)
    except SpecError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError("tokenizer.params.name_or_path", f"cannot load tokenizer {name_or_path!r}: {first}") from None


def _add_tokens(hf_tokenizer: Any, tokens: Sequence[str]) -> None:
    """Add `tokens` that the tokenizer lacks as single special tokens (never split, never normalised)."""
    from tokenizers import AddedToken

    vocab = hf_tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        hf_tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing])


def _or(value: int | None, default: int) -> int:
    return default if value is None else int(value)


def _looks_like_path(name: str) -> bool:
    """Local paths start with / . ~ or have more than one '/' (a hub id is 'name' or 'owner/name')."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
