"""The summed cross-entropy of a vocabulary projection without its full float32 logits.

`F.cross_entropy(head(hidden).float(), labels, reduction="sum")` over a large vocabulary writes, reads and zeroes
several (N, V) float32 arrays per step: the cast logits, log-softmax and its gradient, the zero-filled NLL
gradient. For the 2 x 200 WikiText-2 LSTM (V = 33,278, 700 targets) that is about 93 MB each, and on a CPU those
element-wise passes took about 45% of a bf16 training step (torch.profiler), more than the projection's matmuls.

`linear_cross_entropy` computes the same sum and its gradients in row chunks small enough for the cache: per
chunk the logits (in the matmul dtype: the autocast dtype, else the weight's), their float32 log-sum-exp, the
target logit, and the gradient softmax - one-hot written once in the matmul dtype. The gradients of the hidden
states, the weight and the bias follow from that one (N, V) array by three matmuls, the same FLOPs as the
autograd path; backward only scales them. Labels equal to -100 are not scored.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbench.data.batching import IGNORE_INDEX

CHUNK_BYTES = 8 << 20  # float32 logits per chunk: a chunk's element-wise passes stay in the cache


def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor) -> Tensor:
    """Sum over labels != -100 of the NLL of `labels` under softmax(hidden @ weight.T + bias): float32 scalar,
    equal to ``F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, reduction="sum")`` under the same
    autocast. hidden (N, d), weight (V, d), bias (V,) or None, labels (N,)."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor,  # type: ignore[override]
                dtype: torch.dtype) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            n, vocab = h.size(0), w.size(0)
            grad_logits = torch.empty(n, vocab, dtype=dtype, device=h.device)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            rows = max(1, CHUNK_BYTES // (4 * vocab))
            for start in range(0, n, rows):
                stop = min(start + rows, n)
                logits = F.linear(h[start:stop], w, b).float()  # (c, V)
                target = labels[start:stop]
                scored = target != IGNORE_INDEX
                index = torch.where(scored, target, 0)[:, None]
                lse = torch.logsumexp(logits, dim=1, keepdim=True)
                total += torch.where(scored, (lse - logits.gather(1, index)).squeeze(1), 0.0).sum()
                probs = logits.sub_(lse).exp_()  # softmax, in place
                probs.scatter_add_(1, index, -scored[:, None].to(probs.dtype))  # - one-hot
                probs.masked_fill_(~scored[:, None], 0.0)
                grad_logits[start:stop] = probs
            wanted = ctx.needs_input_grad  # a frozen (e.g. pretrained, tied) weight needs no gradient
            empty = hidden.new_empty(0)
            grad_hidden = (grad_logits @ w).to(hidden.dtype) if wanted[0] else empty
            grad_weight = (grad_logits.t() @ h).to(weight.dtype) if wanted[1] else empty
            grad_bias = grad_logits.sum(0, dtype=torch.float32).to(bias.dtype) if bias is not None and wanted[2] \
                else empty
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        wanted = ctx.needs_input_grad
        grads = [g * grad_total if want else None for g, want in zip(ctx.saved_tensors, wanted[:3])]
        return (*grads, None, None)
