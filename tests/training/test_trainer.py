"""The training loop through whole runs: budgets, carried state, accumulation, non-finite loss, early stopping,
resume (also after SIGKILL). The results folder the runner writes around it is test_runner.py."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbench.training import checkpoint as ckpt
from lmbench.training.evaluate import EvalResult, Evaluator
from lmbench.training.runner import run_cell
from lmbench.training.trainer import Trainer, TrainModule, total_steps
from lmbench.spec import to_spec

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("run_cell_driver.py")
FAMILY_PARAMS = {
    "transformer": {"num_layers": 1, "num_heads": 2, "d_model": 16, "block_size": 16, "dropout": 0.1},
    "lstm": {"d_embed": 8, "d_hidden": 16, "num_layers": 2, "dropout": 0.1},
}


def corpus(path: Path, num_lines: int = 300) -> Path:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(num_lines)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_cfg(tmp_path: Path, family: str = "transformer", **sections: dict[str, Any]) -> dict[str, Any]:
    text = tmp_path / "corpus.txt"
    if not text.exists():
        corpus(text)
    cfg: dict[str, Any] = {
        "name": "runner-test", "seed": 3,
        "data": {"source": "text", "path": str(text), "unit": "line", "block_size": 16,
                 "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.1, "test_fraction": 0.1},
        "tokenizer": {"kind": "char"},
        "model": {"family": family, "params": dict(FAMILY_PARAMS[family])},
        "train": {"batch_size": 4, "max_steps": 6, "eval_every": 3, "log_every": 2, "lr": 3e-3},
        "eval": {"batch_size": 8},
        "sample": {"prompts": ["the"], "max_new_tokens": 5},
        "tracking": {"backends": ["none"]},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


def run(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    return run_cell(to_spec(cfg), run_dir, cell_name=run_dir.name)


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


FINAL_KEYS = ("val_loss", "val_nll_nats", "test_loss", "steps", "tokens")


# ------------------------------------------------------------------------------------------ pure parts
def test_total_steps_from_budgets(tmp_path: Path) -> None:
    spec = to_spec(tiny_cfg(tmp_path, train={"max_steps": None, "epochs": 1.5, "max_tokens": 10_000}))
    assert total_steps(spec, steps_per_epoch=10, tokens_per_step=64.0) == 15
    spec = to_spec(tiny_cfg(tmp_path, train={"max_steps": None, "epochs": None, "max_tokens": 640}))
    assert total_steps(spec, 10, 64.0) == 10
    spec = to_spec(tiny_cfg(tmp_path, train={"max_steps": None, "max_seconds": 5.0}))
    assert total_steps(spec, 10, 64.0) is None
    spec = to_spec(tiny_cfg(tmp_path, train={"max_steps": None, "epochs": 0.05}))
    assert total_steps(spec, 10, 64.0) == 1  # half an update's worth of an epoch: still one update
    spec = to_spec(tiny_cfg(tmp_path, train={"max_steps": None, "epochs": None, "max_tokens": 1}))
    assert total_steps(spec, 10, 64.0) == 1  # one token: one update
    spec = to_spec(tiny_cfg(tmp_path, train={"max_steps": None, "epochs": None, "max_tokens": 5}))
    assert total_steps(spec, 10, 1.0) == 5  # one target per update
    assert total_steps(spec, 10, 0.0) is None  # no tokens per update known: the token budget gives no count


def test_the_time_budget_is_up_when_the_clock_reaches_it(tmp_path: Path) -> None:
    from lmbench.training.runner import build_trainer

    trainer = build_trainer(to_spec(tiny_cfg(tmp_path, train={"max_seconds": 2.0})), tmp_path / "run", "spec")
    for seconds, up in ((1.999, False), (2.0, True), (2.5, True)):
        trainer.wall_s = lambda seconds=seconds: seconds  # type: ignore[method-assign]
        assert trainer._out_of_time() is up


# ------------------------------------------------------------------------------------------ whole runs
def _state_seen(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each training forward got a carried state."""
    seen: list[bool] = []
    real = TrainModule.forward

    def spy(self: TrainModule, input_ids: Any, labels: Any, attention_mask: Any = None, state: Any = None) -> Any:
        seen.append(state is not None)
        return real(self, input_ids, labels, attention_mask, state)

    monkeypatch.setattr(TrainModule, "forward", spy)
    return seen


def test_recurrent_packed_carries_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _state_seen(monkeypatch)
    run_dir = tmp_path / "lstm"
    summary = run(tiny_cfg(tmp_path, "lstm", train={"max_steps": 4}), run_dir)
    assert summary["status"] == "completed"
    assert seen == [False, True, True, True]  # fresh state at the start of the stream, then carried
    assert (run_dir / "checkpoint" / "carry_0.safetensors").exists()


