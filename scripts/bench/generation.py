"""Generation benchmark: lmbench's decoding against transformers' `generate`, with the machine's limits.

For each model shape (GPT-2 shaped, vocabulary 50,257: `30M` = 6 layers d_model 384, `16M` = 4 layers d_model 256),
strategy (greedy, top-p 0.9, beam search with 5 beams) and batch (1 and 16), every implementation runs with the
same weights (a random lmbench `transformer` copied into a `GPT2LMHeadModel`), in the same dtype, at torch's
default number of threads, in interleaved rounds (the best round of each counts):

- `lmbench`              lmbench.sampling.generate on the lmbench transformer (its KV cache, oneDNN-packed linears
                         on the CPU, the nucleus from candidates)
- `lmbench-bf16`         the same under CPU/GPU autocast to bf16: what `sample.dtype: bf16` does (not by default;
                         its greedy ids are compared with lmbench's in the run's dtype: the agreement rate)
- `lmbench-hf`           lmbench.sampling.generate on the GPT-2 copy through the `hf` family (transformers' cache)
- `transformers`         GPT2LMHeadModel.generate (use_cache=True, its default dynamic cache)
- `transformers-static`  the same with cache_implementation="static" (a preallocated cache)
- `recompute`            the notebooks' loop: the whole prefix re-read for every new token. Its time is *estimated*
                         by default: forward passes at a few prefix lengths are timed and summed over all steps
                         (`--recompute full` runs the loop).

The baseline of a cell is the faster of the two transformers setups. The goal (#15): lmbench >= 2x it, or, where
2x would be above the machine's limit, >= 85% of that limit. The limit of a step is the larger of (bytes read:
every weight once, the head's embedding table included, plus the KV cache) / the measured read bandwidth and
(FLOPs) / the measured matmul peak in the run's dtype; the peaks are measured in the same run.

Random weights give near-uniform next-token distributions (entropy ~ ln 50,257 = 10.8 nats), unlike a trained
model's, which makes the nucleus nearly the whole vocabulary. So the blocks' output projections are drawn with std
0.2 (the last hidden state is then the blocks' output, not the input token's own embedding, which the tied head
would pick every time) and the final LayerNorm's gain makes the logits' std `--logit-std` (default 4: ~4.6 nats,
a nucleus of ~350 tokens at p = 0.9, flatter than a trained GPT-2 on text); the report states the measured
entropy and nucleus size. `--logit-std 0` keeps the usual init.

tokens/s = batch x new tokens / wall time (beam search: the best hypothesis per prompt counts). EOS is disabled so
every run makes exactly --new-tokens tokens.

    python scripts/bench/generation.py                                  # writes results/bench/generation.{md,json}
    python scripts/bench/generation.py --d-model 64 --num-layers 2 --vocab-size 512 --new-tokens 16 --out /tmp/g
    python scripts/bench/generation.py --device cuda --dtype bf16 --impls lmbench transformers --out /tmp/g-bf16

On a GPU the timings wait for the device (torch.cuda.synchronize), and both models are cast to --dtype.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/bench: common
import common  # noqa: E402  (puts this checkout's lmbench first on sys.path)
from lmbench.models.base import LanguageModel  # noqa: E402
from lmbench.models.hf import Config as HFConfig  # noqa: E402
from lmbench.models.hf import HFCausalLM  # noqa: E402
from lmbench.models.transformer import Config as TConfig  # noqa: E402
from lmbench.models.transformer import TransformerLM  # noqa: E402
from lmbench.sampling import generate  # noqa: E402
from lmbench.sampling.packed import available as packed_available, supports as packed_supports  # noqa: E402
from lmbench.sampling.search import decode_precision  # noqa: E402
from lmbench.spec import SamplerSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STRATEGIES: dict[str, SamplerSpec] = {
    "greedy": SamplerSpec(kind="greedy"),
    "top_p": SamplerSpec(kind="sample", top_p=0.9),
    "beam5": SamplerSpec(kind="beam", num_beams=5),
}
IMPLS = ("lmbench", "lmbench-bf16", "lmbench-hf", "transformers", "transformers-static", "recompute")
DEFAULT_IMPLS = ("lmbench", "transformers", "transformers-static", "recompute")
BASELINES = ("transformers", "transformers-static")
SHAPES: dict[str, dict[str, int]] = {"30M": {"num_layers": 6, "d_model": 384, "num_heads": 6},
                                     "16M": {"num_layers": 4, "d_model": 256, "num_heads": 4}}
GOAL, LIMIT_SHARE = 2.0, 0.85
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------------- models

def gpt2_from_transformer(model: TransformerLM) -> HFCausalLM:
    """A GPT2LMHeadModel (inside the lmbench `hf` family) computing exactly what `model` computes.

    Needs the GPT-2 layout: pre-norm, learned positions, biases, tied embeddings, tanh-GELU. GPT-2's Conv1D
    stores (in, out) weights, hence the transposes; the fused qkv layout (q, k, v blocks) is the same.
    """
    c = model.config
    if (c.norm, c.positions, c.activation, c.bias, c.tie_embeddings) != ("pre", "learned", "gelu_tanh", True, True):
        raise ValueError("only a GPT-2 shaped transformer (pre-norm, learned, gelu_tanh, bias, tied) can be copied")
    hf_cfg = {"n_layer": c.num_layers, "n_head": c.num_heads, "n_embd": c.d_model, "n_positions": c.block_size,
              "n_inner": c.d_ff, "activation_function": "gelu_pytorch_tanh", "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0, "layer_norm_epsilon": 1e-5, "bos_token_id": None, "eos_token_id": None}
    hf = HFCausalLM(HFConfig(from_config=True, model_type="gpt2", config=hf_cfg), model.vocab_size, model.pad_id)
    g = hf.model.transformer
    with torch.no_grad():
        g.wte.weight.copy_(model.tok_emb.weight)
        g.wpe.weight.copy_(model.pos_emb.weight)
        for block, h in zip(model.blocks, g.h):
            pairs = [(h.ln_1, block.ln1, False), (h.attn.c_attn, block.attn.qkv, True),
                     (h.attn.c_proj, block.attn.out, True), (h.ln_2, block.ln2, False),
                     (h.mlp.c_fc, block.mlp.fc, True), (h.mlp.c_proj, block.mlp.proj, True)]
            for dst, src, transpose in pairs:
                dst.weight.copy_(src.weight.T if transpose else src.weight)
                dst.bias.copy_(src.bias)
        g.ln_f.weight.copy_(model.ln_f.weight)
        g.ln_f.bias.copy_(model.ln_f.bias)
    hf.model.generation_config.eos_token_id = None
    hf.model.generation_config.bos_token_id = None
    return hf.eval()


@dataclass
class PrefixState:
    """Everything read so far; `reorder` picks rows (beams)."""

    ids: Tensor
    mask: Tensor | None

    def reorder(self, index: Tensor, reuse: bool = False) -> "PrefixState":
        return PrefixState(self.ids.index_select(0, index),
                           None if self.mask is None else self.mask.index_select(0, index))


class RecomputeLM(LanguageModel):
    """The notebooks' decoding: every step runs forward() on the whole prefix (no cache)."""

    Config = dict

    def __init__(self, inner: LanguageModel) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.inner(input_ids, attention_mask)

    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> PrefixState:
        return PrefixState(torch.zeros(batch_size, 0, dtype=torch.long, device=device), None)

    def step(self, input_ids: Tensor, state: PrefixState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, PrefixState]:
        ids = torch.cat([state.ids, input_ids], dim=1)
        logits = self.inner(ids, attention_mask)  # (B, T, V): the whole prefix again
        return logits[:, -(logits_to_keep or input_ids.size(1)):], PrefixState(ids, attention_mask)

    def flops_per_token(self, seq_len: int) -> float:
        return self.inner.flops_per_token(seq_len)


