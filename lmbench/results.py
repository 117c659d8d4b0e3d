"""The results folder's one shared record: `summary.json` of a cell, with one reader and one atomic writer.

Layout of `<results>/<spec name>/`:

    cells.json                   the grid's cells (index, name, id, axes), written by `lmbench run`
    <cell>/cell.json             the cell's facts, written when it starts (before there is a summary)
    <cell>/summary.json          a `Summary`: status and progress while it runs, every metric when it is done
    <cell>/spec.yaml, metrics.jsonl, samples.jsonl, sampler_metrics.csv, env.json, tokenizer/, checkpoint/

Three parts write a summary (the runner while a cell trains and when it ends, the launcher when a cell fails
before the runner could, or when a worker dies) and three read it (the launcher to skip completed cells, the
runner for a reference run, the report); all go through `read_summary` / `write_summary`. Nothing here
imports torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal, Required, TypedDict

SUMMARY_FILE = "summary.json"
CELL_FILE = "cell.json"
CELLS_FILE = "cells.json"

Status = Literal["running", "completed", "failed"]
RUNNING: Status = "running"
COMPLETED: Status = "completed"
FAILED: Status = "failed"
STATUSES: tuple[Status, ...] = (RUNNING, COMPLETED, FAILED)

# Why training ended: a budget of spec.train, early stopping on the validation loss, or train.stop_on_divergence.
StopReason = Literal["max_steps", "epochs", "max_tokens", "max_seconds", "early_stopping", "diverged"]


class Summary(TypedDict, total=False):
    """summary.json. Only `status` is always there; a failed cell may have little else.

    Beside these keys it holds the evaluation metrics, flat: `<split>_<metric>` for split prefixes train, val,
    test and the metrics of `EvalResult.metrics` (val_loss, val_ppl, val_bpb, test_word_ppl, ...), and the
    same with an `untrained_` prefix for the evaluation before training (eval.untrained).
    """

    status: Required[Status]
    # where the cell comes from (the launcher and the runner both know these)
    cell: str
    cell_index: int
    cell_id: str
    spec_name: str
    group: str | None
    axes: dict[str, Any]
    # failure
    error: str
    failed_step: int
    # progress (the runner)
    steps: int
    tokens: int
    epochs: float
    wall_s: float
    train_s: float
    train_tokens_per_s: float | None
    flops_per_token: float
    train_flops_per_s: float | None
    best_val_loss: float | None
    best_step: int | None
    stop_reason: StopReason | None
    resumed_from: list[int]
    # did it learn? (the runner; see lmbench.training.divergence)
    diverged: bool
    divergence_reason: str | None
    first_train_loss: float | None
    last_train_loss: float | None
    min_train_loss: float | None
    num_samples: int
    # run facts (the runner)
    num_params: int
    num_trainable_params: int
    mixed_precision: str
    mixed_precision_reason: str
    world_size: int
    grad_accum_steps: int
    per_process_batch_size: int


def write_json_atomic(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write JSON to `path` through a temporary file, fsync and os.replace: readers see the old file or the new
    one, never half of one, and a crash right after leaves the new one on disk. Key order is kept unless
    `sort_keys` (grid axes are listed in grid order)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=_json_default) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, fsync and os.replace (see write_json_atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    return str(obj)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(run_dir: Path) -> Summary | None:
    """The summary of the cell in `run_dir`; None when there is none yet. An unreadable file reads as a failed
    cell that says so (a report shows it; the launcher runs the cell again)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Summary(status=FAILED, error=f"{SUMMARY_FILE} is unreadable: {exc}")
    if not isinstance(data, dict):
        return Summary(status=FAILED, error=f"{SUMMARY_FILE} holds a {type(data).__name__}, not an object")
    return data  # type: ignore[return-value]


# The record of how far a cell got: never replaced by less (a failure before training, a new session starting).
PROGRESS_KEYS = ("steps", "tokens", "epochs", "train_s", "train_tokens_per_s", "train_flops_per_s", "best_val_loss",
                 "best_step", "resumed_from")


def write_summary(run_dir: Path, summary: Summary) -> None:
    """Write `summary` to `run_dir`/summary.json atomically (main process only). While a cell is running or
    when it failed, a summary on disk that records more training steps keeps its progress fields: no record of
    progress is lost to a crash before training or a new session. A completed summary is written as it is."""
    if summary.get("status") not in STATUSES:
        raise ValueError(f"summary status must be one of {', '.join(STATUSES)}, got {summary.get('status')!r}")
    previous = read_summary(run_dir) or {}
    if summary["status"] != COMPLETED and int(previous.get("steps") or 0) > int(summary.get("steps") or 0):
        kept = {k: previous[k] for k in PROGRESS_KEYS if k in previous}
        summary = Summary(**{**summary, **kept})  # type: ignore[typeddict-item]
    write_json_atomic(Path(run_dir) / SUMMARY_FILE, summary, sort_keys=True)


class DamagedFile(RuntimeError):
    """A file of a run is unreadable in a way lmbench cannot repair; the message names the file and where."""


def read_rows(path: Path, *, strict: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """(line, row) of each JSON-lines row of `path` (metrics.jsonl, samples.jsonl).

    The last line may be torn by a kill in the middle of a write: it is dropped with a warning. Any other
    unreadable line raises DamagedFile naming the file and the line, or with `strict=False` (reports, which
    read running cells too) is skipped with a warning."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            torn = number == len(lines) and not text.endswith("\n")
            if strict and not torn:
                raise DamagedFile(f"{path}: line {number} is unreadable ({exc}); repair or delete that line") from None
            what = "was cut off mid-write (a killed or running run)" if torn else f"is unreadable ({exc})"
            print(f"lmbench: warning: {path}: line {number} {what}; skipped", file=sys.stderr)
            continue
        rows.append((line, row))
    return rows
