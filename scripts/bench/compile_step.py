"""torch.compile of lmbench's training step on this machine: compile seconds, step time compiled against eager,
and the number of steps after which compiling pays back (#15's lever "torch.compile of the training step on CPU
where it pays back within the budget").

The transformers of scripts/bench/train_throughput.py (`medium` 10.7M: 6 layers, d_model 384, block 256, batch 16;
`small` 0.8M: 4 layers, d_model 128, block 64, batch 12; Tiny Shakespeare, char) are built twice by lmbench's own
trainer, `train.compile` false and true, in one process with lmbench's allocator. The first 3 steps of each are
timed (they hold the compilation: inductor's caches start empty, in a fresh folder), then `--rounds` interleaved
rounds of `--steps` steps; the best round counts.

    python scripts/bench/compile_step.py                      # writes results/bench/compile_step.{md,json}
    python scripts/bench/compile_step.py --cases small:fp32 --out /tmp/c
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# A cold compile, as a new user's first run has it: inductor's on-disk caches in a fresh folder (set before torch).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmbench-inductor-")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts this checkout's lmbench first on sys.path)
import train_throughput as tt  # noqa: E402
from lmbench.allocator import keep_freed_memory  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PRECISIONS = {"fp32": "no", "bf16": "bf16"}


def measure(size: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    trainers, first = {}, {}
    for compiled in (False, True):
        spec = tt.transformer_spec(tt.SIZES[size], PRECISIONS[precision], args.data, args.cache)
        spec["train"]["compile"] = compiled
        trainer = tt.lmbench_trainer(spec, Path(tempfile.mkdtemp(prefix="lmbench-compile-")))
        started = time.perf_counter()
        for step in range(3):
            trainer.train_step(step)
        first[compiled], trainers[compiled] = time.perf_counter() - started, trainer
    rounds: dict[bool, list[float]] = {False: [], True: []}
    steps = args.steps or (6 if size == "medium" else 30)
    for r in range(args.rounds):
        for compiled in (False, True):
            started = time.perf_counter()
            for i in range(steps):
                trainers[compiled].train_step(100 + r * steps + i)
            rounds[compiled].append((time.perf_counter() - started) / steps)
    return {"size": size, "precision": precision, "steps_per_round": steps, "eager_first3_s": first[False],
            **payback(first[True], min(rounds[False]), min(rounds[True])),
            "rounds": {str(k): v for k, v in rounds.items()}}


def payback(compiled_first3_s: float, eager: float, compiled: float) -> dict[str, Any]:
    """Step times (s), the speed-up, the compile seconds (the first 3 compiled steps' time beyond 3 compiled
    steps) and the steps after which compiling has paid for itself (None: never)."""
    compile_s, gain = compiled_first3_s - 3 * compiled, eager - compiled
    return {"eager_s_per_step": eager, "compiled_s_per_step": compiled, "speedup": eager / compiled,
            "compile_s": compile_s, "payback_steps": compile_s / gain if gain > 0 else None}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# torch.compile of the training step", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['env']['cpu']}, {report['env']['threads']} torch threads, torch "
             f"{report['env']['torch']}. Best of {report['args']['rounds']} interleaved rounds per side "
             "(6 steps a round at 10.7M, 30 at 0.8M).", "",
             "| model | precision | eager ms/step | compiled ms/step | eager / compiled | compile s | pays back |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        payback = f"{r['payback_steps']:,.0f} steps" if r["payback_steps"] is not None else "never"
        lines.append(f"| {r['size']} | {r['precision']} | {1e3 * r['eager_s_per_step']:.1f} | "
                     f"{1e3 * r['compiled_s_per_step']:.1f} | {r['speedup']:.2f}x | {r['compile_s']:.1f} | {payback} |")
    lines += ["", "compile s = the first 3 compiled steps less 3 compiled steps, with inductor's caches empty (a "
              "later run of the same model finds its kernels cached and compiles in a fraction of that); pays back "
              "after = compile s / the time a compiled step saves.", "", *NOTES, ""]
    return "\n".join(lines)


NOTES = [
    "In bf16 both sides run lmbench's matrix-product causal attention (lmbench/models/attention.py): dynamo traces "
    "its autograd Function and inductor compiles the products. Before it was allowed under torch.compile, the "
    "compiled step ran SDPA's flash kernel while eager ran the products, and compiling lost: in the run before "
    "this one, eager / compiled was 0.88x (medium bf16) and 0.65x (small bf16), small fp32 1.03x. On this "
    "2-core CPU compiling gains little (the table) and its compile seconds pay back only after hundreds to "
    "thousands of steps; `train.compile` is mainly for the GPU (results/bench/gpu.md).",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=["medium:bf16", "small:fp32", "small:bf16"],
                   help="size:precision pairs (sizes: small, medium; precisions: fp32, bf16)")
    p.add_argument("--steps", type=int, default=None, help="steps per round (default: 6 medium, 30 small)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=REPO / "results" / "cache")
    p.add_argument("--out", default=str(REPO / "results" / "bench" / "compile_step"))
    args = p.parse_args(argv)
    keep_freed_memory()  # as the lmbench CLI does
    rows = []
    for case in args.cases:
        size, precision = case.split(":")
        rows.append(measure(size, precision, args))
        r = rows[-1]
        print(f"{case}: eager {1e3 * r['eager_s_per_step']:.1f} ms, compiled {1e3 * r['compiled_s_per_step']:.1f} ms, "
              f"compile {r['compile_s']:.1f} s", flush=True)
    command = common.command_line("compile_step.py", argv)
    report = {"command": command, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "env": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}}
    report["args"].update(steps=args.steps, rounds=args.rounds)
    common.write_report(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