@dataclass
class Shape:
    name: str
    num_layers: int
    d_model: int
    num_heads: int


def shapes_from(args: argparse.Namespace) -> list[Shape]:
    """The named shapes, or one `custom` shape when any of --num-layers/--d-model/--num-heads is given."""
    custom = (args.num_layers, args.d_model, args.num_heads)
    if any(v is not None for v in custom):
        layers, d_model, heads = (v if v is not None else d for v, d in zip(custom, (4, 256, 4)))
        return [Shape("custom", layers, d_model, heads)]
    return [Shape(name, **SHAPES[name]) for name in args.shapes]


def build_models(shape: Shape, args: argparse.Namespace) -> tuple[TransformerLM, HFCausalLM]:
    torch.manual_seed(args.seed)
    block_size = args.prompt_len + args.new_tokens
    cfg = TConfig(num_layers=shape.num_layers, num_heads=shape.num_heads, d_model=shape.d_model,
                  block_size=block_size, activation="gelu_tanh")
    model = TransformerLM(cfg, vocab_size=args.vocab_size, pad_id=0).eval()
    if args.logit_std > 0:
        with torch.no_grad():
            for block in model.blocks:  # the blocks, not the input token's own embedding, dominate the last state
                block.attn.out.weight.normal_(0.0, 0.2)
                block.mlp.proj.weight.normal_(0.0, 0.2)
            # logits = (gain x LayerNorm(h)) . embedding: d_model unit-variance terms times the embedding's std
            model.ln_f.weight.fill_(args.logit_std / (model.tok_emb.weight.std().item() * math.sqrt(shape.d_model)))
    hf = gpt2_from_transformer(model)  # copied in fp32 on the CPU, then both cast and moved alike
    dtype = DTYPES[args.dtype]
    return model.to(args.device, dtype), hf.to(args.device, dtype)


