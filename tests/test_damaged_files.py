"""Damaged files: every file a run writes is truncated, zeroed or garbled, then the run is resumed (or reported).
Each case ends recovered with a warning naming the file, or with a one-line error naming it; never with a wrong
number, and never with less progress in summary.json than before.

A run here is a tiny LSTM (carried state, so carry_0.safetensors exists) interrupted after its checkpoint of
step 4 (the previous one, step 2, is kept); "identical" means the final metrics of an uninterrupted run.
`scripts/bench/reliability.py` counts the same cases.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmbench.reporting.load import load_run
from lmbench.results import read_summary, write_summary
from lmbench.training import checkpoint as ckpt
from lmbench.training.trainer import Trainer

from .training.test_trainer import FINAL_KEYS, rows, run, tiny_cfg


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {"truncate": truncate, "zero": zero, "garble": garble}
CHECKPOINT_FILES = ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "carry_0.safetensors",
                    "trainer_state.json")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """(config, summary, logged steps) of the uninterrupted run every case must end equal to."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = config(tmp)
    summary = run(cfg, tmp / "straight")
    return cfg, summary, [r["step"] for r in rows(tmp / "straight")]


def config(tmp: Path) -> dict[str, Any]:
    return tiny_cfg(tmp, "lstm", train={"max_steps": 7, "checkpoint_every": 2, "eval_every": 3},
                    sample={"samplers": []})


