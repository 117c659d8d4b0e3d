"""Tracking: W&B offline runs under the results folder (read back from the .wandb file), env.json, no secrets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .. import wandb_records as wandb_offline
from lmbench.training import tracking
from lmbench.spec import ExperimentSpec, to_spec

SECRETS = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567", "HF_TOKEN": "hf_DontLeakThisTokenPlease",
           "LMBENCH_DB_PASSWORD": "hunter2hunter2", "MY_SECRET": "s3cr3t-value-xyz"}


def make_spec(**tracking_fields: object) -> ExperimentSpec:
    return to_spec({"name": "track-test", "model": {"family": "lstm", "params": {"d_hidden": 8}},
                    "train": {"max_steps": 3}, "tracking": dict(tracking_fields)})


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


def assert_no_secret(folder: Path, values: dict[str, str]) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            blob = path.read_bytes()
            for value in values.values():
                assert value.encode() not in blob, f"{value!r} leaked into {path}"


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [({}, "auto", "offline"), ({"WANDB_API_KEY": "k" * 40}, "auto", "online"),
     ({"WANDB_MODE": "online"}, "auto", "online"), ({"WANDB_MODE": "offline"}, "auto", "offline"),
     ({"WANDB_MODE": "disabled", "WANDB_API_KEY": "k" * 40}, "online", "disabled"), ({}, "disabled", "disabled"),
     ({"WANDB_API_KEY": "k" * 40}, "offline", "offline")],
)
def test_wandb_mode(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, expected: str) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracking.wandb_mode(make_spec(wandb_mode=field)) == expected


def test_accelerator_kwargs_backends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    kwargs = tracking.accelerator_kwargs(make_spec(backends=["wandb", "tensorboard"]), tmp_path)
    assert kwargs["project_dir"] == str(tmp_path)
    assert kwargs["log_with"][0] == "wandb" and kwargs["log_with"][1].name == "tensorboard"
    assert tracking.accelerator_kwargs(make_spec(backends=["none"]), tmp_path)["log_with"] is None
    monkeypatch.setenv("WANDB_MODE", "disabled")  # respected: wandb drops out
    assert tracking.accelerator_kwargs(make_spec(), tmp_path)["log_with"] is None


def test_scrub_redacts_secret_keys_and_values(secrets: dict[str, str]) -> None:
    tree = {"hf_token": "abc", "api_key": "xyz", "num_key_value_heads": 4, "tokenizer": {"kind": "char"},
            "url": f"https://x/?t={secrets['HF_TOKEN']}", "items": [secrets["MY_SECRET"], 1]}
    clean = tracking.scrub(tree)
    assert clean["hf_token"] == clean["api_key"] == tracking.REDACTED
    assert clean["num_key_value_heads"] == 4 and clean["tokenizer"] == {"kind": "char"}
    assert secrets["HF_TOKEN"] not in clean["url"] and clean["items"] == [tracking.REDACTED, 1]
    env = tracking.safe_environ()
    assert env["HF_TOKEN"] == env["WANDB_API_KEY"] == tracking.REDACTED


def test_flat_scalars() -> None:
    flat = tracking.flat_scalars({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": "None"}


def run_tiny(spec: ExperimentSpec, run_dir: Path, num_steps: int = 4) -> dict:
    """A tiny 'training' with the tracking calls in the runner's order; returns the summary."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, **tracking.accelerator_kwargs(spec, run_dir))
    tracking.start(accelerator, spec, run_dir, cell_name="cell-0", group="grid-a")
    for step in range(num_steps):
        accelerator.log({"train_loss": 4.0 / (step + 1), "lr": 1e-3}, step=step)
    accelerator.log({"val_loss": 1.5, "val_bpb": 2.25}, step=num_steps - 1)
    tracking.log_samples(accelerator, [{"sampler": "greedy", "prompt": "Once", "index": 0, "text": "upon a time",
                                        "num_new_tokens": 3, "ended_with_eos": True, "tokens": [1, 2, 3]}])
    tracking.write_env_json(run_dir, spec, accelerator, {"data": "d41d8cd9", "tokenizer": "tok123"},
                            spec_path=Path(__file__))
    summary = {"status": "completed", "val_loss": 1.5, "val_bpb": 2.25, "axes": {"model.family": "lstm"},
               "cell": "cell-0"}
    tracking.finish(accelerator, summary)
    return summary


