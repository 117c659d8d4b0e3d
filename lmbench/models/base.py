"""The LanguageModel interface every family implements: full forward for training, step() for decoding."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from lmbench.registry import Registry


class DecodeState(Protocol):
    """Per-sequence decoding state (RNN hidden state, or per-layer K/V caches plus positions)."""

    def reorder(self, index: Tensor, reuse: bool = False) -> "DecodeState":
        """Pick/duplicate batch rows: row i of the result is row index[i] of self (beams, batch expansion).
        `self` stays valid, unless `reuse` is set: the caller drops `self`, and its memory may be reused."""
        ...


class LanguageModel(nn.Module, abc.ABC):
    """A causal language model that knows only `vocab_size` and `pad_id`.

    Subclasses define a `Config` dataclass (validated from `model.params`), take `(config, vocab_size, pad_id)`
    and register under `MODELS`. Callers use only what is declared here: `forward` (training, scoring),
    `init_state` + `step` (decoding), and `forward_with_state` where `carries_state` is True.
    """

    Config: ClassVar[type]
    # True for families whose state runs on across windows of one stream (rnn/lstm/gru): training carries it
    # from window to window (truncated BPTT) and evaluation over a whole sequence, through forward_with_state.
    carries_state: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) logits; position t predicts token t+1. Always the full T.

        `attention_mask` (B, T) is 1 for real tokens and 0 for padding (right padding in training batches,
        left padding for batched prompts); padded positions must not change the real positions' logits.
        """

    def forward_with_state(self, input_ids: Tensor, state: DecodeState | None,
                           attention_mask: Tensor | None = None) -> tuple[Tensor, DecodeState]:
        """(B, T) ids and the state left by the previous window of each row (None: a fresh state) -> (B, T, V)
        logits and the state after this window. Only families with `carries_state` implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not carry state across windows")

    @abc.abstractmethod
    def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> DecodeState:
        """The state before any token. `max_length`, when given, is the longest the sequences will get (prompt and
        new tokens): a hint a cache may reserve room for up front instead of growing (and copying) on the way."""

    @abc.abstractmethod
    def step(self, input_ids: Tensor, state: DecodeState, attention_mask: Tensor | None = None,
             logits_to_keep: int = 0) -> tuple[Tensor, DecodeState]:
        """Consume (B, t) new ids (a prompt prefill or one token) -> (B, t, V) logits and the advanced state.

        `attention_mask`, when given, covers everything consumed so far plus the new ids: (B, past + t).
        `logits_to_keep` > 0 returns only the last that many positions' logits, (B, logits_to_keep, V), as
        transformers' argument of that name: a prefill needs only the last one.
        """

    # True for families that must see a whole sequence at once (hf_seq2seq: the source at its start): evaluation
    # scores every document in one forward instead of sliding block_size windows over it.
    whole_sequences: ClassVar[bool] = False

    @classmethod
    def extras(cls, config: Any, tokenizer: Any, seed: int) -> dict[str, Any]:
        """Constructor arguments beyond (config, vocab_size, pad_id) that come from the tokenizer (e.g. the
        <sep> id an encoder-decoder splits rows at); `build_model` passes them as keywords."""
        return {}

    @classmethod
    def check_spec(cls, config: Any, spec: Any) -> None:
        """Raise SpecError for field ranges and combinations that are wrong with this Config in `spec`
        (an ExperimentSpec), e.g. GloVe vectors with a char tokenizer. Called before any data is read."""

    def output_layer(self) -> nn.Linear | None:
        """The vocabulary projection when `features_with_state` gives its inputs (the trainer then fuses it with
        the loss); None where the family has no such split."""
        return None

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @abc.abstractmethod
    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward, ~6N plus attention), for throughput and MFU figures."""

    def describe(self) -> dict[str, Any]:
        """Extra facts for `lmbench show` and the run summary (e.g. GloVe coverage)."""
        return {}


MODELS: Registry[type[LanguageModel]] = Registry("model.family")


def positions_from_mask(mask: Tensor) -> Tensor:
    """(B, T) 0/1 attention mask -> (B, T) position ids counted from each row's first real token (pads: 0), so a
    left-padded prompt gets the positions it would have unpadded."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)
