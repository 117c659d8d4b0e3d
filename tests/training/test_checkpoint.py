"""Checkpoints: round trip of model/optimizer/RNG/trainer state, atomic swap and recovery, safe loading."""

from __future__ import annotations

import json
import os
import shutil
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


def test_recover_puts_a_finished_first_checkpoint_in_place_of_a_lone_best(tmp_path: Path) -> None:
    """Killed before the first checkpoint's swap: checkpoint/ holds only best/ (saved earlier); the finished
    checkpoint.tmp/ becomes checkpoint/."""
    _saved_steps(tmp_path, [2])
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.tmp")
    (tmp_path / "checkpoint" / "best").mkdir(parents=True)
    (tmp_path / "checkpoint" / "best" / "model.safetensors").write_bytes(b"old best")
    ckpt.recover(tmp_path)
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint" / "best").exists()
    assert ckpt.read_trainer_state(tmp_path / "checkpoint")["step"] == 2
    assert ckpt.verify_checkpoint(tmp_path / "checkpoint") is None


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


def test_recover_deletes_the_oldest_only_when_a_newer_complete_one_exists(tmp_path: Path) -> None:
    """checkpoint.older (left by a swap cut after its renames) goes once checkpoint/ or checkpoint.prev/ is
    complete, either one; with neither complete it stays (it may be the only good weights)."""
    _saved_steps(tmp_path, [2, 4])
    for keep_final in (True, False):
        shutil.copytree(tmp_path / "checkpoint.prev", tmp_path / "checkpoint.older")
        if not keep_final:
            (tmp_path / "checkpoint" / "trainer_state.json").rename(tmp_path / "state.bak")
        ckpt.recover(tmp_path)
        assert not (tmp_path / "checkpoint.older").exists()
        if not keep_final:
            (tmp_path / "state.bak").rename(tmp_path / "checkpoint" / "trainer_state.json")
    shutil.copytree(tmp_path / "checkpoint.prev", tmp_path / "checkpoint.older")
    for name in ("checkpoint", "checkpoint.prev"):
        (tmp_path / name / "trainer_state.json").unlink()
    ckpt.recover(tmp_path)
    assert ckpt.read_trainer_state(tmp_path / "checkpoint.older")["step"] == 2


def test_recover_promotes_a_finished_tmp_only_over_nothing_and_only_when_it_verifies(tmp_path: Path) -> None:
    _saved_steps(tmp_path, [2, 4])
    shutil.copytree(tmp_path / "checkpoint.prev", tmp_path / "checkpoint.tmp")  # step 2, finished
    ckpt.recover(tmp_path)  # checkpoint/ (step 4) is complete: the tmp is dropped, not promoted
    assert ckpt.read_trainer_state(tmp_path / "checkpoint")["step"] == 4 and not (tmp_path / "checkpoint.tmp").exists()
    shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.tmp")
    (tmp_path / "checkpoint.tmp" / "optimizer.bin").write_bytes(b"damaged")
    (tmp_path / "checkpoint" / "trainer_state.json").unlink()
    ckpt.recover(tmp_path)  # a finished tmp that does not verify is not promoted over the incomplete one
    assert not (tmp_path / "checkpoint.tmp").exists() and not ckpt.is_complete(tmp_path / "checkpoint")


