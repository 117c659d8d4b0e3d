"""Training throughput: lmbench's real training step vs the plain loop a speed-minded user would write, same
batches, one process.

    python scripts/bench/train_throughput.py                       # full measurement (quiet machine)
    python scripts/bench/train_throughput.py --steps 3 --rounds 1 --sizes small --no-lstm   # smoke test

Transformer: lmbench `transformer` (through `Trainer.train_step`: Accelerate, fused AdamW, grad clipping, loss
sums) vs a nanoGPT-style model of identical shape and parameter count (scripts/bench/common.py `NanoGPT`: fused
QKV, `scaled_dot_product_attention(is_causal=True)`, pre-LN GELU-tanh blocks, learned positions, tied embeddings)
trained by a plain loop: `torch.optim.AdamW` fused and foreach (both run; the faster is the baseline), clip 1.0,
`torch.autocast` at the given precision. Tiny Shakespeare characters at two sizes: small (4 layers, d 128, block
64, batch 12: ~0.8M parameters) and medium (6 layers, d 384, block 256, batch 16: ~10.7M, nanoGPT's
shakespeare_char shape). Precisions fp32 and bf16 for both sides, plus lmbench's default (`mixed_precision:
auto`) against the plain loop at its fastest precision and at fp32.
LSTM: lmbench `lstm` (2 x 200, WikiText-2 word vocabulary, bptt 35, batch 20, carried state) vs an
nn.Embedding -> nn.LSTM -> nn.Linear loop with `repackage_hidden` (pytorch/examples word_language_model, full
softmax) with the same AdamW choice. In bf16 both sides run the recurrence in float32 and autocast only the
vocabulary projection (a bf16 recurrence leaves a 2-layer LSTM at the unigram loss).

Each side runs in its own process (lmbench's with the malloc settings the lmbench CLI makes, `lmbench.allocator`;
the plain loops with the interpreter's defaults, as a user's script has them), and the sides are timed in
alternating rounds (lmbench block, plain blocks, ...) on the same step indices, one process running at a time; the
best round of each side is reported (the median too), so load from other processes on this shared machine inflates
neither side's figure. Achieved FLOP/s uses each model's `flops_per_token` (the same formula for both sides) and
is given as a share of this machine's fp32 and bf16 matmul peak, timed here with a large torch.matmul in the same
run, beside the memory copy bandwidth (a 256 MB tensor copy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ACTIVATION, NanoGPT, matmul_flops_per_s, matmul_size  # noqa: E402
from lmbench.training import precision as lmprecision  # noqa: E402
from lmbench.training.runner import build_trainer  # noqa: E402
from lmbench.training.trainer import Trainer  # noqa: E402
from lmbench.data.cache import prepare_data  # noqa: E402
from lmbench.spec import to_spec  # noqa: E402

SIZES = {
    "small": {"num_layers": 4, "num_heads": 4, "d_model": 128, "block_size": 64, "batch_size": 12},
    "medium": {"num_layers": 6, "num_heads": 6, "d_model": 384, "block_size": 256, "batch_size": 16},
}
LSTM = {"d_embed": 200, "d_hidden": 200, "num_layers": 2, "block_size": 35, "batch_size": 20}
PRECISIONS = ("fp32", "bf16")
LR = 1e-3
OPTIMIZERS = ("fused", "foreach")  # torch.optim.AdamW implementations the plain loops try; the faster is the baseline


NOTES = [
    "Notes:",
    "- The plain loops are the code a speed-minded user writes (NanoGPT in scripts/bench/common.py: fused QKV, SDPA",
    "  with is_causal, fused or foreach AdamW). In fp32 both sides run the same kernels (SDPA's flash kernel, the",
    "  same matmuls, one multi-tensor AdamW) and lmbench is at parity.",
    "- Both transformer sides use the exact (erf) GELU, lmbench's default and nanoGPT's `nn.GELU()`",
    "  (common.ACTIVATION; a test checks that the two sides compute the same function). Earlier runs used the tanh",
    "  approximation on both sides, which costs 8.0 ms a layer forward + backward at the 10.7M shape where the",
    "  exact one costs 2.2 (torch's vectorised tanh is slow on this CPU): both sides were 35-40 ms a step slower.",
    "- In bf16 on the CPU, lmbench's transformer computes causal attention as matrix products with a hand-written",
    "  backward (lmbench/models/attention.py) instead of SDPA's CPU flash kernel. torch.profiler on the 10.7M bf16",
    "  step (self time per step, 2 cores): with SDPA (and the tanh GELU), attention took 218 ms of 665 (flash",
    "  backward 151, forward 67; about 80 GFLOP/s). With the matrix products and the exact GELU, in 489 ms (442",
    "  without the profiler): the linear layers 293",
    "  (mm 197, addmm 96; about 720 GFLOP/s, near the bf16 matmul peak), attention about 95 (bmm 48, softmax 17 and",
    "  its backward 15, the baddbmm that adds the causal bias 15), copies 33 (autocast's casts, q/k/v made",
    "  contiguous), GELU and its backward 32, layer norms 9, AdamW 5. Skipping the masked upper half of the scores",
    "  (query blocks against their key prefix only: 3/4 of the products with 2 blocks) was tried and measured no",
    "  faster per layer (11.2 against 11.5 ms), with larger bf16 errors in dk and dv from accumulating blocks, so",
    "  it was not kept. The plain loop runs the same linears, GELU and casts, plus SDPA's flash kernel; the rest of",
    "  the gap to a larger speed-up is the linears, which both sides run near the peak.",
    "- The LSTM's vocabulary projection and loss are fused (`lmbench.training.fused_loss`: cache-sized row chunks,",
    "  no full float32 logits). torch.profiler on the unfused bf16 step gave about 45% of the step to the",
    "  element-wise passes over the (700, 33,278) float32 logits (log-softmax and its backward, the zero-filled",
    "  NLL gradient, casts), more than the projection's matmuls. With the fusion: 1.28x the plain loop in fp32,",
    "  1.97x in bf16, and the same validation perplexity after the same tokens (the quality table).",
    "- lmbench's default gains over plain fp32 come from its precision choice (`auto`: bf16 autocast on a CPU with",
    "  bf16 instructions, from 0.2M parameters for a transformer and 2M for the other families), the attention above",
    "  and, for the LSTM, the fused loss. lmbench processes also serve every block from the heap",
    "  (`lmbench.allocator`), while a plain process maps and faults in its large blocks again at every step.",
]


# ------------------------------------------------------------------------------------------ machine
def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> tuple[float, int]:
    """Best FLOP/s of an n x n x n torch.matmul in `dtype` (the machine's practical matmul peak), and the n used: it
    shrinks where the dtype is too slow for it (common.matmul_size: bf16 on an AVX2-only CPU)."""
    cpu = torch.device("cpu")
    n = matmul_size(dtype, n, cpu)
    return matmul_flops_per_s(dtype, n, cpu, reps=reps), n


def copy_bandwidth(mb: int = 256, reps: int = 5) -> float:
    """Best bytes/s of a `mb` MB tensor copy (read + write counted), the machine's practical memory bandwidth."""
    src = torch.ones(mb * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = max(best, 2 * src.numel() * 4 / (time.perf_counter() - t0))
    return best


def machine() -> dict[str, Any]:
    flags = lmprecision.cpu_flags()
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"cpu": model, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "bf16_flags": sorted(flags & {"amx_bf16", "avx512_bf16"}),
            "loadavg_start": os.getloadavg()}


# ------------------------------------------------------------------------------------------ lmbench side
def transformer_spec(size: dict[str, int], precision: str, data_root: Path, cache: Path) -> dict[str, Any]:
    params = {k: size[k] for k in ("num_layers", "num_heads", "d_model", "block_size")}
    params.update(activation=ACTIVATION, dropout=0.0)
    return {
        "name": "bench", "seed": 0,
        "data": {"source": "text", "path": str(data_root / "tinyshakespeare" / "input.txt"), "unit": "file",
                 "split": "tail", "block_size": size["block_size"], "cache_dir": str(cache)},
        "tokenizer": {"kind": "char"},
        "model": {"family": "transformer", "params": params},
        "train": {"batch_size": size["batch_size"], "max_steps": 10**6, "lr": LR, "mixed_precision": precision},
        "tracking": {"backends": ["none"]},
    }


def lstm_spec(precision: str, data_root: Path, cache: Path) -> dict[str, Any]:
    wt = data_root / "wikitext-2"
    return {
        "name": "bench", "seed": 0,
        "data": {"source": "text", "files": {"train": str(wt / "train.txt"), "validation": str(wt / "valid.txt")},
                 "unit": "line", "block_size": LSTM["block_size"], "cache_dir": str(cache)},
        "tokenizer": {"kind": "word", "params": {"pretokenized": True}},
        "model": {"family": "lstm", "params": {k: LSTM[k] for k in ("d_embed", "d_hidden", "num_layers")}},
        "train": {"batch_size": LSTM["batch_size"], "max_steps": 10**6, "lr": LR, "mixed_precision": precision},
        "tracking": {"backends": ["none"]},
    }


def lmbench_trainer(cfg: dict[str, Any], workdir: Path) -> Trainer:
    return build_trainer(to_spec(cfg), workdir, "bench")


def lmbench_runner(trainer: Trainer) -> Callable[[int], None]:
    """One optimizer step through the runner's own code (Trainer.train_step)."""
    def step(index: int) -> None:
        trainer.train_step(index)
    return step


def same_batches(trainer: Trainer, num_steps: int) -> list[dict[str, torch.Tensor]]:
    """The global batches lmbench trains on at steps 0..num_steps-1, collated, for the plain loops."""
    return [trainer.global_batch(i) for i in range(num_steps)]


# ------------------------------------------------------------------------------------------ plain side
def nanogpt_like(size: dict[str, int], vocab_size: int) -> nn.Module:
    torch.manual_seed(0)
    return NanoGPT(vocab_size, size["num_layers"], size["num_heads"], size["d_model"], size["block_size"])


class PlainLSTM(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, LSTM["d_embed"])
        self.rnn = nn.LSTM(LSTM["d_embed"], LSTM["d_hidden"], LSTM["num_layers"], batch_first=True)
        self.head = nn.Linear(LSTM["d_hidden"], vocab_size)

    def forward(self, ids: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        with torch.autocast(ids.device.type, enabled=False):  # a bf16 recurrence does not train (recurrent.py)
            out, hidden = self.rnn(self.embed(ids).float(), hidden)
        return self.head(out), hidden


def plain_runner(model: nn.Module, batches: list[dict[str, torch.Tensor]], bf16: bool, recurrent: bool,
                 device: torch.device = torch.device("cpu"), optimizer: str = "fused") -> Callable[[int], None]:
    """The plain loop: `torch.optim.AdamW` (`optimizer`: its fused or foreach implementation), clip 1.0, autocast
    for bf16, batches moved to the device once, before timing."""
    model.to(device)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, **{optimizer: True})  # as lmbench's
    model.train()
    box: dict[str, Any] = {"hidden": None}

    def step(index: int) -> None:
        batch = batches[index]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if recurrent:
                logits, hidden = model(batch["input_ids"], box["hidden"])
                box["hidden"] = tuple(h.detach() for h in hidden)  # repackage_hidden
            else:
                logits = model(batch["input_ids"])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


# ------------------------------------------------------------------------------------------ timing
def _sync() -> None:
    """Wait for queued CUDA kernels (no-op on a CPU-only machine) so a timed block includes the device work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def row(name: str, per_step: list[float], tokens_per_step: int, flops_per_token: float, peaks: dict[str, float],
        num_params: int) -> dict[str, Any]:
    best, median = min(per_step), statistics.median(per_step)
    tokens_per_s = tokens_per_step / best
    flops = flops_per_token * tokens_per_s
    return {"name": name, "num_params": num_params, "s_per_step": best, "tokens_per_s": tokens_per_s,
            "median_tokens_per_s": tokens_per_step / median, "flops_per_s": flops,
            "share_fp32_peak": flops / peaks["fp32"], "share_bf16_peak": flops / peaks["bf16"],
            "rounds_s_per_step": per_step}


# ------------------------------------------------------------------------------------------ experiments
SIDES = ("lmbench", *(f"plain-{name}" for name in OPTIMIZERS))


def side_runner(cfg: dict[str, Any]) -> tuple[Callable[[int], None], dict[str, Any], Callable[[], dict[str, float]]]:
    """The step of one side (`cfg["side"]`: lmbench or plain-<optimizer>) of one model and precision (fp32, bf16,
    or lmbench's `auto`), the model's facts, and its validation score (LSTM: `stream_perplexity`). Every side
    takes its batches from lmbench's trainer (the same global batches, in order)."""
    mixed = {"bf16": "bf16", "auto": "auto"}.get(cfg["precision"], "no")
    data, cache, work = Path(cfg["data"]), Path(cfg["cache"]), Path(cfg["work"])
    if cfg["model"].startswith("transformer"):
        size = SIZES[cfg["model"].split("-", 1)[1]]
        spec = transformer_spec(size, mixed, data, cache)
        block, tokens = size["block_size"], size["batch_size"] * size["block_size"]
    else:
        spec = lstm_spec(mixed, data, cache)
        block, tokens = LSTM["block_size"], LSTM["batch_size"] * LSTM["block_size"]
    trainer = lmbench_trainer(spec, work)
    prepared = prepare_data(to_spec(spec), progress=False)  # the cache the trainer made
    validation, eos_id = prepared.splits.get("validation"), prepared.tokenizer.eos_id
    model = trainer.model
    vocab = model.vocab_size
    facts = {"num_params": model.num_params(), "flops_per_token": model.flops_per_token(block),
             "tokens_per_step": tokens, "vocab_size": vocab}
    if cfg["side"] == "lmbench":
        return lmbench_runner(trainer), facts, lambda: stream_perplexity(
            lambda ids, state: model.forward_with_state(ids, state), validation, eos_id)
    batches, device = same_batches(trainer, cfg["total"]), trainer.acc.device
    del trainer, model
    if cfg["model"].startswith("transformer"):
        plain = nanogpt_like(size, vocab)
        assert sum(p.numel() for p in plain.parameters()) == facts["num_params"]
    else:
        torch.manual_seed(0)
        plain = PlainLSTM(vocab)
    step = plain_runner(plain, batches, cfg["precision"] == "bf16", not cfg["model"].startswith("transformer"),
                        device, cfg["side"].split("-", 1)[1])
    return step, facts, lambda: stream_perplexity(plain, validation, eos_id)


@torch.no_grad()
def stream_perplexity(forward: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]], split: Any, eos_id: int,
                      lanes: int = 10) -> dict[str, float]:
    """word_language_model's evaluate: the validation stream (documents + EOS) in `lanes` rows, bptt windows with
    the state carried, float32; exp(total NLL / targets) over every target."""
    from lmbench.data.batching import PackedDataset

    packed = PackedDataset(split, LSTM["block_size"], eos_id)
    stream = torch.from_numpy(packed.stream(0, packed.stream_length))
    width = (len(stream) - 1) // lanes
    inputs, targets = stream[:lanes * width].view(lanes, width), stream[1:lanes * width + 1].view(lanes, width)
    state, nll = None, 0.0
    for start in range(0, width, LSTM["block_size"]):
        ids = inputs[:, start:start + LSTM["block_size"]]
        logits, state = forward(ids, state)
        nll += float(F.cross_entropy(logits.flatten(0, 1).float(), targets[:, start:start + ids.size(1)].flatten(),
                                     reduction="sum"))
    return {"val_loss": nll / targets.numel(), "val_ppl": math.exp(nll / targets.numel()), "targets": targets.numel()}


