"""Checkpoints: round trip of model/optimizer/RNG/trainer state, atomic swap and recovery, safe loading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from lmbench.training import checkpoint as ckpt
from lmbench.training.processes import reset_accelerate


def tiny_model() -> nn.Module:
    from lmbench.models.transformer import Config, TransformerLM

    return TransformerLM(Config(num_layers=1, num_heads=2, d_model=8, block_size=8), vocab_size=11, pad_id=0)


def accelerator() -> object:
    from accelerate import Accelerator

    reset_accelerate()
    return Accelerator(cpu=True)


def prepared() -> tuple[object, nn.Module, torch.optim.Optimizer]:
    acc = accelerator()
    torch.manual_seed(0)
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, opt = acc.prepare(model, opt)
    model(torch.randint(0, 11, (2, 6))).sum().backward()
    opt.step()
    opt.zero_grad()
    return acc, model, opt


def test_write_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    ckpt.write_json_atomic(path, {"a": 1, "p": Path("x"), "t": torch.tensor(2.5)})
    ckpt.write_json_atomic(path, {"a": 2, "t": torch.tensor(2.5)})
    assert json.loads(path.read_text()) == {"a": 2, "t": 2.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left behind


def test_round_trip_restores_everything(tmp_path: Path) -> None:
    acc, model, opt = prepared()
    carry = {"0.h": torch.randn(1, 2, 3)}
    ckpt.save_checkpoint(acc, tmp_path, {"step": 7, "tokens": 99}, carry)
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}
    expected_opt = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    after_save = torch.rand(3)
    folder = tmp_path / "checkpoint"
    assert {"model.safetensors", "optimizer.bin", "trainer_state.json", "carry_0.safetensors"} <= {
        p.name for p in folder.iterdir()}
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint.prev").exists()

    with torch.no_grad():  # disturb everything
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randint(0, 11, (2, 6))).sum().backward()
    opt.step()
    torch.manual_seed(123)

    state, loaded_carry = ckpt.load_checkpoint(acc, folder)
    files = state.pop("files")
    assert state == {"step": 7, "tokens": 99}
    assert {"model.safetensors", "optimizer.bin", "carry_0.safetensors", "random_states_0.pkl"} <= set(files)
    assert files["model.safetensors"][0] == (folder / "model.safetensors").stat().st_size
    assert torch.equal(loaded_carry["0.h"], carry["0.h"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected_weights[k]), k
    assert model.head.weight is model.tok_emb.weight  # tied weights survive loading
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, expected_opt[k]), k
    assert torch.equal(torch.rand(3), after_save)  # RNG restored


def test_loading_uses_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acc, model, opt = prepared()
    ckpt.save_checkpoint(acc, tmp_path, {"step": 1})
    calls: list[object] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ckpt.load_checkpoint(acc, tmp_path / "checkpoint")
    assert calls and all(w is True for w in calls)


def _saved_steps(tmp_path: Path, steps: list[int]) -> object:
    acc, _, _ = prepared()
    for step in steps:
        ckpt.save_checkpoint(acc, tmp_path, {"step": step})
    return acc


def test_each_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    _saved_steps(tmp_path, [2, 4, 6])
    good, damaged = ckpt.usable_checkpoints(tmp_path)
    assert [ckpt.read_trainer_state(d)["step"] for d in good] == [6, 4] and damaged == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.prev"]


def test_recover_a_swap_cut_between_the_renames(tmp_path: Path) -> None:
    """Killed after checkpoint -> checkpoint.prev, before checkpoint.tmp -> checkpoint: the finished new one wins."""
    _saved_steps(tmp_path, [2, 4])
    os.replace(tmp_path / "checkpoint.prev", tmp_path / "checkpoint.older")
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.prev")
    os.replace(tmp_path / "checkpoint.prev", tmp_path / "checkpoint.tmp")  # step 4, finished, not swapped in
    os.replace(tmp_path / "checkpoint.older", tmp_path / "checkpoint.prev")  # step 2
    ckpt.recover(tmp_path)
    good, _ = ckpt.usable_checkpoints(tmp_path)
    assert [ckpt.read_trainer_state(d)["step"] for d in good] == [4, 2]
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_recover_drops_a_half_written_checkpoint(tmp_path: Path) -> None:
    _saved_steps(tmp_path, [2])
    (tmp_path / "checkpoint.tmp").mkdir()
    (tmp_path / "checkpoint.tmp" / "model.safetensors").write_bytes(b"half")
    ckpt.recover(tmp_path)
    assert not (tmp_path / "checkpoint.tmp").exists()
    assert ckpt.read_trainer_state(ckpt.checkpoint_dir(tmp_path))["step"] == 2
    ckpt.recover(tmp_path / "nothing")  # no folder: nothing to do


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json"])
@pytest.mark.parametrize("damage", ["truncate", "zero", "garble"])
def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path: Path, name: str, damage: str) -> None:
    _saved_steps(tmp_path, [2, 4])
    path = tmp_path / "checkpoint" / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "zero":
        path.write_bytes(bytes(len(data)))
    else:
        path.write_bytes(data[:40] + bytes(reversed(data[40:80])) + data[80:])
    good, damaged = ckpt.usable_checkpoints(tmp_path)
    assert [ckpt.read_trainer_state(d)["step"] for d in good] == [2]
    assert len(damaged) == 1 and str(path) in damaged[0]


def test_incomplete_checkpoint_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.safetensors").write_bytes(b"partial")
    assert ckpt.recover(tmp_path) is None and ckpt.checkpoint_dir(tmp_path) is None


def test_best_is_kept_across_checkpoints_and_loads(tmp_path: Path) -> None:
    acc, model, opt = prepared()
    bare = acc.unwrap_model(model)
    ckpt.save_best(bare, tmp_path, {"step": 1, "val_loss": 2.0})
    best_weights = {k: v.clone() for k, v in bare.state_dict().items()}
    for step in (2, 3):
        with torch.no_grad():
            bare.tok_emb.weight.add_(1.0)
        ckpt.save_checkpoint(acc, tmp_path, {"step": step})
    best = tmp_path / "checkpoint" / "best"
    assert json.loads((best / ckpt.BEST_INFO).read_text())["step"] == 1
    fresh = ckpt.load_weights(tiny_model(), best / ckpt.WEIGHTS)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, best_weights[k]), k
    last = ckpt.load_weights(tiny_model(), tmp_path)  # a run folder: checkpoint/model.safetensors
    assert torch.equal(last.tok_emb.weight, bare.tok_emb.weight)
    assert last.head.weight is last.tok_emb.weight


def test_state_tensors_round_trip() -> None:
    from lmbench.models.recurrent import RecurrentState

    for state in (RecurrentState(torch.randn(2, 3, 4), torch.randn(2, 3, 4)), RecurrentState(torch.randn(1, 2, 3))):
        flat = ckpt.state_to_tensors(state)
        back = ckpt.tensors_to_state(RecurrentState(torch.zeros(1), torch.zeros(1) if state.c is not None else None),
                                     flat)
        assert torch.equal(back.h, state.h)
        assert (back.c is None) == (state.c is None) and (back.c is None or torch.equal(back.c, state.c))
    pair = (torch.ones(2), torch.zeros(2))
    assert all(torch.equal(a, b) for a, b in zip(ckpt.tensors_to_state(pair, ckpt.state_to_tensors(pair)), pair))


def test_load_run_restores_the_trained_weights(tmp_path: Path) -> None:
    from lmbench.errors import SpecError
    from lmbench.models import build_model
    from lmbench.spec import spec_to_yaml, to_spec
    from lmbench.tokenizers.char import CharConfig, CharTokenizer

    spec = to_spec({"name": "t", "train": {"max_steps": 1}, "data": {"block_size": 32},
                    "model": {"family": "transformer", "params": {"num_layers": 1, "num_heads": 2, "d_model": 16,
                                                                  "block_size": 64}}})
    (tmp_path / "spec.yaml").write_text(spec_to_yaml(spec))
    tokenizer = CharTokenizer.train(["the cat sat on the mat"], CharConfig())
    tokenizer.save(tmp_path / "tokenizer")
    torch.manual_seed(0)
    trained = build_model(spec.model, tokenizer)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh build has
    (tmp_path / "checkpoint").mkdir()
    ckpt.save_weights(trained, tmp_path / "checkpoint" / ckpt.WEIGHTS)
    model, loaded_tokenizer, loaded_spec = ckpt.load_run(tmp_path)
    ids = torch.tensor([tokenizer.encode("the cat")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), trained.eval()(ids))
    assert not model.training and loaded_spec == spec and loaded_tokenizer.tokens() == tokenizer.tokens()
    (tmp_path / "checkpoint" / ckpt.WEIGHTS).unlink()
    with pytest.raises(SpecError, match="has no checkpoint/model.safetensors"):
        ckpt.load_run(tmp_path)


def test_loading_is_strict_about_extra_and_missing_weights(tmp_path: Path) -> None:
    """Weights of a 2-layer model do not load into a 1-layer one (extra keys), nor the other way (missing keys),
    through load_weights and through a resumed checkpoint; strict=False loads what fits and names nothing."""
    from lmbench.models.transformer import Config, TransformerLM

    def model(layers: int) -> nn.Module:
        return TransformerLM(Config(num_layers=layers, num_heads=2, d_model=8, block_size=8), vocab_size=11, pad_id=0)

    torch.manual_seed(0)
    big, small = model(2), model(1)
    ckpt.save_weights(big, tmp_path / "big.safetensors")
    ckpt.save_weights(small, tmp_path / "small.safetensors")
    with pytest.raises(RuntimeError, match=r"missing keys \[\], unexpected keys \['blocks\.1\."):
        ckpt.load_weights(model(1), tmp_path / "big.safetensors")
    with pytest.raises(RuntimeError, match=r"missing keys \['blocks\.1\..*unexpected keys \[\]"):
        ckpt.load_weights(model(2), tmp_path / "small.safetensors")
    loose = ckpt.load_weights(model(1), tmp_path / "big.safetensors", strict=False)
    torch.testing.assert_close(loose.state_dict()["blocks.0.attn.qkv.weight"], big.state_dict()["blocks.0.attn.qkv.weight"])

    acc = accelerator()
    prepared_big = acc.prepare(big)
    ckpt.save_checkpoint(acc, tmp_path / "run", {"step": 1}, None)
    acc = accelerator()
    acc.prepare(model(1))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        ckpt.load_checkpoint(acc, ckpt.checkpoint_dir(tmp_path / "run"))
    del prepared_big
