"""Document sources, one class per `data.source`, registered in `SOURCES`: text, json/jsonl, csv, parquet,
prompt_story and builtin (local.py), hf (hf.py). base.py holds the interface and the shared file helpers.

    config = resolve_config(spec.data)          # the data.* fields the source reads, typed (its Config)
    check_source(spec.data, spec)               # cheap checks before any work (SpecError names the field)
    for doc in make_source(spec.data).documents("train"): ...
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from lmbench.data.sources import hf, local  # noqa: F401  (each module registers its sources)
from lmbench.data.sources.base import (SOURCES, SPLIT_ALIASES, SPLITS, TABLE_BUILDERS, Document, Source,
                                       first_record_fields)
from lmbench.spec import DataSpec, typed_params

__all__ = ["SOURCES", "SPLITS", "SPLIT_ALIASES", "TABLE_BUILDERS", "Document", "Source", "check_source",
           "first_record_fields", "make_source", "resolve_config", "unread_fields"]

# DataSpec fields that belong to a source (each source's Config names those it reads); the others (filters,
# splits, batching, cache) apply to every source.
SOURCE_FIELDS = ("path", "name", "files", "text_field", "prompt_field", "prompt_path", "unit", "separator",
                 "encoding", "streaming")


def resolve_config(data: DataSpec) -> Any:
    """The source's typed Config from the data.* fields it reads (SpecError under data.* for a bad value)."""
    cls = SOURCES.get(data.source)
    names = [f.name for f in dataclasses.fields(cls.Config)]
    return typed_params(cls.Config, {name: getattr(data, name) for name in names}, "data")


def make_source(data: DataSpec) -> Source:
    return SOURCES.get(data.source)(resolve_config(data))


def unread_fields(data: DataSpec) -> list[str]:
    """Source fields set away from their defaults that `data.source` does not read (they have no effect)."""
    read = {f.name for f in dataclasses.fields(SOURCES.get(data.source).Config)}
    default = DataSpec()
    return [f"data.{n}" for n in SOURCE_FIELDS if n not in read and getattr(data, n) != getattr(default, n)]


def check_source(data: DataSpec, spec: Any = None) -> None:
    """Check the source of `data` before any work; warn about source fields it does not read."""
    config = resolve_config(data)
    SOURCES.get(data.source).check_spec(config, spec)
    unread = unread_fields(data)
    if unread:
        print(f"lmbench: warning: {', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not read by "
              f"data.source {data.source!r} and has no effect", file=sys.stderr)