def sync() -> None:
    """Wait for queued CUDA kernels (a no-op without CUDA): generate() may return before the device is done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def distribution(lm: TransformerLM, prompts: Tensor, p: float = 0.9) -> dict[str, float]:
    """Mean entropy (nats) and nucleus size (top-p) of the next-token distributions over the prompts' positions."""
    with torch.inference_mode():
        logp = torch.log_softmax(lm(prompts).float(), dim=-1).flatten(0, 1)  # (B*P, V)
    probs = logp.exp()
    entropy = -(probs * logp).sum(-1)
    nucleus = (probs.sort(dim=-1, descending=True).values.cumsum(-1) < p).sum(-1) + 1
    return {"entropy_nats": float(entropy.mean()), "nucleus_tokens": float(nucleus.float().mean()), "top_p": p}


# ----------------------------------------------------------------------------------------------- limits

def machine_peaks(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Read and copy bandwidth (bytes/s) and the matmul peak (FLOP/s) in the run's dtype, at the run's threads.

    On the CPU the peak is the larger of torch.matmul (MKL for fp32) and oneDNN's linear on a reordered weight
    (what lmbench decodes with): on AMD CPUs MKL's fp32 sgemm takes an AVX2 path at about half of what oneDNN
    reaches (2-core EPYC: 168 against 414 GFLOP/s)."""
    n = common.matmul_size(dtype, 2048 if device.type == "cpu" else 8192, device)  # bf16 on an AVX2 CPU: smaller
    peaks = {"read_bytes_per_s": common.read_bytes_per_s(256 * 2**20, device),
             "copy_bytes_per_s": common.copy_bytes_per_s(256 * 2**20, device),
             "torch_matmul_flops_per_s": common.matmul_flops_per_s(dtype, n, device, reps=5)}
    peaks["onednn_flops_per_s"] = onednn_flops_per_s(dtype) if device.type == "cpu" and packed_available() else 0.0
    peaks["matmul_flops_per_s"] = max(peaks["torch_matmul_flops_per_s"], peaks["onednn_flops_per_s"])
    return peaks


def onednn_flops_per_s(dtype: torch.dtype, rows: int = 256, n: int = 4096, reps: int = 5) -> float:
    """Best FLOP/s of oneDNN's linear (rows x n) @ (n x n) on a weight reordered once, in `dtype`."""
    if dtype not in (torch.float32, torch.bfloat16) or not packed_supports(dtype):
        return 0.0  # lmbench does not pack this dtype here (bf16 on an AVX2-only CPU)
    weight, x = torch.randn(n, n).to(dtype), torch.randn(rows, n).to(dtype)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    run = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")  # noqa: E731
    run()
    return 2 * rows * n * n / min(common.timed_s(run, torch.device("cpu")) for _ in range(reps))


def step_limit(lm: TransformerLM, rows: int, context: int, elsize: int, peaks: dict[str, float]) -> dict[str, float]:
    """The fastest one decoding step of `rows` sequences with `context` cached positions could be: every weight
    read once (the tied embedding table as the head; the position table is only indexed), the K/V cache read, at
    the measured read bandwidth; or the step's FLOPs at the matmul peak, whichever takes longer."""
    c = lm.config
    weights = sum(p.numel() for n, p in lm.named_parameters() if n != "pos_emb.weight")
    kv = 2 * c.num_layers * rows * context * c.d_model
    num_bytes = (weights + kv) * elsize
    flops = rows * lm.flops_per_token(context) / 3  # flops_per_token counts forward + backward (3x forward)
    seconds = max(num_bytes / peaks["read_bytes_per_s"], flops / peaks["matmul_flops_per_s"])
    return {"bytes_per_step": num_bytes, "flops_per_step": flops, "limit_s_per_step": seconds,
            "bound": "memory" if num_bytes / peaks["read_bytes_per_s"] >= flops / peaks["matmul_flops_per_s"]
            else "compute"}


# ----------------------------------------------------------------------------------------------- runners

def transformers_kwargs(s: SamplerSpec) -> dict[str, Any]:
    if s.kind == "greedy":
        return {"do_sample": False}
    if s.kind == "sample":
        return {"do_sample": True, "top_p": s.top_p, "top_k": 0}
    return {"do_sample": False, "num_beams": s.num_beams, "early_stopping": s.early_stopping,
            "length_penalty": s.length_penalty}


def runner(impl: str, lm: TransformerLM, hf: HFCausalLM, s: SamplerSpec, prompts: Tensor,
           new_tokens: int) -> Callable[[], int]:
    """A zero-argument function doing one full generation; returns the number of new tokens per prompt."""
    prompt_lists = prompts.tolist()
    if impl in ("lmbench", "lmbench-bf16", "lmbench-hf", "recompute"):
        model = {"lmbench": lm, "lmbench-bf16": lm, "lmbench-hf": hf, "recompute": RecomputeLM(lm)}[impl]

        def run() -> int:
            with decode_precision("bf16" if impl == "lmbench-bf16" else "auto", prompts.device.type):
                out = generate(model, prompt_lists, s, max_new_tokens=new_tokens, eos_id=None, pad_id=0, seed=0)
            return min(len(h) for o in out for h in o)

        return run
    extra = {"cache_implementation": "static"} if impl == "transformers-static" else {}

    def run_hf() -> int:
        torch.manual_seed(0)
        with torch.inference_mode():
            out = hf.model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), use_cache=True,
                                    max_new_tokens=new_tokens, pad_token_id=0, **transformers_kwargs(s), **extra)
        return out.size(1) - prompts.size(1)

    return run_hf


