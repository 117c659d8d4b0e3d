"""Tokenizers: one interface (`Tokenizer`), four kinds registered in `TOKENIZERS`: char, word, bpe, hf.

    tokenizer = build_tokenizer(spec.tokenizer, train_texts)   # trains on the train split only
    tokenizer.save(run_dir / "tokenizer")
    same = load_tokenizer(run_dir / "tokenizer")               # the meta file names the kind
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmbench.spec import TokenizerSpec, typed_params
from lmbench.tokenizers import bpe, char, hf, word  # noqa: F401  (each module registers its kind)
from lmbench.tokenizers.base import META_FILE, TOKENIZERS, Tokenizer, read_meta

__all__ = ["META_FILE", "TOKENIZERS", "Tokenizer", "build_tokenizer", "load_tokenizer", "resolve_config",
           "tokenizer_fingerprint"]

FINGERPRINT_VERSION = 1  # bump when a kind's encoding changes for the same config
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
            "added_tokens.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def resolve_config(spec: TokenizerSpec) -> Any:
    """The kind's typed Config for `spec.params` (SpecError under ``tokenizer.params`` / ``tokenizer.kind``)."""
    return typed_params(TOKENIZERS.get(spec.kind).Config, dict(spec.params), "tokenizer.params")


def build_tokenizer(spec: TokenizerSpec, texts: Iterable[str]) -> Tokenizer:
    """Check `spec` and train its kind on `texts` (the train split; streamed, consumed at most once)."""
    cls = TOKENIZERS.get(spec.kind)
    config = resolve_config(spec)
    cls.check_spec(config, None)
    return cls.train(texts, config)


def load_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer that `Tokenizer.save(directory)` wrote, of whichever kind its meta file names."""
    kind, _ = read_meta(Path(directory))
    return TOKENIZERS.get(kind).load(Path(directory))


def tokenizer_fingerprint(spec: TokenizerSpec) -> str:
    """16 hex digits of sha256 over the kind and its resolved Config (defaults filled in, so `{}` and the spelled-out
    defaults agree). For an hf tokenizer read from a local directory, its files' contents are hashed too.
    The training texts are not part of it: the token cache combines this with the data fingerprint."""
    config = resolve_config(spec)
    payload: dict[str, Any] = {"version": FINGERPRINT_VERSION, "kind": spec.kind, "config": dataclasses.asdict(config)}
    if spec.kind == "hf" and config.name_or_path and Path(config.name_or_path).expanduser().is_dir():
        payload["files"] = _directory_digest(Path(config.name_or_path).expanduser())
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _directory_digest(directory: Path) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in HF_FILES if (directory / name).is_file()}