def serve_side(cfg: dict[str, Any]) -> None:
    """A side's own process: lmbench's side sets the allocator the lmbench CLI sets (`keep_freed_memory`), the
    plain loops keep the interpreter's defaults, as a user's own script does. Warm up, report the model's facts,
    then time each "first steps" line read from stdin."""
    if cfg["side"] == "lmbench":
        from lmbench.allocator import keep_freed_memory

        keep_freed_memory()
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    run, facts, score = side_runner(cfg)
    for i in range(cfg["warmup"]):
        run(i)
    _sync()
    print(MARK + json.dumps(facts), flush=True)
    for line in sys.stdin:
        if line.strip() == "score":
            print(MARK + json.dumps(score()), flush=True)
            continue
        first, steps = map(int, line.split())
        t0 = time.perf_counter()
        for i in range(first, first + steps):
            run(i)
        _sync()
        print(MARK + json.dumps({"s_per_step": (time.perf_counter() - t0) / steps}), flush=True)


MARK = "@@side "


class SideProcess:
    """One side in its own process (`serve_side`): started with its config, then asked line by line."""

    def __init__(self, args: argparse.Namespace, work: Path, **cfg: Any) -> None:
        cfg = {"data": str(args.data), "cache": str(args.cache), "threads": getattr(args, "threads", None),
               "work": str(work / f"{cfg['model']}-{cfg['precision']}-{cfg['side']}"), **cfg}
        self.proc = subprocess.Popen([sys.executable, __file__, "--side", json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.facts = self._reply()  # sent once the side has warmed up

    def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise RuntimeError(f"a side's process ended (exit code {self.proc.wait()}); its error is above")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def timed_sides(model: str, precision: str, args: argparse.Namespace, steps: int, work: Path
                ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per step of each side, per round: one process per side, each holding its model and optimizer
    state; the rounds alternate between them on the same step indices, one process running at a time."""
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    with contextlib.ExitStack() as stack:
        procs = {}
        for side in SIDES:  # started one after another: each warms up alone
            procs[side] = SideProcess(args, work, model=model, precision=precision, side=side, warmup=args.warmup,
                                      total=args.warmup + steps * args.rounds)
            stack.callback(procs[side].close)
        for r in range(args.rounds):
            for side, proc in procs.items():
                seconds[side].append(proc.ask(f"{args.warmup + r * steps} {steps}")["s_per_step"])
    return seconds, procs[SIDES[0]].facts


def bench_transformer(size_name: str, args: argparse.Namespace, peaks: dict[str, float], work: Path) -> list[dict]:
    steps = args.medium_steps if size_name == "medium" else args.steps
    rows: list[dict] = []
    for precision in args.precisions:
        secs, facts = timed_sides(f"transformer-{size_name}", precision, args, steps, work)
        for side in SIDES:
            rows.append({"model": f"transformer-{size_name}", "precision": precision, "side": side,
                         **row(side, secs[side], facts["tokens_per_step"], facts["flops_per_token"], peaks,
                               facts["num_params"])})
    return rows


def bench_lstm(args: argparse.Namespace, peaks: dict[str, float], work: Path) -> list[dict]:
    rows: list[dict] = []
    for precision in args.precisions:
        secs, facts = timed_sides("lstm-2x200", precision, args, args.steps, work)
        for side in SIDES:
            rows.append({"model": "lstm-2x200", "precision": precision, "side": side,
                         "vocab_size": facts["vocab_size"],
                         **row(side, secs[side], facts["tokens_per_step"], facts["flops_per_token"], peaks,
                               facts["num_params"])})
    return rows


def lstm_quality(args: argparse.Namespace, work: Path) -> list[dict]:
    """Validation perplexity after the same tokens: lmbench's default (`mixed_precision: auto`) and the plain fp32
    loop (fused AdamW) each train a fresh LSTM for `args.quality_steps` steps on the same batches, in their own
    processes, then score the whole validation stream the same way (`stream_perplexity`, float32)."""
    rows = []
    for label, side, precision in (("lmbench default", "lmbench", "auto"), ("plain fp32", "plain-fused", "fp32")):
        proc = SideProcess(args, work / "quality", model="lstm-2x200", precision=precision, side=side, warmup=0,
                           total=args.quality_steps)
        try:
            train = proc.ask(f"0 {args.quality_steps}")
            rows.append({"side": label, "precision": precision, "steps": args.quality_steps,
                         "tokens": args.quality_steps * LSTM["batch_size"] * LSTM["block_size"],
                         "train_s": train["s_per_step"] * args.quality_steps, **proc.ask("score")})
        finally:
            proc.close()
    return rows


def auto_precision(num_params: int, model: str) -> str:
    family = "transformer" if model.startswith("transformer") else "lstm"
    return "bf16" if lmprecision.resolve_mixed_precision("auto", num_params, "cpu", family=family)[0] == "bf16" \
        else "fp32"


GOALS = {  # issue 15: (comparison, at least) per model
    "transformer-medium": [("lmbench default / plain fastest", 1.4), ("lmbench default / plain fp32", 2.0)],
    "transformer-small": [("lmbench default / plain fp32", 1.5)],
    "lstm-2x200": [("lmbench default / plain fp32", 2.0), ("lmbench default / plain bf16", 1.3)],
}


def best_plain(rows: list[dict], model: str, precision: str) -> dict | None:
    """The faster AdamW implementation of the plain loop at `precision` (the baseline)."""
    plain = [r for r in rows if r["model"] == model and r["precision"] == precision and r["side"].startswith("plain")]
    return max(plain, key=lambda r: r["tokens_per_s"]) if plain else None


def summarise(rows: list[dict]) -> list[dict]:
    """Speed-ups against the plain loop's faster optimizer: lmbench / plain at the same precision; lmbench default
    (auto) / plain fp32, / plain bf16 and / plain at its fastest precision; with the issue's goal where it has
    one."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["precision"]: r for r in rows if r["model"] == model and r["side"] == "lmbench"}
        plain = {p: best_plain(rows, model, p) for p in mine}
        plain = {p: r for p, r in plain.items() if r is not None}
        comparisons = [(f"lmbench {p} / plain {p}", mine[p], plain[p]) for p in mine if p in plain]
        default = auto_precision(next(iter(mine.values()))["num_params"], model) if mine else None
        if default in mine:
            comparisons += [(f"lmbench default / plain {p}", mine[default], plain[p]) for p in plain]
            if plain:
                fastest = max(plain.values(), key=lambda r: r["tokens_per_s"])
                comparisons.append(("lmbench default / plain fastest", mine[default], fastest))
        goals = dict(GOALS.get(model, []))
        for name, a, b in comparisons:
            out.append({"model": model, "comparison": name, "speedup": a["tokens_per_s"] / b["tokens_per_s"],
                        "detail": f"lmbench {a['precision']} / {b['side']} {b['precision']}",
                        "goal": goals.get(name)})
    return out


def markdown(result: dict[str, Any]) -> str:
    m, peaks = result["machine"], result["peaks"]
    lines = ["# Training throughput: lmbench vs plain PyTorch loops", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads, "
             f"bf16 CPU flags: {', '.join(m['bf16_flags']) or 'none'}; "
             f"load average at start {m['loadavg_start'][0]:.2f}, "
             f"at end {result['loadavg_end'][0]:.2f}.",
             f"Measured in the same run: matmul peak (torch.matmul) fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s "
             f"({peaks.get('n_fp32', 2048)}^3), bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s ({peaks.get('n_bf16', 2048)}^3); "
             f"memory copy bandwidth {peaks['copy_bytes'] / 1e9:.1f} GB/s "
             "(256 MB tensor copy, read + write).",
             f"Steps: {result['args']['warmup']} warm-up, then {result['args']['rounds']} alternating rounds of "
             f"{result['args']['steps']} steps per side (medium: {result['args']['medium_steps']}); best round "
             "(median in brackets).", "",
             "| model | params | precision | side | tokens/s (median) | ms/step | GFLOP/s | % fp32 peak | % bf16 peak |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['num_params'] / 1e6:.2f}M | {r['precision']} | {r['side']} | "
                     f"{r['tokens_per_s']:,.0f} ({r['median_tokens_per_s']:,.0f}) | {1000 * r['s_per_step']:.1f} | "
                     f"{r['flops_per_s'] / 1e9:.2f} | {100 * r['share_fp32_peak']:.1f} | "
                     f"{100 * r['share_bf16_peak']:.1f} |")
    least = lmprecision.MIN_PARAMS_FOR_BF16_BY_FAMILY["transformer"] / 1e6, lmprecision.MIN_PARAMS_FOR_BF16 / 1e6
    lines += ["", f"lmbench default = `mixed_precision: auto` (on a CPU with bf16: bf16 from {least[0]:g}M parameters "
              f"for a transformer, from {least[1]:g}M for the other families; else fp32); "
              "plain = the faster of its AdamW implementations at that precision.", "",
              "| model | comparison | sides | speed-up | goal (issue 15) |", "|---|---|---|---:|---|"]
    for s in result["speedups"]:
        goal = "" if s.get("goal") is None else f">= {s['goal']}x: {'met' if s['speedup'] >= s['goal'] else '**not met**'}"
        lines.append(f"| {s['model']} | {s['comparison']} | {s.get('detail', '')} | {s['speedup']:.2f}x | {goal} |")
    if result.get("quality"):
        q = {r["side"]: r for r in result["quality"]}
        lines += ["", f"LSTM 2x200 quality after the same tokens ({result['quality'][0]['tokens']:,} training tokens, "
                  f"{result['quality'][0]['steps']} steps from a fresh model, same batches; validation perplexity "
                  "of the whole WikiText-2 validation stream, float32, state carried, as word_language_model's "
                  "evaluate):", "", "| side | precision | train s | validation loss | validation perplexity |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['side']} | {r['precision']} | {r['train_s']:.1f} | {r['val_loss']:.4f} | {r['val_ppl']:.2f} |"
                  for r in result["quality"]]
        if {"lmbench default", "plain fp32"} <= q.keys():
            gap = q["lmbench default"]["val_ppl"] / q["plain fp32"]["val_ppl"] - 1
            lines += ["", f"lmbench default / plain fp32 perplexity: {gap:+.2%} (goal within 2%: "
                          f"{'met' if abs(gap) <= 0.02 else '**not met**'})."]
    lines += ["", *NOTES, ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps per side and round")
    p.add_argument("--medium-steps", type=int, default=3, help="timed steps per round at the 10.7M size")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (best and median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--sizes", default="small,medium", help="comma-separated subset of: small, medium")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--no-lstm", action="store_true")
    p.add_argument("--no-transformer", action="store_true")
    p.add_argument("--quality-steps", type=int, default=300,
                   help="LSTM steps of the same-tokens perplexity comparison (0: skip it)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder")
    p.add_argument("--cache", type=Path, default=REPO / "results" / "cache", help="token cache folder")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "train_throughput",
                   help="output path without suffix (.md and .json are written)")
    args = p.parse_args(argv)
    args.precisions = [x for x in args.precisions.split(",") if x]
    args.sizes = [x for x in args.sizes.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--side"]:
        serve_side(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.threads:
        torch.set_num_threads(args.threads)
    (fp32, n_fp32), (bf16, n_bf16) = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    peaks = {"fp32": fp32, "bf16": bf16, "n_fp32": n_fp32, "n_bf16": n_bf16, "copy_bytes": copy_bandwidth()}
    info = machine()
    rows: list[dict] = []
    quality: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_transformer:
            for size in args.sizes:
                rows += bench_transformer(size, args, peaks, Path(tmp))
        if not args.no_lstm:
            rows += bench_lstm(args, peaks, Path(tmp))
            quality = lstm_quality(args, Path(tmp)) if args.quality_steps else []
    result = {"command": " ".join(["python", "scripts/bench/train_throughput.py", *(argv or sys.argv[1:])]),
              "machine": info, "peaks": peaks, "loadavg_end": os.getloadavg(),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "rows": rows, "speedups": summarise(rows), "quality": quality}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
