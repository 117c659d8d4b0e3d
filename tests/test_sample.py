"""`lmbench sample RUN_DIR ...` on a run folder written here (spec.yaml, tokenizer/, checkpoint/model.safetensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbench.training.checkpoint import save_weights
from lmbench.cli import main
from lmbench.errors import SpecError
from lmbench.models import build_model
from lmbench.sample import parse_sampler
from lmbench.spec import SamplerSpec, spec_to_yaml, to_spec
from lmbench.tokenizers.char import CharConfig, CharTokenizer

MODEL = {"family": "transformer", "params": {"num_layers": 1, "num_heads": 2, "d_model": 16, "block_size": 64}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    spec = to_spec({"name": "t", "model": MODEL, "train": {"max_steps": 1}, "data": {"block_size": 32},
                    "sample": {"prompts": ["the"]}})
    (run / "spec.yaml").write_text(spec_to_yaml(spec))
    tokenizer = CharTokenizer.train(["the cat sat on the mat"], CharConfig())
    tokenizer.save(run / "tokenizer")
    torch.manual_seed(0)
    model = build_model(spec.model, tokenizer)
    (run / "checkpoint").mkdir()
    save_weights(model, run / "checkpoint" / "model.safetensors")
    return run


def test_parse_sampler_kinds_aliases_and_values() -> None:
    assert parse_sampler(["top_p", "top_p=0.9"]) == SamplerSpec(kind="sample", top_p=0.9)
    assert parse_sampler(["beam", "num_beams=5", "early_stopping=false"]) == SamplerSpec(
        kind="beam", num_beams=5, early_stopping=False)
    assert parse_sampler(["sample", "top_k=null", "temperature=0.8"]) == SamplerSpec(kind="sample", temperature=0.8)
    assert parse_sampler(["greedy"]) == SamplerSpec()


@pytest.mark.parametrize("words, field", [
    (["top_p", "top_q=0.9"], "--sampler.top_q"),
    (["sample", "temperature=0"], "--sampler.temperature"),
    (["sample", "top_p=1.5"], "--sampler.top_p"),
    (["sample", "top_k=0"], "--sampler.top_k"),
    (["beem"], "--sampler.kind"),
    (["beam_sample"], "--sampler.num_beams"),
    (["beam", "num_beams=2", "num_return_sequences=3"], "--sampler.num_return_sequences"),
    (["sample", "top_k=many"], "--sampler.top_k"),
    (["sample", "top_k"], "--sampler"),
])
def test_parse_sampler_errors_name_the_field(words: list[str], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_sampler(words)
    assert err.value.path == field


def test_cmd_sample_prints_texts(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sample", str(run_dir), "--prompt", "the cat", "--prompt", "a mat", "--sampler", "top_p", "top_p=0.9",
                 "-n", "3", "--max-new-tokens", "7", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("=== sample(top_p=0.9)") == 6 and out.count("| prompt 'the cat'") == 3
    texts = [line for line in out.splitlines() if line.startswith("the cat")]
    assert len(texts) == 3


def test_cmd_sample_default_prompt_unknown_chars_and_beam(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(run_dir), "--sampler", "beam", "num_beams=3", "num_return_sequences=2",
                 "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.count("| prompt 'the'") == 2
    assert main(["sample", str(run_dir), "--prompt", "QZX unknown", "--max-new-tokens", "3"]) == 0


def test_cmd_sample_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(run_dir), "--sampler", "sample", "top_p=2"]) == 2
    assert "--sampler.top_p" in capsys.readouterr().err
    assert main(["sample", str(tmp_path)]) == 2
    assert "run_dir" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens" in capsys.readouterr().err


def test_sampler_is_repeatable_and_never_swallows_the_run_dir(run_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`--sampler KIND k=v RUN_DIR` (the run dir after the flag) and two --sampler flags: both samplers run."""
    code = main(["sample", "--sampler", "greedy", "--sampler", "sample", "top_p=0.9", str(run_dir),
                 "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("=== greedy") == 1 and out.count("=== sample(top_p=0.9)") == 1
    assert "# greedy, sample: 2 texts" in out


def test_sampler_errors_name_which_sampler_and_a_missing_run_dir(run_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(run_dir), "--sampler", "greedy", "--sampler", "sample", "top_p=2"]) == 2
    assert "--sampler[1].top_p" in capsys.readouterr().err
    assert main(["sample", "--sampler", "greedy"]) == 2
    assert "run_dir: missing" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--sampler", "sample", "oops"]) == 2
    assert "'oops' is not of the form key=value" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"lmbench {version('lmbench')}"


def test_cmd_sample_dtype_overrides_the_runs(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from lmbench.sampling import search

    seen = []
    generate = search.generate

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.is_autocast_enabled("cpu"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(search, "generate", recording)
    assert main(["sample", str(run_dir), "--dtype", "bf16", "--max-new-tokens", "3"]) == 0
    assert main(["sample", str(run_dir), "--max-new-tokens", "3"]) == 0  # the run's: auto, no autocast here
    assert seen == [True, False]
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(run_dir), "--dtype", "fp16"])
    assert exit_info.value.code == 2 and "'fp16' (choose from 'auto', 'fp32', 'bf16')" in capsys.readouterr().err