def test_verify_names_each_problem(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    state_file = folder / "trainer_state.json"
    assert ckpt.verify_checkpoint(folder) == f"{state_file} is missing (the checkpoint was never finished)"
    state_file.write_text("{not json")
    assert ckpt.verify_checkpoint(folder) == f"{state_file} is unreadable (JSONDecodeError)"
    for bad in ([1, 2], {"step": "7"}, {"tokens": 3}):
        state_file.write_text(json.dumps(bad))
        assert ckpt.verify_checkpoint(folder) == f"{state_file} has no step"
    state_file.write_text(json.dumps({"step": 7}))  # an old checkpoint: no digest, no manifest
    assert ckpt.verify_checkpoint(folder) is None
    state = {"step": 7, "where": "x"}
    state_file.write_text(json.dumps({**state, "digest": ckpt._state_digest(state)}))
    assert ckpt.verify_checkpoint(folder) is None
    state_file.write_text(json.dumps({**state, "step": 8, "digest": ckpt._state_digest(state)}))
    assert ckpt.verify_checkpoint(folder) == (f"{state_file} does not match its checksum (its bytes were changed "
                                              "after it was written)")


def test_state_digest_covers_every_key_but_itself() -> None:
    state = {"step": 7, "tokens": 99, "path": Path("a/b")}  # non-JSON values are digested as their str
    digest = ckpt._state_digest(state)
    assert digest == ckpt._state_digest({**state, "digest": "anything"}) == ckpt._state_digest(
        {"path": "a/b", "tokens": 99, "step": 7})
    assert len(digest) == 32 and digest != ckpt._state_digest({**state, "tokens": 98})
    assert digest != ckpt._state_digest({"step": 7, "tokens": 99})


def test_usable_checkpoints_skip_a_best_only_folder_but_not_the_previous_checkpoint(tmp_path: Path) -> None:
    _saved_steps(tmp_path, [2, 4])
    shutil.rmtree(tmp_path / "checkpoint")
    (tmp_path / "checkpoint" / "best").mkdir(parents=True)  # best/ saved before the first checkpoint of a rerun
    good, damaged = ckpt.usable_checkpoints(tmp_path)
    assert good == [tmp_path / "checkpoint.prev"] and damaged == []
    shutil.rmtree(tmp_path / "checkpoint")
    good, damaged = ckpt.usable_checkpoints(tmp_path)  # no checkpoint/ at all: the previous one still counts
    assert good == [tmp_path / "checkpoint.prev"] and damaged == []


def test_a_save_replaces_a_stale_tmp_and_writes_a_sorted_state_with_a_manifest(tmp_path: Path) -> None:
    acc, model, _ = prepared()
    (tmp_path / "checkpoint.tmp").mkdir(parents=True)
    (tmp_path / "checkpoint.tmp" / "stale.bin").write_bytes(b"from a killed save")
    ckpt.save_best(acc.unwrap_model(model), tmp_path, {"step": 1})
    ckpt.save_checkpoint(acc, tmp_path, {"step": 3, "where": Path("x/y"), "a": 1})
    folder = tmp_path / "checkpoint"
    assert not (folder / "stale.bin").exists() and (folder / "best" / "model.safetensors").is_file()
    text = (folder / "trainer_state.json").read_text()
    state = json.loads(text)
    assert list(state) == sorted(state) and state["where"] == "x/y"
    assert "best" not in " ".join(state["files"]) and "model.safetensors" in state["files"]
    assert ckpt.verify_checkpoint(folder) is None


def test_best_weights_go_into_a_new_run_folder_with_sorted_info(tmp_path: Path) -> None:
    acc, model, _ = prepared()
    run_dir = tmp_path / "new" / "run"
    (run_dir / "checkpoint" / "best.tmp").mkdir(parents=True)  # left by a killed save
    ckpt.save_best(acc.unwrap_model(model), run_dir, {"val_loss": 2.0, "step": 5})
    best = run_dir / "checkpoint" / "best"
    assert list(json.loads((best / "best.json").read_text())) == ["step", "val_loss"]
    assert not (run_dir / "checkpoint" / "best.tmp").exists()
    ckpt.save_best(acc.unwrap_model(model), tmp_path / "fresh", {"step": 1})  # the run folder does not exist yet
    assert (tmp_path / "fresh" / "checkpoint" / "best" / "model.safetensors").is_file()


def test_link_tree_links_or_copies_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    (src / "sub").mkdir()
    ckpt._link_tree(src, tmp_path / "deep" / "dst")
    assert (tmp_path / "deep" / "dst" / "a.bin").stat().st_ino == (src / "a.bin").stat().st_ino
    ckpt._link_tree(src, tmp_path / "deep" / "dst2")

    def no_links(*args: object) -> None:
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    ckpt._link_tree(src, tmp_path / "copied")
    assert (tmp_path / "copied" / "a.bin").read_bytes() == b"a" and not (tmp_path / "copied" / "sub").exists()
    ckpt._link_tree(src, tmp_path / "copied")  # again into an existing folder: files replaced by copies
    ckpt._link_tree(tmp_path / "missing", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_weights_file_metadata_and_folder_paths(tmp_path: Path) -> None:
    from safetensors import safe_open

    model = tiny_model()
    (tmp_path / "checkpoint").mkdir()
    ckpt.save_weights(model, tmp_path / "checkpoint" / "model.safetensors")
    with safe_open(str(tmp_path / "checkpoint" / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"  # what transformers' from_pretrained expects
    for where in (tmp_path, tmp_path / "checkpoint", tmp_path / "checkpoint" / "model.safetensors"):
        loaded = ckpt.load_weights(tiny_model(), where)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_carried_state_names_are_pinned() -> None:
    from dataclasses import dataclass

    @dataclass
    class Pair:
        h: torch.Tensor
        c: torch.Tensor

    h, c = torch.zeros(1), torch.ones(1)
    assert list(ckpt.state_to_tensors(h)) == ["_"]
    assert list(ckpt.state_to_tensors((h, c))) == ["0", "1"]
    nested = ckpt.state_to_tensors([Pair(h, c), (h,)])
    assert list(nested) == ["0.h", "0.c", "1.0"]
    back = ckpt.tensors_to_state([Pair(h, h), (h,)], {"0.h": c, "0.c": h, "1.0": c})
    assert isinstance(back[0], Pair) and torch.equal(back[0].h, c) and torch.equal(back[0].c, h)
    assert isinstance(back[1], tuple) and torch.equal(back[1][0], c)
    assert torch.equal(ckpt.tensors_to_state(h, {"_": c}), c)

    @dataclass
    class Outer:  # a dataclass field that is itself a structure
        pair: tuple

    assert list(ckpt.state_to_tensors(Outer((h, c)))) == ["pair.0", "pair.1"]
    back_outer = ckpt.tensors_to_state(Outer((h, h)), {"pair.0": c, "pair.1": h})
    assert isinstance(back_outer.pair, tuple) and torch.equal(back_outer.pair[0], c) and torch.equal(back_outer.pair[1], h)
    with pytest.raises(TypeError, match="cannot serialise a carried state of type str"):
        ckpt.state_to_tensors("h")
    with pytest.raises(TypeError, match="cannot rebuild a carried state of type str"):
        ckpt.tensors_to_state("h", {})


def test_load_run_names_the_field_and_puts_the_model_on_the_device(tmp_path: Path) -> None:
    from lmbench.errors import SpecError

    with pytest.raises(SpecError) as err:
        ckpt.load_run(tmp_path)
    assert err.value.path == "run_dir" and "has no spec.yaml" in err.value.message
    from lmbench.models import build_model
    from lmbench.spec import spec_to_yaml, to_spec
    from lmbench.tokenizers.char import CharConfig, CharTokenizer

    spec = to_spec({"name": "t", "data": {"block_size": 8}, "train": {"max_steps": 1},
                    "model": {"family": "lstm", "params": {"d_embed": 4, "d_hidden": 4, "num_layers": 1}}})
    (tmp_path / "spec.yaml").write_text(spec_to_yaml(spec))
    tokenizer = CharTokenizer.train(["abc"], CharConfig())
    tokenizer.save(tmp_path / "tokenizer")
    (tmp_path / "checkpoint").mkdir()
    ckpt.save_weights(build_model(spec.model, tokenizer), tmp_path / "checkpoint" / "model.safetensors")
    model, _, _ = ckpt.load_run(tmp_path, device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"} and not model.training


def test_a_checkpoint_without_a_digest_still_loads(tmp_path: Path) -> None:
    """trainer_state.json of a checkpoint written before digests existed: verified by its manifest, then loaded."""
    acc, _, _ = prepared()
    ckpt.save_checkpoint(acc, tmp_path, {"step": 3, "tokens": 30}, {})
    path = tmp_path / "checkpoint" / "trainer_state.json"
    state = json.loads(path.read_text())
    del state["digest"]
    path.write_text(json.dumps(state))
    assert ckpt.verify_checkpoint(tmp_path / "checkpoint") is None
    loaded, _ = ckpt.load_checkpoint(acc, tmp_path / "checkpoint")
    assert (loaded["step"], loaded["tokens"]) == (3, 30) and "digest" not in loaded


def test_every_file_of_a_checkpoint_is_flushed_to_disk_before_the_swap(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut after the rename must not leave a checkpoint of empty files: each file is fsynced."""
    import os

    flushed: set[int] = set()
    real = os.fsync

    def fsync(fd: int) -> None:
        flushed.add(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _saved_steps(tmp_path, [2])
    files = [p for p in (tmp_path / "checkpoint").rglob("*") if p.is_file() and p.name != "trainer_state.json"]
    assert files and {p.stat().st_ino for p in files} <= flushed
