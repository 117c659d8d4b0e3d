"""The local TinyStories recipe (experiments/tinystories_local.yaml) trained for a fixed time through `lmbench run`,
scored on tinystories_val.txt: cross-entropy (nats per token of the recipe's 4,096-token BPE) and bits per byte,
tokens/s, peak device memory, and the validation curve over time with an extrapolation to 15 minutes.

    python scripts/bench/gpu_recipe.py --out W/recipe.json --data D --work W --seconds 120
    python scripts/bench/gpu_recipe.py --out W/recipe.json --data D --work W --smoke       # toy model, CPU

What changes from the recipe (command-line overrides, all listed in the JSON): the data come from --data; the
whole 10k-line sample trains and `tinystories_val.txt` (the start of TinyStories' own validation split, running
text) is the validation split, evaluated every `eval_every` steps and in full at the end; training stops after
--seconds of wall time (evaluations included); W&B is off; 3 samples. Model, tokenizer, optimizer and batch are
the recipe's: the local sample is only ~350k training tokens, so a larger model would only overfit sooner.
Peak memory comes from this module's `run_cell`, which `lmbench run --runner gpu_recipe:run_cell` calls around
lmbench's own runner (torch.cuda.max_memory_allocated; the process's peak RSS on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Results, read_json, say  # noqa: E402

SPEC = REPO / "experiments" / "tinystories_local.yaml"
MEMORY_FILE = "gpu_memory.json"
TARGET_CE, TARGET_S = 1.5, 900.0  # the goal: CE <= 1.5 on tinystories_val.txt within 15 minutes
SMOKE_OVERRIDES = ["model.params.num_layers=1", "model.params.d_model=32", "model.params.num_heads=2",
                   "model.params.d_ff=64", "tokenizer.params.vocab_size=512", "train.max_steps=30",
                   "train.batch_size=8", "train.warmup_steps=5", "sample.max_new_tokens=8", "sample.num_samples=1"]


def run_cell(spec: Any, run_dir: Path, **kwargs: Any) -> Any:
    """lmbench's cell runner, with the peak memory of the cell written to run_dir/gpu_memory.json."""
    import torch

    from lmbench.training.runner import run_cell as lmbench_run_cell

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    summary = lmbench_run_cell(spec, run_dir, **kwargs)
    memory: dict[str, Any] = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    if torch.cuda.is_available():
        memory.update(device=torch.cuda.get_device_name(0),
                      max_memory_allocated_gb=torch.cuda.max_memory_allocated() / 1e9,
                      max_memory_reserved_gb=torch.cuda.max_memory_reserved() / 1e9)
    (Path(run_dir) / MEMORY_FILE).write_text(json.dumps(memory, indent=2) + "\n")
    return summary


def overrides(args: argparse.Namespace) -> list[str]:
    ts = args.data / "tinystories"
    val = args.val_file or ts / "tinystories_val.txt"
    out = [f"data.files.train={ts / 'tinystories_10k.txt'}", f"data.files.validation={val}",
           f"data.cache_dir={args.work / 'cache'}", f"train.max_seconds={args.seconds:g}",
           f"train.eval_every={args.eval_every}", f"train.checkpoint_every={10**9}", "eval.batch_size=64",
           "tracking.backends=[none]", "sample.num_samples=3"]
    return out + (SMOKE_OVERRIDES if args.smoke else []) + list(args.set or [])


def curve(run_dir: Path) -> tuple[list[dict[str, Any]], list[float]]:
    """(validation rows: step, tokens, wall_s, val_loss, val_bpb; training tokens/s of each logged window)."""
    points, speeds = [], []
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "val_loss" in row:
            points.append({k: row.get(k) for k in ("step", "tokens", "wall_s", "val_loss", "val_bpb", "final")})
        if "tokens_per_s" in row:
            speeds.append(row["tokens_per_s"])
    return points, speeds


