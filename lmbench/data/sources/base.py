"""The source interface (`Source`, `SOURCES`) and the file and record helpers every source shares.

A source knows its files and its own (native) splits and yields raw `Document`s; filters, the seeded split and
tokenization live in `corpus.py` and `cache.py`. Each source has a `Config`: the `data.*` fields it reads
(resolved from the DataSpec by `lmbench.data.sources.resolve_config`). `check_spec(config, spec)` is cheap and
runs before any work: it stats files and reads at most the first record of one file, raising SpecError with the
field path otherwise.
"""

from __future__ import annotations

import abc
import csv
import glob
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmbench.errors import SpecError, choice_error, did_you_mean
from lmbench.registry import Registry

SPLITS = ("train", "validation", "test")
# Names other datasets use for our three splits (WikiText's valid.txt, HF's "dev"...).
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test"}
TABLE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
ROWS_PER_READ = 1000  # rows pulled from `datasets` at a time
CHUNK_CHARS = 1 << 20  # characters read at a time when splitting a file on a separator


@dataclass(frozen=True)
class Document:
    """One document; `prompt` is set for prompt/story data (the prompt is conditioned on, never scored)."""

    text: str
    prompt: str | None = None


@dataclass
class FilesConfig:
    """Where a file-backed source reads: `path` (a file, glob or folder: the single train stream) or `files`
    (our split name -> file, glob or folder: the source's own splits)."""

    path: str | None = None
    files: dict[str, str] = field(default_factory=dict)


class Source(abc.ABC):
    """Yields the raw documents of one native split. Every source has at least a "train" split (the whole
    stream when the source has no splits of its own); `corpus.py` carves validation/test out of it if needed."""

    Config: ClassVar[type] = FilesConfig

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    @abc.abstractmethod
    def check_spec(cls, config: Any, spec: Any) -> None:
        """Cheap checks before any work (files exist, fields present in the first record); SpecError otherwise.
        `spec` is the whole ExperimentSpec (None when checking a source on its own)."""

    def native_splits(self) -> list[str]:
        """lmbench names (train/validation/test) of the splits the source provides itself, train first."""
        return sorted(self.config.files, key=SPLITS.index) if self.config.files else ["train"]

    @abc.abstractmethod
    def documents(self, split: str) -> Iterator[Document]:
        """Raw documents of native split `split`, in a deterministic order (no filters applied)."""

    def document_batches(self, split: str) -> Iterator[list[Document]]:
        """`documents(split)` in lists (a source that reads in chunks hands each chunk's documents at once)."""
        docs = self.documents(split)
        while batch := list(itertools.islice(docs, ROWS_PER_READ)):
            yield batch

    def fingerprint(self) -> dict[str, Any]:
        """A cheap identity of the source contents for the token cache key (file paths, sizes, mtimes)."""
        return {"files": stat_files(self._all_files())}

    def _all_files(self) -> list[Path]:
        return [f for split in self.native_splits() for f in self.split_files(split)]

    def split_files(self, split: str) -> list[Path]:
        """Files of a native split: `files[split]`, or `path` for the single train stream."""
        if self.config.files:
            return resolve_files(self.config.files[split], f"data.files.{split}")
        return resolve_files(require_path(self.config), "data.path")


SOURCES: Registry[type[Source]] = Registry("data.source")


# ---------------------------------------------------------------------------------------------- file helpers


def resolve_files(pattern: str, field: str) -> list[Path]:
    """Files named by a path, a glob (``data/*.txt``, ``**`` allowed) or a directory (its files, sorted)."""
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise SpecError(field, f"no file matches {pattern!r}")
        return files
    path = Path(expanded)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise SpecError(field, f"directory {pattern!r} holds no files")
        return files
    if not path.is_file():
        raise SpecError(field, f"file not found: {pattern!r} (resolved to {path.resolve()})")
    return [path]


def require_path(config: FilesConfig) -> str:
    if not config.path:
        raise SpecError("data.path", "required: a file, glob or folder (or set data.files per split)")
    return config.path


def stat_files(files: Iterable[Path]) -> list[list[Any]]:
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def check_split_files(spec: FilesConfig) -> None:
    """`data.files` keys are split names (aliases like `valid` are refused with a hint) and include train."""
    for key in spec.files:
        if key not in SPLITS:
            raise choice_error(f"data.files.{key}", key, SPLITS, what="split")
    if spec.files and "train" not in spec.files:
        raise SpecError("data.files", f"needs a train file (the tokenizer is trained on it); got {sorted(spec.files)}")


def check_files(spec: FilesConfig) -> Path:
    """Check `files` (every split) or `path`; the first (train) file, whose first record the caller may read."""
    check_split_files(spec)
    if spec.files:
        firsts = {s: resolve_files(p, f"data.files.{s}")[0] for s, p in spec.files.items()}
        return firsts["train"]
    return resolve_files(require_path(spec), "data.path")[0]


# ---------------------------------------------------------------------------------------------- first records


def first_record_fields(path: Path, builder: str) -> list[str]:
    """Field names of the first record of a JSON/JSONL/CSV/parquet file, reading as little as possible."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if builder == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(next(csv.reader(f), []))
    record = _first_json_record(path)
    if not isinstance(record, dict):
        raise SpecError("data.path", f"the first record of {path} is a {type(record).__name__}, not an object")
    return list(record)


def _first_json_record(path: Path) -> Any:
    """The first object of a JSON Lines file or of a top-level JSON list (Kaggle's arxivData.json layout)."""
    decoder = json.JSONDecoder()
    size = 1 << 16
    with open(path, encoding="utf-8") as f:
        head = ""
        while True:
            more = f.read(size)
            head += more
            body = head.lstrip()
            if body.startswith("["):
                body = body[1:].lstrip()
            try:
                return decoder.raw_decode(body)[0]
            except json.JSONDecodeError as exc:
                if not more:
                    raise SpecError("data.path", f"cannot read a JSON record from {path}: {exc}") from None
            size *= 2


def check_field(fields: list[str], field: str, where: Path | str, path: str = "data.text_field") -> None:
    if field not in fields:
        raise SpecError(path, f"{field!r} not in {where}; fields: {', '.join(map(str, fields))}"
                              f"{did_you_mean(field, fields)}")


# ---------------------------------------------------------------------------------------------- tables


def iter_table(files: list[Path], builder: str, columns: list[str]) -> Iterator[list[Any]]:
    """Rows of `columns` from local table files, streamed through `datasets` (no arrow copy on disk)."""
    import datasets

    ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True)
    for batch in ds.iter(batch_size=ROWS_PER_READ):
        missing = [c for c in columns if c not in batch]
        if missing:
            check_field(list(batch), missing[0], files[0])
        yield from zip(*(batch[c] for c in columns))


def as_text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)
