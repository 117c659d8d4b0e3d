"""Loading runs: cell status from the lock, unreadable summaries, W&B runs through its API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbench.errors import SpecError
from lmbench.reporting import report
from lmbench.reporting.load import load_run, load_runs, load_wandb_runs


def test_running_cell_needs_a_held_lock(tmp_path: Path) -> None:
    from lmbench.experiment.locks import CellLock

    cell = tmp_path / "demo" / "a"
    cell.mkdir(parents=True)
    (cell / "summary.json").write_text(json.dumps({"status": "running", "axes": {"seed": 0}}))
    lock = CellLock(cell)
    assert lock.acquire(blocking=False)
    try:
        assert load_run(cell).status == "running"
    finally:
        lock.release()
    assert load_run(cell).status == "incomplete"  # the launcher died: the lock file stays, unheld


def test_damaged_and_missing_summaries_show_as_such(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    for name in ("torn", "never", "done"):
        (root / name).mkdir(parents=True)
    (root / "torn" / "summary.json").write_text('{"status": "compl')
    (root / "done" / "summary.json").write_text(json.dumps({"status": "completed", "val_bpb": 1.5}))
    (root / "cells.json").write_text(json.dumps({"grid": "demo", "cells": [
        {"index": 0, "name": "torn", "axes": {}}, {"index": 1, "name": "never", "axes": {}},
        {"index": 2, "name": "done", "axes": {}}, {"index": 3, "name": "gone", "axes": {}}]}))
    runs = {r.cell: r for r in load_runs(root)}
    assert runs["torn"].status == "failed" and "summary.json is unreadable" in runs["torn"].summary["error"]
    assert (runs["never"].status, runs["gone"].status, runs["done"].status) == ("missing", "missing", "completed")


class FakeWandbRun:
    name, state = "family=lstm,seed=0", "finished"

    def __init__(self) -> None:
        self.config = {"model": {"family": "lstm"}, "tokenizer": {"kind": "char"}, "seed": 0,
                       "lmbench": {"cell": "family=lstm,seed=0", "group": "demo"}}
        self.summary = {"status": "completed", "val_bpb": 2.5, "val_loss": 1.7, "num_params": 1000,
                        "axes": {"model.family": "lstm", "seed": 0}, "_runtime": 3.0}

    def scan_history(self) -> list[dict]:
        return [{"_step": 0, "train_loss": 4.0}, {"_step": 10, "val_loss": 1.7, "_runtime": 2.0}]


def test_wandb_runs_through_api(tmp_path: Path) -> None:
    class Api:
        def runs(self, path: str) -> list[FakeWandbRun]:
            assert path == "me/demo"
            return [FakeWandbRun()]

    runs = load_wandb_runs("me/demo", api=Api())
    assert runs[0].cell == "family=lstm,seed=0" and runs[0].status == "completed"
    assert list(runs[0].metrics["step"]) == [0, 10] and "wall_s" in runs[0].metrics
    md = report.write_report(runs, tmp_path, "w", "W&B").read_text()
    assert "2.5000" in md


def test_wandb_unreachable_is_a_clear_error() -> None:
    class Api:
        def runs(self, path: str) -> list:
            raise ConnectionError("Max retries exceeded with url: https://api.wandb.ai/graphql")

    with pytest.raises(SpecError, match="cannot read the W&B runs of 'me/demo'.*network"):
        load_wandb_runs("me/demo", api=Api())


def test_wandb_report_shows_each_cell_once(tmp_path: Path) -> None:
    """Older sessions of a cell (logged before runs were resumed by id) do not show up as extra cells."""
    old, new, other = FakeWandbRun(), FakeWandbRun(), FakeWandbRun()
    old.created_at, new.created_at, other.created_at = "2026-11-01T10:00:00", "2026-11-02T10:00:00", "2026-11-01"
    old.summary = {**old.summary, "val_bpb": 9.9}
    other.config = {**other.config, "lmbench": {"cell": "family=gru,seed=0", "group": "demo"}}

    class Api:
        def runs(self, path: str) -> list[FakeWandbRun]:
            return [new, old, other]

    runs = load_wandb_runs("me/demo", api=Api())
    assert sorted(r.cell for r in runs) == ["family=gru,seed=0", "family=lstm,seed=0"]
    assert next(r for r in runs if r.cell == "family=lstm,seed=0").summary["val_bpb"] == 2.5