def estimate_recompute_s(lm: TransformerLM, rows: int, prompt_len: int, new_tokens: int, points: int,
                         max_rows: int = 16) -> float:
    """Seconds the recompute loop would take: forward (rows, L) timed (best of 2) at `points` prefix lengths L,
    linearly interpolated and summed over the prefill (L = prompt_len) and every later step (L = prompt_len + t).
    The loop's own per-step work (filters, sampling) is left out, so the estimate flatters the recompute loop.
    More than `max_rows` rows are timed on `max_rows` rows and scaled (the cost is linear in the rows; this
    bounds the (rows, L, V) logits in memory)."""
    lengths = sorted({int(x) for x in torch.linspace(prompt_len, prompt_len + new_tokens - 1, points).tolist()})
    seconds = []
    with torch.inference_mode():
        for length in lengths:
            ids = torch.randint(0, lm.vocab_size, (min(rows, max_rows), length), device=lm.tok_emb.weight.device)
            lm(ids)  # warm-up at this shape
            best = float("inf")
            for _ in range(2):
                sync()
                started = time.perf_counter()
                lm(ids)
                sync()
                best = min(best, time.perf_counter() - started)
            seconds.append(best * rows / ids.size(0))
    all_lengths = torch.arange(prompt_len, prompt_len + new_tokens, dtype=torch.float64)
    return float(_interp(all_lengths, torch.tensor(lengths, dtype=torch.float64),
                         torch.tensor(seconds, dtype=torch.float64)).sum())


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    if len(xp) == 1:
        return fp.expand_as(x)
    index = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[index - 1], xp[index], fp[index - 1], fp[index]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """Wall seconds of one run (the device waited for) and the tokens it made per prompt."""
    sync()
    started = time.perf_counter()
    made = run()
    sync()
    return time.perf_counter() - started, made


# ----------------------------------------------------------------------------------------------- measuring

def check_same_outputs(lm: TransformerLM, hf: HFCausalLM, vocab_size: int) -> dict[str, bool]:
    """Greedy, beam and seeded top-p ids of lmbench (both models) and transformers agree on a short run."""
    prompts = torch.randint(0, vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    prompts = prompts.to(lm.tok_emb.weight.device)
    agree = {}
    for name, s in STRATEGIES.items():
        ours = generate(lm, prompts.tolist(), s, max_new_tokens=12, eos_id=None, pad_id=0, seed=0)
        via_hf = generate(hf, prompts.tolist(), s, max_new_tokens=12, eos_id=None, pad_id=0, seed=0)
        ref = [[r] for r in runner_ids(hf, s, prompts, 12)]
        agree[name] = ours == via_hf == ref
    return agree


def runner_ids(hf: HFCausalLM, s: SamplerSpec, prompts: Tensor, new_tokens: int) -> list[list[int]]:
    """transformers' new ids per prompt (sampling seeded as lmbench's seed 0 replays it)."""
    torch.manual_seed(0)
    with torch.inference_mode():
        out = hf.model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                                pad_token_id=0, **transformers_kwargs(s))
    return out[:, prompts.size(1):].tolist()