def extrapolate(points: list[dict[str, Any]], at_s: float = TARGET_S) -> dict[str, Any]:
    """Power law val_loss = a * wall_s^b fitted (least squares in log-log) to the later half of the periodic
    evaluations up to the best one (the current slope, not the fast start); its value at `at_s`. Rising losses
    after the best are reported, not fitted. No loss floor: the further out, the more it flatters."""
    periodic = [p for p in points if not p.get("final") and p["wall_s"] and p["val_loss"]]
    if len(periodic) < 3:
        return {"note": "fewer than 3 evaluations: no fit"}
    best = min(range(len(periodic)), key=lambda i: periodic[i]["val_loss"])
    upto = periodic[:best + 1]
    fit = upto[len(upto) // 2:] if len(upto) >= 4 else upto[-2:]
    out: dict[str, Any] = {"best_index": best, "evaluations": len(periodic),
                           "rising_after_best": best < len(periodic) - 1}
    if len(fit) < 2:
        return {**out, "note": "the first evaluation is the best: nothing to fit (overfitting at once)"}
    xs, ys = [math.log(p["wall_s"]) for p in fit], [math.log(p["val_loss"]) for p in fit]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    a = my - slope * mx
    out.update(exponent=slope, points_fitted=len(fit), at_s=at_s, val_loss_at=math.exp(a + slope * math.log(at_s)))
    if slope < 0:
        out["seconds_to_target"] = math.exp((math.log(TARGET_CE) - a) / slope)
    return out


def collect(run_dir: Path, command: list[str], rc: int, wall_s: float) -> dict[str, Any]:
    summary = read_json(run_dir / "summary.json") or {}
    memory = read_json(run_dir / MEMORY_FILE) or {}
    points, speeds = curve(run_dir)
    reached = [p for p in points if p["val_loss"] is not None and p["val_loss"] <= TARGET_CE]
    keys = ("status", "error", "steps", "tokens", "epochs", "train_s", "wall_s", "train_tokens_per_s", "num_params",
            "mixed_precision", "val_loss", "val_ppl", "val_bpb", "best_val_loss", "best_step", "stop_reason",
            "flops_per_token", "train_flops_per_s")
    return {"command": command, "rc": rc, "launcher_wall_s": wall_s, "run_dir": str(run_dir),
            "summary": {k: summary.get(k) for k in keys}, "memory": memory, "curve": points,
            "tokens_per_s_windows": {"count": len(speeds), "max": max(speeds) if speeds else None,
                                     "median": sorted(speeds)[len(speeds) // 2] if speeds else None},
            "first_at_target": reached[0] if reached else None, "extrapolation": extrapolate(points)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--data", type=Path, required=True, help="folder holding tinystories/")
    p.add_argument("--work", type=Path, default=Path("/tmp/lmbench-gpu-work"))
    p.add_argument("--seconds", type=float, default=120.0, help="training wall time (train.max_seconds)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations on tinystories_val.txt")
    p.add_argument("--val-file", type=Path, help="instead of DATA/tinystories/tinystories_val.txt")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="more spec overrides (repeatable)")
    p.add_argument("--smoke", action="store_true", help="toy model and a few steps (CPU)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_root = args.work / "recipe-results"
    shutil.rmtree(results_root, ignore_errors=True)  # a completed cell there would be skipped, not run
    command = [sys.executable, "-m", "lmbench", "run", str(SPEC), "--results", str(results_root), "--no-report",
               "--runner", "gpu_recipe:run_cell", *overrides(args)]
    results = Results(args.out, section="recipe", smoke=args.smoke, seconds=args.seconds, command=command)
    bench = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (bench, str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "LMBENCH_DATA": str(args.data), "WANDB_MODE": "disabled"}
    say("running: " + " ".join(command))
    started = time.perf_counter()
    rc = subprocess.run(command, env=env, cwd=REPO).returncode
    wall_s = time.perf_counter() - started
    run_dirs = sorted(results_root.glob("*/*/summary.json"))
    if not run_dirs:
        results.set(rc=rc, error="lmbench run left no summary.json", complete=True)
        return 1
    results.set(**collect(run_dirs[0].parent, command, rc, wall_s), complete=True)
    s = results.data["summary"]
    say(f"recipe: status {s.get('status')}, CE {s.get('val_loss')}, best {s.get('best_val_loss')}, "
        f"{s.get('train_tokens_per_s')} tokens/s, memory {results.data['memory']}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
