"""Validation before work: every user error fails in `lmbench` with exit code 2, one line naming the field,
and no traceback, before any data is read or model built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmbench.cli import main
from lmbench.errors import SpecError
from lmbench.spec import load_spec
from lmbench.validate import validate


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line number {i} of a small corpus.\n" for i in range(50)))
    return path


@pytest.fixture()
def spec_file(tmp_path: Path, corpus: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"name: v\ndata: {{source: text, path: {corpus}, unit: line, block_size: 8, cache_dir: {tmp_path / 'cache'}}}\n"
        "tokenizer: {kind: word}\nmodel: {family: lstm, params: {d_hidden: 8, num_layers: 1}}\n"
        "train: {max_steps: 1, batch_size: 2}\ntracking: {backends: [none]}\n"
    )
    return path


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _validate(path: Path, *overrides: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate(load_spec(path, overrides))
    return info.value


def test_valid_spec_passes(spec_file: Path) -> None:
    validate(load_spec(spec_file))


@pytest.mark.parametrize(
    ("override", "path", "needle"),
    [
        ("model.family=lstn", "model.family", "unknown model.family 'lstn' (did you mean 'lstm'?); choose from:"),
        ("tokenizer.kind=wrod", "tokenizer.kind", "did you mean 'word'"),
        ("data.source=txt", "data.source", "did you mean 'text'"),
        ("model.params.d_hiden=4", "model.params.d_hiden", "did you mean 'd_hidden'"),
        ("model.params.num_layers=many", "model.params.num_layers", "many"),
        ("tokenizer.params.min_freq=x", "tokenizer.params.min_freq", "x"),
        ("train.schedule=cosin", "train.schedule", "did you mean 'cosine'"),
        ("train.optimizer=sgd", "train.optimizer", "choose from: adam, adamw"),
        ("sample.samplers=[{kind: sample, top_p: 1.5}]", "sample.samplers[0].top_p", "(0, 1]"),
        ("sample.samplers=[{kind: sample, top_p: 0}]", "sample.samplers[0].top_p", "(0, 1]"),
        ("sample.samplers=[{kind: sample, temperature: 0}]", "sample.samplers[0].temperature", "> 0"),
        ("sample.samplers=[{kind: sample, top_k: 0}]", "sample.samplers[0].top_k", ">= 1"),
        ("sample.samplers=[{kind: beam, num_beams: 0}]", "sample.samplers[0].num_beams", ">= 1"),
        ("sample.samplers=[{kind: beam_sample, num_beams: 1}]", "sample.samplers[0].num_beams", ">= 2"),
        ("sample.samplers=[{kind: greedy, num_beams: 3}]", "sample.samplers[0].num_beams", "need kind: beam"),
        ("sample.samplers=[{kind: beam, num_beams: 2, num_return_sequences: 3}]",
         "sample.samplers[0].num_return_sequences", "<= num_beams (2)"),
        ("sample.samplers=[{kind: nucleus}]", "sample.samplers[0].kind", "choose from: beam, beam_sample, greedy"),
    ],
)
def test_registry_and_params_errors(spec_file: Path, override: str, path: str, needle: str) -> None:
    err = _validate(spec_file, override)
    assert err.path == path and needle in str(err)


def test_missing_data_file(spec_file: Path, tmp_path: Path) -> None:
    err = _validate(spec_file, f"data.path={tmp_path / 'nope.txt'}")
    assert err.path == "data.path" and "nope.txt" in str(err)


def test_text_field_absent_from_json(spec_file: Path, tmp_path: Path) -> None:
    records = tmp_path / "arxiv.json"
    records.write_text(json.dumps([{"summary": "we propose a model.", "title": "t"}] * 5))
    err = _validate(spec_file, "data.source=json", f"data.path={records}", "data.text_field=summry")
    assert err.path == "data.text_field" and "did you mean 'summary'" in str(err)


def test_text_field_absent_from_csv(spec_file: Path, tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("text_body,label\nhello there,1\n")
    err = _validate(spec_file, "data.source=csv", f"data.path={table}")
    assert err.path == "data.text_field" and "text_body" in str(err)


def test_glove_with_char_tokenizer_is_incompatible(spec_file: Path) -> None:
    err = _validate(spec_file, "tokenizer.kind=char", "model.params.embeddings=glove", "model.params.d_embed=null")
    assert err.path.startswith("model.params.embeddings") and "word tokenizer" in str(err)


def test_data_block_longer_than_transformer_context(spec_file: Path) -> None:
    text = spec_file.read_text().replace("{family: lstm, params: {d_hidden: 8, num_layers: 1}}",
                                         "{family: transformer, params: {block_size: 4, d_model: 8, num_heads: 2}}")
    spec_file.write_text(text)
    err = _validate(spec_file)
    assert err.path == "data.block_size" and "4" in str(err)


def test_empty_dataset_after_filtering_fails_before_training(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(capsys, "data", str(spec_file), "data.min_chars=10000")
    assert code == 2
    assert "min_chars" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "override",
    ["model.family=lstn", "train.lr=-1", "train.batch_size=0", "sample.samplers=[{kind: sample, top_p: 1.2}]"],
)
def test_cli_exits_2_with_one_line(spec_file: Path, capsys: pytest.CaptureFixture[str], override: str) -> None:
    for command in ("show", "run", "data"):
        code, err = _run_cli(capsys, command, str(spec_file), override)
        assert code == 2, command
        assert err.startswith("lmbench: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_no_traceback_in_a_real_process(spec_file: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lmbench", "run", str(spec_file), "model.family=lstn"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "did you mean 'lstm'" in proc.stderr and "Traceback" not in proc.stderr


def test_decaying_schedule_needs_a_step_budget(spec_file: Path) -> None:
    err = _validate(spec_file, "train.max_steps=null", "train.max_seconds=10", "train.schedule=cosine")
    assert err.path == "train.schedule" and "max_seconds alone" in str(err)
    validate(load_spec(spec_file, ["train.max_steps=null", "train.max_seconds=10", "train.schedule=warmup_constant"]))


def test_the_global_batch_must_split_over_the_launched_processes(spec_file: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    err = _validate(spec_file, "train.batch_size=4")
    assert err.path == "train.batch_size" and "(3 x 1)" in str(err)
    validate(load_spec(spec_file, ["train.batch_size=6"]))


def test_optional_parts_that_are_missing_name_their_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    from lmbench.spec import to_spec
    from lmbench.validate import validate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    model = {"family": "lstm"}
    spec = to_spec({"name": "t", "model": model, "train": {"max_steps": 1},
                    "tracking": {"backends": ["tensorboard"]}})
    with pytest.raises(SpecError) as err:
        validate(spec)
    assert err.value.path == "tracking.backends" and "pip install 'lmbench[tensorboard]'" in err.value.message
    monkeypatch.setitem(sys.modules, "razdel", None)  # import razdel fails
    spec = to_spec({"name": "t", "model": model, "train": {"max_steps": 1}, "tokenizer": {"kind": "word",
                                                                           "params": {"backend": "razdel"}}})
    with pytest.raises(SpecError) as err:
        validate(spec)
    assert err.value.path == "tokenizer.params.backend" and "pip install 'lmbench[razdel]'" in err.value.message
