"""lmbench's rnn/lstm/gru language models as a transformers model (`trust_remote_code`).

`lmbench export` saves this file next to the weights (transformers' `register_for_auto_class`), so that
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` builds the model without lmbench
installed: it imports only torch and transformers. The network is lmbench's: embedding -> nn.RNN/LSTM/GRU
(batch_first) -> [hidden -> embedding Linear when the output matrix was tied] -> vocabulary projection; the
logits are the lmbench model's from a zero state. Padding (left or right) never changes the real positions'
logits: real tokens run as a packed sequence. There is no decoding cache: `generate` re-reads the sequence for
each new token (O(T^2) work; fine for evaluation and short samples).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class LmbenchRecurrentConfig(PretrainedConfig):
    model_type = "lmbench_recurrent"

    def __init__(self, cell: str = "lstm", vocab_size: int = 256, d_embed: int = 128, d_hidden: int = 128,
                 num_layers: int = 2, dropout: float = 0.0, tied_projection: bool = False, **kwargs: Any) -> None:
        self.cell, self.vocab_size, self.d_embed, self.d_hidden = cell, vocab_size, d_embed, d_hidden
        self.num_layers, self.dropout, self.tied_projection = num_layers, dropout, tied_projection
        self.num_hidden_layers = num_layers  # read by `generate` in transformers 5
        kwargs.setdefault("tie_word_embeddings", False)  # a tied lmbench model is exported with two equal copies
        kwargs.setdefault("use_cache", False)  # no key/value cache: generate() re-reads the sequence
        super().__init__(**kwargs)


class LmbenchRecurrentForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LmbenchRecurrentConfig
    base_model_prefix = "lmbench_recurrent"
    main_input_name = "input_ids"

    def __init__(self, config: LmbenchRecurrentConfig) -> None:
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_embed)
        self.rnn = CELLS[c.cell](c.d_embed, c.d_hidden, c.num_layers, batch_first=True,
                                 dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        d_out = c.d_embed if c.tied_projection else c.d_hidden
        self.proj = nn.Linear(c.d_hidden, d_out, bias=False) if d_out != c.d_hidden else nn.Identity()
        self.head = nn.Linear(d_out, c.vocab_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                **kwargs: Any) -> CausalLMOutput:
        """(B, T) ids -> (B, T, V) logits from a zero state; `labels` (-100 ignored) give the shifted mean loss."""
        x = self.embed(input_ids)
        if attention_mask is None or bool(attention_mask.all()):
            out, _ = self.rnn(x)
        else:
            out = self._run_masked(x, attention_mask.to(device=x.device, dtype=torch.bool))
        logits = self.head(self.proj(self.drop(out)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                               ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def _run_masked(self, x: Tensor, mask: Tensor) -> Tensor:
        """Each row's real tokens moved to the front (in order), run packed, and put back; pads output zeros."""
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # (B, T)
        x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        lengths = mask.sum(1).clamp(min=1).cpu()
        out, _ = self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=mask.size(1))
        out = torch.zeros_like(out).scatter(1, order.unsqueeze(-1).expand_as(out), out)
        return out * mask.unsqueeze(-1).to(out.dtype)

    def prepare_inputs_for_generation(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
