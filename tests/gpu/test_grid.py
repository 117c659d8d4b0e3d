"""A 2-cell grid through the real CLI with `--jobs 2` on one GPU: both cells train on the GPU and complete, in
the precision `auto` picks there (bf16 on Ampere and newer, fp16 with loss scaling before)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmbench.results import read_summary

from ..training.test_trainer import corpus
from .helpers import subprocess_env

pytestmark = pytest.mark.gpu

SPEC = """\
name: gpu-grid
data: {{source: text, path: {corpus}, unit: line, block_size: 16, cache_dir: {cache}, val_fraction: 0.1,
        test_fraction: 0.1}}
tokenizer: {{kind: char}}
model: {{family: transformer, params: {{num_layers: 1, num_heads: 2, d_model: 16, block_size: 16}}}}
train: {{batch_size: 4, max_steps: 3, lr: 3.0e-3, mixed_precision: auto}}
eval: {{batch_size: 8}}
sample: {{prompts: [the], max_new_tokens: 4, samplers: [{{kind: greedy}}, {{kind: beam, num_beams: 2}}]}}
tracking: {{backends: [none]}}
grid: {{axes: {{seed: [0, 1]}}}}
"""


def test_two_cell_grid_with_two_jobs(tmp_path: Path, gpu_device: torch.device) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text(SPEC.format(corpus=corpus(tmp_path / "corpus.txt"), cache=tmp_path / "cache"))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "lmbench", "run", str(spec), "--jobs", "2", "--results", str(results), "--no-report"]
    done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    losses = []
    for cell in ("seed=0", "seed=1"):
        run_dir = results / "gpu-grid" / cell
        summary = read_summary(run_dir)
        assert summary is not None and summary["status"] == "completed", (cell, summary, done.stdout[-2000:])
        assert summary["steps"] == 3 and math.isfinite(summary["val_loss"]) and summary["num_samples"] == 2
        device = json.loads((run_dir / "env.json").read_text())["device"]
        assert device["type"] == gpu_device.type, device
        if gpu_device.type == "cuda":
            expected = "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"
            assert summary["mixed_precision"] == expected, summary["mixed_precision_reason"]
        losses.append(summary["val_loss"])
    assert losses[0] != losses[1]  # two seeds, two models