def test_documents_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    """The step loss is the global batch's summed NLL over its targets: micro-batches with different numbers of
    targets (documents of different lengths) give the same update as one batch."""
    base = {"data": {"batching": "documents", "bucket_by_length": True}, "train": {"max_steps": 3, "eval_every": None},
            "model": {"family": "transformer", "params": {**FAMILY_PARAMS["transformer"], "dropout": 0.0}}}
    one = run(tiny_cfg(tmp_path, **copy.deepcopy(base)), tmp_path / "accum1")
    cfg = tiny_cfg(tmp_path, **copy.deepcopy(base))
    cfg["train"]["grad_accum_steps"] = 2
    two = run(cfg, tmp_path / "accum2")
    assert one["tokens"] == two["tokens"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


def test_budgets_end_training(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, train={"max_steps": None, "max_tokens": 200, "eval_every": None},
                   eval={"splits": ["validation"]}, sample={"samplers": []})
    summary = run(cfg, tmp_path / "tokens")
    assert summary["stop_reason"] == "max_tokens" and summary["steps"] == 4 and summary["tokens"] == 256
    cfg = tiny_cfg(tmp_path, train={"max_steps": 1000, "max_seconds": 0.3, "eval_every": None},
                   eval={"splits": ["validation"]}, sample={"samplers": []})
    summary = run(cfg, tmp_path / "seconds")
    assert summary["stop_reason"] == "max_seconds" and 0 < summary["steps"] < 1000


def test_non_finite_loss_fails_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = TrainModule.forward

    def poisoned(self: TrainModule, *args: Any, **kwargs: Any) -> Any:
        nll, state = real(self, *args, **kwargs)
        calls["n"] += 1
        return (nll * float("nan") if calls["n"] == 3 else nll), state

    monkeypatch.setattr(TrainModule, "forward", poisoned)
    run_dir = tmp_path / "nan"
    summary = run(tiny_cfg(tmp_path, train={"checkpoint_every": 1, "eval_every": None}), run_dir)
    assert summary["status"] == "failed" and summary["failed_step"] == 3
    assert "non-finite loss" in summary["error"] and "step 3" in summary["error"]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == "failed" and "step 3" in on_disk["error"]
    assert ckpt.read_trainer_state(run_dir / "checkpoint")["step"] == 2  # the last good one
    assert "the last good checkpoint (checkpoint/) is kept" in summary["error"]
    calls["n"] = 0
    early = run(tiny_cfg(tmp_path, train={"checkpoint_every": 5, "eval_every": None}), tmp_path / "early")
    assert early["failed_step"] == 3 and "no checkpoint was written" in early["error"]  # none to keep yet


def test_huge_learning_rate_fails_cleanly(tmp_path: Path) -> None:
    summary = run(tiny_cfg(tmp_path, train={"lr": 1e30, "max_steps": 20, "eval_every": None, "grad_clip": None,
                                            "checkpoint_every": 1}), tmp_path / "lr")
    assert summary["status"] == "failed" and f"at step {summary['failed_step']}" in summary["error"]
    assert ckpt.read_trainer_state(tmp_path / "lr" / "checkpoint")["step"] == summary["failed_step"] - 1


def test_early_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])

    def fake_evaluate(self: Evaluator, model: Any, names: list[str]) -> dict[str, EvalResult]:
        if names == ["validation"]:
            return {"validation": EvalResult(next(losses) * 100, 100, 100, 100, 10)}
        return {}

    monkeypatch.setattr(Evaluator, "evaluate", fake_evaluate)
    cfg = tiny_cfg(tmp_path, train={"max_steps": 100, "eval_every": 1, "early_stopping_patience": 2})
    summary = run(cfg, tmp_path / "early")
    assert summary["steps"] == 4 and summary["stop_reason"] == "early_stopping"
    assert summary["best_step"] == 2 and summary["best_val_loss"] == pytest.approx(2.0)
    assert json.loads((tmp_path / "early" / "checkpoint" / "best" / "best.json").read_text())["step"] == 2


