"""`hf`: any causal LM from transformers (`AutoModelForCausalLM`) behind the LanguageModel interface.

Two ways to build one:

    model: {family: hf, params: {name_or_path: gpt2}}                       # pretrained (hub id or local dir)
    model: {family: hf, params: {from_config: true, model_type: gpt2,       # random init, built offline
                                 config: {n_layer: 2, n_embd: 32, n_head: 2, n_positions: 64}}}

Decoding uses transformers' own KV cache (`DynamicCache`) plus the attention mask seen so far, so that
left-padded prompts get position ids that start at each row's first real token.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lmbench.errors import SpecError
from lmbench.hub import from_hub
from lmbench.models.base import MODELS, LanguageModel, positions_from_mask

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class Config:
    name_or_path: str | None = None  # hub id or local directory (pretrained weights, and the config base)
    from_config: bool = False  # true: random initialisation from a config (no weights are read)
    model_type: str | None = None  # from_config without name_or_path: e.g. gpt2, llama
    config: dict[str, Any] = field(default_factory=dict)  # config overrides, e.g. {n_layer: 2, n_embd: 32}
    dtype: str = "float32"  # weights dtype: float32 | bfloat16 | float16 | auto
    revision: str | None = None  # hub revision (branch, tag or commit)
    trust_remote_code: bool = False


def cache_argument(model: Any) -> str:
    """The name under which `model.forward` takes (and its output returns) the KV cache: `cache` from
    transformers 5.24 on (`past_key_values` is deprecated there, to be removed in 5.40), `past_key_values`
    before, and for remote-code models that never adopted the new name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _keep_argument(model: Any) -> str | None:
    """The name of the "project only the last positions" argument of `model.forward`: `logits_to_keep`
    (transformers >= 4.50), `num_logits_to_keep` (4.45-4.49), or None (then all positions are projected)."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)


@dataclass
class HFState:
    """transformers' KV cache (None before the first step) and the (B, past) attention mask so far."""

    cache: Any
    mask: Tensor

    def reorder(self, index: Tensor, reuse: bool = False) -> "HFState":
        """A new state whose row i is row index[i] of this one; this state is left unchanged."""
        index = index.to(self.mask.device)
        cache = _copy_cache(self.cache)
        if cache is not None:
            cache.reorder_cache(index)
        return HFState(cache, self.mask.index_select(0, index))


def _copy_cache(cache: Any) -> Any:
    """A shallow copy of a transformers Cache whose layers can be re-bound (reorder/update assign new tensors)
    without touching the original, so an old state stays valid after step() or reorder()."""
    if cache is None:
        return None
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    return new


def _auto_config(cfg: Config, vocab_size: int, pad_id: int, eos_id: int | None = None) -> Any:
    """The transformers config of `cfg`: the pretrained one with overrides, or model_type's defaults sized to the
    tokenizer (its pad id; with `eos_id`, an encoder-decoder's eos and decoder_start ids that were the default pad
    or EOS become the tokenizer's and forced BOS/EOS are dropped, so that `generate` decodes as lmbench does)."""
    from transformers import AutoConfig

    overrides = dict(cfg.config)
    if cfg.name_or_path is not None:
        hf_config = from_hub(lambda **kw: AutoConfig.from_pretrained(
            cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **overrides, **kw),
            field="model.params.name_or_path", what="model config", name=str(cfg.name_or_path))
    else:
        overrides.setdefault("vocab_size", vocab_size)
        base = AutoConfig.for_model(cfg.model_type)
        for key in ("bos_token_id", "eos_token_id"):  # defaults such as GPT-2's 50256 outside a small vocabulary
            value = getattr(base, key, None)
            if key not in overrides and isinstance(value, int) and value >= overrides["vocab_size"]:
                overrides[key] = None
        overrides.setdefault("pad_token_id", pad_id)
        if eos_id is not None:
            own = {getattr(base, "pad_token_id", None): pad_id, getattr(base, "eos_token_id", None): eos_id}
            for key in ("eos_token_id", "decoder_start_token_id"):
                value = getattr(base, key, None)
                if key not in overrides and isinstance(value, int):
                    overrides[key] = own.get(value)  # anything else (BART's BOS 0) has no lmbench counterpart
            for key in ("forced_eos_token_id", "forced_bos_token_id"):  # lmbench's samplers force no token
                if getattr(base, key, None) is not None:
                    overrides.setdefault(key, None)
            if getattr(base, "decoder_start_token_id", None) is None:  # T5's config leaves it to the checkpoints,
                overrides.setdefault("decoder_start_token_id", pad_id)  # which all use the pad id
        hf_config = AutoConfig.for_model(cfg.model_type, **overrides)
    return hf_config