def full_length_agreement(lm: TransformerLM, hf: HFCausalLM, prompts: Tensor, new_tokens: int,
                          strategy: str = "greedy") -> dict[str, Any]:
    """Greedy (or beam search's best) ids of lmbench and GPT2LMHeadModel.generate over the benchmark's whole
    length: equal, and the first position where a row differs (None when equal)."""
    s = STRATEGIES[strategy]
    ours = torch.tensor([o[0] for o in generate(lm, prompts.tolist(), s, max_new_tokens=new_tokens, eos_id=None,
                                                pad_id=0)])
    ref = torch.tensor(runner_ids(hf, s, prompts, new_tokens))
    differ = (ours != ref).any(dim=0).nonzero()
    out = {"equal": bool(differ.numel() == 0), "first_mismatch": int(differ[0]) if differ.numel() else None,
           "rows_differing": int((ours != ref).any(dim=1).sum()), "new_tokens": new_tokens}
    if differ.numel() and strategy == "greedy":  # how close to a tie the two picks were there (a rounding-level
        # gap = a tie broken apart)
        t = int(differ[0])
        row = int((ours[:, t] != ref[:, t]).nonzero()[0])
        prefix = torch.cat([prompts[row].cpu(), ref[row, :t]]).unsqueeze(0).to(prompts.device)
        with torch.inference_mode():
            logits = hf.model(input_ids=prefix).logits[0, -1].float()
        out["logit_gap_at_mismatch"] = float(logits[ref[row, t]] - logits[ours[row, t]])
    return out


def measure_cell(lm: TransformerLM, hf: HFCausalLM, name: str, prompts: Tensor, args: argparse.Namespace,
                 peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One (strategy, batch): every implementation, rounds interleaved (A, B, C, A, B, C, ...) so that a change
    in background load hits all of them alike; the best round of each counts."""
    s, batch = STRATEGIES[name], prompts.size(0)
    seconds: dict[str, list[float]] = {}
    how = {impl: "measured" for impl in args.impls}
    measured = [i for i in args.impls if not (i == "recompute" and args.recompute == "estimate")]
    if len(measured) < len(args.impls):
        seconds["recompute"] = [estimate_recompute_s(lm, batch * s.num_beams, args.prompt_len, args.new_tokens,
                                                     args.estimate_points)]
        how["recompute"] = "estimated"
    for impl in measured:
        runner(impl, lm, hf, s, prompts, 4)()  # warm-up
    for _ in range(args.repeats):
        for impl in measured:
            wall, made = timed(runner(impl, lm, hf, s, prompts, args.new_tokens))
            if made != args.new_tokens:
                raise RuntimeError(f"{impl} {name} made {made} tokens, expected {args.new_tokens}")
            seconds.setdefault(impl, []).append(wall)
    rows = batch * s.num_beams
    limit = step_limit(lm, rows, args.prompt_len + args.new_tokens // 2, torch.finfo(DTYPES[args.dtype]).bits // 8,
                       peaks)
    limit_tokens_per_s = batch / limit["limit_s_per_step"]
    return [{"strategy": name, "batch": batch, "impl": impl, "seconds": min(seconds[impl]),
             "rounds_s": seconds[impl], "tokens_per_s": batch * args.new_tokens / min(seconds[impl]),
             "how": how[impl], "limit_tokens_per_s": limit_tokens_per_s, **limit} for impl in args.impls]


def verdict(cell: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """lmbench against the faster transformers setup of one cell, and whether the goal is met."""
    ours = cell["lmbench"]["tokens_per_s"]
    bases = [cell[b]["tokens_per_s"] for b in BASELINES if b in cell]
    limit = cell["lmbench"]["limit_tokens_per_s"]
    if not bases:
        return {"speedup": None, "share_of_limit": ours / limit, "met": None}
    base = max(bases)
    above_limit = GOAL * base > limit
    met = ours >= LIMIT_SHARE * limit if above_limit else ours >= GOAL * base
    return {"baseline_tokens_per_s": base, "speedup": ours / base, "share_of_limit": ours / limit,
            "goal": f">= {LIMIT_SHARE:.0%} of the limit" if above_limit else f">= {GOAL:g}x", "met": met}


def measure_shape(shape: Shape, args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, Any]:
    lm, hf = build_models(shape, args)
    results: list[dict[str, Any]] = []
    agreement: list[dict[str, Any]] = []
    beam_agreement: list[dict[str, Any]] = []
    bf16_agreement: list[dict[str, Any]] = []
    first = torch.randint(1, args.vocab_size, (16, args.prompt_len), generator=torch.Generator().manual_seed(0))
    for batch in args.batch_sizes:
        prompts = torch.randint(1, args.vocab_size, (batch, args.prompt_len),
                                generator=torch.Generator().manual_seed(0)).to(args.device)
        for name in args.strategies:
            rows = measure_cell(lm, hf, name, prompts, args, peaks)
            results += rows
            for r in rows:
                print(f"{shape.name} {name:7s} batch {batch:3d} {r['impl']:19s} {r['tokens_per_s']:10.1f} tokens/s "
                      f"({r['seconds']:.2f} s, {r['how']}; limit {r['limit_tokens_per_s']:.0f})", flush=True)
        agreement.append({"batch": batch, **full_length_agreement(lm, hf, prompts, args.new_tokens)})
        if "beam5" in args.strategies:
            beam_agreement.append({"batch": batch, **full_length_agreement(lm, hf, prompts, args.new_tokens, "beam5")})
        if "lmbench-bf16" in args.impls:
            bf16_agreement.append({"batch": batch, **bf16_greedy_agreement(lm, prompts, args.new_tokens)})
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for r in results:
        cells.setdefault((r["strategy"], r["batch"]), {})[r["impl"]] = r
    verdicts = [{"strategy": k[0], "batch": k[1], **verdict(v)} for k, v in cells.items() if "lmbench" in v]
    return {"name": shape.name, "num_layers": shape.num_layers, "d_model": shape.d_model,
            "num_heads": shape.num_heads, "num_params": lm.num_params(),
            "distribution": distribution(lm, first.to(args.device)), "results": results, "verdicts": verdicts,
            "same_outputs": check_same_outputs(lm, hf, args.vocab_size), "greedy_full_length": agreement,
            "beam_full_length": beam_agreement,
            "bf16_agreement": bf16_agreement}


def bf16_greedy_agreement(lm: TransformerLM, prompts: Tensor, new_tokens: int) -> dict[str, Any]:
    """Greedy ids decoded under bf16 autocast against the run's dtype: the share of positions with the same id,
    the share of rows identical throughout, and the mean position of a row's first difference (new_tokens when
    none): after the first difference the two continue from different texts."""
    def ids(dtype: str) -> Tensor:
        with decode_precision(dtype, prompts.device.type):
            out = generate(lm, prompts.tolist(), STRATEGIES["greedy"], max_new_tokens=new_tokens, eos_id=None,
                           pad_id=0)
        return torch.tensor([o[0] for o in out])

    return agreement(ids("auto"), ids("bf16"))


def agreement(full: Tensor, half: Tensor) -> dict[str, Any]:
    """Two (rows, new_tokens) id tensors: the share of positions alike, of rows alike throughout, and the mean
    position of a row's first difference (new_tokens for a row alike throughout)."""
    same = full == half
    first = torch.where(same.all(dim=1), same.size(1), (~same).float().argmax(dim=1))
    return {"token_agreement": float(same.float().mean()), "rows_identical": float(same.all(dim=1).float().mean()),
            "mean_first_difference": float(first.float().mean()), "new_tokens": same.size(1)}


