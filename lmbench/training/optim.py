"""Optimizers: AdamW with weight decay only on weight matrices, and plain Adam.

Biases, normalisation weights (LayerNorm, RMSNorm, any module whose class name contains "Norm") and embeddings
(nn.Embedding tables and parameters whose name mentions an embedding, such as learned position tables) never
decay: shrinking them toward zero does not regularise anything useful (GPT-2/BERT/nanoGPT practice). Frozen
parameters (e.g. GloVe vectors) are left out of the optimizer altogether. Tied parameters appear once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmbench.registry import Registry



@dataclass(frozen=True)
class OptimizerKind:
    """A torch optimizer class and whether it takes decoupled weight decay (`train.weight_decay`)."""

    cls: type[torch.optim.Optimizer]
    decoupled_weight_decay: bool


OPTIMIZERS: Registry[OptimizerKind] = Registry("train.optimizer")
OPTIMIZERS.register("adamw")(OptimizerKind(torch.optim.AdamW, decoupled_weight_decay=True))
# Adam's weight decay is an L2 term in the gradient, not what anyone wants here: `adam` never decays.
OPTIMIZERS.register("adam")(OptimizerKind(torch.optim.Adam, decoupled_weight_decay=False))
_EMBEDDING_HINTS = ("embed", "wte", "wpe", "pos_emb", "position")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)) or (
        "norm" in type(module).__name__.lower()
    )


def no_decay_names(model: nn.Module) -> set[str]:
    """Names (as in `named_parameters`) of the parameters that must not decay."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        special = _is_norm(module) or isinstance(module, (nn.Embedding, nn.EmbeddingBag))
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            lowered = full.lower()
            if special or param.ndim < 2 or param_name.endswith("bias") or any(h in lowered for h in _EMBEDDING_HINTS):
                names.add(full)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: {"params": matrices, "weight_decay": wd} and {"params": the rest, "weight_decay": 0}.

    Groups carry a "name" ("decay" / "no_decay") for logs; empty groups are dropped. A parameter shared by
    several modules (tied embedding and output head) is listed once, and never decays if any of its names is exempt.
    """
    exempt = no_decay_names(model)
    exempt_ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in exempt}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in model.named_parameters():  # remove_duplicate=True: tied parameters once
        if not param.requires_grad:
            continue
        (no_decay if id(param) in exempt_ids else decay).append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def _fused_ok(params: list[nn.Parameter]) -> bool:
    """torch's fused Adam/AdamW kernel (CPU and CUDA, float tensors): one kernel for all parameters, much
    faster on CPU than the default per-parameter for-loop implementation."""
    return all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16,
                                                                  torch.float64) for p in params)


def build_optimizer(
    model: nn.Module, *, name: str, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8, fused: bool | None = None,
) -> torch.optim.Optimizer:
    """The OPTIMIZERS entry `name` over `param_groups` (AdamW decays the weight matrices; Adam never decays)."""
    kind = OPTIMIZERS.get(name)
    groups = param_groups(model, weight_decay if kind.decoupled_weight_decay else 0.0)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if fused is None:
        fused = _fused_ok(params)
    return kind.cls(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)
