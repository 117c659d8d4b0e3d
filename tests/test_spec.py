"""Spec loading: defaults/includes, dotlist overrides, and every torch-free validation error."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.errors import SpecError
from lmbench.spec import ExperimentSpec, load_spec, spec_to_dict, spec_to_yaml, to_spec, typed_params

BASE = """
name: demo
model: {family: lstm, params: {d_hidden: 32}}
train: {max_steps: 5, lr: 0.003}
"""


@pytest.fixture()
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE)
    return path


def _error(path: Path, *overrides: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return info.value


def test_loads_typed_spec_with_defaults(spec_file: Path) -> None:
    spec = load_spec(spec_file)
    assert isinstance(spec, ExperimentSpec)
    assert spec.model.family == "lstm" and spec.model.params == {"d_hidden": 32}
    assert spec.train.lr == pytest.approx(0.003) and spec.train.batch_size == 16
    assert spec.sample.samplers[0].kind == "greedy"


def test_dotlist_overrides_win(spec_file: Path) -> None:
    spec = load_spec(spec_file, ["train.lr=1e-4", "model.params.d_hidden=64", "data.block_size=32"])
    assert spec.train.lr == pytest.approx(1e-4)
    assert spec.model.params["d_hidden"] == 64 and spec.data.block_size == 32


def test_defaults_include_is_merged_underneath(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    child = tmp_path / "child.yaml"
    child.write_text("defaults: [base.yaml]\nname: child\ntrain: {lr: 0.5}\n")
    spec = load_spec(child)
    assert spec.name == "child" and spec.train.lr == 0.5 and spec.train.max_steps == 5
    assert spec.model.params == {"d_hidden": 32}


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\nname: a\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\n")
    assert "cycle" in str(_error(tmp_path / "a.yaml"))


def test_round_trip_through_yaml(spec_file: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_file)
    again = tmp_path / "again.yaml"
    again.write_text(spec_to_yaml(spec))
    assert load_spec(again) == spec
    assert to_spec(spec_to_dict(spec)) == spec


@pytest.mark.parametrize(
    ("override", "path", "needle"),
    [
        ("model.famly=lstm", "model.famly", "did you mean 'family'"),
        ("trian.lr=1", "trian", "did you mean 'train'"),
        ("train.batch_size=abc", "train.batch_size", "abc"),
        ("train.lr=-0.001", "train.lr", "> 0"),
        ("train.batch_size=0", "train.batch_size", "> 0"),
        ("data.batching=pakced", "data.batching", "did you mean 'packed'"),
        ("data.val_fraction=1.5", "data.val_fraction", "[0, 1)"),
        ("tracking.backends=[wandbb]", "tracking.backends[0]", "did you mean 'wandb'"),
        ("eval.splits=[valid]", "eval.splits[0]", "did you mean 'validation'"),
        ("train.mixed_precision=bf32", "train.mixed_precision", "choose from: auto, bf16, fp16, no"),
        ("data.split=head", "data.split", "choose from: documents, tail"),
        ("train.grad_accum_steps=3", "train.batch_size", "not divisible by processes x grad_accum_steps (1 x 3)"),
    ],
)
def test_bad_values_name_the_field(spec_file: Path, override: str, path: str, needle: str) -> None:
    err = _error(spec_file, override)
    assert err.path == path
    assert needle in str(err)


def test_missing_required_field(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("model: {family: lstm}\ntrain: {max_steps: 1}\n")
    err = _error(path)
    assert err.path == "name" and "missing" in str(err)


def test_missing_budget(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nmodel: {family: lstm}\n")
    assert "budget" in str(_error(path))


def test_missing_spec_file(tmp_path: Path) -> None:
    assert "not found" in str(_error(tmp_path / "nope.yaml"))


def test_override_without_equals(spec_file: Path) -> None:
    assert "key=value" in str(_error(spec_file, "train.lr"))


def test_typed_params_names_unknown_and_wrong_fields() -> None:
    from dataclasses import dataclass

    @dataclass
    class Config:
        d_hidden: int = 8
        dropout: float = 0.0

    assert typed_params(Config, {"d_hidden": 4}, "model.params").d_hidden == 4
    with pytest.raises(SpecError) as info:
        typed_params(Config, {"d_hiden": 4}, "model.params")
    assert info.value.path == "model.params.d_hiden" and "did you mean 'd_hidden'" in str(info.value)
    with pytest.raises(SpecError) as info:
        typed_params(Config, {"dropout": "lots"}, "model.params")
    assert info.value.path == "model.params.dropout"


def test_bare_no_is_read_as_the_string_no(spec_file: Path) -> None:
    assert load_spec(spec_file, ["train.mixed_precision=no"]).train.mixed_precision == "no"


def test_loading_a_spec_does_not_import_torch(spec_file: Path) -> None:
    """spec.py checks everything it can without torch, so `lmbench show` and spec errors stay fast."""
    import subprocess
    import sys

    code = (f"import sys; from lmbench.spec import load_spec; load_spec({str(spec_file)!r}); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_sample_dtype_names_its_allowed_values(spec_file: Path) -> None:
    assert load_spec(spec_file).sample.dtype == "auto"
    assert load_spec(spec_file, ["sample.dtype=bf16"]).sample.dtype == "bf16"
    message = str(_error(spec_file, "sample.dtype=fp16"))
    assert "sample.dtype" in message and all(v in message for v in ("auto", "fp32", "bf16"))
