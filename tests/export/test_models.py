"""Exported models compute the lmbench model's logits: every transformer option, padding, the recurrent families."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lmbench.errors import SpecError
from lmbench.export.models import EXPORTERS
from lmbench.models.base import positions_from_mask
from lmbench.models.recurrent import GRULM, LSTMLM, RNNLM
from lmbench.models.recurrent import Config as RecurrentConfig
from lmbench.models.transformer import Config, TransformerLM

SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
VOCAB = 50


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter moved off its initial value (LayerNorm weights off 1, biases off 0): a wrong mapping shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def reloaded(model: torch.nn.Module, family: str, tmp_path: Path) -> Any:
    """Export, save_pretrained, then AutoModelForCausalLM.from_pretrained (what a user of the folder gets)."""
    from transformers import AutoModelForCausalLM

    remote = family in ("rnn", "lstm", "gru")
    EXPORTERS.get(family)(model, SPECIAL).save_pretrained(str(tmp_path / family))
    return AutoModelForCausalLM.from_pretrained(str(tmp_path / family), trust_remote_code=remote).eval()


def max_diff(model: torch.nn.Module, hf: Any, ids: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Largest logit difference at real positions. With padding, transformers' forward takes the position ids
    (`generate` derives them from the mask itself), as lmbench counts them: from each row's first real token."""
    positions = None if mask is None else positions_from_mask(mask)
    with torch.no_grad():
        ours = model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    if mask is not None:  # padded positions' logits are not defined the same way
        ours, theirs = ours[mask.bool()], theirs[mask.bool()]
    return (ours - theirs).abs().max().item()


TRANSFORMER_OPTIONS = [dict(positions=p, bias=b, tie_embeddings=t, activation=a)
                       for p, b, t, a in itertools.product(("learned", "rotary"), (True, False), (True, False),
                                                           ("gelu", "gelu_tanh", "relu"))]


@pytest.mark.parametrize("options", TRANSFORMER_OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_transformer_logits_match_gpt2_or_gpt_neox(options: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = perturbed(TransformerLM(Config(num_layers=2, num_heads=4, d_model=32, d_ff=48, block_size=24,
                                           **options), VOCAB, 0))
    hf = reloaded(model, "transformer", tmp_path)
    assert type(hf).__name__ == ("GPT2LMHeadModel" if options["positions"] == "learned" else "GPTNeoXForCausalLM")
    ids = torch.randint(3, VOCAB, (3, 24), generator=torch.Generator().manual_seed(2))
    assert max_diff(model, hf, ids) <= 1e-4
    left = torch.ones_like(ids)
    left[0, :5] = 0  # a left-padded row: positions count from its first real token on both sides
    left[1, :1] = 0
    assert max_diff(model, hf, ids, left) <= 1e-4


def test_post_norm_is_refused_naming_the_field() -> None:
    model = TransformerLM(Config(num_layers=1, num_heads=2, d_model=16, block_size=8, norm="post"), VOCAB, 0)
    with pytest.raises(SpecError) as err:
        EXPORTERS.get("transformer")(model, SPECIAL)
    assert err.value.path == "model.params.norm"


def test_encoder_decoders_are_refused_naming_the_family() -> None:
    from ..models.test_seq2seq import tiny

    with pytest.raises(SpecError) as err:
        EXPORTERS.get("hf_seq2seq")(tiny("t5"), SPECIAL)
    assert err.value.path == "model.family" and "not exported" in str(err.value)


@pytest.mark.parametrize("cls, params", [
    (LSTMLM, dict(d_embed=12, d_hidden=16, num_layers=2)),
    (GRULM, dict(d_embed=12, d_hidden=16, num_layers=1, tie_weights=True)),  # hidden -> embed projection
    (RNNLM, dict(d_embed=16, d_hidden=16, num_layers=2, tie_weights=True)),  # tied, no projection
])
def test_recurrent_remote_code_model_matches(cls: type, params: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = perturbed(cls(RecurrentConfig(**params), VOCAB, 0))
    hf = reloaded(model, cls.cell, tmp_path)
    assert type(hf).__name__ == "LmbenchRecurrentForCausalLM" and not hasattr(hf, "tok_emb")
    ids = torch.randint(3, VOCAB, (3, 20), generator=torch.Generator().manual_seed(2))
    assert max_diff(model, hf, ids) <= 1e-5
    mask = torch.ones_like(ids)
    mask[0, :6] = 0  # left padding
    mask[2, 15:] = 0  # right padding
    assert max_diff(model, hf, ids, mask) <= 1e-5
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        logits = model(ids, mask)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_hf_family_exports_the_wrapped_model_without_a_prefix(tmp_path: Path) -> None:
    from lmbench.models.hf import Config as HFConfig
    from lmbench.models.hf import HFCausalLM

    torch.manual_seed(0)
    model = HFCausalLM(HFConfig(from_config=True, model_type="gpt2",
                                config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32}), VOCAB, 0).eval()
    hf = reloaded(model, "hf", tmp_path)
    assert "model." not in "".join(hf.state_dict())
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(2))
    assert max_diff(model, hf, ids) == 0.0
