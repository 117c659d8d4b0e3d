"""Trained lmbench models as transformers models: one exporter per model family, registered in `EXPORTERS`.

    hf_model = EXPORTERS.get(spec.model.family)(model, special_ids)   # a PreTrainedModel with the same logits

- `hf`: the wrapped transformers model itself (weights without lmbench's ``model.`` prefix).
- `transformer`: mapped onto a standard architecture with the exact logits of the lmbench model:
  learned positions -> GPT-2 (`GPT2LMHeadModel`); rotary positions -> GPT-NeoX (`GPTNeoXForCausalLM`, sequential
  residual, full rotary, rotate-half layout as lmbench's). Biases switched off in lmbench are exported as zeros
  (both architectures always have them). Post-norm blocks (SEEDS 3) have no standard equivalent: refused. Llama
  is not a target: it has RMSNorm and a gated MLP, which an lmbench transformer does not.
- `rnn`, `lstm`, `gru`: a small `trust_remote_code` model (see `recurrent_remote.py`), written beside the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lmbench.errors import SpecError
from lmbench.models.base import LanguageModel
from lmbench.registry import Registry

# family -> exporter(model, special ids {"bos_token_id": ..., "eos_token_id": ..., "pad_token_id": ...}) -> model
Exporter = Callable[[LanguageModel, dict[str, int]], Any]
EXPORTERS: Registry[Exporter] = Registry("model.family")

# lmbench activation -> transformers' ACT2FN name computing exactly the same function
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


@EXPORTERS.register("hf")
def export_hf(model: Any, special_ids: dict[str, int]) -> Any:
    """The wrapped `AutoModelForCausalLM` (its own config, tokens ids as trained)."""
    return model.model


@EXPORTERS.register("hf_seq2seq")
def export_seq2seq(model: Any, special_ids: dict[str, int]) -> Any:
    """Refused: the export is a causal LM folder, checked with AutoModelForCausalLM."""
    raise SpecError("model.family", "hf_seq2seq runs are not exported (lmbench export writes causal language "
                                    "models); the trained encoder-decoder is the `model.` weights of the run's "
                                    "checkpoint, loadable into the same AutoModelForSeq2SeqLM config")


@EXPORTERS.register("transformer")
def export_transformer(model: Any, special_ids: dict[str, int]) -> Any:
    """GPT-2 for learned positions, GPT-NeoX for rotary ones (module docstring); same logits."""
    c = model.config
    if c.norm != "pre":
        raise SpecError("model.params.norm", "post-norm blocks (norm: post) have no standard transformers "
                                             "architecture with the same logits; export supports norm: pre")
    hf_model = _gpt2(model, special_ids) if c.positions == "learned" else _gpt_neox(model, special_ids)
    return hf_model.eval()


def _gpt2(model: Any, special_ids: dict[str, int]) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    config = GPT2Config(
        vocab_size=model.vocab_size, n_positions=c.block_size, n_embd=c.d_model, n_layer=c.num_layers,
        n_head=c.num_heads, n_inner=c.d_ff or 4 * c.d_model, activation_function=HF_ACTIVATIONS[c.activation],
        resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=c.dropout if c.attention_dropout is None else c.attention_dropout,
        layer_norm_epsilon=model.ln_f.eps, tie_word_embeddings=c.tie_embeddings, **special_ids)
    hf = GPT2LMHeadModel(config)
    t = hf.transformer
    with torch.no_grad():
        _copy(t.wte.weight, model.tok_emb.weight)
        _copy(t.wpe.weight, model.pos_emb.weight)
        for block, h in zip(model.blocks, t.h):  # GPT-2's Conv1D stores (in, out): the transpose of nn.Linear's
            _layer_norm(h.ln_1, block.ln1)
            _linear(h.attn.c_attn, block.attn.qkv, transpose=True)  # q, k, v blocks in the same order
            _linear(h.attn.c_proj, block.attn.out, transpose=True)
            _layer_norm(h.ln_2, block.ln2)
            _linear(h.mlp.c_fc, block.mlp.fc, transpose=True)
            _linear(h.mlp.c_proj, block.mlp.proj, transpose=True)
        _layer_norm(t.ln_f, model.ln_f)
        if not c.tie_embeddings:
            _copy(hf.get_output_embeddings().weight, model.head.weight)
    return hf


def _gpt_neox(model: Any, special_ids: dict[str, int]) -> Any:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    c = model.config
    config = GPTNeoXConfig(
        vocab_size=model.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, intermediate_size=c.d_ff or 4 * c.d_model,
        hidden_act=HF_ACTIVATIONS[c.activation], max_position_embeddings=c.block_size,
        rotary_pct=1.0, rotary_emb_base=c.rope_base,  # transformers 5 reads both into rope_parameters
        attention_dropout=c.dropout if c.attention_dropout is None else c.attention_dropout,
        hidden_dropout=c.dropout, layer_norm_eps=model.ln_f.eps, use_parallel_residual=False,
        attention_bias=True, tie_word_embeddings=c.tie_embeddings, **special_ids)
    hf = GPTNeoXForCausalLM(config)
    body = hf.gpt_neox
    heads, head_dim = c.num_heads, c.d_model // c.num_heads
    with torch.no_grad():
        _copy(body.embed_in.weight, model.tok_emb.weight)
        for block, layer in zip(model.blocks, body.layers):
            _layer_norm(layer.input_layernorm, block.ln1)
            qkv = layer.attention.query_key_value  # NeoX: per head [q_h, k_h, v_h]; lmbench: [q, k, v] of all heads
            _copy(qkv.weight, block.attn.qkv.weight.view(3, heads, head_dim, -1).transpose(0, 1).reshape(qkv.weight.shape))
            _bias(qkv, None if block.attn.qkv.bias is None
                  else block.attn.qkv.bias.view(3, heads, head_dim).transpose(0, 1).reshape(-1))
            _linear(layer.attention.dense, block.attn.out)
            _layer_norm(layer.post_attention_layernorm, block.ln2)
            _linear(layer.mlp.dense_h_to_4h, block.mlp.fc)
            _linear(layer.mlp.dense_4h_to_h, block.mlp.proj)
        _layer_norm(body.final_layer_norm, model.ln_f)
        if not c.tie_embeddings:
            _copy(hf.get_output_embeddings().weight, model.head.weight)
    return hf


def _copy(dst: Tensor, src: Tensor) -> None:
    if dst.shape != src.shape:
        raise RuntimeError(f"export: shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
    dst.copy_(src)


def _bias(dst: nn.Module, bias: Tensor | None) -> None:
    """Copy `bias`, or zero the target's bias where lmbench had none (bias: false)."""
    if bias is None:
        dst.bias.zero_()
    else:
        _copy(dst.bias, bias)


