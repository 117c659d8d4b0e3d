"""rnn/lstm/gru specifics: one class for three cells, tying, carried state, masked steps, checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmbench.errors import SpecError
from lmbench.models import MODELS
from lmbench.models.recurrent import Config, RecurrentLM
from lmbench.spec import ExperimentSpec, ModelSpec, TokenizerSpec

from .tiny import PAD, VOCAB, make_tiny

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.mark.parametrize("family", sorted(CELLS))
def test_one_class_three_cells(family: str) -> None:
    model = make_tiny(family)
    assert isinstance(model, RecurrentLM) and type(model.rnn) is CELLS[family]
    assert model.rnn.batch_first and model.rnn.num_layers == 2
    state = model.init_state(3, torch.device("cpu"))
    assert state.h.shape == (2, 3, 24) and (state.c is not None) == (family == "lstm")
    assert MODELS.get(family).Config is Config


@pytest.mark.parametrize("family", sorted(CELLS))
@torch.no_grad()
def test_carried_state_equals_one_long_sequence(family: str) -> None:
    """Truncated BPTT on a stream: window 2 started from window 1's state sees the whole past."""
    model, ids = make_tiny(family), torch.randint(1, VOCAB, (2, 10))
    first, state = model.forward_with_state(ids[:, :6])
    second, _ = model.forward_with_state(ids[:, 6:], state.detach())
    torch.testing.assert_close(torch.cat([first, second], 1), model(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(CELLS))
@torch.no_grad()
def test_masked_positions_keep_the_state(family: str) -> None:
    """Holes in the mask and all-pad steps leave the state as it was (finished beams, left pads)."""
    model, ids = make_tiny(family), torch.randint(1, VOCAB, (2, 6))
    _, state = model.step(ids[:, :3], model.init_state(2, ids.device))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    _, kept = model.step(ids[:, 3:4], state, attention_mask=mask)
    torch.testing.assert_close(kept.h[:, 0], state.h[:, 0])
    holes = torch.tensor([[1, 0, 1, 0, 1, 1]])
    real = ids[:1, holes[0].bool()]
    logits = model(ids[:1], holes)
    torch.testing.assert_close(logits[0, holes[0].bool()], model(real)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(CELLS))
@pytest.mark.parametrize("masked", [False, True])
@torch.no_grad()
def test_recurrence_stays_float32_under_bf16_autocast(family: str, masked: bool) -> None:
    """bf16 autocast speeds up the vocabulary projection only: the state and the recurrent outputs stay float32
    (a bf16 recurrence kept a 2-layer word LSTM at the unigram loss), so outputs match float32 up to the head."""
    model, ids = make_tiny(family), torch.randint(1, VOCAB, (2, 8))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3]) if masked else None
    reference, ref_state = model.forward_with_state(ids, None, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model.forward_with_state(ids, None, mask)
        _, state = model.forward_with_state(ids, state, mask)  # a carried state goes back in
    assert logits.dtype == torch.bfloat16 and state.h.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, first = model.forward_with_state(ids, None, mask)
    torch.testing.assert_close(first.h, ref_state.h)  # the recurrence itself is exact float32
    torch.testing.assert_close(logits.float(), reference, atol=0.05, rtol=0.05)


def test_tied_weights_with_projection() -> None:
    model = make_tiny("lstm", tie_weights=True)  # d_hidden 24 != d_embed 16
    assert model.head.weight is model.embed.weight and isinstance(model.proj, nn.Linear)
    assert model.proj.weight.shape == (16, 24)
    same = make_tiny("gru", tie_weights=True, d_embed=24)
    assert isinstance(same.proj, nn.Identity) and same.head.weight is same.embed.weight
    untied = make_tiny("gru")
    assert untied.num_params() - untied.head.weight.numel() + 16 * 24 == make_tiny("gru", tie_weights=True).num_params()


def test_dropout_only_in_training() -> None:
    model, ids = make_tiny("lstm", dropout=0.5), torch.randint(1, VOCAB, (2, 5))
    assert model.rnn.dropout == 0.5
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(ids))
        model.train()
        assert not torch.equal(model(ids), model(ids))


def test_pad_row_is_zero_and_default_sizes() -> None:
    model = MODELS.get("rnn")(Config(), vocab_size=VOCAB, pad_id=PAD)
    assert model.embed.embedding_dim == 128 and model.config.d_hidden == 128
    assert torch.count_nonzero(model.embed.weight[PAD]) == 0


def test_flops_per_token_counts_matmul_weights() -> None:
    model = make_tiny("gru")
    rnn = sum(p.numel() for p in model.rnn.parameters())
    assert model.flops_per_token(64) == 6 * (rnn + 24 * VOCAB + VOCAB)


@pytest.mark.parametrize(("params", "path"), [
    ({"d_hidden": 0}, "model.params.d_hidden"),
    ({"num_layers": 0}, "model.params.num_layers"),
    ({"dropout": 1.0}, "model.params.dropout"),
    ({"d_embed": -1}, "model.params.d_embed"),
])
def test_check_spec_ranges(params: dict, path: str) -> None:
    spec = ExperimentSpec(name="t", tokenizer=TokenizerSpec("char"), model=ModelSpec("lstm", params))
    with pytest.raises(SpecError) as err:
        RecurrentLM.check_spec(Config(**params), spec)
    assert err.value.path == path


def test_build_model_rejects_unknown_params() -> None:
    from lmbench.models import build_model

    class Tok:
        vocab_size, pad_id = VOCAB, PAD

    with pytest.raises(SpecError, match="model.params.d_hiden: unknown key 'd_hiden' \\(did you mean 'd_hidden'"):
        build_model(ModelSpec("lstm", {"d_hiden": 8}), Tok())


def flatten_like_cudnn(rnn: torch.nn.Module) -> None:
    """What `flatten_parameters` does on CUDA: every weight becomes a view of one flat buffer."""
    params = list(rnn.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
def test_weights_sharing_one_cudnn_buffer_save_and_resume_whole(tmp_path: Path, family: str) -> None:
    """safetensors refuses views of one storage, and Accelerate's save_state keeps one name per storage (the
    other weights would vanish from checkpoints): the state dict gives each weight a storage of its own."""
    from accelerate.utils.other import clean_state_dict_for_safetensors

    from lmbench.training.checkpoint import load_weights, save_weights

    model = make_tiny(family, seed=0, num_layers=2)
    flatten_like_cudnn(model.rnn)
    state = model.state_dict()
    rnn_keys = [k for k in state if k.startswith("rnn.")]
    assert len(rnn_keys) == 8 and len({state[k].untyped_storage().data_ptr() for k in rnn_keys}) == 8
    assert set(clean_state_dict_for_safetensors(dict(state))) == set(state)  # nothing dropped on save_state
    save_weights(model, tmp_path / "w.safetensors")
    other = make_tiny(family, seed=1, num_layers=2)
    load_weights(other, tmp_path / "w.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value, rtol=0, atol=0)
    assert model.rnn.weight_ih_l0.untyped_storage().data_ptr() == model.rnn.weight_hh_l1.untyped_storage().data_ptr()