def test_wandb_offline_run_reads_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: dict[str, str]) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # conftest disables W&B; this test wants a real offline run
    run_dir = tmp_path / "results" / "track-test" / "cell-0"
    summary = run_tiny(make_spec(backends=["wandb"]), run_dir)

    runs = wandb_offline.offline_runs(run_dir)
    assert len(runs) == 1 and runs[0].name.startswith("offline-run-")
    history, wb_summary, config = wandb_offline.read_offline_history(runs[0])
    train = [row for row in history if "train_loss" in row]
    assert [row["_step"] for row in train] == [0, 1, 2, 3]
    assert [row["train_loss"] for row in train] == pytest.approx([4.0, 2.0, 4 / 3, 1.0])
    assert any(row.get("val_bpb") == 2.25 for row in history)
    assert any(key.startswith("samples/") for row in history for key in row)  # the wandb.Table
    assert wb_summary["val_loss"] == summary["val_loss"] and wb_summary["status"] == "completed"
    assert config["model"]["family"] == "lstm" and config["lmbench"] == {"cell": "cell-0", "group": "grid-a"}
    assert_no_secret(run_dir, secrets)

    # `wandb sync` recognises the offline run (what the user runs later to upload it), without network; its
    # --dry-run exists from wandb 0.30 on (older releases can only be asked to upload for real).
    sync_help = subprocess.run([sys.executable, "-m", "wandb", "sync", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    if "--dry-run" in sync_help:
        out = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(runs[0])],
                             capture_output=True, text=True, timeout=60)
        assert "Would sync 1 run" in out.stdout + out.stderr


def test_env_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: dict[str, str]) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "cell"
    run_tiny(make_spec(backends=["tensorboard"]), run_dir)
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and env["packages"]["lmbench"] and env["packages"]["wandb"]
    assert env["device"]["type"] == "cpu" and env["num_processes"] == 1 and env["precision"] == "no"
    assert env["fingerprints"] == {"data": "d41d8cd9", "tokenizer": "tok123"}
    assert env["git"] is None or len(env["git"]["commit"]) == 40
    assert isinstance(env["cpu_flags"], dict)
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert_no_secret(run_dir, secrets)


def test_git_info_outside_repo(tmp_path: Path) -> None:
    assert tracking.git_info(tmp_path) is None


def test_a_resumed_cell_continues_its_wandb_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Killed and resumed (or requeued): the second session logs into the same W&B run id, not a new run."""
    from lmbench.experiment.grid import cell_id
    from lmbench.training.runner import run_cell

    from .test_trainer import tiny_cfg

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_cfg(tmp_path, train={"max_steps": 2, "eval_every": None},
                   tracking={"backends": ["wandb"], "wandb_mode": "offline"})
    run_dir = tmp_path / "results" / "cell"
    run_cell(to_spec(cfg), run_dir, cell_name="cell")
    cfg["train"]["max_steps"] = 4  # a longer budget: the rerun resumes from the checkpoint
    time.sleep(1.1)  # W&B names offline folders by the second: two sessions in one second would share one
    summary = run_cell(to_spec(cfg), run_dir, cell_name="cell")
    assert summary["steps"] == 4
    runs = wandb_offline.offline_runs(run_dir)
    first = dict(cfg, train={**cfg["train"], "max_steps": 2})
    expected = (run_dir / tracking.WANDB_ID_FILE).read_text().strip()
    assert expected.startswith(cell_id(to_spec(first)) + "-")  # made from the first session's cell id
    assert len(runs) == 2 and {"-".join(r.name.split("-")[-2:]) for r in runs} == {expected}
    other = tracking.wandb_run_id(to_spec(cfg), tmp_path / "elsewhere" / "cell")
    assert other != expected and other.startswith(cell_id(to_spec(cfg)))  # another folder: another run
