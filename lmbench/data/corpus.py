"""The documents of each split: the source's own splits, or validation/test carved out of its train stream.

Per document of a native split, in order: `limit` (keep the first N raw documents), `subsample` (a seeded
fraction), `replace` and `lowercase` (applied to the text and the prompt), then `min_chars`/`max_chars` on the
text. When the source lacks a validation (or test) split and `val_fraction` (`test_fraction`) is above zero, that
split is carved out of train:

- `split: documents` — document i of the train stream goes to validation if u(i) < val_fraction, to test if
  u(i) < val_fraction + test_fraction, else to train, where u(i) in [0, 1) is a hash of (split_seed, i). The
  assignment depends only on the seed and the raw index, so it is stable under other filters.
- `split: tail` — the characters of the (filtered) train stream are cut: the first (1 - val - test) fraction is
  train, then validation, then test (nanoGPT's 90/10 on Tiny Shakespeare). A single document is cut itself.

Everything is an iterator; nothing holds the corpus in memory.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence

from lmbench.data.sources import SPLITS, Document, make_source
from lmbench.data.sources.base import ROWS_PER_READ
from lmbench.errors import SpecError
from lmbench.spec import DataSpec


def carved_fractions(spec: DataSpec, native: list[str]) -> dict[str, float]:
    """Splits cut out of the train stream because the source lacks them: split name -> fraction."""
    carved = {}
    if "validation" not in native and spec.val_fraction > 0:
        carved["validation"] = spec.val_fraction
    if "test" not in native and spec.test_fraction > 0:
        carved["test"] = spec.test_fraction
    return carved


def split_names(spec: DataSpec) -> list[str]:
    """The splits this data has, in train/validation/test order."""
    native = make_source(spec).native_splits()
    return sorted(set(native) | set(carved_fractions(spec, native)), key=SPLITS.index)


def iter_documents(spec: DataSpec, split: str) -> Iterator[Document]:
    """The filtered documents of `split`. Raises SpecError (when exhausted) if the split has no documents."""
    for batch in iter_document_batches(spec, split):
        yield from batch


def iter_document_batches(spec: DataSpec, split: str) -> Iterator[list[Document]]:
    """`iter_documents` in lists, as the source reads them (a text file: the documents of each chunk): the filters
    run over a list at a time, so reading costs no Python call per document."""
    source = make_source(spec)
    native = source.native_splits()
    carved = carved_fractions(spec, native)
    if split not in native and split not in carved:
        names = sorted(set(native) | set(carved), key=SPLITS.index)
        raise SpecError("data", f"this data has no {split!r} split; it has {', '.join(names)}")
    batches: Iterator[list[Document]]
    if split != "train" and split in native or not carved:
        batches = (docs for _, docs in filtered_batches(spec, source.document_batches(split), split))
    elif spec.split == "tail":
        def train_stream() -> Iterator[tuple[int, Document]]:
            return ((i, d) for indices, docs in filtered_batches(spec, source.document_batches("train"), "train")
                    for i, d in zip(indices, docs))

        docs = tail_split(train_stream, carved, split)
        batches = iter(lambda: list(itertools.islice(docs, ROWS_PER_READ)), [])
    else:
        batches = ([d for i, d in zip(indices, docs) if assign_split(spec.split_seed, i, carved) == split]
                   for indices, docs in filtered_batches(spec, source.document_batches("train"), "train"))
    num_docs = 0
    for batch in batches:
        if batch:
            num_docs += len(batch)
            yield batch
    if num_docs == 0:
        raise empty_split_error(spec, split)


def empty_split_error(spec: DataSpec, split: str) -> SpecError:
    return SpecError("data", f"split {split!r} is empty after filtering ({describe_filters(spec)}); "
                             "loosen data.limit / data.subsample / data.min_chars / data.max_chars or check the source")


def describe_filters(spec: DataSpec) -> str:
    return (f"source={spec.source}, limit={spec.limit}, subsample={spec.subsample}, min_chars={spec.min_chars}, "
            f"max_chars={spec.max_chars}, val_fraction={spec.val_fraction}, test_fraction={spec.test_fraction}")


def unit_hash(seed: int, *parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from the seed and `parts` (same on every machine)."""
    key = "/".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2**64


