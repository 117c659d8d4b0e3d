"""The `hf` family: a tiny randomly initialised GPT-2 built offline from a config."""

from __future__ import annotations

import pytest
import torch

from lmbench.errors import SpecError
from lmbench.models.hf import Config, HFCausalLM
from lmbench.spec import ExperimentSpec, ModelSpec, TokenizerSpec

TINY = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}


def tiny_hf(vocab_size: int = 40, seed: int = 0) -> HFCausalLM:
    torch.manual_seed(seed)
    return HFCausalLM(Config(from_config=True, model_type="gpt2", config=dict(TINY)), vocab_size, pad_id=0).eval()


def test_logits_equal_wrapped_model() -> None:
    model = tiny_hf()
    ids = torch.randint(0, 40, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding: positions are unchanged
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model.model(ids).logits)
        real = mask.bool()  # pad positions may differ (their position ids are clamped); they are never scored
        torch.testing.assert_close(model(ids, mask)[real], model.model(ids, attention_mask=mask).logits[real])


def test_step_matches_forward() -> None:
    model = tiny_hf()
    ids = torch.randint(0, 40, (3, 8))
    with torch.no_grad():
        logits, state = model.step(ids[:, :2], model.init_state(3, ids.device))
        chunks = [logits]
        for t in range(2, 8):
            logits, state = model.step(ids[:, t : t + 1], state)
            chunks.append(logits)
        torch.testing.assert_close(torch.cat(chunks, 1), model(ids), atol=1e-5, rtol=1e-5)


def test_old_state_stays_valid_after_step() -> None:
    model = tiny_hf()
    ids = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        _, state = model.step(ids[:, :4], model.init_state(2, ids.device))
        first, _ = model.step(ids[:, 4:], state)
        again, _ = model.step(ids[:, 4:], state)
        state.reorder(torch.tensor([1, 1]))
        third, _ = model.step(ids[:, 4:], state)
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, third)


def test_small_vocab_config_has_no_out_of_range_special_ids() -> None:
    model = tiny_hf(vocab_size=20)
    assert model.vocab_size == 20
    assert model.model.config.eos_token_id is None and model.model.config.pad_token_id == 0


def test_larger_tokenizer_resizes_embeddings() -> None:
    torch.manual_seed(0)
    cfg = Config(from_config=True, model_type="gpt2", config={**TINY, "vocab_size": 30})
    model = HFCausalLM(cfg, vocab_size=33, pad_id=0)
    assert model.vocab_size == 33 and model(torch.tensor([[32]])).shape == (1, 1, 33)


def _spec(model_params: dict, tok_kind: str, tok_params: dict) -> ExperimentSpec:
    return ExperimentSpec(name="t", model=ModelSpec("hf", model_params), tokenizer=TokenizerSpec(tok_kind, tok_params))


def test_check_spec_needs_the_models_own_tokenizer() -> None:
    cfg = Config(name_or_path="gpt2")
    HFCausalLM.check_spec(cfg, _spec({}, "hf", {"name_or_path": "gpt2"}))
    with pytest.raises(SpecError, match="tokenizer.kind"):
        HFCausalLM.check_spec(cfg, _spec({}, "char", {}))
    with pytest.raises(SpecError, match="tokenizer.params.name_or_path"):
        HFCausalLM.check_spec(cfg, _spec({}, "hf", {"name_or_path": "distilgpt2"}))
    HFCausalLM.check_spec(Config(from_config=True, model_type="gpt2"), _spec({}, "char", {}))
    with pytest.raises(SpecError, match="model.params.model_type"):
        HFCausalLM.check_spec(Config(from_config=True), _spec({}, "char", {}))


def test_pretrained_from_a_local_directory(tmp_path) -> None:
    source = tiny_hf()
    source.model.save_pretrained(tmp_path)
    loaded = HFCausalLM(Config(name_or_path=str(tmp_path)), vocab_size=40, pad_id=0).eval()
    ids = torch.randint(0, 40, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), source(ids))
    assert loaded.describe()["name_or_path"] == str(tmp_path)


def test_flops_per_token_counts_the_tied_head_once() -> None:
    model = tiny_hf()
    wte, wpe = model.model.transformer.wte.weight, model.model.transformer.wpe.weight
    non_embedding = model.num_params() - wte.numel() - wpe.numel()
    assert model.flops_per_token(16) == 6 * (non_embedding + wte.numel()) + 12 * 2 * 32 * 16
