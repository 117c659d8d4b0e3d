"""`hf_seq2seq`: an encoder-decoder from transformers (`AutoModelForSeq2SeqLM`: T5, BART, mT5...) behind the causal
LanguageModel interface, for prompt -> story (source -> target) data.

    model: {family: hf_seq2seq, params: {name_or_path: t5-small}}                  # pretrained (online)
    model: {family: hf_seq2seq, params: {from_config: true, model_type: t5,        # random init, offline
                                         config: {d_model: 64, num_layers: 2, ...}}}

prompt_story data with `batching: documents` gives every row as ``BOS + prompt + <sep> + story + EOS`` with the
prompt and `<sep>` masked out of the labels, the layout a decoder-only model trains on. This family splits each row
at its `<sep>`: the encoder reads the source ``prompt + EOS`` (T5's convention: the source ends with EOS; the
start token is dropped), the decoder reads ``decoder_start + story`` (the targets shifted right, as transformers'
`shift_tokens_right` makes them), and its logits sit at the positions where a decoder-only model predicts the same
targets (from `<sep>` on); positions of the prompt get zeros and are never scored. So the trainer, the evaluator
(NLL of every story token and the EOS, bits per byte of the story text) and the samplers are the ones every other
family uses, and a T5-style model ranks in the same table as a prompt-masked decoder-only model.

Decoding: a prompt ending in (or containing) `<sep>` is split the same way: its first `step` runs the encoder once
and the decoder on ``decoder_start`` plus any prompt tokens after `<sep>`; later steps feed the decoder one token
with its KV cache (transformers' `EncoderDecoderCache`, the cross-attention keys computed once). Greedy and beam
ids equal `model.generate(source)`. Prompts that continue after `<sep>` by different lengths in one batch get
left-padded decoder inputs: exact for relative positions (T5), shifted positions for absolute ones (BART).

Evaluation scores each document in one pass (`whole_sequences`), never with sliding windows: a window without the
prompt would have no source.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lmbench.errors import SpecError
from lmbench.hub import from_hub
from lmbench.models import hf
from lmbench.models.base import MODELS, LanguageModel


@dataclass
class Config(hf.Config):
    """The `hf` family's fields; model_type names an encoder-decoder (t5, bart, mt5...)."""


@dataclass
class Seq2SeqState:
    """The encoder's output and source mask (None before the prompt), the decoder's KV cache and its mask."""

    encoder: Tensor | None  # (B, S, d)
    source_mask: Tensor | None  # (B, S)
    cache: Any
    decoder_mask: Tensor  # (B, decoder tokens so far)

    def reorder(self, index: Tensor, reuse: bool = False) -> "Seq2SeqState":
        index = index.to(self.decoder_mask.device)
        cache = _copy_cache(self.cache)
        if cache is not None:
            cache.reorder_cache(index)
        pick = (lambda t: None if t is None else t.index_select(0, index))  # noqa: E731
        return Seq2SeqState(pick(self.encoder), pick(self.source_mask), cache, self.decoder_mask.index_select(0, index))


def _copy_cache(cache: Any) -> Any:
    """A copy of an EncoderDecoderCache whose layers can be re-bound without touching the original."""
    if cache is None:
        return None
    new = copy.copy(cache)
    new.self_attention_cache = hf._copy_cache(cache.self_attention_cache)
    new.cross_attention_cache = hf._copy_cache(cache.cross_attention_cache)
    if isinstance(getattr(cache, "is_updated", None), dict):
        new.is_updated = dict(cache.is_updated)
    return new