@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_resume_after_interruption_gives_the_same_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          family: str) -> None:
    cfg = tiny_cfg(tmp_path, family, train={"max_steps": 7, "checkpoint_every": 2, "eval_every": 3},
                   sample={"samplers": []})
    straight = run(cfg, tmp_path / "straight")
    real = Trainer.train_step

    def interrupted(self: Trainer, step: int) -> Any:
        if step == 5:
            raise KeyboardInterrupt  # dies mid-run after the checkpoint of step 4
        return real(self, step)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed")
    assert ckpt.read_trainer_state(tmp_path / "resumed" / "checkpoint")["step"] == 4
    monkeypatch.setattr(Trainer, "train_step", real)
    resumed = run(cfg, tmp_path / "resumed")
    assert resumed["resumed_from"] == [4]
    for key in FINAL_KEYS:
        assert resumed[key] == straight[key], key
    assert [r["step"] for r in rows(tmp_path / "resumed")] == [r["step"] for r in rows(tmp_path / "straight")]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_resume_after_sigkill_subprocess(tmp_path: Path, family: str) -> None:
    """Kill -9 a training process mid-run; the same command finishes with the uninterrupted run's metrics."""
    cfg = tiny_cfg(tmp_path, family, train={"max_steps": 30, "checkpoint_every": 3, "eval_every": 10},
                   sample={"samplers": []})
    spec_json = tmp_path / "spec.json"
    spec_json.write_text(json.dumps(cfg))
    straight = run(cfg, tmp_path / "straight")
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, str(DRIVER), str(spec_json), str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([*cmd, "--step-sleep", "0.15"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state_file = run_dir / "checkpoint" / ckpt.TRAINER_STATE
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["step"] >= 9:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.read_trainer_state(ckpt.checkpoint_dir(run_dir))["step"]
    assert 9 <= killed_at < 30
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["resumed_from"] == [killed_at]
    for key in FINAL_KEYS:
        assert resumed[key] == straight[key], key


@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_batches_prefetched_during_the_previous_update_train_the_same(tmp_path: Path, family: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the next update's batches are made while the current one runs (Trainer._prefetch): forced on CPU,
    every logged number is the same as batches made on demand (carried LSTM state and accumulation included)."""
    from lmbench.training.trainer import Trainer

    cfg = tiny_cfg(tmp_path, family, train={"grad_accum_steps": 2, "log_every": 1})
    base = run(cfg, tmp_path / "on-demand")
    made = []

    def prefetch(self: Trainer, step: int) -> None:
        made.append(step)
        self._ready = (step, *self._batches(step))

    monkeypatch.setattr(Trainer, "_prefetch", prefetch)
    again = run(cfg, tmp_path / "prefetched")
    assert made, "prefetch never ran"
    strip = ("wall_s", "tokens_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows(tmp_path / "prefetched")] == \
        [{k: v for k, v in r.items() if k not in strip} for r in rows(tmp_path / "on-demand")]
    assert again["val_loss"] == base["val_loss"]


# ------------------------------------------------------------------ specifications of one update (pinned by hand)

def _spy_optimizer_steps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    """Record, at every AdamW.step, the learning rate it applies and the total gradient norm it sees."""
    seen: list[dict[str, float]] = []
    real = torch.optim.AdamW.step

    def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        grads = [p.grad.detach().double().norm() for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append({"lr": self.param_groups[0]["lr"], "grad_norm": float(torch.stack(grads).norm())})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen


def test_applied_learning_rate_follows_the_schedule_from_the_first_update(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy_optimizer_steps(monkeypatch)
    cfg = tiny_cfg(tmp_path, train={"lr": 1e-2, "schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1,
                                    "max_steps": 6, "eval_every": None, "log_every": 1})
    run(cfg, tmp_path / "run")
    # warm-up (step + 1) / 2, then 1e-3 + 9e-3 * (1 + cos(pi * (step - 2) / 4)) / 2, computed by hand
    expected = [5e-3, 1e-2, 1e-2, 0.0086819805, 0.0055, 0.0023180195]
    assert [s["lr"] for s in seen] == pytest.approx(expected, rel=1e-7)
    logged = [r["lr"] for r in rows(tmp_path / "run") if "train_loss" in r]
    assert logged == pytest.approx(expected, rel=1e-7)  # the log names the rate each update used


def test_gradient_clipping_happens_before_the_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy_optimizer_steps(monkeypatch)
    cfg = tiny_cfg(tmp_path, train={"grad_clip": 1e-3, "max_steps": 3, "eval_every": None, "log_every": 1})
    run(cfg, tmp_path / "run")
    assert len(seen) == 3 and all(s["grad_norm"] <= 1e-3 * (1 + 1e-4) for s in seen)
    logged = [r["grad_norm"] for r in rows(tmp_path / "run") if "grad_norm" in r]
    assert len(logged) == 3 and all(g > 1e-2 for g in logged)  # the logged norm is the one before clipping


def test_train_loss_is_the_mean_over_target_tokens_not_sequences(tmp_path: Path) -> None:
    """Documents of different lengths, padded: the step's loss is (sum of token NLL) / (number of targets)."""
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, data={"batching": "documents", "block_size": 96},
                   train={"grad_accum_steps": 2, "max_steps": 1, "eval_every": None})
    cfg["model"]["params"].update(dropout=0.0, block_size=96)
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    batch = trainer.global_batch(0)
    model = trainer.acc.unwrap_model(trainer.module).model
    with torch.no_grad():
        logits = model(batch["input_ids"], batch.get("attention_mask")).double()
    labels = batch["labels"]
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                              reduction="sum")
    targets = int((labels != -100).sum())
    lengths = (labels != -100).sum(1)
    assert len(set(lengths.tolist())) > 1  # really documents of different lengths
    loss, num_targets, _ = trainer.train_step(0)
    assert num_targets == targets
    assert loss == pytest.approx(float(total) / targets, rel=1e-5)


def test_progress_bar_total_follows_the_budget_that_binds() -> None:
    from lmbench.training.trainer import expected_total_steps

    assert expected_total_steps(0, 2000, 40.0, 0.0) == 2000  # nothing measured yet
    assert expected_total_steps(10, 2000, 40.0, 4.0) == 100  # 0.4 s/step: 36 s left = 90 more steps
    assert expected_total_steps(10, 50, 40.0, 4.0) == 50  # the step budget ends first
    assert expected_total_steps(10, None, 40.0, 4.0) == 100  # only a time budget
    assert expected_total_steps(10, 2000, None, 4.0) == 2000  # no time budget
    assert expected_total_steps(10, 2000, 40.0, 41.0) == 10  # past the time: ends now
    assert expected_total_steps(1, 2000, 40.0, 0.5) == 80  # from the first step on: 0.5 s/step, 79 more
    assert expected_total_steps(0, 2000, 40.0, 3.0) == 2000  # time passed but no step done: no rate yet
    assert expected_total_steps(5, 2000, 40.0, 0.0) == 2000  # no time measured: no rate yet


def test_prompt_tokens_are_not_targets_in_counts_or_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prompt_story data: each story is trained on "{prompt}<sep>{story}", and only story tokens + EOS are targets.
    The token count, the max_tokens budget and the schedule's length all count those targets, computed here from
    the cache's lengths by hand (a prompt of P tokens + <sep> masks the first P + 1 labels)."""
    from lmbench.data.cache import prepare_data
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, data={"batching": "documents", "block_size": 64},
                   train={"max_steps": None, "max_tokens": 400, "eval_every": None, "log_every": 1,
                          "schedule": "cosine"})
    lines = [ln for ln in (tmp_path / "corpus.txt").read_text().splitlines() if ln.strip()]
    (tmp_path / "stories.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "prompts.txt").write_text("\n".join(f"write about {ln.split()[-1]}" for ln in lines) + "\n")
    cfg["data"].update(source="prompt_story", path=str(tmp_path / "stories.txt"),
                       prompt_path=str(tmp_path / "prompts.txt"))
    cfg["data"].pop("unit")
    cfg["tokenizer"] = {"kind": "char", "params": {"specials": ["<sep>"]}}
    cfg["model"]["params"].update(block_size=64)
    spec = to_spec(cfg)
    split = prepare_data(spec, progress=False).splits["train"]
    inputs = (split.doc_lengths() + 1).clip(max=64)  # BOS + prompt + <sep> + story (+ EOS), cut at the block
    targets = inputs - split.prompt_lens  # the first prompt_len labels are the prompt and <sep>
    assert (split.prompt_lens >= 13).all()  # "write about x" + <sep>: more than a third of each row is prompt
    trainer = build_trainer(spec, tmp_path / "run", "spec")
    assert trainer.tokens_per_step == pytest.approx(4 * targets.mean())
    assert trainer.total_steps == math.ceil(400 / (4 * targets.mean()))
    counted = []
    real = trainer.train_step

    def step(i: int) -> Any:
        out = real(i)
        counted.append(out[1])
        return out

    monkeypatch.setattr(trainer, "train_step", step)
    outcome = trainer.run()
    order = [trainer.global_indices(i) for i in range(len(counted))]
    assert counted == [int(targets[idx].sum()) for idx in order]
    assert outcome.stop_reason == "max_tokens" and outcome.progress.tokens == sum(counted)
    assert sum(counted[:-1]) < 400 <= sum(counted)


def test_a_wall_time_budget_counts_the_time_before_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_seconds is a budget for the whole run: a run interrupted after 3 steps and resumed trains only what is
    left. Each update takes 10 s on a fake clock (real time adds well under a second), max_seconds = 55: the
    budget is seen spent after update 6, uninterrupted or interrupted at step 3 and resumed."""
    from lmbench.training import trainer as trainer_module

    offset = [0.0]

    class Clock:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def perf_counter() -> float:
            return time.perf_counter() + offset[0]

    monkeypatch.setattr(trainer_module, "time", Clock())
    real = Trainer.train_step
    interrupt_at: list[int] = []

    def slow(self: Trainer, step: int) -> Any:
        if step in interrupt_at:
            raise KeyboardInterrupt
        offset[0] += 10.0
        return real(self, step)

    monkeypatch.setattr(Trainer, "train_step", slow)
    cfg = tiny_cfg(tmp_path, train={"max_steps": 100, "max_seconds": 55, "checkpoint_every": 1, "eval_every": None},
                   sample={"samplers": []})
    straight = run(cfg, tmp_path / "straight")
    assert straight["stop_reason"] == "max_seconds" and straight["steps"] == 6
    interrupt_at.append(3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed")
    assert ckpt.read_trainer_state(tmp_path / "resumed" / "checkpoint")["wall_s"] >= 30
    interrupt_at.clear()
    resumed = run(cfg, tmp_path / "resumed")
    assert resumed["resumed_from"] == [3]
    assert resumed["stop_reason"] == "max_seconds" and resumed["steps"] == 6


def test_logged_train_loss_pools_the_window_by_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """log_every = 3 over documents of different lengths: each logged train_loss is sum(loss x targets) /
    sum(targets) over the 3 updates since the last row; epoch is step / steps_per_epoch; evaluations reuse."""
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, data={"batching": "documents", "block_size": 64},
                   train={"max_steps": 7, "log_every": 3, "eval_every": 7, "checkpoint_every": None})
    cfg["model"]["params"].update(block_size=64)
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    seen: list[tuple[float, int]] = []
    real = trainer.train_step
    evaluations: list[list[str]] = []
    real_eval = trainer.evaluator.evaluate

    def step(i: int) -> Any:
        out = real(i)
        seen.append((out[0], out[1]))
        return out

    def evaluate(model: Any, names: list[str]) -> Any:
        evaluations.append(list(names))
        return real_eval(model, names)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer.evaluator, "evaluate", evaluate)
    outcome = trainer.run()
    logged = [r for r in rows(tmp_path / "run") if "train_loss" in r]
    assert [r["step"] for r in logged] == [3, 6]
    for row, window in zip(logged, (seen[0:3], seen[3:6])):
        expected = sum(loss * n for loss, n in window) / sum(n for _, n in window)
        assert row["train_loss"] == pytest.approx(expected, rel=1e-6)
        assert row["epoch"] == pytest.approx(row["step"] / trainer.steps_per_epoch, rel=1e-12)
        assert row["tokens"] == sum(n for _, n in seen[: row["step"]])
    assert len({n for _, n in seen}) > 1  # the windows really mix different target counts
    assert outcome.progress.step == 7 and evaluations == [["validation"]]  # the final validation reused step 7's


def test_checkpoints_follow_evaluations_by_default_and_epochs_end_training(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoint_every unset: a checkpoint after every evaluation, none inside the loop at the last step (the
    final one is written once, after the final validation); epochs = 0.5 stops after half an epoch, rounded up."""
    saved: list[int] = []
    real_save = Trainer._save

    def spy(self: Trainer) -> None:
        saved.append(self.progress.step)
        real_save(self)

    monkeypatch.setattr(Trainer, "_save", spy)
    run(tiny_cfg(tmp_path, train={"max_steps": 6, "eval_every": 2, "checkpoint_every": None}), tmp_path / "a")
    assert saved == [2, 4, 6]
    saved.clear()
    run(tiny_cfg(tmp_path, train={"max_steps": 6, "eval_every": 4, "checkpoint_every": 3}), tmp_path / "b")
    assert saved == [3, 6]
    from lmbench.training.runner import build_trainer

    spe = build_trainer(to_spec(tiny_cfg(tmp_path)), tmp_path / "probe", "probe").steps_per_epoch
    summary = run(tiny_cfg(tmp_path, train={"max_steps": None, "epochs": 0.5, "eval_every": None}), tmp_path / "c")
    assert summary["stop_reason"] == "epochs" and summary["steps"] == math.ceil(spe / 2)


# ------------------------------------------------------------------------------------------ the record it keeps
def test_the_untrained_evaluation_opens_the_log_once_even_across_a_resume(tmp_path: Path) -> None:
    """eval.untrained: the freshly initialised model is scored before the first step (row step 0, tokens 0) with
    the numbers a direct evaluation of that model gives; a resumed run does not score it again."""
    from lmbench.training.evaluate import flatten_results
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, eval={"untrained": True, "splits": ["validation", "test"]},
                   train={"max_steps": 2, "eval_every": None, "checkpoint_every": 2}, sample={"samplers": []})
    probe = build_trainer(to_spec(cfg), tmp_path / "probe", "probe")
    fresh = flatten_results(probe.evaluator.evaluate(probe.acc.unwrap_model(probe.module).model,
                                                     ["validation", "test"]), "untrained_")
    first = run(cfg, tmp_path / "run")
    assert first["untrained_val_loss"] == pytest.approx(fresh["untrained_val_loss"], rel=1e-6)
    assert first["untrained_test_tokens"] == fresh["untrained_test_tokens"]
    opening = rows(tmp_path / "run")[0]
    assert (opening["step"], opening["tokens"]) == (0, 0) and opening["wall_s"] >= 0
    assert opening["untrained_val_loss"] == first["untrained_val_loss"]
    resumed = run({**cfg, "train": {**cfg["train"], "max_steps": 4}}, tmp_path / "run")
    assert resumed["resumed_from"] == [2] and resumed["steps"] == 4
    assert [r["step"] for r in rows(tmp_path / "run") if any(k.startswith("untrained_") for k in r)] == [0]
    assert resumed["untrained_val_loss"] == first["untrained_val_loss"]  # kept in the checkpoint's record


