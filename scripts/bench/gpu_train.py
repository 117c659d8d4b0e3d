"""Training throughput on one GPU: lmbench's real training step (Trainer.train_step: Accelerate, autocast bf16,
fused AdamW, clipping) for the 10.7M character transformer and a <=30M TinyStories transformer, eager and with
`train.compile: true`, at the batch that fills the GPU; a plain nanoGPT loop on the same shapes and batches; and
the LSTM 2x200 WikiText-2 pair of train_throughput.py on the device.

    python scripts/bench/gpu_train.py transformers --out W/train.json --peaks W/peaks.json --data D --work W
    python scripts/bench/gpu_train.py lstm --out W/lstm.json --peaks W/peaks.json --data D --work W
    ... --smoke                                            # the same on the CPU at toy sizes

Batch: doubled from a start size while tokens/s improves by more than 5% and the peak memory stays under 60% of
the device (or the training windows run out); the compiled run and the plain loop use the batch found eager.
MFU = flops_per_token x tokens/s / the bf16 matmul rate measured by gpu_peaks.py in the same run, where
flops_per_token = 6 x (non-embedding parameters + the output projection) + 12 x layers x d_model x block
(lmbench's TransformerLM.flops_per_token: forward + backward, attention scores and values included).
Work items run in priority order while the time budget lasts; results are written after each one.
Both sides use common.ACTIVATION, the exact GELU; results/bench/gpu.md was measured before that, with the tanh
approximation on both sides.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Deadline, NanoGPT, Results, matmul_flops_per_s, nanogpt_runner, pick_device,  # noqa: E402
                    read_json, say, sync)
import train_throughput as tt  # noqa: E402

from lmbench.sampling.packed import supports as onednn_supports  # noqa: E402
from lmbench.training.trainer import Trainer  # noqa: E402

GROW, MEMORY_CAP = 1.05, 0.60  # keep doubling while tokens/s grows by > 5% and memory stays under 60%

# name -> shape, data and starting batch; `smoke` replaces the shape with toy sizes on the CPU
MODELS: dict[str, dict[str, Any]] = {
    "tinystories-30M": {"num_layers": 8, "num_heads": 8, "d_model": 512, "block_size": 512, "batch": 32,
                        "max_batch": 512, "data": "tinystories"},
    "shakespeare-10.7M": {"num_layers": 6, "num_heads": 6, "d_model": 384, "block_size": 256, "batch": 64,
                          "max_batch": 1024, "data": "shakespeare"},
}
SMOKE = {"num_layers": 2, "num_heads": 2, "d_model": 64, "block_size": 64, "batch": 4, "max_batch": 8}


def model_shape(name: str, smoke: bool) -> dict[str, Any]:
    return {**MODELS[name], **(SMOKE if smoke else {})}


def spec_for(name: str, shape: dict[str, Any], batch: int, compile_model: bool, data: Path, cache: Path
             ) -> dict[str, Any]:
    """The lmbench spec of one measurement: train_throughput's character spec for Tiny Shakespeare; TinyStories
    (both local files, packed windows) with a byte-level BPE of 4,096 tokens (512 in smoke runs) trained here."""
    size = {**shape, "batch_size": batch}
    cfg = tt.transformer_spec(size, "bf16", data, cache)
    if shape["data"] == "tinystories":
        vocab = 4096 if shape["d_model"] >= 256 else 512
        cfg["data"] = {"source": "text", "path": str(data / "tinystories"), "unit": "separator",
                       "block_size": shape["block_size"], "cache_dir": str(cache)}
        cfg["tokenizer"] = {"kind": "hf", "params": {"train_from_scratch": True, "vocab_size": vocab}}
    cfg["train"]["compile"] = compile_model
    return cfg


def release() -> None:
    """Free the previous measurement's model, optimizer and compiled graphs (dynamo's cache holds the module)."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory() -> tuple[float | None, float | None]:
    """(peak GB allocated since the last reset, its share of the device) or (None, None) on the CPU."""
    if not torch.cuda.is_available():
        return None, None
    peak = torch.cuda.max_memory_allocated()
    return peak / 1e9, peak / torch.cuda.get_device_properties(0).total_memory


def time_steps(step: Any, first: int, min_steps: int, min_s: float, max_steps: int) -> tuple[float, int]:
    """Seconds per step of step(first), step(first + 1), ...: at least min_steps steps and min_s seconds."""
    sync()
    started, n = time.perf_counter(), 0
    while n < max_steps and (n < min_steps or time.perf_counter() - started < min_s):
        step(first + n)
        n += 1
    sync()
    return (time.perf_counter() - started) / n, n