@MODELS.register("hf_seq2seq")
class HFSeq2SeqLM(LanguageModel):
    """Wraps `transformers.AutoModelForSeq2SeqLM`; see the module docstring for the row layout."""

    Config = Config
    whole_sequences = True

    def __init__(self, config: Config, vocab_size: int, pad_id: int, *, eos_id: int, sep_id: int) -> None:
        super().__init__()
        from transformers import AutoModelForSeq2SeqLM

        self.config, self.pad_id, self.eos_id, self.sep_id = config, pad_id, eos_id, sep_id
        dtype: Any = getattr(torch, config.dtype) if config.dtype != "auto" else "auto"
        if config.from_config:
            hf_config = hf._auto_config(config, vocab_size, pad_id, eos_id=eos_id)
            self.model = AutoModelForSeq2SeqLM.from_config(hf_config, dtype=None if dtype == "auto" else dtype,
                                                           trust_remote_code=config.trust_remote_code)
        else:
            self.model = from_hub(lambda **kw: AutoModelForSeq2SeqLM.from_pretrained(
                config.name_or_path, dtype=dtype, revision=config.revision,
                trust_remote_code=config.trust_remote_code, **dict(config.config), **kw),
                field="model.params.name_or_path", what="model", name=str(config.name_or_path))
        if vocab_size > self.model.get_input_embeddings().num_embeddings:  # an added <sep>
            hf.log.warning("tokenizer has %d ids but the model %d: resizing the embeddings", vocab_size,
                           self.model.get_input_embeddings().num_embeddings)
            self.model.resize_token_embeddings(vocab_size)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.start_id = int(self.model.config.decoder_start_token_id)
        self.cache_arg = hf.cache_argument(self.model)

    @classmethod
    def extras(cls, config: Any, tokenizer: Any, seed: int) -> dict[str, Any]:
        if tokenizer.sep_id is None:
            raise SpecError("tokenizer.params", "hf_seq2seq splits rows at <sep>: add '<sep>' to the tokenizer's "
                                                "specials / user_defined_symbols / extra_special_tokens")
        return {"eos_id": tokenizer.eos_id, "sep_id": tokenizer.sep_id}

    # ----- the row layout
    def _sources(self, ids: Tensor, first: Tensor, sep: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) sources ``prompt + EOS`` (right-padded) and their mask, from positions first+1 .. sep-1."""
        lengths = sep - first  # prompt tokens + EOS
        j = torch.arange(int(lengths.max()), device=ids.device)[None, :]
        tokens = ids.gather(1, (first[:, None] + 1 + j).clamp(max=ids.size(1) - 1))
        tokens = torch.where(j == lengths[:, None] - 1, self.eos_id, tokens)
        mask = j < lengths[:, None]
        return tokens.masked_fill(~mask, self.pad_id), mask.long()

    def _split(self, ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(first real position, <sep> position) of every row, and the real-token mask."""
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        is_sep = (ids == self.sep_id) & real
        if not bool(is_sep.any(1).all()):
            raise ValueError("hf_seq2seq: a row without <sep> (prompt_story data gives every row one; a prompt for "
                             "sampling must contain '<sep>'; data.block_size may cut a long prompt's <sep> off)")
        first = (~real).long().cumsum(1).eq(torch.arange(1, ids.size(1) + 1, device=ids.device)).sum(1)
        return first, is_sep.long().argmax(1), real

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) right-padded rows -> (B, T, V) logits: the decoder's at positions <sep>.., zeros before."""
        first, sep, _ = self._split(input_ids, attention_mask)
        source, source_mask = self._sources(input_ids, first, sep)
        T = input_ids.size(1)
        j = torch.arange(T - int(sep.min()), device=input_ids.device)[None, :]
        at = sep[:, None] + j  # causal-layout position of decoder input j
        inside = at < T
        decoder = input_ids.gather(1, at.clamp(max=T - 1)).masked_fill(~inside, self.pad_id)
        decoder[:, 0] = self.start_id  # <sep> -> decoder_start: the targets shifted right
        out = self.model(input_ids=source, attention_mask=source_mask, decoder_input_ids=decoder, use_cache=False)
        logits = out.logits  # (B, L, V)
        full = logits.new_zeros(input_ids.size(0), T, logits.size(-1))
        rows = torch.arange(input_ids.size(0), device=input_ids.device)[:, None].expand_as(at)
        full[rows[inside], at[inside]] = logits[inside]
        return full

    # ----- decoding
    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> Seq2SeqState:
        return Seq2SeqState(None, None, None, torch.zeros(batch_size, 0, dtype=torch.long, device=device))

    def step(self, input_ids: Tensor, state: Seq2SeqState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, Seq2SeqState]:
        """The first call takes the (left-padded) prompts: encoder once, decoder on decoder_start (+ any tokens
        after <sep>); later calls take (B, t) new decoder tokens. Returns (B, t, V) (or the last
        `logits_to_keep`) logits and a new state (`state` stays valid)."""
        from transformers import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        num_new = input_ids.size(1)
        if state.encoder is None:
            first, sep, real = self._split(input_ids, attention_mask)
            source, source_mask = self._sources(input_ids, first, sep)
            encoder = self.model.get_encoder()(input_ids=source, attention_mask=source_mask).last_hidden_state
            after = num_new - 1 - sep  # prompt tokens after <sep> (prompts are left-padded: rows end together)
            j = torch.arange(int(after.max()) + 1, device=input_ids.device)[None, :]
            lead = j.size(1) - 1 - after[:, None]  # left pads of each row's decoder input
            decoder = input_ids[:, num_new - j.size(1):].clone()
            decoder = torch.where(j == lead, self.start_id, decoder).masked_fill(j < lead, self.pad_id)
            decoder_mask = (j >= lead).long()
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        else:
            encoder, source_mask, decoder = state.encoder, state.source_mask, input_ids
            decoder_mask = torch.cat([state.decoder_mask, torch.ones_like(input_ids)], dim=1)
            cache = _copy_cache(state.cache)
        padded = bool((decoder_mask == 0).any())
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=encoder), attention_mask=source_mask,
                         decoder_input_ids=decoder, decoder_attention_mask=decoder_mask if padded else None,
                         use_cache=True, **{self.cache_arg: cache})
        logits = out.logits  # (B, decoder inputs this call, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        elif logits.size(1) != num_new:  # a prefill: the decoder's logits at the prompt's last positions
            full = logits.new_zeros(logits.size(0), num_new, logits.size(-1))
            full[:, num_new - logits.size(1):] = logits
            logits = full
        return logits, Seq2SeqState(encoder, source_mask, getattr(out, self.cache_arg), decoder_mask)

    # ----- facts
    def flops_per_token(self, seq_len: int) -> float:
        """About 6 x the non-embedding parameters per target token (encoder and decoder both run per pair)."""
        embed = self.model.get_input_embeddings().weight
        out = self.model.get_output_embeddings()
        matmul = self.num_params() - embed.numel() + (embed.numel() if out is not None and out.weight is embed else 0)
        return float(6 * matmul)

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        return {"name_or_path": self.config.name_or_path, "from_config": self.config.from_config,
                "model_type": c.model_type, "d_model": getattr(c, "d_model", None),
                "num_layers": getattr(c, "num_layers", None) or getattr(c, "encoder_layers", None),
                "vocab_size": self.vocab_size, "num_params": self.num_params(),
                "num_trainable_params": self.num_params(trainable_only=True)}

    @classmethod
    def check_spec(cls, config: Config, spec: Any) -> None:
        hf.HFCausalLM.check_spec(config, spec)
        if spec is None:
            return
        if spec.data.source != "prompt_story":
            raise SpecError("data.source", f"hf_seq2seq reads (source, target) pairs: data.source must be "
                                           f"prompt_story, got {spec.data.source!r}")
        if spec.data.batching != "documents":
            raise SpecError("data.batching", "hf_seq2seq needs batching: documents (one pair per row); packed "
                                             "windows would cut pairs apart")
        for i, prompt in enumerate(spec.sample.prompts):
            if "<sep>" not in prompt:
                raise SpecError(f"sample.prompts[{i}]", f"{prompt!r} has no '<sep>': an hf_seq2seq prompt is "
                                                       "the source followed by <sep>")
