"""`torch.multinomial` without replacement, with the same draws, paying the logarithm only where it matters.

torch.multinomial(probs, n) without replacement (and every n = 1 draw) races exponentials (ATen's
Sampling.cpp): q ~ Exp(1) for every entry of `probs`, then the top n of probs / q. On the CPU that exponential
draw is a serial loop of one double uniform and one log1p per entry, 0.8 ms for a 50,257-token row: more than
a small model's whole decoding step. After top-p or top-k nearly every entry has probability 0, and its ratio
0 / q is 0 whatever q is. So `multinomial` draws every uniform (the generator advances exactly as torch's
does) but takes the log only on the support: the same ratios, the same ids, the same generator state after.

This leans on how torch draws, so `matches_torch()` checks it once per process against torch.multinomial
itself; where it differs (another torch, another generator), the draw is torch.multinomial's own.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

MAX_SUPPORT_FRACTION = 0.125  # above it, the log on the support saves too little to pay for the gather


def multinomial(probs: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """torch.multinomial(probs, num_samples, replacement=False, generator=generator) for (N, V) probabilities."""
    if not _sparse_race_applies(probs, generator):
        return torch.multinomial(probs, num_samples, generator=generator)
    support = probs > 0
    rows, cols = support.nonzero(as_tuple=True)
    if rows.numel() > MAX_SUPPORT_FRACTION * probs.numel() or not bool(support.any(dim=-1).all()):
        return torch.multinomial(probs, num_samples, generator=generator)  # dense, or torch's error for a row
    return _race(probs, num_samples, generator, rows, cols)


def _sparse_race_applies(probs: Tensor, generator: torch.Generator | None) -> bool:
    on_cpu = probs.device.type == "cpu" and (generator is None or generator.device.type == "cpu")
    return (on_cpu and probs.dim() == 2 and probs.dtype in (torch.float32, torch.float64)
            and bool(torch.isfinite(probs).all()) and matches_torch())


def _race(probs: Tensor, num_samples: int, generator: torch.Generator | None, rows: Tensor,
          cols: Tensor) -> Tensor:
    """The exponential race on the support (rows, cols): every uniform drawn, the log only where probs > 0."""
    uniform = torch.empty(probs.shape, dtype=torch.float64, device=probs.device).uniform_(generator=generator)
    exponential = torch.log1p(-uniform[rows, cols]).neg_().to(probs.dtype)  # ATen: -1/lambda * log1p(-u)
    ratio = torch.zeros_like(probs)
    ratio[rows, cols] = probs[rows, cols] / exponential
    if num_samples == 1:
        return ratio.argmax(dim=-1, keepdim=True)
    return torch.topk(ratio, num_samples, dim=-1).indices


@functools.cache
def matches_torch() -> bool:
    """Whether `_race` draws what torch.multinomial draws here, and leaves the generator in the same state."""
    probs = torch.rand(6, 97, generator=torch.Generator().manual_seed(1))
    probs[probs < 0.8] = 0
    probs[:, 0] = 0.01  # no empty row
    ours, theirs = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for num_samples in (1, 1, 3):
        rows, cols = (probs > 0).nonzero(as_tuple=True)
        if not torch.equal(_race(probs, num_samples, ours, rows, cols),
                           torch.multinomial(probs, num_samples, generator=theirs)):
            return False
    return torch.equal(ours.get_state(), theirs.get_state())
