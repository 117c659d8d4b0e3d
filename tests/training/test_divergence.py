"""Divergence: each check of `divergence_reason`, a run made to diverge, and train.stop_on_divergence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lmbench.training import checkpoint as ckpt
from lmbench.training.divergence import divergence_reason

from .test_trainer import rows, run, tiny_cfg

HEALTHY = dict(final_val_loss=1.4, untrained_val_loss=3.0, vocab_size=30, first_train_loss=2.9,
               last_train_loss=1.4, min_train_loss=1.35, factor=3.0)


def test_a_run_that_learned_is_not_flagged() -> None:
    assert divergence_reason(**HEALTHY) is None


@pytest.mark.parametrize("change, words", [
    ({"final_val_loss": 3.1}, "not below the untrained model's 3"),
    ({"final_val_loss": 3.0}, "not below the untrained"),  # equal is no progress either
    ({"untrained_val_loss": None, "final_val_loss": 3.5}, "ln(vocabulary) = 3.401"),
    ({"last_train_loss": 3.1}, "above where it started (2.9)"),
    ({"first_train_loss": 9.0, "last_train_loss": 4.5, "min_train_loss": 1.2}, "over 3 x its lowest"),
])
def test_each_check(change: dict, words: str) -> None:
    reason = divergence_reason(**{**HEALTHY, **change})
    assert reason is not None and words in reason


def test_a_loss_that_only_wobbles_above_its_start_is_fine() -> None:
    """Fine-tuning a pretrained model: the loss starts low and moves within noise (here +3%)."""
    assert divergence_reason(**{**HEALTHY, "first_train_loss": 1.40, "last_train_loss": 1.44}) is None


def test_without_untrained_evaluation_a_model_below_uniform_is_fine() -> None:
    assert divergence_reason(**{**HEALTHY, "untrained_val_loss": None, "final_val_loss": math.log(30) - 0.01}) is None


def diverging_cfg(tmp_path: Path, **train: object) -> dict:
    """An LSTM at lr 3 without clipping: the training loss jumps from ~14 to ~27 nats, then settles above the
    untrained validation loss (finite: not a failed run)."""
    cfg = tiny_cfg(tmp_path, family="lstm", eval={"untrained": True},
                   train={"lr": 3.0, "grad_clip": None, "max_steps": 40, "log_every": 4, "eval_every": 20, **train})
    cfg["model"]["params"]["dropout"] = 0.0
    return cfg


def test_a_run_made_to_diverge_is_flagged_completed_and_diverged(tmp_path: Path) -> None:
    summary = run(diverging_cfg(tmp_path), tmp_path / "lr3")
    assert summary["status"] == "completed" and summary["diverged"] is True
    assert summary["val_loss"] >= summary["untrained_val_loss"]
    assert "not below the untrained model's" in summary["divergence_reason"]
    losses = [r["train_loss"] for r in rows(tmp_path / "lr3") if "train_loss" in r]
    assert (summary["first_train_loss"], summary["last_train_loss"], summary["min_train_loss"]) == \
        (losses[0], losses[-1], min(losses))
    healthy = run(tiny_cfg(tmp_path, family="lstm", eval={"untrained": True}), tmp_path / "ok")
    assert healthy["diverged"] is False and healthy["divergence_reason"] is None


def test_stop_on_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "stopped"
    summary = run(diverging_cfg(tmp_path, stop_on_divergence=1.5, checkpoint_every=4), run_dir)
    losses = [r["train_loss"] for r in rows(run_dir) if "train_loss" in r]
    assert losses[1] > 1.5 * losses[0]  # the second logged window exploded
    assert summary["stop_reason"] == "diverged" and summary["steps"] == 8 and summary["diverged"] is True
    assert "stop_on_divergence" in summary["divergence_reason"]
    state = json.loads((ckpt.checkpoint_dir(run_dir) / "trainer_state.json").read_text())
    assert state["step"] == 4  # the checkpoint from before the explosion, not the exploded weights


@pytest.mark.parametrize("change, diverged", [
    ({"final_val_loss": None}, False),  # no validation: the training-loss checks alone decide
    ({"final_val_loss": math.nan}, False),  # a non-finite validation loss is not compared (the run failed apart)
    ({"final_val_loss": math.nan, "last_train_loss": 3.2}, True),
    ({"untrained_val_loss": None, "final_val_loss": math.log(30)}, True),  # exactly uniform is no progress
    ({"untrained_val_loss": None, "vocab_size": 2, "final_val_loss": math.log(2) - 1e-9}, False),
    ({"untrained_val_loss": None, "vocab_size": 2, "final_val_loss": math.log(2)}, True),
    ({"untrained_val_loss": None, "vocab_size": 1, "final_val_loss": 50.0}, False),  # one symbol: no uniform bound
    ({"first_train_loss": 2.0, "last_train_loss": 2.0 * 1.05}, False),  # exactly +5%: still within tolerance
    ({"first_train_loss": 2.0, "last_train_loss": 2.0 * 1.05 + 1e-9}, True),
    ({"first_train_loss": 9.0, "last_train_loss": 3.0, "min_train_loss": 1.0}, False),  # exactly 3 x the lowest
    ({"first_train_loss": 9.0, "last_train_loss": 3.0 + 1e-9, "min_train_loss": 1.0}, True),
    ({"first_train_loss": None, "last_train_loss": 3.1}, False),
    ({"min_train_loss": None, "first_train_loss": 9.0, "last_train_loss": 8.0}, False),
])
def test_boundaries_of_each_check(change: dict, diverged: bool) -> None:
    assert (divergence_reason(**{**HEALTHY, **change}) is not None) is diverged


def test_the_stopped_reason_names_both_losses() -> None:
    reason = divergence_reason(**{**HEALTHY, "last_train_loss": 7.5, "min_train_loss": 2.5}, stopped=True)
    assert reason == "stopped by train.stop_on_divergence: training loss 7.5 over its lowest 2.5"
