"""Test helpers: tiny models of the three families (weights large enough for peaked, varied logits), stub models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import transformers
from packaging.version import Version
from torch import Tensor, nn

from lmbench.models.base import LanguageModel

FAMILIES = ("hf", "transformer", "lstm")
TRANSFORMERS = Version(transformers.__version__)
# Where lmbench follows a newer transformers than the declared floor, parity is only checked against that one.
LEFT_PADDING_AWARE_PENALTY = "5.23.0"  # repetition penalty ignores left padding (per-row prompt_ignore_length)
SORTED_BEAM_SAMPLE = "5.24.0"  # sampled beam candidates are sorted by score before the first num_beams may finish


def skip_before(version: str, why: str) -> None:
    """Skip the calling parity test on a transformers release older than `version` (lmbench follows `version`)."""
    if TRANSFORMERS < Version(version):
        pytest.skip(f"transformers {TRANSFORMERS}: {why} only from {version}, which lmbench follows")


def tiny_model(family: str, vocab_size: int = 40, seed: int = 0) -> LanguageModel:
    """A randomly initialised model of `family` (pad id 0) in eval mode; weights ~N(0, 0.3) so that greedy and
    beam search see clear, varied preferences instead of near-uniform logits."""
    torch.manual_seed(seed)
    if family == "hf":
        from lmbench.models.hf import Config, HFCausalLM

        cfg = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 128, "initializer_range": 0.3}
        return HFCausalLM(Config(from_config=True, model_type="gpt2", config=cfg), vocab_size, pad_id=0).eval()
    if family == "transformer":
        from lmbench.models.transformer import Config, TransformerLM

        model: LanguageModel = TransformerLM(Config(num_layers=2, num_heads=2, d_model=32, block_size=128),
                                             vocab_size, pad_id=0)
    elif family == "lstm":
        from lmbench.models.recurrent import Config as RConfig
        from lmbench.models.recurrent import LSTMLM

        model = LSTMLM(RConfig(d_embed=16, d_hidden=32, num_layers=2), vocab_size, pad_id=0)
    else:
        raise ValueError(family)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3 if family == "transformer" else 0.5)
    return model.eval()


@dataclass
class NoState:
    def reorder(self, index: Tensor, reuse: bool = False) -> "NoState":
        return self


class UnigramLM(LanguageModel):
    """Ignores its input: the same logits at every position (for distribution tests)."""

    Config = dict

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.logits.expand(*input_ids.shape, -1)

    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> NoState:
        return NoState()

    def step(self, input_ids: Tensor, state: Any, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, Any]:
        return self.forward(input_ids[:, -logits_to_keep:] if logits_to_keep else input_ids), state

    def flops_per_token(self, seq_len: int) -> float:
        return 0.0


class MaskRecorder(UnigramLM):
    """A UnigramLM that keeps the attention mask each `step` was given (None when none was)."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__(logits)
        self.masks: list[Tensor | None] = []

    def step(self, input_ids: Tensor, state: Any, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, Any]:
        self.masks.append(None if attention_mask is None else attention_mask.clone())
        return super().step(input_ids, state, attention_mask, logits_to_keep)


class CountingLM(LanguageModel):
    """Wraps a model and counts `step` calls and the ids they consume."""

    Config = dict

    def __init__(self, inner: LanguageModel) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[int, int]] = []  # (rows, new ids per row) of each step
        # The wrapper's mode is the inner model's: decoding restores the wrapper's mode on exit, recursively, and
        # a wrapper left in nn.Module's default training mode would switch a shared eval-mode model's dropout on.
        self.train(inner.training)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.inner(input_ids, attention_mask)

    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> Any:
        return self.inner.init_state(batch_size, device)

    def step(self, input_ids: Tensor, state: Any, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, Any]:
        self.calls.append(tuple(input_ids.shape))
        return self.inner.step(input_ids, state, attention_mask, logits_to_keep)

    def flops_per_token(self, seq_len: int) -> float:
        return 0.0
