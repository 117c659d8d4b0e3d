"""Tiny float32 models of every registered family, built offline from a seed."""

from __future__ import annotations

from typing import Any

import torch

from lmbench.models import MODELS, LanguageModel, resolve_config
from lmbench.spec import ModelSpec

VOCAB = 23
PAD = 0

TINY_PARAMS: dict[str, dict[str, Any]] = {
    "rnn": {"d_embed": 16, "d_hidden": 24, "num_layers": 2},
    "lstm": {"d_embed": 16, "d_hidden": 24, "num_layers": 2},
    "gru": {"d_embed": 16, "d_hidden": 24, "num_layers": 2},
    "transformer": {"num_layers": 2, "num_heads": 2, "d_model": 16, "block_size": 32},
    "hf": {"from_config": True, "model_type": "gpt2",
           "config": {"n_layer": 2, "n_embd": 16, "n_head": 2, "n_positions": 32}},
    "hf_seq2seq": {"from_config": True, "model_type": "t5",
                   "config": {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 2, "num_heads": 2,
                              "relative_attention_num_buckets": 8, "dropout_rate": 0.0}},
}


def make_tiny(family: str, seed: int = 0, **overrides: Any) -> LanguageModel:
    """A tiny model of `family` in eval mode; `overrides` replace entries of its params."""
    torch.manual_seed(seed)
    params = {**TINY_PARAMS[family], **overrides}
    config = resolve_config(ModelSpec(family, params))
    return MODELS.get(family)(config, vocab_size=VOCAB, pad_id=PAD).eval()
