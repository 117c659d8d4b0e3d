"""`transformer`: a decoder-only GPT (pre- or post-LayerNorm blocks) with a KV cache for decoding.

Attention goes through `F.scaled_dot_product_attention`: `is_causal=True` with no mask tensor when no row has
a pad before a real token (training batches, right padding: causal masking already hides trailing pads), and
an explicit boolean (causal AND padding) mask otherwise. On CUDA the first takes the flash kernel under bf16/fp16
autocast (it needs half-precision q/k/v, no mask tensor and a head size that is a multiple of 8 up to 256; the
rotary tables are cast to q/k's dtype so as not to promote them), the second the memory-efficient kernel. bf16
training on the CPU takes `lmbench.models.attention.causal_attention` instead (matrix products, 2-3x faster than
the CPU flash kernel there). Every query may always attend to itself, so rows made only of pads (left padding)
stay finite. Position ids count from each row's first real token, so a left-padded prompt gives the same logits as
the unpadded one.

Beyond `block_size` tokens, decoding crops the context to the last `block_size` tokens and recomputes that
window for each new token (what nanoGPT's `generate` does); within `block_size` every token costs one step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbench.errors import SpecError, choice_error, range_error
from lmbench.models.attention import causal_attention, use_matmul_attention
from lmbench.models.base import MODELS, LanguageModel, positions_from_mask
from lmbench.models.kv_cache import KV, KVPool, KVState, KVWriter

POSITIONS = ("learned", "rotary")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU,
}
NORMS = ("pre", "post")
Write = Callable[[Tensor, Tensor], KV]  # one layer's cache append: new (k, v) -> all (k, v)


@dataclass
class Config:
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 256
    d_ff: int | None = None  # MLP width; None = 4 * d_model
    block_size: int = 256  # longest context (learned position table size)
    dropout: float = 0.0  # embeddings, residual branches (and attention probabilities unless set below)
    # Dropout on the attention probabilities; None = `dropout`. 0 keeps SDPA on its fused flash kernel on CPU,
    # which has no dropout: with dropout there it materialises (B, H, T, T) scores (slow for long documents).
    attention_dropout: float | None = None
    positions: str = "learned"  # learned | rotary
    # gelu (exact, erf) | gelu_tanh (GPT-2's approximation) | relu. On a CPU gelu_tanh's forward + backward cost
    # about 3.6x gelu's (torch's vectorised tanh): 8.0 against 2.2 ms a layer on the 10.7M shape in bf16.
    activation: str = "gelu"
    norm: str = "pre"  # pre: x + f(ln(x)) (GPT-2) | post: ln(x + f(x)) (the original Transformer, SEEDS 3)
    bias: bool = True  # biases in Linear layers and LayerNorms
    tie_embeddings: bool = True  # output projection shares the token embedding matrix
    rope_base: float = 10000.0  # rotary positions only


def rope_tables(block_size: int, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos, sin tables (block_size, head_dim) for rotary positions (rotate-half layout)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, hd) queries or keys by (B|1, 1, T, hd) tables."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # float32 tables would promote bf16 q/k (no flash kernel)
    return x * cos + rotated * sin


def attention_mask_for(key_mask: Tensor, num_new: int) -> Tensor:
    """(B, Tk) bool real-key mask -> (B, 1, num_new, Tk) bool: causal AND real key, OR the query itself.

    The new queries are the last `num_new` of the Tk positions. The self term keeps pad-only rows finite.
    """
    Tk = key_mask.size(1)
    k_pos = torch.arange(Tk, device=key_mask.device)
    q_pos = k_pos[Tk - num_new:].unsqueeze(1)  # (t, 1)
    allowed = (k_pos <= q_pos) & key_mask[:, None, :]  # (B, t, Tk)
    return (allowed | (k_pos == q_pos)).unsqueeze(1)


@dataclass
class Attend:
    """How one forward attends: an explicit mask (B, 1, t, Tk) or SDPA's causal flag; rotary tables or None."""

    mask: Tensor | None
    is_causal: bool
    cos: Tensor | None = None
    sin: Tensor | None = None


