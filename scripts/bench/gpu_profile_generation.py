"""Where a decoding step's time goes: lmbench vs transformers' `generate` under torch.profiler (the same model and
prompts as generation.py), greedy, per generated token: wall time, time the device was busy, kernel launches.

    python scripts/bench/gpu_profile_generation.py --dtype bf16 --batch-sizes 1 16 --out results/bench/gpu_profile

When the device is busy for a small share of the wall time and the launches per token are many, the step is bound
by the host (Python and kernel launches), not by the GPU: the cure is fewer launches (CUDA graphs of a static
cache, fused kernels), not faster kernels.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import STRATEGIES, build_models, parse_args, runner  # noqa: E402


def measure(run: Any, device: torch.device, new_tokens: int) -> dict[str, float]:
    run()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels = [e for e in events if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA") and e.self_device_time_total > 0]
    busy_us = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in kernels)  # kernels that ran, one launch each
    return {"wall_ms_per_token": 1e3 * wall / new_tokens, "device_busy_ms_per_token": busy_us / 1e3 / new_tokens,
            "device_busy_share": busy_us / 1e6 / wall if wall else 0.0,
            "launches_per_token": launches / new_tokens}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lm, hf = build_models(args)
    device = torch.device(args.device)
    rows = []
    greedy = STRATEGIES["greedy"]
    for batch in args.batch_sizes:
        prompts = torch.randint(1, args.vocab_size, (batch, args.prompt_len))
        for impl in ("lmbench", "transformers"):
            run = runner(impl, lm, hf, greedy, prompts, args.new_tokens)
            row = {"impl": impl, "batch": batch, **measure(run, device, args.new_tokens)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"Greedy decoding, {args.num_layers} layers, d_model {args.d_model}, vocab {args.vocab_size}, "
             f"{args.dtype}, {args.new_tokens} new tokens, device {args.device} (torch.profiler, one run after a "
             "warm-up)", "",
             "| impl | batch | wall ms/token | device busy ms/token | busy share | kernel launches/token |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['impl']} | {r['batch']} | {r['wall_ms_per_token']:.3f} | {r['device_busy_ms_per_token']:.3f} | "
              f"{100 * r['device_busy_share']:.0f}% | {r['launches_per_token']:.0f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