# ----------------------------------------------------------------------------------------------- report

RATIOS = (("lmbench", "transformers"), ("lmbench", "transformers-static"), ("lmbench-bf16", "lmbench"),
          ("lmbench-hf", "transformers"), ("lmbench", "recompute"))


def table(report: dict[str, Any]) -> list[str]:
    """Markdown rows per (batch, strategy): tokens/s per implementation, the ratios, the limit and the goal."""
    a = report["args"]
    by_key = {(r["strategy"], r["batch"], r["impl"]): r for r in report["results"]}
    verdicts = {(v["strategy"], v["batch"]): v for v in report.get("verdicts", [])}
    impls = [i for i in IMPLS if i in a["impls"]]
    ratios = [(x, y) for x, y in RATIOS if x in impls and y in impls]
    lines = ["| strategy | batch | " + " | ".join(f"{i} tok/s" for i in impls) + " | "
             + " | ".join(f"{x} / {y}" for x, y in ratios) + " | limit tok/s | lmbench % of limit | goal |",
             "|---|---:|" + "---:|" * (len(impls) + len(ratios) + 2) + "---|"]
    for batch in a["batch_sizes"]:
        for name in a["strategies"]:
            cells = [by_key[(name, batch, i)] for i in impls]
            speeds = [f"{c['tokens_per_s']:.1f}" + (" (est.)" if c["how"] == "estimated" else "") for c in cells]
            factors = [f"{by_key[(name, batch, x)]['tokens_per_s'] / by_key[(name, batch, y)]['tokens_per_s']:.2f}x"
                       for x, y in ratios]
            v = verdicts.get((name, batch), {})
            limit = cells[0]["limit_tokens_per_s"]
            share = f"{100 * v['share_of_limit']:.0f}%" if v.get("share_of_limit") is not None else "–"
            goal = "–" if v.get("met") is None else f"{v['goal']}: {'met' if v['met'] else 'not met'}"
            lines.append(f"| {name} | {batch} | " + " | ".join(speeds + factors)
                         + f" | {limit:,.0f} ({cells[0]['bound']}) | {share} | {goal} |")
    return lines


