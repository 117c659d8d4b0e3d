"""User-facing errors: the field path, the close match and the choices, in one line."""

from __future__ import annotations

import pytest

from lmbench.errors import SpecError, choice_error, did_you_mean, range_error, under


def test_choice_error_names_field_value_close_match_and_sorted_choices() -> None:
    err = choice_error("model.family", "lstn", ["rnn", "lstm", "gru"])
    assert (err.path, str(err)) == ("model.family", "model.family: unknown model.family 'lstn' (did you mean "
                                                    "'lstm'?); choose from: gru, lstm, rnn")
    assert did_you_mean("zzz", ["lstm"]) == ""


def test_range_error() -> None:
    assert str(range_error("train.lr", -0.001, "> 0")) == "train.lr: -0.001 is out of range; allowed: > 0"


def test_under_puts_a_relative_path_under_its_prefix() -> None:
    with pytest.raises(SpecError) as info, under("sample.samplers[2]"):
        raise range_error("top_p", 1.5, "in (0, 1]")
    assert info.value.path == "sample.samplers[2].top_p" and info.value.message.startswith("1.5 is out of range")
    with pytest.raises(SpecError) as info, under("--sampler"):
        raise SpecError("", "expected a sampler kind")
    assert info.value.path == "--sampler"
    with pytest.raises(ValueError, match="not a spec error"), under("x"):
        raise ValueError("not a spec error")  # other errors pass unchanged
