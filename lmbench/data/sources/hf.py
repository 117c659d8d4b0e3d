"""The `hf` source: `datasets.load_dataset(path, name, split=..., streaming=...)`, offline-friendly.

`path` is a hub id (offline: only from the local `datasets` cache), a local folder of data files, or a folder
written by `save_to_disk`. `check_spec()` never touches the network: it reads column names from a local folder or
from the cache's `dataset_info.json`, and skips the field check when neither is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbench.data.sources.base import (ROWS_PER_READ, SOURCES, SPLIT_ALIASES, SPLITS, TABLE_BUILDERS, Document,
                                       Source, as_text, check_field, check_split_files, first_record_fields,
                                       require_path, stat_files)
from lmbench.errors import SpecError


@dataclass
class HFConfig:
    path: str | None = None  # hub id, local folder of data files, or a folder written by save_to_disk
    name: str | None = None  # the dataset's config name
    files: dict[str, str] = field(default_factory=dict)  # our split -> its split expression
    text_field: str = "text"
    streaming: bool = False  # stream instead of downloading the whole split


@SOURCES.register("hf")
class HFSource(Source):
    """A Hugging Face dataset with a text column. `files` maps our split names to its split expressions
    (e.g. ``{train: "train[:10%]", validation: validation}``); without it the dataset's own train/validation/test
    splits are used (``valid``/``dev`` count as validation)."""

    Config = HFConfig

    @classmethod
    def check_spec(cls, config: HFConfig, spec: Any) -> None:
        path = require_path(config)
        check_split_files(config)
        fields = _hf_local_fields(path, config.name)
        if fields is not None:
            check_field(fields, config.text_field, path)

    def native_splits(self) -> list[str]:
        if self.config.files:
            return super().native_splits()
        return sorted(self._split_map(), key=SPLITS.index)

    def _split_map(self) -> dict[str, str]:
        """Our split name -> the dataset's split name."""
        names = _hf_split_names(require_path(self.config), self.config.name)
        mapping = {SPLIT_ALIASES[n]: n for n in reversed(names) if n in SPLIT_ALIASES}
        if "train" not in mapping:
            raise SpecError("data.files", f"{self.config.path} has splits {names} but no train split; "
                                          "map ours to its splits with data.files: {train: <its split>}")
        return mapping

    def documents(self, split: str) -> Iterator[Document]:
        expr = self.config.files[split] if self.config.files else self._split_map()[split]
        ds = _hf_load(self.config, expr)
        if ds.column_names is not None and self.config.text_field not in ds.column_names:
            check_field(list(ds.column_names), self.config.text_field, self.config.path or "")
        for batch in ds.iter(batch_size=ROWS_PER_READ):
            if self.config.text_field not in batch:  # streaming datasets may not know their columns up front
                check_field(list(batch), self.config.text_field, self.config.path or "")
            for text in batch[self.config.text_field]:
                yield Document(as_text(text))

    def fingerprint(self) -> dict[str, Any]:
        local = Path(os.path.expanduser(str(self.config.path)))
        files = stat_files(sorted(p for p in local.rglob("*") if p.is_file())) if local.is_dir() else []
        return {"path": self.config.path, "name": self.config.name, "files": files}


def _is_saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _offline_unless_reachable(path: str) -> bool:
    """For a Hub dataset id on a machine that cannot reach the Hub: switch `datasets` to its offline mode (the
    local cache only, no retries) and return True; False when the Hub is reachable or offline is already set."""
    from lmbench.hub import hub_reachable, offline_mode

    if offline_mode() or hub_reachable():
        return offline_mode()
    import datasets

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    for attr in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # read by `datasets` at import time
        if hasattr(datasets.config, attr):
            setattr(datasets.config, attr, True)
    return True


def _hf_load(spec: HFConfig, split: str) -> Any:
    import datasets

    from lmbench.hub import unreachable_error

    local = Path(os.path.expanduser(str(spec.path)))
    offline = not local.is_dir() and _offline_unless_reachable(str(spec.path))
    try:
        if local.is_dir() and _is_saved_to_disk(local):
            ds = datasets.load_from_disk(str(local))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
            return ds.to_iterable_dataset() if spec.streaming else ds
        return datasets.load_dataset(str(local) if local.is_dir() else spec.path, spec.name, split=split,
                                     streaming=spec.streaming)
    except (FileNotFoundError, ConnectionError, ValueError, KeyError) as exc:
        if offline:
            raise unreachable_error("data.path", "dataset", str(spec.path)) from None
        raise SpecError("data.path", f"cannot load Hugging Face dataset {spec.path!r} split {split!r}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _hf_split_names(path: str, name: str | None) -> list[str]:
    import datasets

    from lmbench.hub import unreachable_error

    local = Path(os.path.expanduser(path))
    offline = not local.is_dir() and _offline_unless_reachable(path)
    try:
        if local.is_dir() and _is_saved_to_disk(local):
            ds = datasets.load_from_disk(str(local))
            return list(ds) if isinstance(ds, datasets.DatasetDict) else ["train"]
        return list(datasets.get_dataset_split_names(str(local) if local.is_dir() else path, name))
    except Exception as exc:  # offline hub, unknown id, bad config: one readable line
        if offline:
            raise unreachable_error("data.path", "dataset", path) from None
        raise SpecError("data.path", f"cannot list the splits of Hugging Face dataset {path!r}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _hf_local_fields(path: str, name: str | None) -> list[str] | None:
    """Column names of a dataset readable without the network: a saved or local folder, or the HF cache.
    None when they cannot be known cheaply (then the check happens when the data is read)."""
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        if _is_saved_to_disk(local):
            return _saved_fields(local)
        files = [p for p in sorted(local.rglob("*")) if p.suffix.lower() in TABLE_BUILDERS]
        return first_record_fields(files[0], TABLE_BUILDERS[files[0].suffix.lower()]) if files else None
    if local.is_file():
        raise SpecError("data.path", f"{path} is a file; use data.source: {TABLE_BUILDERS.get(local.suffix, 'text')}")
    return _cached_hub_fields(path, name)


def _saved_fields(local: Path) -> list[str] | None:
    infos = sorted(local.glob("dataset_info.json")) or sorted(local.glob("*/dataset_info.json"))
    if not infos:
        return None
    features = json.loads(infos[0].read_text(encoding="utf-8")).get("features") or {}
    return list(features) or None


def _cached_hub_fields(repo_id: str, name: str | None) -> list[str] | None:
    """Features recorded in the local `datasets` cache for a hub dataset, if it was ever prepared here."""
    cache = Path(os.environ.get("HF_DATASETS_CACHE", Path.home() / ".cache" / "huggingface" / "datasets"))
    folder = cache / repo_id.replace("/", "___")
    infos = sorted(folder.glob(f"{name or '*'}/*/*/dataset_info.json")) if folder.is_dir() else []
    for info in infos:
        features = json.loads(info.read_text(encoding="utf-8")).get("features") or {}
        if features:
            return list(features)
    return None
