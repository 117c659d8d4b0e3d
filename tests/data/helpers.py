"""Helpers for the data tests: specs around a DataSpec, small files written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmbench.spec import DataSpec, ExperimentSpec, to_spec


def experiment(data: dict[str, Any], tokenizer: dict[str, Any] | None = None) -> ExperimentSpec:
    """A full, range-checked spec around `data` (a tiny transformer; the model is never built here)."""
    return to_spec({"name": "data-test", "data": data, "tokenizer": tokenizer or {"kind": "char"},
                    "model": {"family": "transformer"}, "train": {"max_steps": 1}})


def data_spec(**fields: Any) -> DataSpec:
    return experiment(fields).data


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


LINES = [f"document number {i} says {'hello ' * (i % 5)}world." for i in range(200)]