def shape_section(report: dict[str, Any], shape: dict[str, Any]) -> list[str]:
    a, peaks = report["args"], report["peaks"]
    d = shape["distribution"]
    elsize = torch.finfo(DTYPES[a["dtype"]]).bits // 8
    weights_mb = next(r["bytes_per_step"] for r in shape["results"] if r["batch"] == min(a["batch_sizes"])) / 1e6
    sub = {**report, "results": shape["results"], "verdicts": shape["verdicts"]}
    return [
        f"## {shape['name']}: {shape['num_layers']} layers, d_model {shape['d_model']}, {shape['num_heads']} heads, "
        f"vocab {a['vocab_size']} ({shape['num_params'] / 1e6:.1f}M parameters)", "",
        f"Next-token distributions (logit std {a['logit_std']}): mean entropy {d['entropy_nats']:.2f} nats, mean "
        f"nucleus at p = {d['top_p']} {d['nucleus_tokens']:.0f} tokens.", "",
        *table(sub), "",
        f"Bytes read per step at batch {min(a['batch_sizes'])} (greedy, mean context): {weights_mb:.1f} MB "
        f"({elsize} bytes a weight) at the measured {peaks['read_bytes_per_s'] / 1e9:.1f} GB/s read bandwidth.", "",
        f"Same token ids, short run (batch 2, 12 tokens; top-p with the same seed) from lmbench on both models and "
        f"transformers: {shape['same_outputs']}. Greedy over the whole length: " + "; ".join(
            f"batch {g['batch']}: " + ("equal" if g["equal"] else
                                       f"differ from token {g['first_mismatch']} (logit gap "
                                       f"{g.get('logit_gap_at_mismatch', float('nan')):.1e})")
            for g in shape["greedy_full_length"]) + "." + ("" if not shape.get("beam_full_length") else
                                                           " Beam 5 (the best hypothesis) over the whole length: " +
                                                           "; ".join(f"batch {g['batch']}: " +
                                                                     ("equal" if g["equal"] else
                                                                      f"differ from token {g['first_mismatch']}")
                                                                     for g in shape["beam_full_length"]) + "."), "",
        *([("bf16 decoding (`lmbench-bf16`, `sample.dtype: bf16`) against the run's dtype, greedy over the whole "
            "length: " + "; ".join(f"batch {g['batch']}: {g['token_agreement']:.1%} of the tokens the same, "
                                   f"{g['rows_identical']:.0%} of the rows identical, first difference at token "
                                   f"{g['mean_first_difference']:.0f} of {g['new_tokens']} on average"
                                   for g in shape["bf16_agreement"]) + "."), ""]
          if shape.get("bf16_agreement") else [])]


def markdown(report: dict[str, Any]) -> str:
    a, env, peaks = report["args"], report["env"], report["peaks"]
    met = [v["met"] for sh in report["shapes"] for v in sh["verdicts"] if v["met"] is not None]
    return "\n".join([
        "# Generation benchmark", "",
        f"Command: `{report['command']}`", "",
        f"Machine: {env['cpu']}, {env['num_threads']} torch threads (the default), load average at start "
        f"{env['loadavg']}, torch {env['torch']}, transformers {env['transformers']}, device {env['device']}, "
        f"dtype {a['dtype']}, oneDNN packed linears {'on' if env.get('packed_linears') else 'off'}.", "",
        f"Measured in this run: read bandwidth {peaks['read_bytes_per_s'] / 1e9:.1f} GB/s (sum over 256 MB), copy "
        f"{peaks['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write), {a['dtype']} matmul "
        f"{peaks['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s" + (
            f" (the larger of torch.matmul {peaks['torch_matmul_flops_per_s'] / 1e9:.0f} and oneDNN on a "
            f"reordered weight {peaks['onednn_flops_per_s'] / 1e9:.0f})" if peaks.get("onednn_flops_per_s") else "")
        + ".", "",
        f"Prompt {a['prompt_len']} random tokens, {a['new_tokens']} new tokens (EOS off), {a['repeats']} interleaved "
        "round(s) per implementation after a warm-up, the best round counts. Goal: lmbench >= 2x the faster "
        "transformers setup, or >= 85% of the limit where 2x is above it. "
        + (f"Goals met: {sum(met)} of {len(met)} cells." if met else "(No transformers baseline in this run.)"), "",
        *[line for shape in report["shapes"] for line in shape_section(report, shape)],
        "tokens/s = batch x new tokens / wall time (beam search counts the returned hypothesis per prompt). "
        "lmbench = lmbench.sampling on the lmbench transformer; lmbench-hf = lmbench.sampling on the GPT-2 copy; "
        "transformers(-static) = GPT2LMHeadModel.generate with its dynamic (static) cache; recompute = the "
        "notebooks' loop (no cache), `(est.)` = summed from forward passes timed at "
        f"{a['estimate_points']} prefix lengths. limit = the step's bytes / read bandwidth or its FLOPs / matmul "
        "peak, whichever is larger (memory- or compute-bound), for batch x beams rows at the mean context.", "",
        *report.get("notes", []),
    ])


