"""oneDNN-packed linear layers for decoding on the CPU.

Decoding runs every linear layer on a few rows (one per sequence and token): a matrix-vector product that only
needs to read the weight once, at memory speed. PyTorch's default CPU path for `F.linear` (MKL's sgemm on a
plain row-major weight) reaches a fraction of that with few rows: on a 2-core EPYC the GPT-2 sized output
projection (50,257 x 384, fp32) takes 6.7 ms for 1 row and 13.4 ms for 16, where oneDNN with the weight
reordered once into its blocked layout takes 2.8 and 3.8 ms (scripts/bench/generation.py measures the whole
decode). This is the same kernel and weight reordering `torch.compile` uses on the CPU with
`torch._inductor.config.freezing` (`torch.ops.mkldnn._linear_pointwise`), without compiling anything.

`packed_linears(model, rows)` reorders the weight of every large `nn.Linear` of a CPU model (fp32 or bf16) for
the duration of a `with` block and restores the plain layers after; weights shared by several layers (tied
embeddings) are reordered once. Results equal `F.linear` up to float rounding (the summation order differs).
Under CPU autocast to bf16 the reordered weights are bf16 and the layers compute what autocast's `F.linear` would,
without casting every fp32 weight to bf16 again at every call (the 30M GPT-2 shape decodes greedily at 308 tokens/s
packed against 46 unpacked at batch 1, 2,079 against 595 at batch 16, under bf16 autocast on 2 cores).
A layer steps aside (the plain `F.linear` runs) when it is called in another dtype than it was packed for (autocast
turned on or off inside the block, an input of another dtype); nothing is packed when oneDNN is not available or
cannot reorder the dtype on this CPU (oneDNN's bf16 reorder needs AVX-512 or AVX-NE-CONVERT: on an AVX2-only CPU the
bf16 layers stay plain), and `LMBENCH_PACKED_LINEAR=0` turns it off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKED_DTYPES = (torch.float32, torch.bfloat16)
ENV_SWITCH = "LMBENCH_PACKED_LINEAR"
# Smaller weights stay plain: they sit in cache, where MKL's call is cheaper than oneDNN's (a d_model 128
# transformer decodes 1.6x slower packed; d_model 384 1.5x faster).
MIN_PACKED_ELEMENTS = 1 << 17


def available() -> bool:
    """oneDNN is built in and has the packed linear ops, and the environment does not turn them off."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def supports(dtype: torch.dtype) -> bool:
    """oneDNN on this CPU reorders and multiplies weights of `dtype` (fp32 always; bf16 only with the instructions
    oneDNN's bf16 path needs, else `_reorder_linear_weight` raises)."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype in PACKED_DTYPES


def packable(layer: nn.Module) -> bool:
    """A plain nn.Linear on the CPU with an fp32 or bf16 weight of at least MIN_PACKED_ELEMENTS, no hooks and
    its class's own forward."""
    return (type(layer) is nn.Linear and layer.weight.device.type == "cpu" and layer.weight.dtype in PACKED_DTYPES
            and layer.weight.numel() >= MIN_PACKED_ELEMENTS and "forward" not in vars(layer)
            and not layer._forward_hooks and not layer._forward_pre_hooks)


def reorder(weight: Tensor, rows: int) -> Tensor:
    """`weight` (out, in) copied into oneDNN's blocked layout for inputs of about `rows` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype when autocast is on here, else None."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None


def packed_forward(layer: nn.Linear, packed: Tensor) -> Callable[[Tensor], Tensor]:
    """`layer`'s forward on the reordered weight `packed`, in the dtype `F.linear` would compute in here (the
    input's, or autocast's); the plain forward when that is not the packed weight's dtype."""
    bias = None if layer.bias is None else layer.bias.detach().to(packed.dtype)

    def forward(x: Tensor) -> Tensor:
        cast = autocast_dtype()
        if (x.device.type != "cpu" or x.dim() < 2 or packed.dtype != (cast or x.dtype)
                or (cast is None and layer.weight.dtype != packed.dtype)):
            return F.linear(x, layer.weight, layer.bias)
        return torch.ops.mkldnn._linear_pointwise(x.to(packed.dtype).contiguous(), packed, bias, "none", [], "")

    return forward


@contextlib.contextmanager
def packed_linears(model: nn.Module, rows: int) -> Iterator[int]:
    """Inside the block, every packable linear layer of `model` runs oneDNN on a weight reordered for `rows`
    input rows (a hint: any number of rows gives the same result). Under CPU autocast to bf16 (on when the block
    is entered) the reordered weights are bf16, as autocast would cast them. Yields how many layers were packed
    (0 when oneDNN is not available, under autocast to another dtype, or for a dtype this CPU's oneDNN cannot
    pack). For inference: the reordered weights are copies, gradients do not reach the parameters."""
    cast = autocast_dtype()
    layers = [m for m in model.modules() if packable(m) and supports(cast or m.weight.dtype)] \
        if available() and cast in (None, *PACKED_DTYPES) else []
    packs: dict[int, Tensor] = {}  # one reordered copy per weight tensor (tied layers share it)
    try:
        with torch.no_grad():
            for layer in layers:
                key = id(layer.weight)
                if key not in packs:
                    weight = layer.weight.detach()
                    packs[key] = reorder(weight if cast is None else weight.to(cast), max(1, rows))
                layer.forward = packed_forward(layer, packs[key])  # the instance attribute shadows the class's
        yield len(layers)
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