def scaled_losses(monkeypatch: pytest.MonkeyPatch, losses: list[float]) -> None:
    """Make step k's training loss exactly losses[k - 1] (nats per target): the summed NLL is targets * loss."""
    values = iter(losses)

    def forward(self: TrainModule, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: Any = None,
                state: Any = None) -> tuple[torch.Tensor, Any]:
        logits = self.model(input_ids, attention_mask)
        zero = logits.float().sum() * 0.0  # keeps the graph (gradients of zero)
        return zero + float((labels != -100).sum()) * next(values), state

    monkeypatch.setattr(TrainModule, "forward", forward)


def test_stop_on_divergence_stops_when_a_logged_loss_passes_the_limit(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Limit 1.5 x the lowest logged loss: 2.0, 1.0, then 1.5 (equal to the limit: goes on) and 1.75 (over:
    stops at step 4, stop_reason "diverged", no checkpoint of the diverged weights)."""
    scaled_losses(monkeypatch, [2.0, 1.0, 1.5, 1.75, 1.0, 1.0])
    cfg = tiny_cfg(tmp_path, train={"max_steps": 6, "log_every": 1, "eval_every": None, "checkpoint_every": 3,
                                    "stop_on_divergence": 1.5}, sample={"samplers": []})
    summary = run(cfg, tmp_path / "run")
    assert summary["stop_reason"] == "diverged" and summary["steps"] == 4
    assert (summary["first_train_loss"], summary["min_train_loss"], summary["last_train_loss"]) == (2.0, 1.0, 1.75)
    assert [r["train_loss"] for r in rows(tmp_path / "run") if "train_loss" in r] == [2.0, 1.0, 1.5, 1.75]
    assert ckpt.read_trainer_state(tmp_path / "run" / "checkpoint")["step"] == 3  # the last good weights
    warned = [r.getMessage() for r in caplog.records if r.name == "lmbench.training.trainer"]
    assert warned == ["run: training loss 1.75 at step 4 is over 1.5 x its lowest (1): stopping "
                      "(train.stop_on_divergence); the last checkpoint keeps the weights from before"]


def test_the_checkpoint_records_progress_and_the_data_position(tmp_path: Path) -> None:
    """trainer_state.json: the step, tokens, epoch (steps / steps per epoch), world size, data position
    (epoch, step within it) and cell name; the run stops for max_steps."""
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"max_steps": 5, "eval_every": None, "checkpoint_every": 5},
                   sample={"samplers": []})
    steps_per_epoch = build_trainer(to_spec(cfg), tmp_path / "probe", "probe").steps_per_epoch
    summary = run(cfg, tmp_path / "run")
    state = ckpt.read_trainer_state(tmp_path / "run" / "checkpoint")
    assert summary["stop_reason"] == "max_steps" and 5 < steps_per_epoch
    assert (state["step"], state["tokens"], state["world_size"], state["cell"]) == (5, 5 * 4 * 16, 1, "run")
    assert state["epoch"] == pytest.approx(5 / steps_per_epoch)
    assert state["data_position"] == [0, 5]


def test_epochs_end_at_the_last_step_of_the_epoch(tmp_path: Path) -> None:
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"max_steps": None, "epochs": 1.0, "eval_every": None}, sample={"samplers": []})
    steps_per_epoch = build_trainer(to_spec(cfg), tmp_path / "probe", "probe").steps_per_epoch
    summary = run(cfg, tmp_path / "run")
    assert (summary["steps"], summary["stop_reason"], summary["epochs"]) == (steps_per_epoch, "epochs", 1.0)


def test_a_tie_with_the_best_validation_loss_keeps_the_earlier_best(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation losses 3.0, 2.0, 2.0, 2.5: the best is step 2's (a tie does not replace it); best.json
    records its step, tokens, loss and bits per byte."""
    losses = iter([3.0, 2.0, 2.0, 2.5])

    def fake_evaluate(self: Evaluator, model: Any, names: list[str]) -> dict[str, EvalResult]:
        if names == ["validation"]:
            return {"validation": EvalResult(next(losses) * 100, 100, 200, 100, 10)}
        return {}

    monkeypatch.setattr(Evaluator, "evaluate", fake_evaluate)
    summary = run(tiny_cfg(tmp_path, train={"max_steps": 4, "eval_every": 1}, sample={"samplers": []}),
                  tmp_path / "run")
    assert (summary["best_step"], summary["best_val_loss"]) == (2, 2.0)
    best = json.loads((tmp_path / "run" / "checkpoint" / "best" / "best.json").read_text())
    assert best == {"step": 2, "tokens": 2 * 4 * 16, "val_loss": 2.0, "val_bpb": 200 / (200 * math.log(2))}
    evals = [r for r in rows(tmp_path / "run") if "val_loss" in r and not r.get("final")]
    assert [(r["step"], r["tokens"], r["val_loss"]) for r in evals] == [(s, s * 64, v) for s, v in
                                                                       zip((1, 2, 3, 4), (3.0, 2.0, 2.0, 2.5))]


def test_without_validation_in_eval_splits_there_is_no_final_validation(tmp_path: Path) -> None:
    summary = run(tiny_cfg(tmp_path, eval={"splits": ["test"]}, train={"max_steps": 2, "eval_every": None},
                           sample={"samplers": []}), tmp_path / "run")
    assert "val_loss" not in summary and summary["test_loss"] > 0 and summary["best_val_loss"] is None


def test_detach_state_cuts_every_tensor_of_a_structure_from_the_graph() -> None:
    from lmbench.training.trainer import detach_state

    x = torch.ones(2, requires_grad=True)
    pair = (x * 2, [x * 3])
    cut = detach_state(pair)
    assert isinstance(cut, tuple) and isinstance(cut[1], list)
    assert not cut[0].requires_grad and not cut[1][0].requires_grad
    assert cut[0].tolist() == [2.0, 2.0] and cut[1][0].tolist() == [3.0, 3.0] and detach_state(None) is None


def test_a_non_finite_loss_before_any_checkpoint_says_none_was_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    scaled_losses(monkeypatch, [float("nan")])
    summary = run(tiny_cfg(tmp_path, train={"eval_every": None}, sample={"samplers": []}), tmp_path / "run")
    assert summary["status"] == "failed" and summary["failed_step"] == 1
    assert "non-finite loss (nan) at step 1; stopped, no checkpoint was written" in summary["error"]


def test_the_train_module_loads_strictly_and_saves_the_bare_models_keys() -> None:
    model = torch.nn.Linear(2, 2)
    module = TrainModule.__new__(TrainModule)
    torch.nn.Module.__init__(module)
    module.model, module.recurrent = model, False
    assert sorted(module.state_dict()) == ["bias", "weight"]
    assert sorted(module.state_dict(prefix="module.")) == ["module.bias", "module.weight"]  # as DDP asks for it
    assert module.state_dict(keep_vars=True)["weight"] is model.weight
    with pytest.raises(RuntimeError, match="Unexpected key"):
        module.load_state_dict({**model.state_dict(), "extra": torch.zeros(1)})
    new = {"weight": torch.full((2, 2), 7.0), "bias": torch.zeros(2)}
    module.load_state_dict(new, assign=True)
    assert model.weight.data_ptr() == new["weight"].data_ptr()  # assign=True reaches the model: no copy


def test_the_final_validation_reuses_an_evaluation_at_the_last_step(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations at steps 2 and 4 of 4: the final results take step 4's validation, so the end of the run only
    scores the test split."""
    calls: list[list[str]] = []
    real = Evaluator.evaluate

    def spy(self: Evaluator, model: Any, names: list[str]) -> dict[str, EvalResult]:
        calls.append(list(names))
        return real(self, model, names)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    summary = run(tiny_cfg(tmp_path, train={"max_steps": 4, "eval_every": 2}, sample={"samplers": []}),
                  tmp_path / "run")
    assert calls == [["validation"], ["validation"], ["test"]]
    assert summary["val_loss"] == [r for r in rows(tmp_path / "run") if r.get("step") == 4 and "val_loss" in r][0][
        "val_loss"]


def test_the_train_module_scores_the_labels_from_the_given_state() -> None:
    """TrainModule.forward of a recurrent model: the summed NLL of the labels (-100 ignored) from the state it is
    given, as a direct forward_with_state computes it; a different state gives a different loss."""
    from lmbench.models.recurrent import Config, LSTMLM

    torch.manual_seed(0)
    model = LSTMLM(Config(d_embed=6, d_hidden=8, num_layers=1), vocab_size=9, pad_id=0)
    module = TrainModule(model)
    ids = torch.tensor([[3, 4, 5, 6], [6, 5, 4, 3]])
    labels = torch.tensor([[4, 5, 6, -100], [5, 4, 3, 7]])
    state = model.init_state(2, torch.device("cpu"))
    state.h.fill_(0.7)
    with torch.no_grad():
        nll, _ = module(ids, labels, None, state)
        logits, _ = model.forward_with_state(ids, state)
        from_zero, _ = module(ids, labels, None, None)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), labels.flatten(), reduction="sum")
    assert float(nll) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(from_zero) - float(nll)) > 1e-3


def test_logged_throughput_is_the_windows_targets_over_its_training_seconds(tmp_path: Path) -> None:
    """Each train row's tokens_per_s is its window's targets (2 steps x 64) over the window's training seconds,
    and those seconds add up to the summary's train_s, which is less than the wall time."""
    summary = run(tiny_cfg(tmp_path, train={"max_steps": 6, "log_every": 2, "eval_every": None},
                           sample={"samplers": []}), tmp_path / "run")
    logged = [r for r in rows(tmp_path / "run") if "train_loss" in r]
    assert [r["tokens"] for r in logged] == [128, 256, 384]
    seconds = sum(128 / r["tokens_per_s"] for r in logged)
    assert seconds == pytest.approx(summary["train_s"], rel=1e-6)
    assert 0 < summary["train_s"] < summary["wall_s"]
    assert summary["train_tokens_per_s"] == pytest.approx(384 / summary["train_s"])


def test_a_token_budget_ends_on_the_step_that_reaches_it(tmp_path: Path) -> None:
    summary = run(tiny_cfg(tmp_path, train={"max_steps": None, "max_tokens": 3 * 64, "eval_every": None},
                           sample={"samplers": []}), tmp_path / "run")
    assert (summary["steps"], summary["tokens"], summary["stop_reason"]) == (3, 192, "max_tokens")


def test_the_last_steps_are_saved_and_a_saved_last_step_is_not_saved_again(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    saves: list[int] = []
    real = ckpt.save_checkpoint

    def spy(acc: Any, run_dir: Path, state: dict, carry: Any) -> Any:
        saves.append(state["step"])
        return real(acc, run_dir, state, carry)

    monkeypatch.setattr(ckpt, "save_checkpoint", spy)
    run(tiny_cfg(tmp_path, train={"max_steps": 5, "checkpoint_every": 2, "eval_every": None},
                 sample={"samplers": []}), tmp_path / "five")
    assert saves == [2, 4, 5] and ckpt.read_trainer_state(tmp_path / "five" / "checkpoint")["step"] == 5
    saves.clear()
    run(tiny_cfg(tmp_path, train={"max_steps": 4, "checkpoint_every": 2, "eval_every": None},
                 sample={"samplers": []}), tmp_path / "four")
    assert saves == [2, 4]  # the loop leaves the last step to the final save
    saves.clear()
    run(tiny_cfg(tmp_path, train={"max_steps": 4, "checkpoint_every": 2, "eval_every": None},
                 sample={"samplers": []}), tmp_path / "four")  # killed after its final save: resumed at the end
    assert saves == []  # the checkpoint already holds these weights and this record


def test_a_one_step_run_still_ends_with_a_validation(tmp_path: Path) -> None:
    summary = run(tiny_cfg(tmp_path, train={"max_steps": 1, "eval_every": None}, sample={"samplers": []}),
                  tmp_path / "run")
    assert summary["val_loss"] > 0 and summary["best_step"] == 1


def test_the_optimizer_gets_the_specs_settings(tmp_path: Path) -> None:
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"lr": 2e-3, "weight_decay": 0.05, "betas": [0.8, 0.9]})
    groups = build_trainer(to_spec(cfg), tmp_path / "run", "probe").optimizer.param_groups
    assert {g["weight_decay"] for g in groups} == {0.05, 0.0}  # decayed matrices, undecayed norms and biases
    assert {tuple(g["betas"]) for g in groups} == {(0.8, 0.9)}


def test_steps_after_the_last_checkpoint_are_saved_even_without_a_new_best(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7])

    def fake_evaluate(self: Evaluator, model: Any, names: list[str]) -> dict[str, EvalResult]:
        if names == ["validation"]:
            return {"validation": EvalResult(next(losses) * 100, 100, 100, 100, 10)}
        return {}

    monkeypatch.setattr(Evaluator, "evaluate", fake_evaluate)
    summary = run(tiny_cfg(tmp_path, train={"max_steps": 5, "checkpoint_every": 2, "eval_every": 1},
                           sample={"samplers": []}), tmp_path / "run")
    assert summary["best_step"] == 2
    assert ckpt.read_trainer_state(tmp_path / "run" / "checkpoint")["step"] == 5