@MODELS.register("hf")
class HFCausalLM(LanguageModel):
    """Wraps `transformers.AutoModelForCausalLM`; logits are exactly the wrapped model's.

    The vocabulary is the model's own: a tokenizer with fewer ids is fine (the extra rows are never produced
    as inputs), one with more ids (an added pad token) resizes the input/output embeddings with a warning.
    """

    Config = Config

    def __init__(self, config: Config, vocab_size: int, pad_id: int) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.config = config
        self.pad_id = pad_id
        dtype: Any = getattr(torch, config.dtype) if config.dtype != "auto" else "auto"
        if config.from_config:
            dtype = None if dtype == "auto" else dtype
            hf_config = _auto_config(config, vocab_size, pad_id)
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype,
                                                          trust_remote_code=config.trust_remote_code)
        else:
            self.model = from_hub(lambda **kw: AutoModelForCausalLM.from_pretrained(
                config.name_or_path, dtype=dtype, revision=config.revision,
                trust_remote_code=config.trust_remote_code, **dict(config.config), **kw),
                field="model.params.name_or_path", what="model", name=str(config.name_or_path))
        model_vocab = self.model.get_input_embeddings().num_embeddings
        if vocab_size > model_vocab:
            log.warning("tokenizer has %d ids but the model %d: resizing the embeddings", vocab_size, model_vocab)
            self.model.resize_token_embeddings(vocab_size)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.cache_arg = cache_argument(self.model)
        self.keep_arg = _keep_argument(self.model)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) logits. With a mask, positions count from each row's first real token."""
        position_ids = None if attention_mask is None else positions_from_mask(attention_mask)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False)
        return out.logits  # (B, T, V)

    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> HFState:
        return HFState(None, torch.zeros(batch_size, 0, dtype=torch.long, device=device))

    def step(self, input_ids: Tensor, state: HFState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, HFState]:
        """Consume (B, t) new ids -> (B, t, V) logits and a new state (`state` stays valid)."""
        num_new = input_ids.size(1)
        if attention_mask is None:
            new = torch.ones_like(input_ids, dtype=state.mask.dtype)
            attention_mask = torch.cat([state.mask, new], dim=1)
        attention_mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
        position_ids = positions_from_mask(attention_mask)[:, -num_new:]
        cache = _copy_cache(state.cache)
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
        keep = {self.keep_arg: logits_to_keep} if logits_to_keep and self.keep_arg else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{self.cache_arg: cache}, **keep)
        logits = out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits  # a model without the argument
        return logits, HFState(getattr(out, self.cache_arg), attention_mask)

    def _shape(self) -> tuple[int | None, int | None]:
        c = self.model.config
        num_layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None)
        d_model = getattr(c, "hidden_size", None) or getattr(c, "n_embd", None)
        return num_layers, d_model

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, as for the `transformer` family (Kaplan et al. 2020, x3 for backward):
        6 * (N_non_embedding + output projection) + 12 * num_layers * d_model * seq_len."""
        embed = self.model.get_input_embeddings().weight
        matmul = self.num_params() - embed.numel()  # an untied output projection is already counted here
        pos = getattr(getattr(self.model, "transformer", None), "wpe", None)
        if pos is not None:
            matmul -= pos.weight.numel()
        out = self.model.get_output_embeddings()
        if out is not None and out.weight is embed:
            matmul += embed.numel()  # tied: the projection reuses the embedding matrix
        num_layers, d_model = self._shape()
        attention = 12 * num_layers * d_model * seq_len if num_layers and d_model else 0
        return float(6 * matmul + attention)

    def describe(self) -> dict[str, Any]:
        num_layers, d_model = self._shape()
        return {
            "name_or_path": self.config.name_or_path,
            "from_config": self.config.from_config,
            "model_type": self.model.config.model_type,
            "num_layers": num_layers,
            "d_model": d_model,
            "vocab_size": self.vocab_size,
            "num_params": self.num_params(),
            "num_trainable_params": self.num_params(trainable_only=True),
        }

    @classmethod
    def check_spec(cls, config: Config, spec: Any) -> None:
        if config.dtype not in DTYPES:
            from lmbench.errors import choice_error

            raise choice_error("model.params.dtype", config.dtype, DTYPES)
        if config.from_config:
            if config.name_or_path is None and config.model_type is None:
                raise SpecError("model.params.model_type",
                                "from_config needs model_type (e.g. gpt2) or name_or_path to take the config from")
            return
        if not config.name_or_path:
            raise SpecError("model.params.name_or_path",
                            "required for a pretrained hf model (or set from_config: true with model_type)")
        tok = spec.tokenizer
        if tok.kind != "hf":
            raise SpecError("tokenizer.kind", f"a pretrained hf model needs its own tokenizer (tokenizer.kind 'hf' with "
                                              f"name_or_path {config.name_or_path!r}), got tokenizer.kind {tok.kind!r}")
        tok_name = dict(tok.params).get("name_or_path")
        if tok_name != config.name_or_path:
            raise SpecError("tokenizer.params.name_or_path",
                            f"{tok_name!r} differs from model.params.name_or_path {config.name_or_path!r}; "
                            "a pretrained model needs its own tokenizer")
