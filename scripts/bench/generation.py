"""Generation benchmark: tokens/s of greedy, top-p and beam search (5 beams) at batch 1 and 16.

Four implementations, all with the same weights (a random lmbench `transformer`, GPT-2 shaped, copied into a
`GPT2LMHeadModel`):

- `lmbench`       lmbench.sampling.generate on the lmbench transformer (its KV cache)
- `lmbench-hf`    lmbench.sampling.generate on the GPT-2 copy through the `hf` family (transformers' cache)
- `transformers`  GPT2LMHeadModel.generate on the GPT-2 copy
- `recompute`     the notebooks' loop: the lmbench transformer re-reads the whole prefix for every new token
                  (full (B, T, V) logits, last position used). By default its time is *estimated*: forward
                  passes at a few prefix lengths are timed and the per-step cost is summed over all steps
                  (interpolated); `--recompute full` runs the loop itself.

tokens/s = batch x new tokens / wall time (beam search: the best hypothesis per prompt counts). EOS is disabled
so every run makes exactly --new-tokens tokens.

    python scripts/bench/generation.py                                  # writes results/bench/generation.{md,json}
    python scripts/bench/generation.py --d-model 64 --num-layers 2 --vocab-size 512 --new-tokens 16 --out /tmp/g
    python scripts/bench/generation.py --device cuda --dtype bf16 --impls lmbench transformers --out /tmp/g-bf16

On a GPU the timings wait for the device (torch.cuda.synchronize), and both models are cast to --dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's lmbench, installed or not
from lmbench.models.base import LanguageModel  # noqa: E402
from lmbench.models.hf import Config as HFConfig  # noqa: E402
from lmbench.models.hf import HFCausalLM  # noqa: E402
from lmbench.models.transformer import Config as TConfig  # noqa: E402
from lmbench.models.transformer import TransformerLM  # noqa: E402
from lmbench.sampling import generate  # noqa: E402
from lmbench.spec import SamplerSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STRATEGIES: dict[str, SamplerSpec] = {
    "greedy": SamplerSpec(kind="greedy"),
    "top_p": SamplerSpec(kind="sample", top_p=0.9),
    "beam5": SamplerSpec(kind="beam", num_beams=5),
}
IMPLS = ("lmbench", "lmbench-hf", "transformers", "recompute")


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

    def reorder(self, index: Tensor) -> "PrefixState":
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

    def init_state(self, batch_size: int, device: torch.device) -> PrefixState:
        return PrefixState(torch.zeros(batch_size, 0, dtype=torch.long, device=device), None)

    def step(self, input_ids: Tensor, state: PrefixState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, PrefixState]:
        ids = torch.cat([state.ids, input_ids], dim=1)
        logits = self.inner(ids, attention_mask)  # (B, T, V): the whole prefix again
        return logits[:, -(logits_to_keep or input_ids.size(1)):], PrefixState(ids, attention_mask)

    def flops_per_token(self, seq_len: int) -> float:
        return self.inner.flops_per_token(seq_len)


def build_models(args: argparse.Namespace) -> tuple[TransformerLM, HFCausalLM]:
    torch.manual_seed(args.seed)
    block_size = args.prompt_len + args.new_tokens
    cfg = TConfig(num_layers=args.num_layers, num_heads=args.num_heads, d_model=args.d_model, block_size=block_size,
                  activation="gelu_tanh")
    model = TransformerLM(cfg, vocab_size=args.vocab_size, pad_id=0).eval()
    hf = gpt2_from_transformer(model)  # copied in fp32 on the CPU, then both cast and moved alike
    dtype = DTYPES[args.dtype]
    return model.to(args.device, dtype), hf.to(args.device, dtype)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync() -> None:
    """Wait for queued CUDA kernels (a no-op without CUDA): generate() may return before the device is done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
    if impl in ("lmbench", "lmbench-hf", "recompute"):
        model = {"lmbench": lm, "lmbench-hf": hf, "recompute": RecomputeLM(lm)}[impl]

        def run() -> int:
            out = generate(model, prompt_lists, s, max_new_tokens=new_tokens, eos_id=None, pad_id=0, seed=0)
            return min(len(h) for o in out for h in o)

        return run

    def run_hf() -> int:
        with torch.inference_mode():
            out = hf.model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                                    max_new_tokens=new_tokens, pad_token_id=0, **transformers_kwargs(s))
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