def test_a_logging_window_of_one_target_logs_that_targets_loss(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's loss is its summed NLL over its target count, also when that count is 1."""
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"max_steps": 2, "log_every": 1, "eval_every": None, "checkpoint_every": None},
                   sample={"samplers": []})
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    monkeypatch.setattr(trainer, "train_step", lambda step: (2.5, 1, None))
    trainer.run()
    logged = [r for r in rows(tmp_path / "run") if "train_loss" in r]
    assert [(r["step"], r["tokens"], r["train_loss"]) for r in logged] == [(1, 1, 2.5), (2, 2, 2.5)]


def _grads_at_first_update(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's gradients as the optimizer's first step sees them."""
    grads: dict[str, torch.Tensor] = {}
    real = torch.optim.AdamW.step

    def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        if not grads:
            grads.update({n: p.grad.detach().double().clone() for n, p in model.named_parameters()})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return grads


def _reference_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    """Plain autograd on a copy: (summed NLL of the batch's targets, gradient of the mean NLL per target)."""
    twin = copy.deepcopy(model).double()
    logits = twin(batch["input_ids"], batch.get("attention_mask"))
    labels = batch["labels"]
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                              reduction="sum")
    (total / int((labels != -100).sum())).backward()
    return float(total.detach()), {n: p.grad for n, p in twin.named_parameters()}


def test_an_update_follows_the_gradient_of_the_mean_nll_per_target(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents of different lengths in 2 accumulated micro-batches, no clipping: the gradient the optimizer
    applies is that of (summed NLL / targets) over the whole global batch, computed here by plain autograd; the
    logged loss is the exact float64 sum of the micro-batches' NLLs over the targets, summed over processes."""
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, data={"batching": "documents", "block_size": 96},
                   train={"grad_accum_steps": 2, "max_steps": 1, "eval_every": None, "grad_clip": None})
    cfg["model"]["params"].update(dropout=0.0, block_size=96)
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    model = trainer.acc.unwrap_model(trainer.module).model
    _, expected = _reference_grads(model, trainer.global_batch(0))
    grads = _grads_at_first_update(monkeypatch, model)
    micro_nll: list[float] = []
    real_forward = TrainModule.forward

    def forward(self: TrainModule, *args: Any) -> Any:
        nll, state = real_forward(self, *args)
        micro_nll.append(float(nll.detach()))
        return nll, state

    reductions: list[Any] = []
    real_reduce = trainer.acc.reduce

    def reduce(tensor: torch.Tensor, reduction: str = "mean", **kwargs: Any) -> Any:
        reductions.append(reduction)
        return real_reduce(tensor, reduction=reduction, **kwargs)

    monkeypatch.setattr(TrainModule, "forward", forward)
    monkeypatch.setattr(trainer.acc, "reduce", reduce)
    loss, targets, grad_norm = trainer.train_step(0)
    assert grad_norm is None and len(micro_nll) == 2 and reductions == ["sum"]
    assert loss == (micro_nll[0] + micro_nll[1]) / targets  # exact: accumulated in float64
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_a_global_batch_of_one_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packed windows of one position, one per update: the loss is that target's NLL and the gradient its own."""
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, data={"block_size": 1}, train={"batch_size": 1, "max_steps": 1, "eval_every": None,
                                                            "grad_clip": None})
    cfg["model"]["params"].update(dropout=0.0)
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    model = trainer.acc.unwrap_model(trainer.module).model
    nll, expected = _reference_grads(model, trainer.global_batch(0))
    grads = _grads_at_first_update(monkeypatch, model)
    loss, targets, _ = trainer.train_step(0)
    assert targets == 1 and loss == pytest.approx(nll, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_a_non_finite_gradient_norm_ends_the_run_at_that_update(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"checkpoint_every": 1, "eval_every": None, "grad_clip": 1.0},
                   sample={"samplers": []})
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    real_clip, calls = trainer._clip, []

    def clip() -> torch.Tensor:
        calls.append(1)
        norm = real_clip()
        return torch.full_like(norm, math.inf) if len(calls) == 3 else norm

    monkeypatch.setattr(trainer, "_clip", clip)
    outcome = trainer.run()
    assert (outcome.stop_reason, outcome.validation, outcome.progress.step) == (None, {}, 2)
    assert outcome.error is not None and outcome.error.step == 3
    assert str(outcome.error).startswith("non-finite gradient norm (inf) at step 3; stopped, the last good "
                                         "checkpoint (checkpoint/) is kept")
    assert ckpt.read_trainer_state(tmp_path / "run" / "checkpoint")["step"] == 2