NOTES = [
    "What lmbench does that `generate` does not, on the CPU: every linear layer of at least 131k weights runs "
    "oneDNN on a weight reordered once per call into its blocked layout (lmbench/sampling/packed.py; the kernel "
    "`torch.compile` uses with freezing): the 50,257 x 384 head takes 2.8 ms for one row where `F.linear` takes "
    "6.7 ms, 3.8 ms for 16 rows where it takes 13.4; top-p finds the nucleus among the 256 (then 768, 2,304) "
    "most likely tokens instead of sorting the vocabulary (2 ms a row; lmbench/sampling/filters.py, exact, "
    "falling back to the sort for flat rows) and scatters the kept scores into a -inf tensor instead of a mask "
    "and masked_fill; the K/V cache is appended in place into buffers allocated once for prompt + new tokens "
    "(no growth copies) and beam search copies no cached row it can leave in place: a beam's first continuation keeps its parent's "
    "row, and only further copies of a parent are written, into dropped beams' rows (lmbench/models/kv_cache.py; "
    "about a fifth of the rows per token with 5 beams, where `generate` gathers every row). The sampled draw is "
    "torch.multinomial's exponential race with the log taken on the nucleus only (lmbench/sampling/draws.py): "
    "every uniform is still drawn, so the same seed gives the same ids and generator state as "
    "torch.multinomial, but the per-token log1p over 50,257 entries (0.9 ms a row, 14 ms a step at batch 16) "
    "shrinks to a few hundred; the serial double uniforms (3 ms a step at batch 16) remain.", "",
    "Beam search at batch 16 (80 rows; torch.profiler over the 30M model's 256 tokens on the 2-core development "
    "machine, self time per step, 36 ms in all): oneDNN linears 14.0 ms (the head is 3.1 GFLOP a step), "
    "attention 11.2 ms (SDPA reads the 212 MB cache at the mean context of 144 at about 19 GB/s), the cache "
    "copies 3.2 ms (13.1 ms before, when every row was gathered), top-k 1.8, log-softmax 1.5. The attention is "
    "`generate`'s own kernel on purpose: two batched matmuls are 15-40% faster at one query token but round "
    "differently, and the ids would no longer equal `generate`'s.", "",
    "Greedy at batch 1 (the 30M model, same profiler): 4.7 ms a step, of which the linear layers take 3.7 ms "
    "for their 119 MB of weights (32 GB/s). The head alone reads its 77 MB at about 43 GB/s, 80% of what a plain "
    "sum over the same tensor reaches; the 24 block layers (0.6-2.4 MB each) reach about 22 GB/s, their time "
    "being as much per-call overhead as reading. The rest (layer norms, attention, the loop) is about 1 ms.", "",
    "Run to run, this shared 2-core machine moves by 10-15% (transformers' greedy at batch 1 on the 30M model: "
    "96.6 and 111.1 tokens/s in two runs an hour apart, lmbench 2.21x and 1.99x); the rounds of one run are "
    "interleaved, so its ratios are comparable, not its absolute rates with another run's.", "",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--num-layers", type=int, default=None, help="a custom shape instead of --shapes")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--num-heads", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=50257, help="GPT-2's vocabulary by default")
    p.add_argument("--logit-std", type=float, default=4.0,
                   help="draw the token embedding so that the logits have this std (0: the usual init)")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--impls", nargs="+", default=list(DEFAULT_IMPLS), choices=list(IMPLS))
    p.add_argument("--recompute", choices=("estimate", "full"), default="estimate",
                   help="estimate: time forward passes at a few prefix lengths; full: run the loop")
    p.add_argument("--estimate-points", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per implementation")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="weights and activations of both models")
    p.add_argument("--out", default=str(REPO / "results" / "bench" / "generation"),
                   help="output path without suffix (.md and .json are written)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    device = torch.device(args.device)
    env = {"cpu": platform.processor() or platform.machine(), "num_threads": torch.get_num_threads(),
           "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "torch": torch.__version__,
           "transformers": transformers.__version__, "device": args.device, "dtype": args.dtype,
           "python": platform.python_version(), "packed_linears": device.type == "cpu" and packed_available()}
    command = common.command_line("generation.py", argv)
    peaks = machine_peaks(device, DTYPES[args.dtype])
    print("peaks: " + ", ".join(f"{k} {v / 1e9:.1f}G" for k, v in peaks.items()), flush=True)
    shapes = [measure_shape(shape, args, peaks) for shape in shapes_from(args)]
    report = {"command": command, "args": vars(args), "env": env, "peaks": peaks, "shapes": shapes,
              "notes": NOTES if device.type == "cpu" else []}
    common.write_report(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