class Bench:
    """One model's measurements, written to `results` under "rows" as they are made."""

    def __init__(self, name: str, args: argparse.Namespace, peak_bf16: float, results: Results) -> None:
        self.name, self.args, self.peak, self.results = name, args, peak_bf16, results
        self.shape = model_shape(name, args.smoke)
        self.batch: int | None = None  # the batch found by the eager search
        self.facts: dict[str, Any] = {}

    def trainer(self, batch: int, compile_model: bool) -> Trainer:
        """lmbench's Trainer for this model at `batch` (callers release() first: a fresh compile cache, so no
        dynamic shapes carry over from another batch)."""
        spec = spec_for(self.name, self.shape, batch, compile_model, self.args.data, self.args.work / "cache")
        return tt.lmbench_trainer(spec, self.args.work / f"{self.name}-b{batch}-c{int(compile_model)}")

    def record(self, side: str, batch: int, compile_model: bool, s_per_step: float, steps: int,
               warmup_s: float, **extra: Any) -> dict[str, Any]:
        tokens_per_s = batch * self.shape["block_size"] / s_per_step
        flops = self.facts["flops_per_token"] * tokens_per_s
        peak_gb, share = memory()
        row = {"model": self.name, "side": side, "batch": batch, "block_size": self.shape["block_size"],
               "compile": compile_model, "tokens_per_s": tokens_per_s, "s_per_step": s_per_step,
               "steps_timed": steps, "warmup_s": warmup_s, "flops_per_s": flops, "mfu": flops / self.peak,
               "peak_memory_gb": peak_gb, "memory_share": share, **self.facts, **extra}
        self.results.append("rows", row)
        say(f"{self.name} {side} batch {batch} compile={compile_model}: {tokens_per_s:,.0f} tokens/s, "
            f"MFU {100 * row['mfu']:.1f}%" + (f", peak {peak_gb:.1f} GB" if peak_gb else ""))
        return row

    def lmbench(self, batch: int, compile_model: bool) -> dict[str, Any]:
        release()
        trainer = self.trainer(batch, compile_model)
        model = trainer.model
        self.facts = {"num_params": model.num_params(), "vocab_size": model.vocab_size,
                      "flops_per_token": model.flops_per_token(self.shape["block_size"]),
                      "shape": {k: self.shape[k] for k in ("num_layers", "num_heads", "d_model", "block_size")},
                      "train_windows": trainer.train_data.plan.num_items}
        warmup = self.args.warmup + (2 if compile_model else 0)
        started = time.perf_counter()
        for i in range(warmup):
            trainer.train_step(i)
        sync()
        warmup_s = time.perf_counter() - started
        s, n = time_steps(trainer.train_step, warmup, self.args.steps, self.args.min_seconds, 200)
        row = self.record("lmbench", batch, compile_model, s, n, warmup_s)
        del trainer, model
        return row

    def search(self) -> None:
        """Eager lmbench runs at doubling batches; keeps the fastest (a batch past the memory cap still counts)."""
        batch, best = self.shape["batch"], None
        while True:
            try:
                row = self.lmbench(batch, False)
            except torch.OutOfMemoryError:
                self.results.append("notes", {"model": self.name, "note": f"batch {batch}: out of memory"})
                break
            better = best is None or row["tokens_per_s"] > GROW * best["tokens_per_s"]
            if best is None or row["tokens_per_s"] > best["tokens_per_s"]:
                best = row
            windows = row["train_windows"]
            if not better or (row["memory_share"] or 0) > MEMORY_CAP or 2 * batch > min(self.shape["max_batch"],
                                                                                         windows):
                break
            if self.args.deadline.left() < self.args.item_s:
                break
            batch *= 2
        if best is None:
            raise RuntimeError(f"{self.name}: no batch fitted")
        self.batch = best["batch"]
        self.results.append("chosen", {"model": self.name, "batch": self.batch, "tokens_per_s": best["tokens_per_s"]})

    def compiled(self) -> None:
        self.lmbench(self.batch or self.shape["batch"], True)

    def plain(self, compile_model: bool) -> None:
        """nanoGPT's loop on the batches lmbench trains on (same shape, vocabulary and batch)."""
        batch = self.batch or self.shape["batch"]
        release()
        trainer = self.trainer(batch, False)
        warmup = self.args.warmup + (2 if compile_model else 0)
        batches = tt.same_batches(trainer, warmup + self.args.plain_steps)
        vocab = trainer.model.vocab_size
        del trainer
        release()
        s = self.shape
        torch.manual_seed(0)
        model = NanoGPT(vocab, s["num_layers"], s["num_heads"], s["d_model"], s["block_size"])
        step = nanogpt_runner(model, batches, pick_device(), compile_model=compile_model)
        started = time.perf_counter()
        for i in range(warmup):
            step(i)
        sync()
        warmup_s = time.perf_counter() - started
        sec, n = time_steps(step, warmup, self.args.steps, 0.0, self.args.plain_steps)
        self.record("plain-nanogpt", batch, compile_model, sec, n, warmup_s,
                    plain_num_params=sum(p.numel() for p in model.parameters()))