def test_the_carried_state_starts_fresh_at_every_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.training.runner import build_trainer

    corpus(tmp_path / "corpus.txt", num_lines=40)
    cfg = tiny_cfg(tmp_path, "lstm", train={"max_steps": None, "epochs": 3, "eval_every": None,
                                            "grad_accum_steps": 2}, sample={"samplers": []})
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    spe = trainer.steps_per_epoch
    assert spe >= 2
    seen = _state_seen(monkeypatch)
    trainer.run()
    fresh = [i for i, carried in enumerate(seen) if not carried]
    assert fresh == [m for step in (0, spe, 2 * spe) for m in (2 * step, 2 * step + 1)]  # both slots, each epoch


def test_a_checkpoint_from_another_number_of_processes_resumes_with_a_fresh_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The carried rows belong to the processes that saved them: with another world size they are dropped."""
    cfg = tiny_cfg(tmp_path, "lstm", train={"max_steps": 4, "checkpoint_every": 2, "eval_every": None},
                   sample={"samplers": []})
    run(copy.deepcopy(cfg), tmp_path / "same")
    cfg["train"]["max_steps"] = 2
    run(copy.deepcopy(cfg), tmp_path / "other")
    real = ckpt.load_checkpoint

    def saved_by_two(acc: Any, directory: Path) -> Any:
        state, carry = real(acc, directory)
        assert carry  # the carried state was saved
        return {**state, "world_size": 2}, carry

    cfg["train"]["max_steps"] = 4
    seen = _state_seen(monkeypatch)
    monkeypatch.setattr(ckpt, "load_checkpoint", saved_by_two)
    run(copy.deepcopy(cfg), tmp_path / "other")
    assert seen[0] is False and seen[1:] == [True]  # step 3 starts fresh, step 4 carries step 3's state


def test_each_process_builds_its_own_slots_of_the_global_batch(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Global batch of 8 rows, 2 processes x 2 accumulated micro-batches of 2: process 1 gets slots 1 and 3."""
    from accelerate import Accelerator

    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"batch_size": 8, "grad_accum_steps": 2})
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "spec")
    indices = trainer.global_indices(0)
    rows_of = trainer.global_batch(0)["input_ids"]
    trainer.world, trainer.micro = 2, 2
    monkeypatch.setattr(Accelerator, "process_index", property(lambda self: 1))
    got = [b["input_ids"] for b in trainer.micro_batches(indices)]
    assert len(got) == 2
    torch.testing.assert_close(got[0], rows_of[2:4])
    torch.testing.assert_close(got[1], rows_of[6:8])


