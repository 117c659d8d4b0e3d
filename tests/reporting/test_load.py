"""Loading and aggregating runs: cell status from the lock, pivot order, column labels, text sampler metrics, W&B."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lmbench.reporting import report
from lmbench.errors import SpecError
from lmbench.reporting.load import display_names, load_run, load_wandb_runs, pivot, text_sampler_metrics


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


def test_pivot_orders_numbers_and_names() -> None:
    frame = pd.DataFrame({"status": "completed", "model.params.d_hidden": [128, 64, 256, 64],
                          "arch": ["lstm", "gru", "lstm", "gru"], "val_bpb": [2.0, 2.5, 1.5, 2.7]})
    table = pivot(frame, "model.params.d_hidden", "arch", "val_bpb")
    assert list(table.index) == [64, 128, 256] and list(table.columns) == ["lstm", "gru"]
    assert table.loc[64, "gru"] == pytest.approx(2.6) and math.isnan(table.loc[64, "lstm"])
    names = display_names(["model.family", "tokenizer.kind", "model.params.d_hidden", "a.x", "b.x", "seed"])
    assert names == {"model.family": "family", "tokenizer.kind": "tokenizer", "model.params.d_hidden": "d_hidden",
                     "a.x": "a.x", "b.x": "b.x", "seed": "seed"}


def test_text_sampler_metrics() -> None:
    samples = pd.DataFrame([{"sampler": "s", "text": "a b a b a b", "ended_with_eos": True},
                            {"sampler": "s", "text": "c d", "ended_with_eos": False}])
    row = text_sampler_metrics(samples).iloc[0]
    assert row["distinct_1"] == pytest.approx(4 / 8) and row["distinct_2"] == pytest.approx(3 / 6)
    assert row["rep_4gram"] == pytest.approx(1 / 3) and row["eos_fraction"] == 0.5 and row["mean_length"] == 4


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
