"""Several processes on this CPU machine: `accelerate launch --multi_gpu` starts gloo processes (the runner asks
accelerate for the CPU), and the results equal one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from .test_trainer import DRIVER, REPO, tiny_cfg

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ACCELERATE = shutil.which("accelerate")
METRICS = ("val_loss", "val_bpb", "test_loss")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def spec_file(tmp_path: Path, family: str, **sections: Any) -> Path:
    cfg = tiny_cfg(tmp_path, family, **sections)
    cfg["model"]["params"]["dropout"] = 0.0  # dropout masks depend on the per-process batch shape
    cfg["sample"] = {"samplers": []}
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(cfg))
    return path


def run_single(spec: Path, run_dir: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(DRIVER), str(spec), str(run_dir), "--expect-world", "1"], env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def launch(args: list[str], spec: Path, run_dir: Path) -> subprocess.Popen:
    cmd = [ACCELERATE, "launch", *args, str(DRIVER), str(spec), str(run_dir), "--expect-world", "2"]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert "WORLD 2 STATUS completed" in out, out[-2000:]  # the world size was asserted inside
    return out


def assert_same_metrics(one: dict[str, Any], two: dict[str, Any]) -> None:
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert (two["steps"], two["tokens"], two["val_tokens"], two["test_tokens"]) == \
        (one["steps"], one["tokens"], one["val_tokens"], one["test_tokens"])  # no double-counted eval items
    for key in METRICS:
        assert two[key] == pytest.approx(one[key], rel=1e-4), key


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")
@pytest.mark.parametrize("family,sections", [
    ("transformer", {"data": {"batching": "documents"}, "train": {"max_steps": 5, "eval_every": 5}}),
    ("lstm", {"train": {"max_steps": 5, "grad_accum_steps": 2, "eval_every": 5}}),
])
def test_two_processes_equal_one(tmp_path: Path, family: str, sections: dict[str, Any]) -> None:
    """Same global batch: 1 process vs 2 gloo processes (documents: odd number of eval items, padded duplicates
    must be dropped; lstm: carried state per process lane and gradient accumulation)."""
    spec = spec_file(tmp_path, family, **sections)
    one = run_single(spec, tmp_path / "one")
    out = finish(launch(["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())], spec,
                        tmp_path / "two"))
    assert_same_metrics(one, json.loads((tmp_path / "two" / "summary.json").read_text()))
    assert "random_states_1.pkl" in os.listdir(tmp_path / "two" / "checkpoint"), out[-1000:]
    # per-unit records gathered from both processes: every unit once, the same sums as one process
    units_one, units_two = (pd.read_parquet(tmp_path / d / "units_validation.parquet") for d in ("one", "two"))
    assert units_two["tokens"].tolist() == units_one["tokens"].tolist() and units_two["tokens"].sum() > 0
    np.testing.assert_allclose(units_two["nll_nats"], units_one["nll_nats"], rtol=1e-4)


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")
def test_two_machines_on_loopback(tmp_path: Path) -> None:
    """Two `accelerate launch` invocations (machine ranks 0 and 1) complete one run together."""
    spec = spec_file(tmp_path, "transformer", train={"max_steps": 4, "eval_every": 2})
    one = run_single(spec, tmp_path / "one")
    port = str(free_port())
    procs = [launch(["--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip",
                     "127.0.0.1", "--main_process_port", port, "--num_processes", "2"], spec, tmp_path / "two")
             for rank in (0, 1)]
    for proc in procs:
        finish(proc)
    assert_same_metrics(one, json.loads((tmp_path / "two" / "summary.json").read_text()))


OTHER_FAMILIES = {  # the families test_two_processes_equal_one does not cover, each as small as it gets
    "rnn": {"model": {"family": "rnn", "params": {"d_embed": 8, "d_hidden": 16, "num_layers": 2}}},
    "gru": {"model": {"family": "gru", "params": {"d_embed": 8, "d_hidden": 16, "num_layers": 1}},
            "data": {"batching": "documents"}},  # padded batches: the packed-sequence path under DDP
    "hf": {"model": {"family": "hf", "params": {"from_config": True, "model_type": "gpt2",
                                                 "config": {"n_layer": 1, "n_embd": 16, "n_head": 2,
                                                            "n_positions": 32}}}},
    "glove": {"model": {"family": "lstm", "params": {"embeddings": "glove", "embeddings_source": "VECTORS",
                                                     "d_hidden": 8, "num_layers": 1}},
              "tokenizer": {"kind": "word"}},  # frozen pretrained rows, trainable new ones
}


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")
@pytest.mark.parametrize("name", list(OTHER_FAMILIES))
def test_every_family_trains_under_ddp(tmp_path: Path, name: str) -> None:
    """DDP raises when a parameter gets no gradient (unused parameters): every family's parameters all take
    part in the loss, so two processes complete without find_unused_parameters."""
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(f"{w} {' '.join(str((i + j) / 10) for j in range(4))}\n"
                               for i, w in enumerate(["the", "cat", "sat", "on", "dog"])), encoding="utf-8")
    sections = json.loads(json.dumps(OTHER_FAMILIES[name]).replace('"VECTORS"', json.dumps(str(vectors))))
    cfg = tiny_cfg(tmp_path, "lstm", train={"max_steps": 3, "eval_every": 3})
    cfg.update({k: {**cfg.get(k, {}), **v} for k, v in sections.items()})
    cfg["sample"] = {"samplers": []}
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps(cfg))
    finish(launch(["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())], spec,
                  tmp_path / "two"))
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")
def test_two_processes_resume_their_own_recurrent_state(tmp_path: Path) -> None:
    """An LSTM on a packed stream carries each process's hidden state from step to step. Two processes that stop
    at step 3 and are launched again to step 6 each reload their own lane's state (carry_<rank>) and end with the
    metrics of two processes that ran 6 steps straight."""
    def two(run_dir: Path, max_steps: int) -> dict[str, Any]:
        spec = spec_file(tmp_path, "lstm", train={"max_steps": max_steps, "eval_every": None, "checkpoint_every": 3})
        finish(launch(["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())], spec,
                      run_dir))
        return json.loads((run_dir / "summary.json").read_text())

    straight = two(tmp_path / "straight", 6)
    first = two(tmp_path / "resumed", 3)
    assert first["steps"] == 3
    assert {"carry_0.safetensors", "carry_1.safetensors"} <= set(os.listdir(tmp_path / "resumed" / "checkpoint"))
    resumed = two(tmp_path / "resumed", 6)
    assert resumed["resumed_from"] == [3] and resumed["steps"] == straight["steps"] == 6
    assert resumed["tokens"] == straight["tokens"]
    for key in METRICS:
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key
