"""`rnn` (Elman, tanh), `lstm`, `gru`: embedding -> stacked recurrent layers -> dropout -> vocabulary projection.

One class, parametrised by the cell type; the three families are tiny subclasses that only name their cell.

Padding: pad positions never change the state or the real positions' outputs. Without padding the whole batch
runs through the fused (cuDNN/oneDNN) full-sequence kernel; with any zero in `attention_mask` each row's real
tokens are moved to the front (a stable sort, identity for right padding), run as a packed sequence, and
scattered back, so left-padded prompts and right-padded training batches are both exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmbench.errors import SpecError, range_error
from lmbench.models.base import MODELS, LanguageModel

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
DEFAULT_D_EMBED = 128


@dataclass
class Config:
    d_embed: int | None = None  # input embedding size; None: the vectors' size with GloVe, else 128
    d_hidden: int = 128
    num_layers: int = 2
    dropout: float = 0.0  # between recurrent layers and before the projection
    tie_weights: bool = False  # share embedding and output matrices (adds a hidden->embed Linear if sizes differ)
    embeddings: str | None = None  # None | glove (vectors from embeddings_source) | a vectors source itself
    embeddings_source: str = "kumo"  # kumo | a GloVe text file path | gensim:<name>
    freeze_embeddings: bool = True  # keep the pretrained matrix fixed (all rows)
    embeddings_lowercase: bool = True  # look a token up as written, then lower-cased


def vectors_source(config: Config) -> str | None:
    """Where the pretrained vectors come from, or None for a randomly initialised embedding."""
    if config.embeddings is None:
        return None
    return config.embeddings_source if config.embeddings == "glove" else config.embeddings


@dataclass
class RecurrentState:
    """Hidden state h (num_layers, B, H), and the LSTM cell state c of the same shape (None for rnn/gru)."""

    h: Tensor
    c: Tensor | None = None

    def reorder(self, index: Tensor, reuse: bool = False) -> "RecurrentState":
        index = index.to(self.h.device)
        return RecurrentState(self.h.index_select(1, index), None if self.c is None else self.c.index_select(1, index))

    def detach(self) -> "RecurrentState":
        """The same values cut from the autograd graph (truncated BPTT between windows of a stream)."""
        return RecurrentState(self.h.detach(), None if self.c is None else self.c.detach())

    def hx(self) -> Tensor | tuple[Tensor, Tensor]:
        return self.h if self.c is None else (self.h, self.c)

    @staticmethod
    def from_hx(hx: Tensor | tuple[Tensor, Tensor]) -> "RecurrentState":
        return RecurrentState(*hx) if isinstance(hx, tuple) else RecurrentState(hx)


def _own_storage(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict hook of the recurrent layer: on CUDA, cuDNN keeps all its weights as views of one flat buffer
    (`flatten_parameters`). safetensors refuses to save such views, and Accelerate's `save_state` keeps only
    the first name per storage (the other weights would silently vanish from the checkpoint): each weight
    goes into the state dict as a copy of its own. On CPU every weight owns its storage and nothing is copied."""
    for name, value in state.items():
        if name.startswith(prefix) and isinstance(value, Tensor) and not isinstance(value, nn.Parameter) \
                and value.untyped_storage().nbytes() != value.numel() * value.element_size():
            state[name] = value.clone()