def bf16_peak(args: argparse.Namespace) -> float:
    peaks = (read_json(args.peaks) or {}).get("peaks") if args.peaks else None
    if peaks and peaks.get("bf16_flops"):
        return float(peaks["bf16_flops"])
    say("no peaks file: measuring the bf16 matmul peak here")
    return matmul_flops_per_s(torch.bfloat16, 512 if args.smoke else 8192, pick_device())


def run_transformers(args: argparse.Namespace, results: Results) -> None:
    peak = bf16_peak(args)
    results.set(peak_bf16_flops=peak, rows=[], notes=[])
    benches = {name: Bench(name, args, peak, results) for name in MODELS}
    big, small = benches["tinystories-30M"], benches["shakespeare-10.7M"]
    # priority order: the goal first (30M eager -> compiled), then the 10.7M pair, then the plain baselines
    work = [("30M eager batch search", big.search, 0.3), ("30M compiled", big.compiled, 1.0),
            ("10.7M eager batch search", small.search, 0.3), ("10.7M compiled", small.compiled, 1.0),
            ("30M plain eager", lambda: big.plain(False), 0.2), ("10.7M plain eager", lambda: small.plain(False), 0.2),
            ("30M plain compiled", lambda: big.plain(True), 1.0),
            ("10.7M plain compiled", lambda: small.plain(True), 1.0)]
    if args.smoke:  # lmbench's compiled step once: CPU compiles are slow on two cores
        work = [w for w in work if w[0] not in ("10.7M compiled", "30M plain compiled", "10.7M plain compiled")]
    for label, fn, cost in work:
        need = cost * args.compile_s if cost >= 1 else args.item_s
        if args.deadline.left() < need:
            results.append("notes", {"item": label, "note": f"skipped: {args.deadline.left():.0f} s left of the "
                                                            f"budget, ~{need:.0f} s needed"})
            say(f"skip {label}: time budget")
            continue
        say(f"start {label}")
        try:
            fn()
        except Exception as exc:  # one failing item must not lose the others
            results.append("notes", {"item": label, "note": f"failed: {type(exc).__name__}: {exc}"})
            say(f"FAILED {label}: {type(exc).__name__}: {exc}")


def run_lstm(args: argparse.Namespace, results: Results) -> None:
    peak = bf16_peak(args)
    peaks_all = (read_json(args.peaks) or {}).get("peaks", {}) if args.peaks else {}
    peaks = {"bf16": peak, "fp32": float(peaks_all.get("fp32_flops") or peak / 2)}
    precisions = ["fp32", "bf16"]
    if args.smoke and pick_device().type == "cpu" and not onednn_supports(torch.bfloat16):
        # bf16 runs a reference kernel at ~1.4 GFLOP/s on an AVX2-only CPU: the bf16 pair would take ~45 s there
        precisions = ["fp32"]
        results.append("notes", {"item": "lstm bf16", "note": "skipped in the smoke run: this CPU has no oneDNN bf16"})
    ns = argparse.Namespace(precisions=precisions, warmup=args.warmup, steps=args.steps, rounds=args.rounds,
                            data=args.data, cache=args.work / "cache")
    rows = tt.bench_lstm(ns, peaks, args.work / "lstm")
    results.set(rows=rows, speedups=tt.summarise(rows), shape=tt.LSTM, peak_bf16_flops=peak)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("transformers", "lstm"))
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--peaks", type=Path, help="gpu_peaks.py's JSON (the bf16 matmul rate for MFU)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    p.add_argument("--work", type=Path, default=Path("/tmp/lmbench-gpu-work"))
    p.add_argument("--budget", type=float, default=150.0, help="seconds for all work items")
    p.add_argument("--smoke", action="store_true", help="toy sizes (CPU)")
    args = p.parse_args(argv)
    args.deadline = Deadline(args.budget)
    if args.smoke:
        args.warmup, args.steps, args.min_seconds, args.rounds, args.plain_steps = 1, 2, 0.0, 1, 3
        args.item_s, args.compile_s = 3.0, 20.0
    else:
        args.warmup, args.steps, args.min_seconds, args.rounds, args.plain_steps = 3, 10, 1.0, 3, 20
        args.item_s, args.compile_s = 8.0, 45.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.out, section=f"train-{args.what}", device=str(pick_device()), smoke=args.smoke,
                      budget_s=args.budget)
    started = time.perf_counter()
    (run_transformers if args.what == "transformers" else run_lstm)(args, results)
    results.set(complete=True, wall_s=time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
