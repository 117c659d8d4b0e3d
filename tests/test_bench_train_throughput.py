"""scripts/bench/train_throughput.py: the figures it computes (tokens/s of a side, speed-ups against the faster
plain optimizer with the issue's goals, the validation perplexity of the quality table), pinned by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from . import bench_scripts


@pytest.fixture(scope="module")
def tt():  # noqa: ANN201
    return bench_scripts.load("train_throughput")


def test_a_side_is_scored_by_its_best_round(tt) -> None:  # noqa: ANN001
    r = tt.row("lmbench", [0.5, 0.25, 1.0], 100, 6.0, {"fp32": 1000.0, "bf16": 4000.0}, 7)
    assert r["tokens_per_s"] == 400.0 and r["median_tokens_per_s"] == 200.0 and r["s_per_step"] == 0.25
    assert r["flops_per_s"] == 2400.0 and r["share_fp32_peak"] == 2.4 and r["share_bf16_peak"] == 0.6


def test_speedups_are_against_the_faster_plain_optimizer(tt, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(tt, "auto_precision", lambda num_params, model: "bf16")
    rates = {("fp32", "lmbench"): 100, ("fp32", "plain-fused"): 50, ("fp32", "plain-foreach"): 60,
             ("bf16", "lmbench"): 300, ("bf16", "plain-fused"): 100, ("bf16", "plain-foreach"): 90}
    rows = [{"model": "lstm-2x200", "precision": p, "side": side, "tokens_per_s": v, "num_params": 14_000_000}
            for (p, side), v in rates.items()]
    got = {s["comparison"]: (round(s["speedup"], 6), s["detail"], s["goal"]) for s in tt.summarise(rows)}
    assert got == {
        "lmbench fp32 / plain fp32": (round(100 / 60, 6), "lmbench fp32 / plain-foreach fp32", None),
        "lmbench bf16 / plain bf16": (3.0, "lmbench bf16 / plain-fused bf16", None),
        "lmbench default / plain fp32": (5.0, "lmbench bf16 / plain-foreach fp32", 2.0),
        "lmbench default / plain bf16": (3.0, "lmbench bf16 / plain-fused bf16", 1.3),
        "lmbench default / plain fastest": (3.0, "lmbench bf16 / plain-fused bf16", None),
    }


def test_stream_perplexity_scores_every_target_once_with_the_state_carried(tt) -> None:  # noqa: ANN001
    """Uniform logits over V ids: perplexity V exactly, over lanes x ((stream - 1) // lanes) targets, the state
    of each window handed to the next."""
    from lmbench.data.cache import SplitStats, TokenSplit

    docs = [[5, 6, 7], [8] * 40, [9, 10], [11] * 61]  # 110 stream positions: 36 per lane, the last window 1
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    tokens = np.array([t for d in docs for t in d], dtype=np.uint16)
    split = TokenSplit(tokens, offsets, None, SplitStats(len(docs), len(tokens), 0, 0, 0))
    vocab, calls = 13, []

    def forward(ids: torch.Tensor, state: int | None) -> tuple[torch.Tensor, int]:
        calls.append(state)
        return torch.zeros(*ids.shape, vocab), len(calls)

    got = tt.stream_perplexity(forward, split, eos_id=2, lanes=3)
    width = (len(tokens) + len(docs) - 1) // 3  # the stream: every document followed by EOS
    assert width == 36 and got["targets"] == 3 * width
    assert got["val_ppl"] == pytest.approx(vocab) and got["val_loss"] == pytest.approx(math.log(vocab))
    assert calls == [None, *range(1, math.ceil(width / tt.LSTM["block_size"]))]


def test_the_quality_gap_is_lmbench_over_plain_perplexity(tt) -> None:  # noqa: ANN001
    result = {"command": "c", "machine": {"cpu": "x", "cpu_count": 2, "torch_threads": 2, "torch": "t",
                                          "bf16_flags": [], "loadavg_start": [0.0]},
              "peaks": {"fp32": 1e9, "bf16": 2e9, "copy_bytes": 1e9}, "loadavg_end": [0.0],
              "args": {"warmup": 1, "rounds": 1, "steps": 1, "medium_steps": 1}, "rows": [], "speedups": [],
              "quality": [{"side": "lmbench default", "precision": "auto", "steps": 3, "tokens": 2100, "train_s": 1.0,
                           "val_loss": 1.0, "val_ppl": 103.0},
                          {"side": "plain fp32", "precision": "fp32", "steps": 3, "tokens": 2100, "train_s": 2.0,
                           "val_loss": 1.0, "val_ppl": 100.0}]}
    assert "perplexity: +3.00% (goal within 2%: **not met**)" in tt.markdown(result)
    result["quality"][0]["val_ppl"] = 98.5
    assert "perplexity: -1.50% (goal within 2%: met)" in tt.markdown(result)
    result["quality"][0]["val_ppl"] = 97.5
    assert "perplexity: -2.50% (goal within 2%: **not met**)" in tt.markdown(result)


def test_both_transformer_sides_compute_the_same_function(tt, tmp_path) -> None:  # noqa: ANN001
    """lmbench's model from the benchmark's spec and the plain NanoGPT, given the same weights, give the same
    logits: the same activation (ACTIVATION) on both sides, the same blocks, tied head."""
    from lmbench.models.transformer import Config, TransformerLM

    size = {"num_layers": 2, "num_heads": 2, "d_model": 16, "block_size": 12, "batch_size": 2}
    params = tt.transformer_spec(size, "fp32", tmp_path, tmp_path)["model"]["params"]
    torch.manual_seed(0)
    lm = TransformerLM(Config(**params), 23, 0).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(4)  # large enough activations for the tanh approximation to differ from erf
    plain = tt.nanogpt_like(size, 23).eval()
    rename = {"tok_emb": "tok", "pos_emb": "pos", ".attn.": ".", ".mlp.": "."}
    state = {}
    for name, value in lm.state_dict().items():
        for a, b in rename.items():
            name = name.replace(a, b)
        state[name] = value
    plain.load_state_dict(state, strict=False)
    assert torch.equal(plain.head.weight, plain.tok.weight)
    ids = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain(ids), lm(ids), rtol=1e-4, atol=1e-4)
