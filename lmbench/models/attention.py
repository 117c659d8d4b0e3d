"""Causal self-attention for bf16 training on the CPU, as matrix products with a hand-written backward.

PyTorch's CPU flash-attention kernel (what `F.scaled_dot_product_attention` runs there) is slow on the shapes small
models train with: on GPT-2's 10.7M shape (batch 16, 6 heads, 256 positions, head size 64, bf16 on 2 cores) its
forward and backward take about 40 ms a layer, a third of the whole training step, where the same work as four
batched matrix products and one softmax takes about 15 ms. `causal_attention` is that: the (T, T) probabilities
are kept (bf16) for the backward, which uses the softmax's own backward kernel. It computes what nanoGPT's
non-flash attention computes under bf16 autocast: scores in bf16, softmax accumulated in fp32 inside the kernel.

`use_matmul_attention` says when the transformer takes it: CPU, bf16 or fp16, gradients wanted (training: decoding
and evaluation keep SDPA, so that ids stay equal to transformers' `generate`), no attention dropout, and at most
`MAX_SCORES` scores a layer (its memory is the probabilities; above that, flash). `LMBENCH_MATMUL_ATTENTION=0` turns
it off. Under `torch.compile` (`train.compile: true`) dynamo traces the Function, forward and backward, and inductor
compiles its products: with SDPA instead, the compiled step was 0.88x (10.7M) and 0.65x (0.8M) the eager one on 2
CPU cores in bf16; with it, 1.13x and 1.15x (results/bench/compile_step.md).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import Tensor

MAX_SCORES = 1 << 25  # batch x heads x T x T: 64 MB of bf16 probabilities a layer at most


def use_matmul_attention(q: Tensor, dropout: float) -> bool:
    """Whether `causal_attention` replaces SDPA(is_causal=True) for these (B, H, T, hd) queries."""
    B, H, T, _ = q.shape
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and q.requires_grad
            and dropout == 0.0 and B * H * T * T <= MAX_SCORES
            and os.environ.get("LMBENCH_MATMUL_ATTENTION", "1") != "0")


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(hd), causal) v for (B, H, T, hd) tensors of one dtype (see the module docstring)."""
    return _CausalAttention.apply(q, k, v)


class _CausalAttention(torch.autograd.Function):
    """Forward: one baddbmm gives scale * q k^T plus the causal -inf bias (the mask costs no pass of its own),
    softmax, probs v. Backward: the four products and the softmax backward kernel."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, H, T, hd = q.shape
        scale = 1.0 / math.sqrt(hd)
        q3, k3, v3 = (x.reshape(B * H, T, hd) for x in (q, k, v))  # a copy each (q, k, v are strided views)
        bias = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)  # 0 on and below the diagonal
        probs = torch.softmax(torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=scale), dim=-1)
        ctx.save_for_backward(q3, k3, v3, probs)
        ctx.scale = scale
        return torch.bmm(probs, v3).view(B, H, T, hd)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q3, k3, v3, probs = ctx.saved_tensors
        shape = grad.shape
        grad3 = grad.reshape(q3.shape)
        grad_v = torch.bmm(probs.transpose(1, 2), grad3)
        grad_probs = torch.bmm(grad3, v3.transpose(1, 2))
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)  # 0 where masked (p = 0)
        grad_q = torch.bmm(grad_scores, k3).mul_(ctx.scale)
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q3).mul_(ctx.scale)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape)