def _linear(dst: nn.Module, src: nn.Linear, *, transpose: bool = False) -> None:
    _copy(dst.weight, src.weight.t() if transpose else src.weight)
    _bias(dst, src.bias)


def _layer_norm(dst: nn.Module, src: nn.LayerNorm) -> None:
    if dst.eps != src.eps:
        raise RuntimeError(f"export: layer norm eps {src.eps} != {dst.eps}")
    _copy(dst.weight, src.weight)
    _bias(dst, src.bias)


@EXPORTERS.register("rnn")
@EXPORTERS.register("lstm")
@EXPORTERS.register("gru")
def export_recurrent(model: Any, special_ids: dict[str, int]) -> Any:
    """`LmbenchRecurrentForCausalLM` (trust_remote_code; its source is saved with the weights)."""
    from lmbench.export.recurrent_remote import LmbenchRecurrentConfig, LmbenchRecurrentForCausalLM

    c = model.config
    config = LmbenchRecurrentConfig(cell=model.cell, vocab_size=model.vocab_size, d_embed=model.embed.embedding_dim,
                                    d_hidden=c.d_hidden, num_layers=c.num_layers, dropout=c.dropout,
                                    tied_projection=c.tie_weights, **special_ids)
    LmbenchRecurrentConfig.register_for_auto_class()
    LmbenchRecurrentForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    hf = LmbenchRecurrentForCausalLM(config)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}  # tied: two copies
    hf.load_state_dict(state, strict=True)
    return hf.eval()
