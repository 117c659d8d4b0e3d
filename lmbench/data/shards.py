"""Shards of local text files: byte ranges that end on a document boundary, read and cut by worker processes.

The token cache of a large text corpus is built in shards when its tokenizer is encoded in worker processes
(char, word). The main process cuts each file after the last document boundary of each `SHARD_BYTES` piece:
- when no document needs its raw index (no `limit`, `subsample` or carved split) and raw bytes cut exactly (lines,
  or a separator without newlines that cannot overlap itself), a shard is a byte range, found by reading only a
  window around each cut, and the worker reads the range itself;
- otherwise the main process reads the bytes (translating newlines) and counts the documents in each shard, so
  that every shard knows the raw index of its first document, which the seeded filters and split are keyed on.
A worker decodes its shard, cuts it into documents, applies the filters and the split, and encodes them: the main
process does no Python work per document.

The documents are exactly those of `lmbench.data.sources.local.read_unit_batches` (text mode with universal
newlines: ``\\r\\n`` and a lone ``\\r`` read as ``\\n``), for the encodings in which a byte-level search finds
the same separators as a character-level one (UTF-8, ASCII and the single-byte Latin encodings).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SHARD_BYTES = 1 << 20  # bytes read per shard (a shard ends at the last document boundary in it)
# Byte-level cutting finds exactly the character-level separators: UTF-8 never has an ASCII byte inside a
# multi-byte character, and in a single-byte encoding every character is one byte.
BYTE_SAFE_ENCODINGS = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252"})


@dataclass(frozen=True)
class Shard:
    """Whole documents of one text file, ready for a worker: as bytes (newlines translated), or, when the
    documents need no raw index (no seeded filter or split), as the byte range [start, stop) of `path` that the
    worker reads itself (`read`), so that the main process neither copies nor sends the text."""

    data: bytes | None
    num_docs: int | None  # documents in it, as `split_units` cuts it (None: not counted)
    first_index: int | None  # raw index of its first document in the split's stream (across the split's files)
    last: bool  # the end of its file: the text after the last boundary is a document too
    path: Path  # the file it was read from (for error messages)
    start: int = 0
    stop: int = 0

    def read(self) -> bytes:
        """Its bytes, with newlines translated as text mode reads them."""
        if self.data is not None:
            return self.data
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), self.stop - self.start, self.start)
        if len(data) != self.stop - self.start:
            raise RuntimeError(f"{self.path} changed while it was read ({len(data)} of {self.stop - self.start} "
                               f"bytes at {self.start})")
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


def byte_safe(encoding: str) -> bool:
    """Whether files in `encoding` can be cut into documents at byte level (see BYTE_SAFE_ENCODINGS)."""
    try:
        return codecs.lookup(encoding).name in BYTE_SAFE_ENCODINGS
    except LookupError:
        return False


def iter_shards(files: list[Path], unit: str, separator: str, encoding: str, first_index: int = 0,
                shard_bytes: int = SHARD_BYTES, counted: bool = True) -> Iterator[Shard]:
    """Shards of `files` in order, documents numbered on from `first_index`. unit is "line" or "separator".
    `counted=False`: the documents need no raw index; where cutting the raw bytes is exact (lines, or a separator
    with no newline in it that cannot overlap itself), shards are byte ranges found by reading only around each
    cut (`_range_shards`)."""
    cut = b"\n" if unit == "line" else separator.encode(encoding)
    by_range = not counted and not _overlapping(cut) and (unit == "line" or not {"\n", "\r"} & set(separator))
    for path in files:
        if by_range:
            yield from _range_shards(path, cut, shard_bytes)
            continue
        for shard in _file_shards(path, unit, separator, encoding, first_index, shard_bytes):
            first_index += shard.num_docs  # type: ignore[operator]
            yield shard


def _overlapping(cut: bytes) -> bool:
    """A separator whose end can begin another occurrence, such as "\\n\\n" ("\\n\\n\\n")."""
    return any(cut[i:] == cut[:len(cut) - i] for i in range(1, len(cut)))


def _range_shards(path: Path, cut: bytes, shard_bytes: int, window: int = 1 << 16) -> Iterator[Shard]:
    """Byte ranges of `path` that end just after a line end or separator: each about `shard_bytes` long (longer
    when a document is), found by reading backwards from the target end a `window` at a time. Exact on raw
    bytes: translating newlines (done by the worker) neither makes nor breaks such a boundary."""
    size, window = path.stat().st_size, max(window, 2 * len(cut))
    with open(path, "rb") as f:
        fd, start = f.fileno(), 0
        while size - start > shard_bytes:
            stop = _cut_before(fd, start, start + shard_bytes, cut, window) or _cut_after(fd, start + shard_bytes,
                                                                                          size, cut, window)
            if stop is None:  # no boundary up to the end: the rest is the file's last document
                break
            yield Shard(None, None, None, False, path, start, stop)
            start = stop
    yield Shard(None, None, None, True, path, start, size)


def _cut_before(fd: int, start: int, end: int, cut: bytes, window: int) -> int | None:
    """The end of the last `cut` inside [start, end), or None."""
    hi = end
    while hi > start:
        lo = max(start, hi - window)
        found = os.pread(fd, hi - lo, lo).rfind(cut)
        if found >= 0:
            return lo + found + len(cut)
        if lo == start:
            return None
        hi = lo + len(cut) - 1  # a separator across the window's start
    return None


def _cut_after(fd: int, begin: int, size: int, cut: bytes, window: int) -> int | None:
    """The end of the first `cut` that ends after `begin` (searching from begin - len(cut) + 1), or None."""
    lo = max(begin - len(cut) + 1, 0)
    while lo < size:
        chunk = os.pread(fd, window, lo)
        found = chunk.find(cut)
        if found >= 0:
            return lo + found + len(cut)
        lo += max(len(chunk) - len(cut) + 1, 1)
    return None


def _file_shards(path: Path, unit: str, separator: str, encoding: str, first_index: int,
                 shard_bytes: int) -> Iterator[Shard]:
    cut = b"\n" if unit == "line" else separator.encode(encoding)
    overlapping = _overlapping(cut)
    rest = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(shard_bytes)
            buf, held = rest + chunk, b""
            if b"\r" in buf:  # universal newlines, as text mode reads them
                if chunk and buf.endswith(b"\r"):  # it may be the first half of a \r\n in the next read
                    buf, held = buf[:-1], b"\r"
                buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if not chunk:  # end of file: the rest is the file's last piece
                yield Shard(buf, count_units(buf, unit, cut, overlapping, last=True), first_index, True, path)
                return
            end = _boundary_end(buf, cut, overlapping)
            if end <= 0:  # no boundary yet: a document longer than a read
                rest = buf + held
                continue
            data, rest = buf[:end], buf[end:] + held
            shard = Shard(data, count_units(data, unit, cut, overlapping, last=False), first_index, False, path)
            first_index += shard.num_docs
            yield shard


def _boundary_end(buf: bytes, cut: bytes, overlapping: bool) -> int:
    """Where the last boundary of `buf` ends, matching separators from the left as `str.split` does; 0 for none."""
    if overlapping:
        return _leftmost_end(buf, cut)
    found = buf.rfind(cut)
    return found + len(cut) if found >= 0 else 0


def _leftmost_end(buf: bytes, cut: bytes) -> int:
    """End of the last separator when matching from the left (a separator that overlaps itself, like "\\n\\n",
    may be found further right by rfind than `split` cuts it)."""
    pieces = buf.split(cut)
    return 0 if len(pieces) == 1 else len(buf) - len(pieces[-1])


def count_units(data: bytes, unit: str, cut: bytes, overlapping: bool, last: bool) -> int:
    """Documents in `data`: one per boundary, plus the file's last piece (separator: always; line: if not empty)."""
    boundaries = data.count(cut) if not overlapping else len(data.split(cut)) - 1
    if not last:
        return boundaries
    if unit == "line":
        return boundaries + (1 if data and not data.endswith(b"\n") else 0)
    return boundaries + 1


def split_units(text: str, unit: str, separator: str, last: bool) -> list[str]:
    """The documents of a shard's decoded text, as `read_unit_batches` yields them: lines (without the newline;
    a last line only if not empty) or separator pieces, stripped (after the last separator: always one more)."""
    if unit == "line":
        pieces = text.split("\n")
        if not pieces[-1]:
            pieces.pop()
        return pieces
    pieces = text.split(separator)
    if not last:
        pieces.pop()  # empty: a shard that is not the file's last ends with a separator
    return [p.strip() for p in pieces]
