from __future__ import annotations

import pytest

from lmbench.errors import SpecError
from lmbench.registry import Registry


def test_register_get_names() -> None:
    reg: Registry[type] = Registry("model.family")
    reg.register("lstm")(int)
    reg.register("gru")(float)
    assert reg.get("lstm") is int and reg.names() == ["gru", "lstm"] and "gru" in reg


def test_unknown_name_suggests_and_lists() -> None:
    reg: Registry[type] = Registry("model.family")
    for name in ("rnn", "lstm", "gru"):
        reg.register(name)(object)
    with pytest.raises(SpecError) as info:
        reg.get("lstn")
    assert str(info.value) == "model.family: unknown model.family 'lstn' (did you mean 'lstm'?); choose from: gru, lstm, rnn"


def test_double_registration_is_a_bug() -> None:
    reg: Registry[type] = Registry("x")
    reg.register("a")(int)
    with pytest.raises(ValueError):
        reg.register("a")(float)