def interrupted(cfg: dict[str, Any], run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed at step 5: checkpoint/ holds step 4, checkpoint.prev/ step 2."""
    real = Trainer.train_step

    def step(self: Trainer, index: int) -> Any:
        if index == 5:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    monkeypatch.setattr(Trainer, "train_step", real)
    assert ckpt.read_trainer_state(run_dir / "checkpoint")["step"] == 4
    assert ckpt.read_trainer_state(run_dir / "checkpoint.prev")["step"] == 2


def assert_identical(summary: dict[str, Any], straight: dict[str, Any]) -> None:
    assert summary["status"] == "completed"
    for key in FINAL_KEYS:
        assert summary[key] == straight[key], key


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(straight: tuple, tmp_path: Path, name: str, damage: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg, expected, steps = straight
    run_dir = tmp_path / "cell"
    interrupted(cfg, run_dir, monkeypatch)
    DAMAGE[damage](run_dir / "checkpoint" / name)
    summary = run(cfg, run_dir)
    assert f"damaged checkpoint: {run_dir / 'checkpoint' / name}" in caplog.text
    assert summary["resumed_from"] == [2]  # from the previous checkpoint
    assert_identical(summary, expected)
    assert [r["step"] for r in rows(run_dir)] == steps


def test_both_checkpoints_damaged_is_an_error_that_keeps_the_record(straight: tuple, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _, _ = straight
    run_dir = tmp_path / "cell"
    interrupted(cfg, run_dir, monkeypatch)
    before = read_summary(run_dir)
    write_summary(run_dir, {**before, "status": "failed", "steps": 4, "tokens": 256, "error": "killed"})
    truncate(run_dir / "checkpoint" / "model.safetensors")
    garble(run_dir / "checkpoint.prev" / "optimizer.bin")
    with pytest.raises(RuntimeError, match="no usable checkpoint") as err:
        run(cfg, run_dir)
    message = str(err.value)
    assert "checkpoint/model.safetensors" in message and "checkpoint.prev/optimizer.bin" in message
    after = read_summary(run_dir)
    assert after["status"] == "failed" and "no usable checkpoint" in after["error"]
    assert (after["steps"], after["tokens"]) == (4, 256)  # the record of progress is not replaced by less


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_a_kill_between_writing_and_renaming_a_checkpoint(straight: tuple, tmp_path: Path, family: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap of step 4 dies after checkpoint -> checkpoint.prev, before checkpoint.tmp -> checkpoint."""
    cfg, expected, steps = straight
    if family != "lstm":
        cfg = tiny_cfg(tmp_path, family, train={"max_steps": 7, "checkpoint_every": 2, "eval_every": 3},
                       sample={"samplers": []})
        expected = run(cfg, tmp_path / "straight")
        steps = [r["step"] for r in rows(tmp_path / "straight")]
    run_dir = tmp_path / "cell"
    real_swap = ckpt._swap

    def dying_swap(run_dir_: Path, final: Path, prev: Path, tmp: Path) -> None:
        if ckpt.read_trainer_state(tmp)["step"] == 4:
            shutil.rmtree(prev, ignore_errors=True)
            final.rename(prev)
            raise KeyboardInterrupt  # killed here: no checkpoint/, step 2 in .prev, step 4 finished in .tmp
        real_swap(run_dir_, final, prev, tmp)

    monkeypatch.setattr(ckpt, "_swap", dying_swap)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    monkeypatch.setattr(ckpt, "_swap", real_swap)
    assert not (run_dir / "checkpoint").exists() and (run_dir / "checkpoint.tmp").exists()
    summary = run(cfg, run_dir)
    assert summary["resumed_from"] == [4]
    assert_identical(summary, expected)
    assert [r["step"] for r in rows(run_dir)] == steps


def test_a_torn_last_metrics_line_is_dropped(straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg, expected, steps = straight
    run_dir = tmp_path / "cell"
    interrupted(cfg, run_dir, monkeypatch)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train_lo')  # killed in the middle of a write
    summary = run(cfg, run_dir)
    assert "metrics.jsonl: line" in capsys.readouterr().err
    assert_identical(summary, expected)
    assert [r["step"] for r in rows(run_dir)] == steps


def test_a_bad_metrics_line_in_the_middle_is_a_named_error(straight: tuple, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _, _ = straight
    run_dir = tmp_path / "cell"
    interrupted(cfg, run_dir, monkeypatch)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RuntimeError, match=r"metrics.jsonl: line 2 is unreadable"):
        run(cfg, run_dir)
    assert "metrics.jsonl: line 2" in read_summary(run_dir)["error"]


def test_a_rerun_of_a_finished_run_logs_one_final_row(straight: tuple, tmp_path: Path) -> None:
    cfg, expected, steps = straight
    run_dir = tmp_path / "cell"
    run(cfg, run_dir)
    again = run(cfg, run_dir)  # resumes at the last step: nothing to train, evaluated again
    assert_identical(again, expected)
    assert [r["step"] for r in rows(run_dir)] == steps and sum(bool(r.get("final")) for r in rows(run_dir)) == 1


@pytest.mark.parametrize("target, damage", [("validation.tokens.bin", "zero"), ("validation.tokens.bin", "truncate"),
                                            ("train.tokens.bin", "garble"), ("train.offsets.npy", "truncate"),
                                            ("meta.json", "garble"), ("validation.stats.json", "zero"),
                                            ("tokenizer/lmbench_tokenizer.json", "truncate")])
def test_a_damaged_token_cache_is_rebuilt(straight: tuple, tmp_path: Path, target: str, damage: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg, expected, _ = straight
    cfg = {**cfg, "data": {**cfg["data"], "cache_dir": str(tmp_path / "cache")}}
    run(cfg, tmp_path / "first")
    (cache,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    DAMAGE[damage](cache / target)
    capsys.readouterr()
    summary = run(cfg, tmp_path / "second")
    assert "damaged token cache, rebuilding it" in capsys.readouterr().err
    assert_identical(summary, expected)  # not the zeroed validation's loss


def test_unreadable_summary_and_torn_samples_in_a_report(straight: tuple, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _, _ = straight
    cfg = {**cfg, "sample": {"prompts": ["the"], "max_new_tokens": 4}}
    run_dir = tmp_path / "grid" / "cell"
    run(cfg, run_dir)
    with open(run_dir / "samples.jsonl", "a") as f:
        f.write('{"sampler": "gre')
    (run_dir / "summary.json").write_text('{"status": "compl')
    (run_dir / "cell.json").write_text("\0\0\0")
    loaded = load_run(run_dir)
    err = capsys.readouterr().err
    assert "samples.jsonl: line" in err and loaded.status == "failed"
    assert "summary.json is unreadable" in loaded.summary["error"]
    assert len(loaded.samples) == 1  # the good row is kept


def test_a_resumed_session_does_not_lower_the_summary(straight: tuple, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """While a resumed run starts, summary.json still says how far the cell got."""
    cfg, _, _ = straight
    run_dir = tmp_path / "cell"
    interrupted(cfg, run_dir, monkeypatch)
    write_summary(run_dir, {"status": "failed", "cell": "cell", "steps": 4, "tokens": 256, "error": "killed"})
    seen: list[int] = []
    real_run = Trainer.run

    def watching(self: Trainer) -> Any:
        seen.append(json.loads((run_dir / "summary.json").read_text())["steps"])  # the running summary
        return real_run(self)

    monkeypatch.setattr(Trainer, "run", watching)
    run(cfg, run_dir)
    assert seen == [4]
