"""Round trip: train tiny runs -> `lmbench export` -> AutoModelForCausalLM / AutoTokenizer -> same logits, same
greedy text; the export's own check, its refusals, and `--push-to-hub` with the Hub calls replaced."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbench.cli import main
from lmbench.errors import SpecError
from lmbench.export import EXPORT_FILE, export_run
from lmbench.sampling.search import prompt_start_id, sample_texts
from lmbench.spec import SamplerSpec
from lmbench.training.checkpoint import load_run
from tests.training.test_trainer import run, tiny_cfg

TRANSFORMER = {"num_layers": 2, "num_heads": 2, "d_model": 16, "block_size": 64}
RUNS: dict[str, dict[str, Any]] = {
    "transformer_char": {"model": {"params": TRANSFORMER}},  # learned positions -> GPT-2
    "char_lstm": {"model": {"family": "lstm", "params": {"d_embed": 8, "d_hidden": 16, "num_layers": 2}}},
    "rotary_bpe": {"model": {"params": {**TRANSFORMER, "positions": "rotary"}},  # -> GPT-NeoX
                   "tokenizer": {"kind": "bpe", "params": {"vocab_size": 40}}, "data": {"batching": "documents"}},
    "hf_byte_bpe": {"model": {"family": "hf", "params": {"from_config": True, "model_type": "gpt2", "config": {
                        "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64}}},
                    "tokenizer": {"kind": "hf", "params": {"train_from_scratch": True, "vocab_size": 300}}},
}
PROMPTS = ["the cat", "a dog ran"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, sections in RUNS.items():
        cfg = tiny_cfg(root, **sections)
        cfg["train"]["max_steps"] = 12
        run(cfg, root / name)
        out[name] = root / name
    return out


def greedy_rows(run_dir: Path, max_new_tokens: int) -> list[dict[str, Any]]:
    model, tokenizer, spec = load_run(run_dir)
    sample = dataclasses.replace(spec.sample, prompts=PROMPTS, samplers=[SamplerSpec()], num_samples=1,
                                 max_new_tokens=max_new_tokens)
    return sample_texts(model, tokenizer, sample, "cpu", start_id=prompt_start_id(spec.data, tokenizer))


@pytest.mark.parametrize("name", list(RUNS))
def test_round_trip_same_logits_and_greedy_text(name: str, runs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "exported"
    assert main(["export", str(runs[name]), str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    record = json.loads((out / EXPORT_FILE).read_text())
    assert record["max_abs_logit_diff"] <= 1e-4 and record["tokenizer_mismatches"] == 0
    remote = record["trust_remote_code"]
    hf_model = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=remote).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out), trust_remote_code=remote)
    model, tokenizer, spec = load_run(runs[name])
    start = prompt_start_id(spec.data, tokenizer)

    text = "the cat sat on the mat and the dog ran far away"
    ids = hf_tokenizer(text, return_tensors="pt")["input_ids"]
    if ids[0, 0] != start:  # GPT-2-style tokenizers add no start token: lmbench's prompts have one
        ids = torch.cat([torch.tensor([[start]]), ids], dim=1)
    assert ids[0].tolist() == [start, *tokenizer.encode(text)]
    with torch.no_grad():
        assert (model(ids) - hf_model(input_ids=ids).logits).abs().max().item() <= 1e-4

    for row in greedy_rows(runs[name], max_new_tokens=16):
        prompt = torch.tensor([row["prompt_ids"]])
        generated = hf_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                      max_new_tokens=16)
        assert generated[0, prompt.size(1):].tolist() == row["new_ids"]
        assert hf_tokenizer.decode(generated[0], skip_special_tokens=True) == row["text"]


def test_export_refuses_a_non_empty_folder_and_overwrites_when_asked(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SpecError) as err:
        export_run(runs["transformer_char"], out)
    assert err.value.path == "out_dir" and (out / "keep.txt").exists()
    with pytest.raises(SpecError):
        export_run(runs["transformer_char"], runs["transformer_char"].parent, overwrite=True)  # holds the run
    record = export_run(runs["transformer_char"], out, overwrite=True)
    assert not (out / "keep.txt").exists() and record["architecture"] == "GPT2LMHeadModel"
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "val_ppl" in card


def test_export_of_an_unsupported_option_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    cfg = tiny_cfg(root, model={"params": {**TRANSFORMER, "norm": "post"}})
    cfg["train"]["max_steps"] = 1
    run(cfg, root / "post")
    with pytest.raises(SpecError) as err:
        export_run(root / "post", tmp_path / "out")
    assert err.value.path == "model.params.norm" and not (tmp_path / "out").exists()


def test_push_to_hub_uploads_the_folder(runs: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self: Any, repo_id: str, **kw: Any) -> None:
        calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self: Any, **kw: Any) -> Any:
        calls.append(("upload_folder", {**kw, "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())}))
        return huggingface_hub.CommitInfo(commit_url="https://huggingface.co/me/tiny/commit/abc", commit_message="m",
                                          commit_description="", oid="abc")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    assert main(["export", str(runs["char_lstm"]), str(out), "--push-to-hub", "me/tiny", "--private"]) == 0
    (_, create), (_, upload) = calls
    assert create == {"repo_id": "me/tiny", "private": True, "exist_ok": True}
    assert upload["repo_id"] == "me/tiny" and upload["folder_path"] == str(out)
    assert {"config.json", "model.safetensors", "tokenizer.json", EXPORT_FILE, "README.md",
            "recurrent_remote.py"} <= set(upload["files"])
    assert "me/tiny/commit/abc" in capsys.readouterr().out