def timed(run: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Best wall time of `repeats` runs (after one short warm-up done by the caller) and the tokens made."""
    best, made = float("inf"), 0
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        made = run()
        sync()
        best = min(best, time.perf_counter() - started)
    return best, made


# ----------------------------------------------------------------------------------------------- main

def check_same_outputs(lm: TransformerLM, hf: HFCausalLM, vocab_size: int) -> dict[str, bool]:
    """Greedy and beam ids of the three cached implementations agree on a short run (same weights)."""
    prompts = torch.randint(0, vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    prompts = prompts.to(lm.tok_emb.weight.device)
    agree = {}
    for name in ("greedy", "beam5"):
        s = STRATEGIES[name]
        ours = generate(lm, prompts.tolist(), s, max_new_tokens=12, eos_id=None, pad_id=0)
        via_hf = generate(hf, prompts.tolist(), s, max_new_tokens=12, eos_id=None, pad_id=0)
        with torch.inference_mode():
            ref = hf.model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12,
                                    pad_token_id=0, **transformers_kwargs(s))[:, 8:].tolist()
        agree[name] = ours == via_hf == [[r] for r in ref]
    return agree


def measure_cell(lm: TransformerLM, hf: HFCausalLM, name: str, prompts: Tensor,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    """One (strategy, batch): every implementation, repeats interleaved (impl A, B, C, A, B, C, ...) so that a
    change in background load hits all of them alike; the best time of each counts."""
    s, batch = STRATEGIES[name], prompts.size(0)
    best: dict[str, float] = {}
    how = {impl: "measured" for impl in args.impls}
    measured = [i for i in args.impls if not (i == "recompute" and args.recompute == "estimate")]
    if len(measured) < len(args.impls):
        best["recompute"] = estimate_recompute_s(lm, batch * s.num_beams, args.prompt_len, args.new_tokens,
                                                 args.estimate_points)
        how["recompute"] = "estimated"
    for impl in measured:
        runner(impl, lm, hf, s, prompts, 4)()  # warm-up
    for _ in range(args.repeats):
        for impl in measured:
            seconds, made = timed(runner(impl, lm, hf, s, prompts, args.new_tokens), 1)
            if made != args.new_tokens:
                raise RuntimeError(f"{impl} {name} made {made} tokens, expected {args.new_tokens}")
            best[impl] = min(best.get(impl, float("inf")), seconds)
    return [{"strategy": name, "batch": batch, "impl": impl, "seconds": best[impl],
             "tokens_per_s": batch * args.new_tokens / best[impl], "how": how[impl]} for impl in args.impls]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    lm, hf = build_models(args)
    results: list[dict[str, Any]] = []
    agreement: list[dict[str, Any]] = []
    for batch in args.batch_sizes:
        prompts = torch.randint(1, args.vocab_size, (batch, args.prompt_len),
                                generator=torch.Generator().manual_seed(0)).to(args.device)
        for name in args.strategies:
            for r in measure_cell(lm, hf, name, prompts, args):
                results.append(r)
                print(f"{name:7s} batch {batch:3d} {r['impl']:13s} {r['tokens_per_s']:10.1f} tokens/s "
                      f"({r['seconds']:.2f} s, {r['how']})", flush=True)
        agreement.append({"batch": batch, **greedy_agreement(lm, hf, prompts, args.new_tokens)})
    return {"results": results, "same_outputs": check_same_outputs(lm, hf, args.vocab_size),
            "greedy_full_length": agreement, "num_params": lm.num_params()}


def greedy_agreement(lm: TransformerLM, hf: HFCausalLM, prompts: Tensor, new_tokens: int) -> dict[str, Any]:
    """Greedy ids of lmbench and GPT2LMHeadModel.generate over the benchmark's whole length: equal, and the first
    position where a row differs (None when equal)."""
    ours = torch.tensor([o[0] for o in generate(lm, prompts.tolist(), STRATEGIES["greedy"],
                                                max_new_tokens=new_tokens, eos_id=None, pad_id=0)])
    with torch.inference_mode():
        ref = hf.model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                                pad_token_id=0, do_sample=False)[:, prompts.size(1):].cpu()
    differ = (ours != ref).any(dim=0).nonzero()
    out = {"equal": bool(differ.numel() == 0), "first_mismatch": int(differ[0]) if differ.numel() else None,
           "rows_differing": int((ours != ref).any(dim=1).sum()), "new_tokens": new_tokens}
    if differ.numel():  # how close to a tie the two picks were there (a rounding-level gap = a tie broken apart)
        t = int(differ[0])
        row = int((ours[:, t] != ref[:, t]).nonzero()[0])
        prefix = torch.cat([prompts[row].cpu(), ref[row, :t]]).unsqueeze(0).to(prompts.device)
        with torch.inference_mode():
            logits = hf.model(input_ids=prefix).logits[0, -1].float()
        out["logit_gap_at_mismatch"] = float(logits[ref[row, t]] - logits[ours[row, t]])
    return out


RATIOS = (("lmbench", "transformers"), ("lmbench-hf", "transformers"), ("lmbench", "recompute"))


def table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: tokens/s per implementation and the speed-up ratios, per (batch, strategy)."""
    a = report["args"]
    by_key = {(r["strategy"], r["batch"], r["impl"]): r for r in report["results"]}
    impls = [i for i in IMPLS if i in a["impls"]]
    ratios = [(x, y) for x, y in RATIOS if x in impls and y in impls]
    lines = ["| strategy | batch | " + " | ".join(f"{i} tok/s" for i in impls) + " | "
             + " | ".join(f"{x} / {y}" for x, y in ratios) + " |",
             "|" + "---|" * (2 + len(impls) + len(ratios))]
    for batch in a["batch_sizes"]:
        for name in a["strategies"]:
            cells = [by_key[(name, batch, i)] for i in impls]
            speeds = [f"{c['tokens_per_s']:.1f}" + (" (est.)" if c["how"] == "estimated" else "") for c in cells]
            factors = [f"{by_key[(name, batch, x)]['tokens_per_s'] / by_key[(name, batch, y)]['tokens_per_s']:.2f}x"
                       for x, y in ratios]
            lines.append(f"| {name} | {batch} | " + " | ".join(speeds + factors) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    a, env = report["args"], report["env"]
    return "\n".join([
        "# Generation benchmark", "",
        f"Command: `{report['command']}`", "",
        f"Model: lmbench `transformer` {a['num_layers']} layers, d_model {a['d_model']}, {a['num_heads']} heads, "
        f"vocab {a['vocab_size']} ({report['num_params'] / 1e6:.1f}M parameters), random weights copied into a "
        f"GPT2LMHeadModel. Prompt {a['prompt_len']} tokens, {a['new_tokens']} new tokens (EOS off), "
        f"best of {a['repeats']} run(s) per implementation, interleaved, after a warm-up.", "",
        f"Machine: {env['cpu']}, {env['num_threads']} torch threads, load average at start {env['loadavg']}, "
        f"torch {env['torch']}, transformers {env['transformers']}, device {env['device']}.", "",
        *table(report), "",
        "tokens/s = batch x new tokens / wall time (beam search counts the returned hypothesis per prompt). "
        "lmbench = lmbench.sampling on the lmbench transformer; lmbench-hf = lmbench.sampling on the GPT-2 copy; "
        "transformers = GPT2LMHeadModel.generate; recompute = the notebooks' loop (no cache).",
        "`(est.)`: the recompute loop's time summed from forward passes timed at "
        f"{a['estimate_points']} prefix lengths (interpolated per step), not run end to end.", "",
        f"Same token ids (greedy, beam5) from lmbench, lmbench-hf and transformers: {report['same_outputs']}.", "",
        "Notes: with a 50k vocabulary every implementation spends most of a step in the same output-projection "
        "matmul (more than half of beam5 at batch 16 under torch.profiler), so the margins are small; run-to-run "
        "noise on this shared CPU is about ±5%. Both prefills ask only for the last position's logits "
        "(`logits_to_keep`). What lmbench does that transformers does not: the transformer's K/V cache is "
        "appended in place into preallocated buffers and beam reordering gathers into a reused buffer set "
        "(lmbench/models/kv_cache.py) instead of concatenating and allocating per token; beam scores are added "
        "to the log-probabilities in place. lmbench-hf runs lmbench's loop on transformers' own DynamicCache, "
        "which still concatenates and reorders by allocation.", "",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=50257, help="GPT-2's vocabulary by default")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--recompute", choices=("estimate", "full"), default="estimate",
                   help="estimate: time forward passes at a few prefix lengths; full: run the loop")
    p.add_argument("--estimate-points", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
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

    env = {"cpu": platform.processor() or platform.machine(), "num_threads": torch.get_num_threads(),
           "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "torch": torch.__version__,
           "transformers": transformers.__version__, "device": args.device, "dtype": args.dtype, "python": platform.python_version()}
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/bench/generation.py", *(argv or sys.argv[1:])])
    report = {"command": command, "args": vars(args), "env": env, **measure(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
