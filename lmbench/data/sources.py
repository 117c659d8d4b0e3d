"""Document sources: where raw documents come from, one class per `data.source`, registered in `SOURCES`.

A source knows its files and its own (native) splits and yields raw `Document`s; filters, the seeded split and
tokenization live in `corpus.py` and `cache.py`. `check(spec)` is cheap and runs before any work: it stats files
and reads at most the first record of one file, raising SpecError with the field path otherwise.

    source = SOURCES.get(spec.source)(spec)
    for doc in source.documents("train"): ...

The `hf` source is in `hf_source.py`; the text of the builtin corpus comes from `builtin_corpus.py`.
"""

from __future__ import annotations

import abc
import csv
import glob
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbench.data import builtin_corpus
from lmbench.errors import SpecError, choice_error, did_you_mean
from lmbench.registry import Registry
from lmbench.spec import DataSpec

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


class Source(abc.ABC):
    """Yields the raw documents of one native split. Every source has at least a "train" split (the whole
    stream when the source has no splits of its own); `corpus.py` carves validation/test out of it if needed."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec

    @classmethod
    @abc.abstractmethod
    def check(cls, spec: DataSpec) -> None:
        """Cheap checks before any work (files exist, fields present in the first record); SpecError otherwise."""

    def native_splits(self) -> list[str]:
        """lmbench names (train/validation/test) of the splits the source provides itself, train first."""
        return sorted(self.spec.files, key=SPLITS.index) if self.spec.files else ["train"]

    @abc.abstractmethod
    def documents(self, split: str) -> Iterator[Document]:
        """Raw documents of native split `split`, in a deterministic order (no filters applied)."""

    def fingerprint(self) -> dict[str, Any]:
        """A cheap identity of the source contents for the token cache key (file paths, sizes, mtimes)."""
        return {"files": stat_files(self._all_files())}

    def _all_files(self) -> list[Path]:
        return [f for split in self.native_splits() for f in self.split_files(split)]

    def split_files(self, split: str) -> list[Path]:
        """Files of a native split: `files[split]`, or `path` for the single train stream."""
        if self.spec.files:
            return resolve_files(self.spec.files[split], f"data.files.{split}")
        return resolve_files(require_path(self.spec), "data.path")


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


def require_path(spec: DataSpec) -> str:
    if not spec.path:
        raise SpecError("data.path", f"required for data.source: {spec.source} (or set data.files)")
    return spec.path


def stat_files(files: Iterable[Path]) -> list[list[Any]]:
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def check_split_files(spec: DataSpec) -> None:
    """`data.files` keys are split names (aliases like `valid` are refused with a hint) and include train."""
    for key in spec.files:
        if key not in SPLITS:
            raise choice_error(f"data.files.{key}", key, SPLITS, what="split")
    if spec.files and "train" not in spec.files:
        raise SpecError("data.files", f"needs a train file (the tokenizer is trained on it); got {sorted(spec.files)}")


def check_files(spec: DataSpec) -> Path:
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


# ---------------------------------------------------------------------------------------------- text


def read_units(path: Path, unit: str, separator: str) -> Iterator[str]:
    """Documents of one text file: the whole file, each line (without its newline), or the pieces between
    separators (stripped of surrounding whitespace), read in chunks so memory stays flat."""
    with open(path, encoding="utf-8") as f:
        if unit == "file":
            yield f.read()
        elif unit == "line":
            for line in f:
                yield line[:-1] if line.endswith("\n") else line
        else:
            yield from _split_stream(f, separator)


def _split_stream(f: Any, separator: str) -> Iterator[str]:
    buffer = ""
    while chunk := f.read(CHUNK_CHARS):
        buffer += chunk
        *pieces, buffer = buffer.split(separator)
        for piece in pieces:
            yield piece.strip()
    yield buffer.strip()


@SOURCES.register("text")
class TextSource(Source):
    """Local text files or globs; `unit`: one document per file, per line, or per `separator`-delimited piece.
    `files: {train, validation, test}` gives the source its own splits (WikiText-2)."""

    @classmethod
    def check(cls, spec: DataSpec) -> None:
        check_files(spec)
        if spec.unit == "separator" and not spec.separator:
            raise SpecError("data.separator", "must not be empty with data.unit: separator")

    def documents(self, split: str) -> Iterator[Document]:
        for path in self.split_files(split):
            for text in read_units(path, self.spec.unit, self.spec.separator):
                yield Document(text)


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


class TableSource(Source):
    """JSON (records or a top-level list), JSON Lines, CSV or parquet files with a text column."""

    builder: str = "json"

    @classmethod
    def check(cls, spec: DataSpec) -> None:
        first = check_files(spec)
        check_field(first_record_fields(first, cls.builder), spec.text_field, first)

    def documents(self, split: str) -> Iterator[Document]:
        for (text,) in iter_table(self.split_files(split), self.builder, [self.spec.text_field]):
            yield Document(as_text(text))


@SOURCES.register("json")
class JsonSource(TableSource):
    builder = "json"


@SOURCES.register("jsonl")
class JsonlSource(TableSource):
    builder = "json"


@SOURCES.register("csv")
class CsvSource(TableSource):
    builder = "csv"


@SOURCES.register("parquet")
class ParquetSource(TableSource):
    builder = "parquet"


# ---------------------------------------------------------------------------------------------- prompt/story


@SOURCES.register("prompt_story")
class PromptStorySource(Source):
    """Prompt and story kept apart: two line-aligned files (`path` = stories, `prompt_path` = prompts; line i is
    the prompt of story i), or two columns (`text_field`, `prompt_field`) of a JSON/JSONL/CSV/parquet table."""

    @classmethod
    def check(cls, spec: DataSpec) -> None:
        if (spec.prompt_path is None) == (spec.prompt_field is None):
            raise SpecError("data.prompt_path", "prompt_story needs exactly one of prompt_path (two aligned files) "
                                                "or prompt_field (two columns of one table)")
        first = check_files(spec)
        if spec.prompt_path is not None:
            if spec.files:
                raise SpecError("data.files", "two-file prompt_story data has no split files; "
                                              "use data.val_fraction to hold out stories")
            resolve_files(spec.prompt_path, "data.prompt_path")
            return
        builder = _table_builder(first)
        fields = first_record_fields(first, builder)
        check_field(fields, spec.text_field, first)
        check_field(fields, str(spec.prompt_field), first, "data.prompt_field")

    def documents(self, split: str) -> Iterator[Document]:
        if self.spec.prompt_path is None:
            files = self.split_files(split)
            columns = [str(self.spec.prompt_field), self.spec.text_field]
            for prompt, text in iter_table(files, _table_builder(files[0]), columns):
                yield Document(as_text(text), as_text(prompt))
            return
        yield from self._aligned_lines()

    def _aligned_lines(self) -> Iterator[Document]:
        (stories,) = resolve_files(require_path(self.spec), "data.path")[:1]
        (prompts,) = resolve_files(str(self.spec.prompt_path), "data.prompt_path")[:1]
        done = object()
        story_lines = read_units(stories, "line", "")
        prompt_lines = read_units(prompts, "line", "")
        for i, (story, prompt) in enumerate(itertools.zip_longest(story_lines, prompt_lines, fillvalue=done)):
            if story is done or prompt is done:
                raise SpecError("data.prompt_path", f"{prompts} and {stories} are not aligned: one ends at line "
                                                    f"{i + 1}, the other goes on")
            yield Document(str(story), str(prompt))

    def _all_files(self) -> list[Path]:
        files = super()._all_files()
        if self.spec.prompt_path is not None:
            files += resolve_files(self.spec.prompt_path, "data.prompt_path")
        return files


def _table_builder(path: Path) -> str:
    builder = TABLE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise SpecError("data.path", f"cannot tell the table format of {path}: expected one of "
                                     f"{', '.join(TABLE_BUILDERS)}")
    return builder


# ---------------------------------------------------------------------------------------------- builtin


@SOURCES.register("builtin")
class BuiltinSource(Source):
    """The English prose that ships with CPython: `pydoc_data` topics plus standard-library docstrings
    (about 1 MB, no network, no files). One stream; `corpus.py` holds out validation/test."""

    @classmethod
    def check(cls, spec: DataSpec) -> None:
        if spec.files:
            raise SpecError("data.files", "the builtin corpus has no split files; use data.val_fraction")

    def native_splits(self) -> list[str]:
        return ["train"]

    def documents(self, split: str) -> Iterator[Document]:
        for text in builtin_corpus.builtin_texts():
            yield Document(text)

    def fingerprint(self) -> dict[str, Any]:
        return builtin_corpus.builtin_fingerprint()


# The `hf` source lives in its own module (hub, cache and save_to_disk handling); importing it registers it.
from lmbench.data import hf_source  # noqa: E402,F401  (after SOURCES and the helpers it uses exist)
