"""Runs as tables: pivot order, column labels, text sampler metrics, seed aggregation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lmbench.reporting.tables import display_names, pivot, seed_table, text_sampler_metrics


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


def test_seed_table_is_mean_and_sample_std_over_completed_cells() -> None:
    frame = pd.DataFrame({"status": ["completed", "completed", "completed", "failed"],
                          "family": ["lstm", "lstm", "gru", "lstm"], "val_bpb": [2.0, 2.5, 3.0, 0.1]})
    table = seed_table(frame, ["family"], ["val_bpb"]).set_index("family")
    assert table.loc["lstm", "n"] == 2 and table.loc["gru", "n"] == 1  # the failed cell is left out
    assert table.loc["lstm", "val_bpb"] == "2.2500 ± 0.3536" and table.loc["gru", "val_bpb"] == "3.0000"