def test_a_damaged_checkpoint_resumes_from_the_previous_one_and_only_damaged_ones_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lmbench.results import DamagedFile
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, train={"max_steps": 4, "checkpoint_every": 2, "eval_every": None},
                   sample={"samplers": []})
    run_dir = tmp_path / "run"
    build_trainer(to_spec(cfg), run_dir, "spec").run()
    weights = run_dir / "checkpoint" / "model.safetensors"
    weights.write_bytes(bytes(weights.stat().st_size))  # zeroed: the step-4 checkpoint is damaged
    cfg["train"]["max_steps"] = 5
    outcome = build_trainer(to_spec(cfg), run_dir, "spec").run()
    assert outcome.progress.resumed_from == [2] and outcome.progress.step == 5  # from checkpoint.prev (step 2)
    for name in ("checkpoint", "checkpoint.prev"):
        path = run_dir / name / "model.safetensors"
        path.write_bytes(bytes(path.stat().st_size))
    with pytest.raises(DamagedFile) as info:
        build_trainer(to_spec(cfg), run_dir, "spec").run()
    message = str(info.value)
    assert message.startswith(f"no usable checkpoint in {run_dir}: ") and message.count("model.safetensors") == 2
    assert message.endswith(f"(delete {run_dir / 'checkpoint'}* to start this cell over)")
