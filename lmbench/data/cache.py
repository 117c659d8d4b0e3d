"""Token cache: tokenize each split once per (data, tokenizer) fingerprint into memory-mapped arrays.

Layout of `<data.cache_dir>/<fingerprint[:16]>/`:

    tokenizer/                   trained on the train split only
    <split>.tokens.bin           every document's ids back to back, no BOS/EOS (uint8 if vocab <= 256, uint16 if <= 65535, else uint32)
    <split>.offsets.npy          int64 (num_docs + 1,): document i is tokens[offsets[i]:offsets[i + 1]]
    <split>.prompt_lens.npy      int64 (num_docs,), prompt_story only: leading ids of a document that are
                                 prompt + <sep> (document = encode(prompt) + [sep_id] + encode(story))
    <split>.stats.json           SplitStats of the raw text (prompt_story: the story only, the scored part)
    <split>.units.npy            validation/test: int64 (num_units, 6) [doc, chunk, tokens, bytes, chars, words],
                                 the evaluation units (see `units_of`), contiguous in tokens.bin order
    meta.json                    fingerprint, spec, tokenizer and timing; the cache is complete iff it exists

A cache is built in a temporary folder under an exclusive file lock and renamed into place, so concurrent
processes never see (or corrupt) a half-written one. With several processes (accelerate), call
`prepare_data(spec)` on the main process, then `prepare_data(spec, load_only=True)` on the others after a
barrier. Documents are read and tokenized in batches and streamed to disk: memory stays flat. meta.json also
records the size and xxh3 checksum of every file; a cache that does not match is rebuilt with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmbench.data.corpus import (assign_split, carved_fractions, empty_split_error, filtered_batches,
                                 iter_document_batches, keys_on_index, split_names, unfiltered)
from lmbench.data.shards import Shard, byte_safe, iter_shards, split_units
from lmbench.data.sources import SPLITS, Document, make_source
from lmbench.data.sources.local import not_text
from lmbench.errors import SpecError
from lmbench.integrity import check_manifest, manifest_of
from lmbench.progress import quiet
from lmbench.results import write_json_atomic
from lmbench.spec import DataSpec, ExperimentSpec, spec_to_dict
from lmbench.tokenizers import Tokenizer, build_tokenizer, load_tokenizer, tokenizer_fingerprint

FORMAT_VERSION = 2  # bump when the cache layout or the document -> ids rule changes (2: evaluation units)
DOCS_PER_BATCH = 1000
# Threads that call a library that is parallel itself (sentencepiece, tokenizers): two, so that one thread's Python
# work on a batch (ids to numpy, text statistics) overlaps the library's encoding of the next.
ENCODING_THREADS = 2
# Evaluation units (per-document records, bootstrap intervals): the documents of a split with at least
# MIN_UNIT_DOCS of them, else fixed CHUNK_CHARS-character chunks of its documents (a single-text corpus such as
# Tiny Shakespeare). Only the held-out splits get units.
UNIT_SPLITS = ("validation", "test")
MIN_UNIT_DOCS = 50
CHUNK_CHARS = 1000
UNIT_COLUMNS = ("doc", "chunk", "tokens", "bytes", "chars", "words")
META_FILE = "meta.json"
# DataSpec fields that change the tokens (path, prompt_path and files are covered by the source fingerprint,
# which resolves them to files with sizes and mtimes; batching fields and cache_dir do not change tokens).
TOKEN_FIELDS = ("source", "name", "text_field", "prompt_field", "unit", "separator", "encoding", "replace", "lowercase",
                "limit", "subsample", "min_chars", "max_chars", "split", "val_fraction", "test_fraction",
                "split_seed", "tokenizer_sample_mb")


@dataclass(frozen=True)
class SplitStats:
    """Counts over the raw document text of a split (prompt_story: the stories; prompts are not scored)."""

    num_docs: int
    num_tokens: int  # ids in tokens.bin (prompt_story: prompt + <sep> + story)
    num_bytes: int  # UTF-8 bytes
    num_chars: int
    num_words: int  # whitespace-separated words (lm-eval's word count)


@dataclass
class TokenSplit:
    tokens: np.ndarray  # (num_tokens,) uint8/uint16/uint32 (token_dtype), memory-mapped
    doc_offsets: np.ndarray  # (num_docs + 1,) int64
    prompt_lens: np.ndarray | None  # (num_docs,) int64: prompt + <sep> ids at the start of each document
    stats: SplitStats
    units: np.ndarray | None = None  # (num_units, 6) int64 UNIT_COLUMNS; held-out splits only

    @property
    def num_docs(self) -> int:
        return len(self.doc_offsets) - 1

    def doc(self, i: int) -> np.ndarray:
        """The ids of document `i` (a view of the memory map)."""
        return self.tokens[self.doc_offsets[i]:self.doc_offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.doc_offsets)

    def token_units(self) -> np.ndarray:
        """(num_tokens,) int64: the unit of every token (units are contiguous runs of tokens.bin)."""
        assert self.units is not None
        return np.repeat(np.arange(len(self.units), dtype=np.int64), self.units[:, 2])

    def doc_last_unit(self) -> np.ndarray:
        """(num_docs,) int64: each document's last unit (its EOS target is scored there)."""
        assert self.units is not None
        docs = self.units[:, 0]
        return np.searchsorted(docs, np.arange(self.num_docs), side="right") - 1

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the memory map as its file (DataLoader workers under spawn), not as a copy of the tokens."""
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap) and self.tokens.filename:
            state["tokens"] = ("memmap", self.tokens.filename, self.tokens.dtype.str, len(self.tokens))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple):
            state["tokens"] = np.memmap(tokens[1], dtype=np.dtype(tokens[2]), mode="r", shape=(tokens[3],))
        self.__dict__.update(state)


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    splits: dict[str, TokenSplit]
    fingerprint: str
    cache_dir: Path
    reused: bool = False  # loaded from an existing cache (no tokenization in this call)
    meta: dict[str, Any] = field(default_factory=dict)  # the cache's meta.json


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned type for every id: a byte per token for a vocabulary of at most 256 (most char
    tokenizers), else two bytes up to 65,535 ids, else four."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65535 else np.uint32


def data_fingerprint(spec: ExperimentSpec) -> str:
    """sha256 over the token-relevant data fields, the tokenizer fingerprint, the cache format version and the
    source fingerprint (resolved files with sizes and mtimes; the builtin corpus's text hash)."""
    d = spec.data
    fields: dict[str, Any] = {f: getattr(d, f) for f in TOKEN_FIELDS}
    fields["replace"] = [list(kv) for kv in d.replace.items()]  # order matters: replacements chain
    payload = {"format": FORMAT_VERSION, "data": fields, "tokenizer": tokenizer_fingerprint(spec.tokenizer),
               "source": make_source(d).fingerprint()}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DamagedCache(RuntimeError):
    """A token cache whose files do not match what its meta.json recorded when it was written."""


def prepare_data(spec: ExperimentSpec, *, progress: bool = True, load_only: bool = False,
                 verify: bool = True) -> PreparedData:
    """The tokenizer and token splits of `spec`, from the cache when it exists, else built (and cached).

    An existing cache is checked first: file sizes always, checksums too with `verify` (a cell opening it);
    a damaged cache is rebuilt, with a warning naming the file. `load_only=True` (non-main processes, after a
    barrier) never builds: a missing or damaged cache is an error there.
    """
    fingerprint = data_fingerprint(spec)
    root = Path(spec.data.cache_dir)
    final = root / fingerprint[:16]
    opened = _open_cache(final, fingerprint, verify and not load_only)
    if opened is not None:
        return opened
    if load_only:
        raise RuntimeError(f"token cache {final} is missing or damaged; the main process must prepare it first")
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{fingerprint[:16]}.lock"):
        opened = _open_cache(final, fingerprint, verify)  # another process may have built it while we waited
        if opened is not None:
            return opened
        tmp = Path(tempfile.mkdtemp(prefix=f".{fingerprint[:16]}.tmp-", dir=root))
        try:
            _build(spec, tmp, fingerprint, progress)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache is read by other users
            if final.exists():  # an incomplete or damaged leftover
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    data = load_prepared(final, fingerprint, verify=False)  # just written and checksummed
    data.reused = False
    return data


def _open_cache(directory: Path, fingerprint: str, verify: bool) -> PreparedData | None:
    """The cache in `directory` if it is complete and undamaged; None to build it (a warning says why)."""
    if not directory.exists():
        return None
    try:
        return load_prepared(directory, fingerprint, verify=verify)
    except DamagedCache as exc:
        print(f"lmbench: warning: damaged token cache, rebuilding it: {exc}", file=sys.stderr)
        return None


def load_prepared(directory: Path, fingerprint: str | None = None, *, verify: bool = True) -> PreparedData:
    """Open a complete cache folder (memory maps; nothing is tokenized). Sizes are checked always and
    checksums with `verify`; DamagedCache names the first file that does not match meta.json."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = np.dtype(meta["tokenizer"]["dtype"])
        names = sorted(meta["splits"], key=SPLITS.index)  # meta.json sorts its keys; keep train/validation/test
    except FileNotFoundError:
        raise DamagedCache(f"{meta_path} is missing (the cache was never finished)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedCache(f"{meta_path} is unreadable ({type(exc).__name__}: {exc})") from None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise DamagedCache(f"{meta_path} holds fingerprint {meta.get('fingerprint')}, not {fingerprint}")
    if "files" in meta:
        problem = check_manifest(directory, meta["files"], checksums=verify)
        if problem:
            raise DamagedCache(problem)
    try:
        splits = {name: _load_split(directory, name, dtype) for name in names}
    except (OSError, ValueError, TypeError) as exc:  # a stats.json or offsets.npy no checksum was asked to cover
        raise DamagedCache(f"{directory}: a split's files are unreadable ({type(exc).__name__}: {exc})") from None
    return PreparedData(load_tokenizer(directory / "tokenizer"), splits, meta["fingerprint"], directory,
                        reused=True, meta=meta)


def _load_split(directory: Path, name: str, dtype: np.dtype) -> TokenSplit:
    stats = SplitStats(**json.loads((directory / f"{name}.stats.json").read_text(encoding="utf-8")))
    path = directory / f"{name}.tokens.bin"
    if path.stat().st_size != stats.num_tokens * dtype.itemsize:
        raise DamagedCache(f"{path} has {path.stat().st_size:,} bytes, expected {stats.num_tokens:,} tokens x "
                           f"{dtype.itemsize} bytes")
    tokens = np.memmap(path, dtype=dtype, mode="r") if stats.num_tokens else np.zeros(0, dtype=dtype)
    offsets = np.load(directory / f"{name}.offsets.npy", mmap_mode="r")
    if len(offsets) != stats.num_docs + 1 or (len(offsets) and int(offsets[-1]) != stats.num_tokens):
        raise DamagedCache(f"{directory / f'{name}.offsets.npy'} does not match {name}.stats.json")
    prompt_path = directory / f"{name}.prompt_lens.npy"
    prompt_lens = np.load(prompt_path) if prompt_path.is_file() else None
    units_path = directory / f"{name}.units.npy"
    units = np.load(units_path) if units_path.is_file() else None
    if units is not None and int(units[:, 2].sum()) != stats.num_tokens:
        raise DamagedCache(f"{units_path} covers {int(units[:, 2].sum()):,} tokens, not {stats.num_tokens:,}")
    return TokenSplit(tokens, offsets, prompt_lens, stats, units)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (released when the holder exits, however it exits)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the temp folder + rename still keeps the cache consistent
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------------------------- building


def _build(spec: ExperimentSpec, directory: Path, fingerprint: str, progress: bool) -> None:
    started = time.perf_counter()
    sample = TrainingSample(spec)
    tokenizer = build_tokenizer(spec.tokenizer, _progress(sample.texts(), progress, "tokenizer (train)"))
    train_seconds = time.perf_counter() - started
    prompted = spec.data.source == "prompt_story"
    if prompted and tokenizer.sep_id is None:
        raise SpecError("tokenizer.params", f"prompt_story data needs a <sep> symbol, which the {spec.tokenizer.kind} "
                                            "tokenizer lacks: add '<sep>' to its specials / user_defined_symbols / "
                                            "extra_special_tokens")
    tokenizer.save(directory / "tokenizer")
    dtype = token_dtype(tokenizer.vocab_size)
    if hasattr(tokenizer, "num_threads"):  # a library with a thread count of its own (sentencepiece)
        tokenizer.num_threads = num_workers(spec)
    with _encoding_pool(tokenizer, num_workers(spec)) as pool:
        splits = _write_splits(spec, tokenizer, directory, dtype, progress, pool)
    meta = {
        "format_version": FORMAT_VERSION, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(), "source": make_source(spec.data).fingerprint(),
        "spec": {k: v for k, v in spec_to_dict(spec).items() if k in ("data", "tokenizer")},
        "tokenizer": {"kind": spec.tokenizer.kind, "fingerprint": tokenizer_fingerprint(spec.tokenizer),
                      "vocab_size": tokenizer.vocab_size, "dtype": np.dtype(dtype).name,
                      "train_seconds": round(train_seconds, 3), "train_sample": sample.record(),
                      "pad_id": tokenizer.pad_id,
                      "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id, "unk_id": tokenizer.unk_id,
                      "sep_id": tokenizer.sep_id},
        "splits": splits, "build_seconds": round(time.perf_counter() - started, 3),
    }
    meta["files"] = manifest_of(directory, fsync=True)  # sizes and checksums, verified when the cache is opened
    write_json_atomic(directory / META_FILE, meta, sort_keys=True)  # last: its presence marks the cache complete


class TrainingSample:
    """The train-split texts a tokenizer learns from (prompt_story: each prompt, then its story): all of them, or
    with `data.tokenizer_sample_mb` a seeded sample of documents of about that size (every document kept with
    probability sample / estimated split size; the first documents up to the size when the size is unknown).
    `record()` says what was used, for meta.json."""

    def __init__(self, spec: ExperimentSpec) -> None:
        self.spec = spec
        limit = spec.data.tokenizer_sample_mb
        self.limit = None if limit is None else int(limit * 1e6)
        size = _split_size(spec, "train") if self.limit is not None else None
        self.cut = self.limit is not None and size is None  # size unknown: the first `limit` bytes
        self.rate = 1.0 if self.limit is None or size is None else min(1.0, self.limit / max(size, 1))
        self.docs = self.bytes = self.seen = 0

    def texts(self) -> Iterator[str]:
        from lmbench.data.corpus import unit_hash

        for batch in iter_document_batches(self.spec.data, "train"):
            for i, doc in enumerate(batch, start=self.seen):
                if self.rate < 1.0 and unit_hash(self.spec.data.split_seed, "tokenizer-sample", i) >= self.rate:
                    continue
                if self.cut and self.bytes >= self.limit:  # type: ignore[operator]
                    continue
                self.docs += 1
                self.bytes += len(doc.text) + len(doc.prompt or "")
                if doc.prompt is not None:
                    yield doc.prompt
                yield doc.text
            self.seen += len(batch)

    def record(self) -> dict[str, Any]:
        return {"docs": self.docs, "chars": self.bytes, "of_docs": self.seen,
                "limit_mb": self.spec.data.tokenizer_sample_mb, "rate": round(self.rate, 6)}


def _progress(items: Iterator[Any], enabled: bool, desc: str) -> Iterator[Any]:
    """A progress bar on a terminal (none in log files: disable=None is tqdm's "only on a TTY")."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc=desc, unit="doc", mininterval=1.0, file=sys.stderr, disable=None))


def _byte_progress(items: Iterator[Any], enabled: bool, desc: str, total: int | None,
                   size: Callable[[Any], int] | None = None) -> Iterator[Any]:
    """Items passed through, with a terminal progress bar in MB (MB/s; an ETA when the total size can be
    estimated). `size` of an item: by default a batch of documents, its characters counted as bytes (exact for
    ASCII text, close otherwise)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    measure = size or (lambda batch: sum(len(doc.text) + len(doc.prompt or "") for doc in batch))
    with tqdm(desc=desc, total=total, unit="B", unit_scale=True, unit_divisor=1000, mininterval=1.0, file=sys.stderr,
              disable=None) as bar:
        for item in items:
            bar.update(measure(item))
            yield item


def rebatch(batches: Iterator[list[Document]], size: int) -> Iterator[list[Document]]:
    """The same documents, in order, in lists of exactly `size` (the last one shorter)."""
    pending: list[Document] = []
    for batch in batches:
        pending += batch
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def _split_size(spec: ExperimentSpec, name: str) -> int | None:
    """About how many bytes of text split `name` holds, for the progress bar's ETA: its files' size, or the
    train files' size times the split's fraction; None for sources without plain files (hub, builtin, tables)."""
    try:
        source = make_source(spec.data)
        native = source.native_splits()
        split = name if name in native else "train"
        files = source.split_files(split)
    except Exception:  # noqa: BLE001  (only an estimate: any source that cannot say gives no ETA)
        return None
    if not files or any(f.suffix not in (".txt", ".jsonl", ".json", ".csv", "") for f in files):
        return None

    size = sum(f.stat().st_size for f in files)
    carved = carved_fractions(spec.data, list(native))
    if name in carved:
        return int(size * carved[name])
    return int(size * (1 - sum(carved.values()))) if name == "train" else size


class _SplitWriter:
    """Appends tokenized document batches to the split's files and accumulates its statistics."""

    def __init__(self, directory: Path, name: str, dtype: type, prompted: bool,
                 tokenizer: Tokenizer | None = None, tokens_written: bool = False) -> None:
        """`tokens_written`: the ids are written into tokens.bin by the worker processes (sharded passes); the
        batches added carry only their lengths and statistics."""
        self.directory, self.name, self.dtype, self.tokens_written = directory, name, dtype, tokens_written
        self.tokenizer = tokenizer  # given: record evaluation units (held-out splits)
        self.chunks: list[np.ndarray] = []  # per document: (num_chunks, 5) [chunk, tokens, bytes, chars, words]
        self.tokens = open(directory / f"{name}.tokens.bin", "wb")
        self.offsets = open(directory / f"{name}.offsets.tmp", "wb")
        self.prompt_lens = open(directory / f"{name}.prompt_lens.tmp", "wb") if prompted else None
        np.zeros(1, dtype=np.int64).tofile(self.offsets)
        self.counts = dict.fromkeys(("num_docs", "num_tokens", "num_bytes", "num_chars", "num_words"), 0)

    def add(self, batch: "EncodedBatch", docs: Sequence[Document] | None = None) -> None:
        """Append a batch; held-out splits (units) need its documents."""
        if not self.tokens_written:
            batch.flat.astype(self.dtype, copy=False).tofile(self.tokens)
        (np.cumsum(batch.lengths) + self.counts["num_tokens"]).tofile(self.offsets)
        if self.prompt_lens is not None and batch.prompt_lens is not None:
            batch.prompt_lens.tofile(self.prompt_lens)
        if self.tokenizer is not None:
            assert docs is not None and len(docs) == len(batch.lengths)
            prompts = batch.prompt_lens if batch.prompt_lens is not None else np.zeros(len(docs), dtype=np.int64)
            for doc, n, p in zip(docs, batch.lengths, prompts):
                # Chunks matter only while a split has fewer than MIN_UNIT_DOCS documents (units_of sums them
                # otherwise): from then on one row per document, without encoding its chunks again.
                whole = len(self.chunks) >= MIN_UNIT_DOCS
                self.chunks.append(doc_row(doc.text, int(n)) if whole else
                                   doc_chunks(self.tokenizer, doc.text, int(n), int(p)))
        c = self.counts
        c["num_docs"] += len(batch.lengths)
        c["num_tokens"] += int(batch.lengths.sum())
        c["num_bytes"] += batch.num_bytes
        c["num_chars"] += batch.num_chars
        c["num_words"] += batch.num_words

    def close(self) -> SplitStats:
        for f in (self.tokens, self.offsets, self.prompt_lens):
            if f is not None:
                f.close()
        d, n = self.directory, self.name
        for kind in ("offsets",) + (("prompt_lens",) if self.prompt_lens is not None else ()):
            raw = d / f"{n}.{kind}.tmp"
            np.save(d / f"{n}.{kind}.npy", np.fromfile(raw, dtype=np.int64))
            raw.unlink()
        stats = SplitStats(**self.counts)
        if self.tokenizer is not None:
            np.save(d / f"{n}.units.npy", units_of(self.chunks))
        write_json_atomic(d / f"{n}.stats.json", dataclasses.asdict(stats), sort_keys=True)
        return stats


def doc_chunks(tokenizer: Tokenizer, text: str, num_tokens: int, prompt_len: int = 0) -> np.ndarray:
    """(num_chunks, 5) int64 [chunk, tokens, bytes, chars, words] of one document cut into CHUNK_CHARS-character
    chunks. Bytes, characters and words are exact (a word belongs to the chunk it starts in). The document's
    tokens are split between its chunks in proportion to each chunk's tokens when encoded on its own (a token
    that a tokenizer merges across a boundary lands on one side); the prompt's tokens go to the first chunk."""
    import re

    pieces = [text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    starts = [m.start() // CHUNK_CHARS for m in re.finditer(r"\S+", text)]
    words = np.bincount(np.asarray(starts, dtype=np.int64), minlength=len(pieces))
    story_tokens = num_tokens - prompt_len
    if len(pieces) == 1:
        tokens = np.array([story_tokens], dtype=np.int64)
    else:
        with quiet(logging.getLogger("lmbench.tokenizers")):  # a word cut at a boundary is no unknown word
            alone = np.cumsum([len(ids) for ids in tokenizer.encode_batch(pieces)], dtype=np.float64)
        bounds = np.rint(alone / max(alone[-1], 1.0) * story_tokens).astype(np.int64)
        tokens = np.diff(bounds, prepend=0)
    tokens[0] += prompt_len
    rows = [(k, int(tokens[k]), len(p.encode("utf-8")), len(p), int(words[k])) for k, p in enumerate(pieces)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def doc_row(text: str, num_tokens: int) -> np.ndarray:
    """(1, 5) int64 [0, tokens, bytes, chars, words] of a whole document: the sums of its `doc_chunks`."""
    num_bytes, num_chars, num_words = text_stats([text])
    return np.array([[0, num_tokens, num_bytes, num_chars, num_words]], dtype=np.int64)


def units_of(chunks: Sequence[np.ndarray]) -> np.ndarray:
    """(num_units, 6) int64 UNIT_COLUMNS from every document's chunks: one unit per document when there are at
    least MIN_UNIT_DOCS documents (chunk 0 holding the document's sums), else one unit per chunk."""
    if len(chunks) >= MIN_UNIT_DOCS:
        rows = [(i, 0, *c[:, 1:].sum(0)) for i, c in enumerate(chunks)]
    else:
        rows = [(i, *row) for i, c in enumerate(chunks) for row in c]
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(UNIT_COLUMNS))


def num_workers(spec: ExperimentSpec) -> int:
    """data.num_workers, or every core this process may run on."""
    if spec.data.num_workers is not None:
        return spec.data.num_workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _write_splits(spec: ExperimentSpec, tokenizer: Tokenizer, directory: Path, dtype: type, progress: bool,
                  pool: _LazyPool | None) -> dict[str, dict[str, Any]]:
    """Tokenize every split into `directory`; returns their meta entries. Local text files encoded in worker
    processes are read in shards (`_write_sharded`, one pass per native split that also fills the splits carved
    out of it); anything else split by split (`_write_split`)."""
    names = split_names(spec.data)
    if not _shardable(spec, tokenizer, pool):
        return {name: _write_split(spec, tokenizer, name, directory, dtype, progress, pool) for name in names}
    assert pool is not None
    source = make_source(spec.data)
    native = source.native_splits()
    carved = carved_fractions(spec.data, native)
    written: dict[str, dict[str, Any]] = {}
    for stream in native:
        cut = carved if stream == "train" else {}
        written |= _write_sharded(spec, tokenizer, stream, cut, source.split_files(stream), directory, dtype,
                                  progress, pool)
    return {name: written[name] for name in names}


def _shardable(spec: ExperimentSpec, tokenizer: Tokenizer, pool: _LazyPool | None) -> bool:
    """Whether the splits can be read in shards by the worker processes: local text files cut into lines or
    separator pieces, in an encoding that can be cut at byte level, a tokenizer encoded in processes (not a
    library's own threads), and no `split: tail` (which cuts the stream by its total length)."""
    d = spec.data
    if pool is None or pool.thread or d.source != "text" or d.unit not in ("line", "separator"):
        return False
    if not byte_safe(d.encoding):
        return False
    return not (d.split == "tail" and carved_fractions(d, make_source(d).native_splits()))


def _write_sharded(spec: ExperimentSpec, tokenizer: Tokenizer, stream: str, carved: dict[str, float],
                   files: list[Path], directory: Path, dtype: type, progress: bool,
                   pool: _LazyPool) -> dict[str, dict[str, Any]]:
    """Native split `stream` (and the splits `carved` out of it) in one pass over its files: shards (see
    lmbench.data.shards) read, cut into documents, filtered, split and encoded in `pool`'s worker processes, and
    written in order; returns the meta entry of each split written (the pass's seconds shared by their bytes)."""
    d = spec.data
    names = [stream, *carved]
    writers = {name: _SplitWriter(directory, name, dtype, False, tokenizer if name in UNIT_SPLITS else None,
                                  tokens_written=True) for name in names}
    input_bytes = dict.fromkeys(names, 0)
    started = time.perf_counter()
    counted = bool(carved) or keys_on_index(d)  # the seeded split, limit and subsample key on raw indices
    shards: Iterator[Shard] = iter_shards(files, d.unit, d.separator, d.encoding, counted=counted)
    if d.limit is not None:
        shards = itertools.takewhile(lambda shard: shard.first_index < d.limit, shards)  # type: ignore[operator]
    shards = _byte_progress(shards, progress, f"tokenize {'/'.join(names)}", sum(f.stat().st_size for f in files),
                            lambda shard: len(shard.data) if shard.data is not None else shard.stop - shard.start)
    jobs = ((shard, functools.partial(pool.submit_call, _encode_shard_in_worker, ticket, directory, shard, d, stream,
                                      carved, dtype)) for ticket, shard in enumerate(shards))
    pool.tickets().reset()
    try:
        for shard, groups in _in_order(pool.workers, jobs):
            if isinstance(groups, UnicodeDecodeError):
                raise not_text(shard.path, d.encoding)
            for name, (encoded, docs) in groups.items():
                writers[name].add(encoded, docs)
                input_bytes[name] += encoded.input_bytes
    except BaseException:
        pool.tickets().abort()  # workers waiting for the turn of a shard that will not come return
        raise
    finally:
        stats = {name: writer.close() for name, writer in writers.items()}
    seconds = time.perf_counter() - started
    total = max(sum(input_bytes.values()), 1)
    out = {}
    for name in names:
        if stats[name].num_docs == 0:
            raise empty_split_error(d, name)
        out[name] = {"stats": dataclasses.asdict(stats[name]),
                     "tokenize_seconds": round(seconds * input_bytes[name] / total, 4),
                     "tokenize_bytes": input_bytes[name], "wall_seconds": round(seconds, 4),
                     "workers": pool.workers, "read_with": names}
    return out


def encode_shard(tokenizer: Tokenizer, shard: Shard, data: DataSpec, stream: str, carved: dict[str, float],
                 dtype: type) -> dict[str, tuple[EncodedBatch, list[Document] | None]]:
    """A shard's documents, filtered and split as `iter_document_batches` does, encoded per split (split name ->
    its EncodedBatch and, for held-out splits, which record evaluation units, its documents)."""
    texts = split_units(shard.read().decode(data.encoding), data.unit, data.separator, shard.last)
    assert shard.num_docs is None or len(texts) == shard.num_docs, (len(texts), shard.num_docs)
    groups: dict[str, list[str]] = {}
    if carved or not unfiltered(data):
        batch = [Document(t) for t in texts]
        for indices, docs in filtered_batches(data, iter([batch]), stream, shard.first_index or 0):
            for i, doc in zip(indices, docs):
                groups.setdefault(assign_split(data.split_seed, i, carved) if carved else stream, []).append(doc.text)
    elif texts:
        groups[stream] = texts
    return {name: (encode_batch(tokenizer, texts, None, dtype),
                   [Document(t) for t in texts] if name in UNIT_SPLITS else None) for name, texts in groups.items()}


def _encode_shard_in_worker(ticket: int, directory: Path, shard: Shard, *args: Any
                            ) -> dict[str, tuple[EncodedBatch, list[Document] | None]] | UnicodeDecodeError:
    """`encode_shard` in a worker process, which then writes the ids into the split files itself: it takes its
    places there in shard order (`_Tickets`), and the ids go back to the main process only as lengths."""
    assert _WORKER_TOKENIZER is not None and _WORKER_TICKETS is not None
    result: dict[str, tuple[EncodedBatch, list[Document] | None]] | UnicodeDecodeError = {}
    try:
        result = encode_shard(_WORKER_TOKENIZER, shard, *args)
    except UnicodeDecodeError as exc:  # the main process names the file and the byte offset
        result = exc
    finally:  # a failed shard takes its turn too, with nothing to write, so that the next ones are not held up
        groups = result if isinstance(result, dict) else {}
        places = _WORKER_TICKETS.take(ticket, {name: len(encoded.flat) for name, (encoded, _) in groups.items()})
    if places is None:  # the pass was aborted
        return {}
    for name, (encoded, docs) in groups.items():
        _write_at(directory / f"{name}.tokens.bin", encoded.flat, places[name])
        groups[name] = (dataclasses.replace(encoded, flat=encoded.flat[:0]), docs)
    return result


def _write_at(path: Path, ids: np.ndarray, position: int) -> None:
    """Write `ids` into the file at token `position` (other workers write the rest of it)."""
    view = memoryview(np.ascontiguousarray(ids)).cast("B")
    fd = os.open(path, os.O_WRONLY)
    try:
        offset = position * ids.itemsize
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
    finally:
        os.close(fd)


class _Tickets:
    """Places in the split files, handed out in shard order across processes: the worker of shard k waits until
    shard k - 1 has taken its places, takes the next `n` tokens of each split it has ids for, and writes them
    there while the next shards take theirs. Shared memory and a condition from the pool's start method."""

    def __init__(self, context: Any) -> None:
        self.cond = context.Condition()
        self.next = context.Value("q", 0, lock=False)  # the ticket whose turn it is
        self.ends = context.Array("q", len(SPLITS), lock=False)  # tokens placed so far, per split
        self.aborted = context.Value("b", 0, lock=False)

    def reset(self) -> None:
        """Before a pass (no shard in flight)."""
        with self.cond:
            self.next.value, self.aborted.value = 0, 0
            self.ends[:] = [0] * len(SPLITS)

    def abort(self) -> None:
        with self.cond:
            self.aborted.value = 1
            self.cond.notify_all()

    def take(self, ticket: int, sizes: dict[str, int]) -> dict[str, int] | None:
        """The token position of each split's ids of shard `ticket`, in turn; None if the pass was aborted."""
        with self.cond:
            while self.next.value != ticket:
                if self.aborted.value:
                    return None
                self.cond.wait(1.0)
            places = {}
            for name, n in sizes.items():
                places[name] = self.ends[SPLITS.index(name)]
                self.ends[SPLITS.index(name)] += n
            self.next.value = ticket + 1
            self.cond.notify_all()
        return places


def _in_order(workers: int, jobs: Iterator[tuple[Any, Callable[[], Future[Any]]]]) -> Iterator[tuple[Any, Any]]:
    """(key, result) for each (key, submit) of `jobs`, where `submit()` starts the job in a pool and returns its
    future: yielded in order, with up to two jobs per worker in flight (memory stays bounded: the next job is read
    only when the oldest is done)."""
    import collections

    window: collections.deque[tuple[Any, Future[Any]]] = collections.deque()
    for key, submit in jobs:
        window.append((key, submit()))
        if len(window) >= 2 * workers:
            done, future = window.popleft()
            yield done, future.result()
    while window:
        done, future = window.popleft()
        yield done, future.result()


def _write_split(spec: ExperimentSpec, tokenizer: Tokenizer, name: str, directory: Path, dtype: type,
                 progress: bool, pool: _LazyPool | None = None) -> dict[str, Any]:
    """Tokenize split `name` in batches of DOCS_PER_BATCH documents, streamed: read, encoded (in `pool`'s worker
    processes when given, in order) and appended to the split's files; returns its meta entry."""
    prompted = spec.data.source == "prompt_story"
    writer = _SplitWriter(directory, name, dtype, prompted, tokenizer if name in UNIT_SPLITS else None)
    started = time.perf_counter()
    encode_bytes = 0
    batches = rebatch(_byte_progress(iter_document_batches(spec.data, name), progress, f"tokenize {name}",
                                     _split_size(spec, name)), DOCS_PER_BATCH)
    try:
        for docs_batch, encoded in _encoded(tokenizer, batches, prompted, dtype, pool):
            encode_bytes += encoded.input_bytes
            writer.add(encoded, docs_batch)
    finally:
        stats = writer.close()
    seconds = time.perf_counter() - started
    return {"stats": dataclasses.asdict(stats), "tokenize_seconds": round(seconds, 4),
            "tokenize_bytes": encode_bytes, "wall_seconds": round(seconds, 4),
            "workers": (num_workers(spec) if tokenizer.threaded else pool.workers)
            if pool is not None and pool.started else 1}


@dataclass
class EncodedBatch:
    """A batch of documents as the token cache stores them: ids back to back, lengths, prompt lengths, and the
    statistics of its text (computed where it was encoded, in a worker process when there are several)."""

    flat: np.ndarray  # ids of every document, back to back, in the cache's token dtype
    lengths: np.ndarray  # int64 ids per document
    prompt_lens: np.ndarray | None  # int64, prompt_story only
    num_bytes: int  # of the scored text (prompt_story: the stories)
    num_chars: int
    num_words: int
    input_bytes: int  # of all text read (prompts included): the tokenizer's input


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], prompts: Sequence[str] | None = None,
                 dtype: type = np.uint32) -> EncodedBatch:
    """Ids and text statistics of documents; with `prompts` (prompt_story): encode(prompt) + [sep_id] +
    encode(text) each. Numpy arrays in `dtype`, so that a worker process sends back one small buffer."""
    if prompts is None:
        flat, lengths = tokenizer.encode_flat(texts)
        prompt_lens = None
    else:
        seqs, prompt_list = _encode_prompted(tokenizer, texts, prompts)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.uint32, count=int(lengths.sum()))
        prompt_lens = np.asarray(prompt_list, dtype=np.int64)
    words_from_ids = prompts is None and tokenizer.tokens_are_words
    num_bytes, num_chars, num_words = text_stats(texts, count_words=not words_from_ids)
    if words_from_ids:
        num_words = len(flat)
    prompt_bytes = sum(len(p.encode("utf-8", "surrogatepass")) for p in prompts) if prompts is not None else 0
    return EncodedBatch(flat.astype(dtype, copy=False), lengths, prompt_lens, num_bytes, num_chars, num_words,
                        num_bytes + prompt_bytes)


_SPACE = np.array([chr(c).isspace() for c in range(0x3001)] + [False])  # str.isspace; nothing above U+3000 is
_WORD = ~_SPACE  # code point -> part of a word (the last entry stands for every code point above U+3000)


def text_stats(texts: Sequence[str], count_words: bool = True) -> tuple[int, int, int]:
    """(UTF-8 bytes, characters, whitespace-separated words as `str.split` counts them) of all `texts`, with
    numpy over the characters instead of a Python string per word: one byte per character for ASCII text, else
    UTF-16 units (a character above U+FFFF is two units, neither of them whitespace: the same words). Without
    `count_words` the word count is 0 (the caller knows it)."""
    joined = " ".join(texts)  # a space between texts: no word runs on from one text into the next
    spaces = max(len(texts) - 1, 0)
    num_chars = len(joined) - spaces
    if not joined:
        return 0, num_chars, 0
    is_ascii = joined.isascii()  # O(1) in CPython: the string's kind
    num_bytes = num_chars if is_ascii else len(joined.encode("utf-8", "surrogatepass")) - spaces
    if not count_words:
        return num_bytes, num_chars, 0
    if is_ascii:
        points = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        points = np.frombuffer(joined.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)
    word = np.take(_WORD, points, mode="clip")
    return num_bytes, num_chars, int(word[0]) + int(np.count_nonzero(word[1:] > word[:-1]))


def _encoded(tokenizer: Tokenizer, batches: Iterator[list[Document]], prompted: bool, dtype: type,
             pool: "_LazyPool | None") -> Iterator[tuple[list[Document], EncodedBatch]]:
    """(documents, their EncodedBatch) for each batch, in order. A split of more than one batch is encoded in
    `pool` (started on first use): worker processes, or for a library that uses every core itself
    ENCODING_THREADS threads that call it (the library releases the GIL, so reading the next batch, writing the
    last one and a thread's Python work overlap its encoding). Up to two batches per worker are in flight; a
    single batch is not worth starting the pool."""
    def job(batch: list[Document]) -> tuple[list[str], list[str] | None, type]:
        return [d.text for d in batch], [d.prompt or "" for d in batch] if prompted else None, dtype

    head = list(itertools.islice(batches, 2))
    if pool is None or len(head) < 2:
        for batch in itertools.chain(head, batches):
            yield batch, encode_batch(tokenizer, *job(batch))
        return
    yield from _in_order(pool.workers, ((batch, functools.partial(pool.submit, *job(batch)))
                                        for batch in itertools.chain(head, batches)))


class _LazyPool:
    """Where batches are encoded off the main thread, started on first use: `workers` processes holding a copy of
    the tokenizer (its pure-Python encode), started with the platform's default start method (fork on Linux up to
    Python 3.13: no re-import of the caller's script, which spawn would need to be guarded by
    `if __name__ == "__main__"`); or, with `thread`, `workers` threads calling a library that is parallel
    itself."""

    def __init__(self, tokenizer: Tokenizer, workers: int, thread: bool = False) -> None:
        self.tokenizer, self.workers, self.thread, self._executor = tokenizer, workers, thread, None
        self._tickets: _Tickets | None = None

    def tickets(self) -> _Tickets:
        """The shard-order places its workers share (made before the workers start: they inherit them)."""
        if self._tickets is None:
            import multiprocessing

            assert self._executor is None and not self.thread, "tickets are made before the worker processes"
            self._tickets = _Tickets(multiprocessing.get_context())
        return self._tickets

    @property
    def started(self) -> bool:
        return self._executor is not None

    def submit(self, texts: list[str], prompts: list[str] | None, dtype: type) -> Any:
        """A future of `encode_batch` of these documents."""
        if self.thread:
            return self.submit_call(encode_batch, self.tokenizer, texts, prompts, dtype)
        return self.submit_call(_encode_in_worker, texts, prompts, dtype)

    def submit_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A future of `fn(*args)` in the pool (a worker process's functions find the tokenizer in
        `_WORKER_TOKENIZER`)."""
        if self._executor is None:
            if self.thread:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lmbench-encode")
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._executor = ProcessPoolExecutor(max_workers=self.workers,
                                                     mp_context=multiprocessing.get_context(),
                                                     initializer=_start_worker,
                                                     initargs=(self.tokenizer, self._tickets))
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)


_WORKER_TOKENIZER: Tokenizer | None = None
_WORKER_TICKETS: _Tickets | None = None


def _start_worker(tokenizer: Tokenizer, tickets: _Tickets | None = None) -> None:
    global _WORKER_TOKENIZER, _WORKER_TICKETS
    _WORKER_TOKENIZER, _WORKER_TICKETS = tokenizer, tickets


def _encode_in_worker(texts: list[str], prompts: list[str] | None, dtype: type) -> EncodedBatch:
    assert _WORKER_TOKENIZER is not None
    return encode_batch(_WORKER_TOKENIZER, texts, prompts, dtype)


@contextlib.contextmanager
def _encoding_pool(tokenizer: Tokenizer, workers: int) -> Iterator[_LazyPool | None]:
    """Worker processes for `tokenizer` (started when a split needs them; see _LazyPool); ENCODING_THREADS
    threads when the tokenizer's library is parallel itself; None when one process is asked for."""
    if workers <= 1:
        yield None
        return
    pool = _LazyPool(tokenizer, ENCODING_THREADS if tokenizer.threaded else workers, thread=tokenizer.threaded)
    try:
        yield pool
    finally:
        pool.close()


def _encode_prompted(tokenizer: Tokenizer, texts: Sequence[str], prompts: Sequence[str]
                     ) -> tuple[list[list[int]], list[int]]:
    """encode(prompt) + [sep_id] + encode(text) of each document, and the prompt + <sep> lengths."""
    ids = tokenizer.encode_batch(texts)
    prompt_ids = tokenizer.encode_batch(prompts)
    sep = [int(tokenizer.sep_id)]  # type: ignore[arg-type]  (checked in _build)
    return [p + sep + s for p, s in zip(prompt_ids, ids)], [len(p) + 1 for p in prompt_ids]


# ---------------------------------------------------------------------------------------------- statistics


def data_summary(data: PreparedData) -> dict[str, Any]:
    """Corpus and token statistics of prepared data (what `lmbench data` prints and writes with --json)."""
    meta = data.meta
    rows = {}
    for name, split in data.splits.items():
        s, m = split.stats, meta["splits"][name]
        rows[name] = {**dataclasses.asdict(s),
                      "tokens_per_doc": s.num_tokens / max(s.num_docs, 1),
                      "bytes_per_token": s.num_bytes / max(s.num_tokens, 1),
                      "tokenize_mb_per_s": m["tokenize_bytes"] / 1e6 / max(m["tokenize_seconds"], 1e-9),
                      "tokenize_seconds": m["tokenize_seconds"], "wall_seconds": m["wall_seconds"]}
    return {"fingerprint": data.fingerprint, "cache_dir": str(data.cache_dir), "reused": data.reused,
            "tokenizer": meta["tokenizer"], "source": meta["source"], "build_seconds": meta["build_seconds"],
            "cache_mb": sum(f.stat().st_size for f in data.cache_dir.rglob("*") if f.is_file()) / 1e6,
            "peak_rss_mb": peak_rss_mb(), "splits": rows}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6