class SelfAttention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.num_heads, self.d_model = cfg.num_heads, cfg.d_model
        self.attn_dropout = cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)  # fused q, k, v
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, how: Attend, write: Write | None = None) -> Tensor:
        """`write` (decoding) appends this step's keys/values to the cache and returns all of them."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        if how.cos is not None:
            q, k = apply_rope(q, how.cos, how.sin), apply_rope(k, how.cos, how.sin)
        if write is not None:
            k, v = write(k, v)  # (B, H, past + T, hd)
        dropout = self.attn_dropout if self.training else 0.0
        if how.is_causal and how.mask is None and write is None and use_matmul_attention(q, dropout):
            y = causal_attention(q, k, v)  # bf16 training on the CPU: faster than SDPA's flash kernel there
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=how.mask, is_causal=how.is_causal,
                                               dropout_p=dropout)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.out(y))


class MLP(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.fc = nn.Linear(cfg.d_model, d_ff, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.proj = nn.Linear(d_ff, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, how: Attend, write: Write | None = None) -> Tensor:
        if self.pre_norm:
            x = x + self.attn(self.ln1(x), how, write)
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x, how, write))
        return self.ln2(x + self.mlp(x))


@MODELS.register("transformer")
class TransformerLM(LanguageModel):
    """Token (+ learned position) embeddings -> blocks -> final LayerNorm -> (tied) vocabulary projection."""

    Config = Config

    def __init__(self, config: Config, vocab_size: int, pad_id: int) -> None:
        super().__init__()
        self.config, self.vocab_size, self.pad_id = config, vocab_size, pad_id
        d = config.d_model
        self.tok_emb = nn.Embedding(vocab_size, d)
        self.pos_emb = nn.Embedding(config.block_size, d) if config.positions == "learned" else None
        if config.positions == "rotary":
            cos, sin = rope_tables(config.block_size, d // config.num_heads, config.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(d, bias=config.bias)
        self.head = nn.Linear(d, vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        resid_std = 0.02 / math.sqrt(2 * config.num_layers)
        for block in self.blocks:  # GPT-2: residual projections scaled by 1/sqrt(2 * num_layers)
            nn.init.normal_(block.attn.out.weight, std=resid_std)
            nn.init.normal_(block.mlp.proj.weight, std=resid_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # --- shared body -----------------------------------------------------------------------------------------

    def _embed(self, input_ids: Tensor, positions: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(B, t) ids and (B|1, t) positions -> (B, t, d) inputs and rotary tables (B|1, 1, t, hd) or None."""
        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            return self.drop(x + self.pos_emb(positions)), None, None
        return self.drop(x), self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)

    def _run(self, input_ids: Tensor, positions: Tensor, mask: Tensor | None, is_causal: bool,
             writer: KVWriter | None = None, logits_to_keep: int = 0, rows: Tensor | None = None) -> Tensor:
        """`rows`: the inputs are in the cache's buffer order, and output row i is input row rows[i]."""
        x, cos, sin = self._embed(input_ids, positions)
        how = Attend(mask, is_causal, cos, sin)
        for i, block in enumerate(self.blocks):
            x = block(x, how, None if writer is None else writer.bound(i))
        if logits_to_keep:  # only the last positions' logits (a prefill needs one): skips most of the head
            x = x[:, -logits_to_keep:]
        if rows is not None:
            x = x.index_select(0, rows)
        return self.head(self.ln_f(x))  # (B, t or logits_to_keep, V)

    # --- training / scoring -----------------------------------------------------------------------------------

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) logits, T <= block_size. Right padding takes the causal fast path."""
        T = input_ids.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        if attention_mask is None or not _has_pad_before_real(attention_mask):
            positions = torch.arange(T, device=input_ids.device).unsqueeze(0)
            return self._run(input_ids, positions, None, T > 1)
        key_mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        positions = positions_from_mask(attention_mask)
        return self._run(input_ids, positions, attention_mask_for(key_mask, T), False)

    # --- decoding --------------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> KVState:
        empty = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        return KVState(empty, empty, pool=KVPool(max_length or 0), dense=True)

    def step(self, input_ids: Tensor, state: KVState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, KVState]:
        """Consume (B, t) new ids with the cache -> (B, t, V) logits and a new state (`state` stays valid: see
        kv_cache.py for how the cache is appended in place).

        `logits_to_keep` > 0 returns only the last that many positions' logits (as transformers' argument)."""
        t = input_ids.size(1)
        # Whether every position is real: carried in the state, so decoding asks the device (a host sync) only
        # when a given mask could change the answer, not once per token.
        dense = state.dense if attention_mask is None else (False if state.dense is False else None)
        if attention_mask is None:
            attention_mask = torch.cat([state.mask, torch.ones_like(input_ids)], dim=1)
        mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
        ids = torch.cat([state.ids, input_ids], dim=1)
        if mask.size(1) > self.config.block_size:
            logits, cropped = self._step_cropped(ids, mask, t)
            return (logits[:, -logits_to_keep:] if logits_to_keep else logits), cropped
        positions = positions_from_mask(mask)[:, -t:]
        if dense is None:
            dense = bool(mask.all())
        if state.num_past == 0 and dense:
            attn, is_causal = None, t > 1
        elif t == 1 and dense:
            attn, is_causal = None, False
        else:
            attn, is_causal = attention_mask_for(mask.bool(), t), False
        order = state.order  # beams whose keys and values sit in other buffer rows (kv_cache.KVState.rows)
        if order is not None:
            input_ids, positions = input_ids.index_select(0, order), positions.index_select(0, order)
            attn = None if attn is None else attn.index_select(0, order)
        writer = KVWriter(state, self.config.num_layers, self.config.block_size)
        logits = self._run(input_ids, positions, attn, is_causal, writer, logits_to_keep, state.rows)
        return logits, writer.result(mask, ids, dense)

    def _step_cropped(self, ids: Tensor, mask: Tensor, t: int) -> tuple[Tensor, KVState]:
        """Past block_size: each new token's logits come from the last block_size tokens, re-encoded."""
        size = self.config.block_size
        chunks = []
        for end in range(ids.size(1) - t + 1, ids.size(1) + 1):
            start = max(0, end - size)
            chunks.append(self.forward(ids[:, start:end], mask[:, start:end])[:, -1:])
        return torch.cat(chunks, dim=1), KVState(mask[:, -size:], ids[:, -size:])

    # --- accounting ------------------------------------------------------------------------------------------

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, Kaplan et al. (2020) style, x3 for forward + backward:
        6 * (N_non_embedding + d_model * V) + 12 * num_layers * d_model * seq_len.

        N_non_embedding excludes token and position embeddings; the output projection (d_model x V), which
        Kaplan leaves out, is added back because at small d_model with a GPT-2 vocabulary it is most of the
        compute. The last term is attention scores and weighted values (PaLM's 12 * L * H * Q * T).
        """
        non_embedding = sum(p.numel() for p in self.blocks.parameters()) + sum(p.numel() for p in self.ln_f.parameters())
        head = self.config.d_model * self.vocab_size
        return float(6 * (non_embedding + head) + 12 * self.config.num_layers * self.config.d_model * seq_len)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {
            "num_layers": c.num_layers, "num_heads": c.num_heads, "d_model": c.d_model,
            "d_ff": c.d_ff or 4 * c.d_model, "block_size": c.block_size, "positions": c.positions,
            "norm": c.norm, "activation": c.activation, "tie_embeddings": c.tie_embeddings,
            "num_params": self.num_params(), "num_trainable_params": self.num_params(trainable_only=True),
        }

    @classmethod
    def check_spec(cls, config: Config, spec: Any) -> None:
        p = "model.params"
        for name in ("num_layers", "num_heads", "d_model", "block_size"):
            if getattr(config, name) < 1:
                raise range_error(f"{p}.{name}", getattr(config, name), ">= 1")
        if config.d_ff is not None and config.d_ff < 1:
            raise range_error(f"{p}.d_ff", config.d_ff, ">= 1 (or null for 4 * d_model)")
        if config.d_model % config.num_heads:
            raise SpecError(f"{p}.d_model", f"{config.d_model} is not divisible by num_heads ({config.num_heads})")
        if config.positions == "rotary" and (config.d_model // config.num_heads) % 2:
            raise SpecError(f"{p}.positions", "rotary positions need an even head size (d_model / num_heads)")
        for name in ("dropout", "attention_dropout"):
            value = getattr(config, name)
            if value is not None and not 0 <= value < 1:
                raise range_error(f"{p}.{name}", value, "in [0, 1)")
        for name, choices in (("positions", POSITIONS), ("activation", tuple(ACTIVATIONS)), ("norm", NORMS)):
            if getattr(config, name) not in choices:
                raise choice_error(f"{p}.{name}", getattr(config, name), choices)
        if spec.data.block_size > config.block_size:
            raise SpecError("data.block_size", f"{spec.data.block_size} is longer than the transformer's "
                                               f"model.params.block_size ({config.block_size})")


def _has_pad_before_real(mask: Tensor) -> bool:
    """True when some row has a pad followed by a real token (left padding or holes)."""
    return bool((mask[:, 1:] > mask[:, :-1]).any())