class RecurrentLM(LanguageModel):
    """Embedding -> nn.RNN/LSTM/GRU (batch_first) -> dropout -> [hidden->embed Linear if tied] -> vocabulary.

    Extras: `embedding_matrix` (vocab_size, d) initialises the embedding (GloVe); `embedding_coverage` is kept
    for describe().
    """

    Config = Config
    carries_state = True
    cell: ClassVar[str]

    def __init__(self, config: Config, vocab_size: int, pad_id: int, embedding_matrix: Tensor | None = None,
                 embedding_coverage: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config, self.vocab_size, self.pad_id = config, vocab_size, pad_id
        d_embed = self._d_embed(config, embedding_matrix)
        self.embed = nn.Embedding(vocab_size, d_embed, padding_idx=pad_id)
        if embedding_matrix is not None:
            with torch.no_grad():
                self.embed.weight.copy_(embedding_matrix)
            self.embed.weight.requires_grad_(not config.freeze_embeddings)
        self.coverage = embedding_coverage
        inter_dropout = config.dropout if config.num_layers > 1 else 0.0
        self.rnn = CELLS[self.cell](d_embed, config.d_hidden, config.num_layers, dropout=inter_dropout,
                                    batch_first=True)
        self.rnn._register_state_dict_hook(_own_storage)  # public as register_state_dict_post_hook from torch 2.5
        self.drop = nn.Dropout(config.dropout)
        d_out = d_embed if config.tie_weights else config.d_hidden
        self.proj = nn.Linear(config.d_hidden, d_embed, bias=False) if d_out != config.d_hidden else nn.Identity()
        self.head = nn.Linear(d_out, vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight

    @staticmethod
    def _d_embed(config: Config, matrix: Tensor | None) -> int:
        if matrix is None:
            return config.d_embed or DEFAULT_D_EMBED
        if config.d_embed is not None and config.d_embed != matrix.size(1):
            raise SpecError("model.params.d_embed", f"{config.d_embed} differs from the vectors' size "
                                                    f"{matrix.size(1)}; leave it unset to follow the vectors")
        return matrix.size(1)

    # --- forward paths -------------------------------------------------------------------------------------

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) logits from a zero initial state."""
        return self.forward_with_state(input_ids, None, attention_mask)[0]

    def forward_with_state(self, input_ids: Tensor, state: RecurrentState | None = None,
                           attention_mask: Tensor | None = None) -> tuple[Tensor, RecurrentState]:
        """(B, T) ids and the state after the previous window of each row's stream -> (B, T, V) logits and the
        state after this window (truncated BPTT: the caller detaches it before the next window)."""
        return self._run(input_ids, state, attention_mask, 0)

    def features_with_state(self, input_ids: Tensor, state: RecurrentState | None = None,
                            attention_mask: Tensor | None = None) -> tuple[Tensor, RecurrentState]:
        """`forward_with_state` up to the vocabulary projection: (B, T, d) inputs of `output_layer()`, and the
        state (the trainer's fused loss projects them itself, `lmbench.training.fused_loss`)."""
        return self._run(input_ids, state, attention_mask, 0, features=True)

    def output_layer(self) -> nn.Linear:
        return self.head

    def _run(self, input_ids: Tensor, state: RecurrentState | None, attention_mask: Tensor | None,
             logits_to_keep: int, features: bool = False) -> tuple[Tensor, RecurrentState]:
        x = self.embed(input_ids)  # (B, T, E)
        hx = None if state is None else state.hx()
        # The recurrence runs in its weights' dtype (float32) even under bf16/fp16 autocast: in bf16 the carried
        # state and gates lose the small updates a stacked LSTM needs (a 2 x 200 word LSTM stayed at the unigram
        # loss). The vocabulary projection, most of the FLOPs, still autocasts.
        dtype = self.rnn.weight_ih_l0.dtype
        with torch.autocast(x.device.type, enabled=False):
            x, hx = x.to(dtype), _cast(hx, dtype)
            if attention_mask is None or bool(attention_mask.all()):
                out, hx = self.rnn(x, hx)  # fused full-sequence fast path
            else:
                out, hx = self._run_masked(x, attention_mask, hx)
        if logits_to_keep:  # only the last positions need the vocabulary projection (a prefill)
            out = out[:, -logits_to_keep:]
        out = self.proj(self.drop(out))
        logits = out if features else self.head(out)  # (B, T or logits_to_keep, V)
        return logits, RecurrentState.from_hx(hx)

    def _run_masked(self, x: Tensor, mask: Tensor, hx: Any) -> tuple[Tensor, Any]:
        """Run only the real tokens of each row (in order); pad positions output zeros and keep the state."""
        B, T, _ = x.shape
        mask = mask.to(device=x.device, dtype=torch.bool)
        hx = hx if hx is not None else self.init_state(B, x.device).hx()
        lengths = mask.sum(1)  # (B,)
        right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
        order = None
        if not right_padded:  # real tokens first, in their order; pads after
            order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # (B, T)
            x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, new_hx = self.rnn(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
        if order is not None:
            out = torch.zeros_like(out).scatter(1, order.unsqueeze(-1).expand_as(out), out)
        out = out * mask.unsqueeze(-1).to(out.dtype)
        empty = (lengths == 0).view(1, B, 1)
        if bool(empty.any()):  # rows with no real token keep their state
            new_hx = tuple(torch.where(empty, old, new) for old, new in zip(_as_tuple(hx), _as_tuple(new_hx)))
            new_hx = new_hx if isinstance(hx, tuple) else new_hx[0]
        return out, new_hx

    # --- decoding --------------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> RecurrentState:
        shape = (self.config.num_layers, batch_size, self.config.d_hidden)
        dtype = self.head.weight.dtype
        h = torch.zeros(shape, device=device, dtype=dtype)
        return RecurrentState(h, torch.zeros_like(h) if self.cell == "lstm" else None)

    def step(self, input_ids: Tensor, state: RecurrentState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, RecurrentState]:
        """Consume (B, t) new ids; `attention_mask` covers past + new, only its last t columns matter here."""
        new_mask = None if attention_mask is None else attention_mask[:, -input_ids.size(1):]
        return self._run(input_ids, state, new_mask, logits_to_keep)

    # --- accounting ------------------------------------------------------------------------------------------

    def flops_per_token(self, seq_len: int) -> float:
        """6 x (recurrent + projection parameters): every weight is one multiply-add forward, two backward;
        the embedding lookup is free. Independent of seq_len."""
        matmul = sum(p.numel() for p in self.rnn.parameters()) + sum(p.numel() for p in self.proj.parameters())
        matmul += self.head.weight.numel() + self.head.bias.numel()
        return float(6 * matmul)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "cell_type": self.cell,
            "d_embed": self.embed.embedding_dim,
            "d_hidden": self.config.d_hidden,
            "num_layers": self.config.num_layers,
            "tie_weights": self.config.tie_weights,
            "num_params": self.num_params(),
            "num_trainable_params": self.num_params(trainable_only=True),
        }
        if self.coverage is not None:
            info["embeddings"] = vectors_source(self.config)
            info["embeddings_frozen"] = self.config.freeze_embeddings
            info["embedding_coverage"] = self.coverage
            c = self.coverage
            info["coverage"] = f"{c['found']:,}/{c['total']:,} words ({100 * c['share']:.1f}%, {c['policy']})"
        return info

    @classmethod
    def check_spec(cls, config: Config, spec: Any) -> None:
        for name in ("d_hidden", "num_layers"):
            if getattr(config, name) < 1:
                raise range_error(f"model.params.{name}", getattr(config, name), ">= 1")
        if config.d_embed is not None and config.d_embed < 1:
            raise range_error("model.params.d_embed", config.d_embed, ">= 1 (or null)")
        if not 0 <= config.dropout < 1:
            raise range_error("model.params.dropout", config.dropout, "in [0, 1)")
        source = vectors_source(config)
        if source is not None:
            _check_vectors(config, source, spec)


def _check_vectors(config: Config, source: str, spec: Any) -> None:
    from lmbench.models.embeddings import check_source, vectors_dim

    if spec.tokenizer.kind != "word":
        raise SpecError("model.params.embeddings",
                        f"GloVe vectors need a word tokenizer, got tokenizer.kind {spec.tokenizer.kind!r}")
    path = "model.params.embeddings" if config.embeddings != "glove" else "model.params.embeddings_source"
    check_source(source, path)
    dim = vectors_dim(source)
    if config.d_embed is not None and dim is not None and dim != config.d_embed:
        raise SpecError("model.params.d_embed",
                        f"{config.d_embed} differs from the vectors' size {dim}; leave it unset to follow the vectors")
    if config.tie_weights and config.freeze_embeddings:
        raise SpecError("model.params.tie_weights",
                        "tied weights with freeze_embeddings: true would freeze the output layer too; "
                        "set freeze_embeddings: false or tie_weights: false")


def _cast(hx: Any, dtype: torch.dtype) -> Any:
    """A carried state (tensor, (h, c) or None) in `dtype`."""
    if hx is None:
        return None
    return tuple(h.to(dtype) for h in hx) if isinstance(hx, tuple) else hx.to(dtype)


def _as_tuple(hx: Any) -> tuple[Tensor, ...]:
    return hx if isinstance(hx, tuple) else (hx,)


@MODELS.register("rnn")
class RNNLM(RecurrentLM):
    """Elman RNN (tanh)."""

    cell = "rnn"


@MODELS.register("lstm")
class LSTMLM(RecurrentLM):
    cell = "lstm"


@MODELS.register("gru")
class GRULM(RecurrentLM):
    cell = "gru"