def assign_split(seed: int, index: int, carved: dict[str, float]) -> str:
    """Seeded by-document split of train-stream document `index`."""
    u = unit_hash(seed, "split", index)
    low = 0.0
    for name in ("validation", "test"):
        low += carved.get(name, 0.0)
        if u < low:
            return name
    return "train"


def filtered(spec: DataSpec, docs: Iterator[Document], salt: str) -> Iterator[tuple[int, Document]]:
    """(raw index, transformed document) of the documents that pass limit, subsample and length filters."""
    batches = iter(lambda: list(itertools.islice(docs, ROWS_PER_READ)), [])
    for indices, kept in filtered_batches(spec, batches, salt):
        yield from zip(indices, kept)


def unfiltered(spec: DataSpec) -> bool:
    """Whether every filter of `filtered_batches` is at its default (it passes every document as it is)."""
    return (spec.limit is None and spec.subsample >= 1 and not spec.replace and not spec.lowercase
            and spec.min_chars <= 0 and spec.max_chars is None)


def keys_on_index(spec: DataSpec) -> bool:
    """Whether a filter of `filtered_batches` depends on the raw index of a document (limit, subsample)."""
    return spec.limit is not None or spec.subsample < 1


def filtered_batches(spec: DataSpec, batches: Iterator[list[Document]], salt: str, start: int = 0
                     ) -> Iterator[tuple[Sequence[int], list[Document]]]:
    """`filtered` a list at a time: (raw indices, transformed documents) of each batch's documents that pass
    `limit` (the first N raw documents), `subsample` (seeded by raw index), `replace`/`lowercase`, then
    `min_chars`/`max_chars`. Every step is skipped when its field is at its default. `start`: the raw index of
    the first document (a shard of the stream)."""
    for docs in batches:
        indices: Sequence[int] = range(start, start + len(docs))
        start += len(docs)
        if spec.limit is not None and indices.stop > spec.limit:
            keep = max(spec.limit - indices.start, 0)
            docs, indices = docs[:keep], indices[:keep]
        if spec.subsample < 1:
            chosen = [k for k, i in enumerate(indices)
                      if unit_hash(spec.split_seed, "subsample", salt, i) < spec.subsample]
            docs, indices = [docs[k] for k in chosen], [indices[k] for k in chosen]
        if spec.replace or spec.lowercase:
            docs = [transform(spec, d) for d in docs]
        low, high = spec.min_chars, spec.max_chars
        if low > 0 or high is not None:
            chosen = [k for k, d in enumerate(docs) if len(d.text) >= low and (high is None or len(d.text) <= high)]
            if len(chosen) < len(docs):
                docs, indices = [docs[k] for k in chosen], [indices[k] for k in chosen]
        if docs:
            yield indices, docs
        if spec.limit is not None and start >= spec.limit:
            return


def transform(spec: DataSpec, doc: Document) -> Document:
    """`replace` (literal, in the given order) then `lowercase`, on the text and on the prompt."""
    def apply(text: str) -> str:
        for old, new in spec.replace.items():
            text = text.replace(old, new)
        return text.lower() if spec.lowercase else text

    if not spec.replace and not spec.lowercase:
        return doc
    return Document(apply(doc.text), None if doc.prompt is None else apply(doc.prompt))


def tail_bounds(num_chars: int, carved: dict[str, float]) -> dict[str, tuple[int, int]]:
    """Character ranges [start, end) of train, then each carved split, over a stream of `num_chars`."""
    names = ["train"] + [n for n in ("validation", "test") if n in carved]
    fractions = [1.0 - sum(carved.values())] + [carved[n] for n in names[1:]]
    bounds, start = {}, 0
    for i, (name, fraction) in enumerate(zip(names, fractions)):
        end = num_chars if i == len(names) - 1 else start + int(num_chars * fraction)
        bounds[name] = (start, end)
        start = end
    return bounds


def tail_split(stream: Callable[[], Iterator[tuple[int, Document]]], carved: dict[str, float],
               split: str) -> Iterator[Document]:
    """The pieces of the documents of `stream()` that fall in `split`'s character range (two passes)."""
    num_chars = sum(len(doc.text) for _, doc in stream())
    start, end = tail_bounds(num_chars, carved)[split]
    pos = 0
    for _, doc in stream():
        if pos >= end:
            return
        lo, hi = max(start - pos, 0), min(end - pos, len(doc.text))
        if lo < hi:
            yield Document(doc.text[lo:hi], doc.prompt)
        pos += len(doc.text)
