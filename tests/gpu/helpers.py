"""Shared parts of the GPU tests: tiny cells of every family (tests/training's tiny_cfg), a run that keeps the
built parts (to look at the model's device), device checks and the tolerances of CUDA against the CPU."""

from __future__ import annotations

import copy
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbench.results import Summary
from lmbench.spec import to_spec

from ..conftest import gpu_dry_run
from ..models.tiny import TINY_PARAMS
from ..training.test_trainer import rows, tiny_cfg

REPO = Path(__file__).resolve().parents[2]

# Every family of lmbench.models (MODELS.names()) plus GloVe-LSTM (lstm + pretrained vectors, word tokenizer).
FAMILIES = ("rnn", "lstm", "gru", "transformer", "hf", "hf_seq2seq", "glove-lstm")
PRECISIONS = ("no", "bf16", "fp16")  # train.mixed_precision forced (auto picks bf16 on Ampere and newer)
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]  # tiny_cfg's corpus
ALL_SAMPLERS = [{"kind": "greedy"}, {"kind": "sample", "top_k": 5, "top_p": 0.9},
                {"kind": "beam", "num_beams": 2}, {"kind": "beam_sample", "num_beams": 2, "temperature": 0.8}]


def write_vectors(path: Path, dim: int = 8) -> Path:
    """A GloVe text file covering all but one of the corpus words (one row is left to the random init)."""
    rng = random.Random(1)
    lines = [f"{w} {' '.join(f'{rng.uniform(-1, 1):.4f}' for _ in range(dim))}\n" for w in WORDS[:-1]]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def cell_cfg(tmp_path: Path, family: str, precision: str = "no", **sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny cell of `family` (FAMILIES) in `precision`: char tokens (words for GloVe), 3 steps, every sampler
    on 4 new tokens; `sections` are merged into the spec's sections."""
    cfg = tiny_cfg(tmp_path, "lstm", train={"max_steps": 3, "eval_every": None, "log_every": 1,
                                            "mixed_precision": precision},
                   sample={"prompts": ["the"], "max_new_tokens": 4, "samplers": copy.deepcopy(ALL_SAMPLERS)})
    if family == "glove-lstm":
        vectors = tmp_path / "vectors.txt"
        if not vectors.exists():
            write_vectors(vectors)
        params = {"embeddings": "glove", "embeddings_source": str(vectors), "d_hidden": 24, "num_layers": 2}
        cfg["model"] = {"family": "lstm", "params": params}
        cfg["tokenizer"] = {"kind": "word"}
    elif family == "hf_seq2seq":  # (prompt, story) pairs: the corpus's lines, each prompt its first word
        lines = [ln for ln in Path(cfg["data"]["path"]).read_text(encoding="utf-8").splitlines() if ln.strip()]
        (tmp_path / "stories.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp_path / "prompts.txt").write_text("\n".join(ln.split()[0] for ln in lines) + "\n", encoding="utf-8")
        cfg["data"] = {**cfg["data"], "source": "prompt_story", "path": str(tmp_path / "stories.txt"),
                       "prompt_path": str(tmp_path / "prompts.txt"), "batching": "documents"}
        cfg["data"].pop("unit", None)
        cfg["tokenizer"] = {"kind": "char", "params": {"specials": ["<sep>"]}}
        cfg["model"] = {"family": family, "params": copy.deepcopy(TINY_PARAMS[family])}
        cfg["sample"]["prompts"] = ["the <sep>"]
    else:
        cfg["model"] = {"family": family, "params": copy.deepcopy(TINY_PARAMS[family])}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def run_keeping_parts(cfg: dict[str, Any], run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Summary, Any]:
    """run_cell(cfg) as `lmbench run` calls it, and the CellParts it built (Accelerator, bare model)."""
    from lmbench.training import runner

    built: list[Any] = []
    real = runner.build_cell

    def keep(*args: Any, **kwargs: Any) -> Any:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(runner, "build_cell", keep)
    try:
        summary = runner.run_cell(to_spec(cfg), run_dir, cell_name=run_dir.name)
    finally:
        monkeypatch.setattr(runner, "build_cell", real)
    return summary, built[-1]


def assert_on(module: torch.nn.Module, device: torch.device) -> None:
    """Every parameter and buffer of `module` lives on `device`'s type (cuda:0 and cuda count as the same)."""
    wrong = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type != device.type]
    assert not wrong, f"not on {device}: {wrong[:5]}"


def assert_finite_run(summary: Summary, run_dir: Path, steps: int) -> None:
    """A completed run of `steps` steps whose logged losses and final metrics are finite numbers."""
    assert summary["status"] == "completed", summary.get("error")
    assert summary["steps"] == steps
    for key in ("val_loss", "val_ppl", "val_bpb", "test_loss"):
        assert math.isfinite(summary[key]), (key, summary[key])  # type: ignore[literal-required]
    losses = [r["train_loss"] for r in rows(run_dir) if "train_loss" in r]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), losses


def samples(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def cuda_run() -> bool:
    """The gpu tests run on CUDA (not a CPU dry run)."""
    return not gpu_dry_run()


def close(a: float, b: float, rtol: float) -> bool:
    """a == b on the CPU (deterministic); within `rtol` on CUDA, whose atomics (embedding and attention backward,
    cuDNN RNN) make two identical runs differ in the last bits."""
    return a == b if not cuda_run() else math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m lmbench` children: this checkout importable (lmbench and tests.gpu)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", **extra}
