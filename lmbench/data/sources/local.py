"""Sources on this machine: text files, tables (JSON, JSON Lines, CSV, parquet), prompt/story pairs, and the
English prose that ships with CPython (`builtin`). Importing this module registers them in SOURCES."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmbench.data import builtin_corpus
from lmbench.data.sources.base import (CHUNK_CHARS, SOURCES, TABLE_BUILDERS, Document, FilesConfig, Source, as_text,
                                       check_field, check_files, first_record_fields, iter_table, require_path,
                                       resolve_files)
from lmbench.errors import SpecError

# ---------------------------------------------------------------------------------------------- text


@dataclass
class TextConfig(FilesConfig):
    unit: Literal["file", "line", "separator"] = "line"  # one document per file, per line, or per separator piece
    separator: str = "<|endoftext|>"  # with unit: separator
    encoding: str = "utf-8"


def read_units(path: Path, unit: str, separator: str, encoding: str = "utf-8") -> Iterator[str]:
    """Documents of one text file: the whole file, each line (without its newline), or the pieces between
    separators (stripped of surrounding whitespace), read in chunks so memory stays flat. A byte sequence that
    is not `encoding` is a SpecError naming the file and the byte offset."""
    for batch in read_unit_batches(path, unit, separator, encoding):
        yield from batch


def read_unit_batches(path: Path, unit: str, separator: str, encoding: str = "utf-8") -> Iterator[list[str]]:
    """`read_units` a chunk of CHUNK_CHARS characters at a time: the documents that end in each chunk, cut with
    `str.split` (no Python work per document but the separator's strip)."""
    try:
        with open(path, encoding=encoding) as f:
            if unit == "file":
                yield [f.read()]
                return
            cut = "\n" if unit == "line" else separator
            rest = ""
            while chunk := f.read(CHUNK_CHARS):
                pieces = (rest + chunk).split(cut)
                rest = pieces.pop()
                if pieces:
                    yield pieces if unit == "line" else [p.strip() for p in pieces]
            if unit != "line":
                yield [rest.strip()]  # the text after the last separator (or the whole file without one)
            elif rest:
                yield [rest]  # a last line without a newline
    except UnicodeDecodeError:
        raise not_text(path, encoding) from None


def not_text(path: Path, encoding: str) -> SpecError:
    """`path` is not text in `encoding`: where the first undecodable byte is, and what to do."""
    decoder, offset = codecs.getincrementaldecoder(encoding)(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                offset += exc.start
                break
            offset += len(chunk)
    return SpecError("data.encoding", f"{path} is not {encoding} text (byte {offset:,} cannot be decoded): set "
                                      "data.encoding (e.g. latin-1) or point data.path at a text file")


def check_encoding(files: list[Path], encoding: str, head_bytes: int = 1 << 16) -> None:
    """Decode the first `head_bytes` of each file (cheap; a binary file fails here, before any work)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise SpecError("data.encoding", f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    for path in files:
        with open(path, "rb") as f:
            head = f.read(head_bytes)
        try:
            codecs.getincrementaldecoder(encoding)().decode(head)  # a character cut at the end is not an error
        except UnicodeDecodeError:
            raise not_text(path, encoding) from None


@SOURCES.register("text")
class TextSource(Source):
    """Local text files or globs; `unit`: one document per file, per line, or per `separator`-delimited piece.
    `files: {train, validation, test}` gives the source its own splits (WikiText-2)."""

    Config = TextConfig

    @classmethod
    def check_spec(cls, config: TextConfig, spec: Any) -> None:
        check_files(config)
        if config.unit == "separator" and not config.separator:
            raise SpecError("data.separator", "must not be empty with data.unit: separator")
        check_encoding(cls(config)._all_files(), config.encoding)

    def documents(self, split: str) -> Iterator[Document]:
        for batch in self.document_batches(split):
            yield from batch

    def document_batches(self, split: str) -> Iterator[list[Document]]:
        for path in self.split_files(split):
            for texts in read_unit_batches(path, self.config.unit, self.config.separator, self.config.encoding):
                yield [Document(text) for text in texts]


# ---------------------------------------------------------------------------------------------- tables


@dataclass
class TableConfig(FilesConfig):
    text_field: str = "text"  # the column holding the text


class TableSource(Source):
    """Table files with a text column, read through `datasets` with the `builder` of the subclass."""

    Config = TableConfig
    builder: str = "json"

    @classmethod
    def check_spec(cls, config: TableConfig, spec: Any) -> None:
        first = check_files(config)
        check_field(first_record_fields(first, cls.builder), config.text_field, first)

    def documents(self, split: str) -> Iterator[Document]:
        for (text,) in iter_table(self.split_files(split), self.builder, [self.config.text_field]):
            yield Document(as_text(text))


@SOURCES.register("jsonl")
@SOURCES.register("json")
class JsonSource(TableSource):
    """JSON records (a top-level list, Kaggle's arxivData.json layout) or JSON Lines: one reader for both."""

    builder = "json"


@SOURCES.register("csv")
class CsvSource(TableSource):
    builder = "csv"


@SOURCES.register("parquet")
class ParquetSource(TableSource):
    builder = "parquet"


# ---------------------------------------------------------------------------------------------- prompt/story


@dataclass
class PromptStoryConfig(TableConfig):
    prompt_field: str | None = None  # from one table: the column holding the prompt
    prompt_path: str | None = None  # from two files: line i is the prompt of story i in `path`
    encoding: str = "utf-8"  # of the two files


@SOURCES.register("prompt_story")
class PromptStorySource(Source):
    """Prompt and story kept apart: two line-aligned files (`path` = stories, `prompt_path` = prompts; line i is
    the prompt of story i), or two columns (`text_field`, `prompt_field`) of a JSON/JSONL/CSV/parquet table."""

    Config = PromptStoryConfig

    @classmethod
    def check_spec(cls, config: PromptStoryConfig, spec: Any) -> None:
        if (config.prompt_path is None) == (config.prompt_field is None):
            raise SpecError("data.prompt_path", "prompt_story needs exactly one of prompt_path (two aligned files) "
                                                "or prompt_field (two columns of one table)")
        first = check_files(config)
        if config.prompt_path is not None:
            if config.files:
                raise SpecError("data.files", "two-file prompt_story data has no split files; "
                                              "use data.val_fraction to hold out stories")
            check_encoding([first, *resolve_files(config.prompt_path, "data.prompt_path")[:1]], config.encoding)
            return
        builder = _table_builder(first)
        fields = first_record_fields(first, builder)
        check_field(fields, config.text_field, first)
        check_field(fields, str(config.prompt_field), first, "data.prompt_field")

    def documents(self, split: str) -> Iterator[Document]:
        if self.config.prompt_path is None:
            files = self.split_files(split)
            columns = [str(self.config.prompt_field), self.config.text_field]
            for prompt, text in iter_table(files, _table_builder(files[0]), columns):
                yield Document(as_text(text), as_text(prompt))
            return
        yield from self._aligned_lines()

    def _aligned_lines(self) -> Iterator[Document]:
        (stories,) = resolve_files(require_path(self.config), "data.path")[:1]
        (prompts,) = resolve_files(str(self.config.prompt_path), "data.prompt_path")[:1]
        done = object()
        story_lines = read_units(stories, "line", "", self.config.encoding)
        prompt_lines = read_units(prompts, "line", "", self.config.encoding)
        for i, (story, prompt) in enumerate(itertools.zip_longest(story_lines, prompt_lines, fillvalue=done)):
            if story is done or prompt is done:
                raise SpecError("data.prompt_path", f"{prompts} and {stories} are not aligned: one ends at line "
                                                    f"{i + 1}, the other goes on")
            yield Document(str(story), str(prompt))

    def _all_files(self) -> list[Path]:
        files = super()._all_files()
        if self.config.prompt_path is not None:
            files += resolve_files(self.config.prompt_path, "data.prompt_path")
        return files


def _table_builder(path: Path) -> str:
    builder = TABLE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise SpecError("data.path", f"cannot tell the table format of {path}: expected one of "
                                     f"{', '.join(TABLE_BUILDERS)}")
    return builder


# ---------------------------------------------------------------------------------------------- builtin


@dataclass
class BuiltinConfig:
    files: dict[str, str] = field(default_factory=dict)  # refused: the builtin corpus is one stream


@SOURCES.register("builtin")
class BuiltinSource(Source):
    """The English prose that ships with CPython: `pydoc_data` topics plus standard-library docstrings
    (about 1 MB, no network, no files). One stream; `corpus.py` holds out validation/test."""

    Config = BuiltinConfig

    @classmethod
    def check_spec(cls, config: BuiltinConfig, spec: Any) -> None:
        if config.files:
            raise SpecError("data.files", "the builtin corpus has no split files; use data.val_fraction")

    def native_splits(self) -> list[str]:
        return ["train"]

    def documents(self, split: str) -> Iterator[Document]:
        for text in builtin_corpus.builtin_texts():
            yield Document(text)

    def fingerprint(self) -> dict[str, Any]:
        return builtin_corpus.builtin_fingerprint()
