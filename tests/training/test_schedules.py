"""Learning-rate schedules: values at the key steps."""

from __future__ import annotations

import math

import pytest

from lmbench.errors import SpecError
from lmbench.training.schedules import SCHEDULES, lr_at, lr_factor


def test_constant() -> None:
    assert [lr_factor("constant", s, warmup_steps=10) for s in (0, 5, 1000)] == [1.0, 1.0, 1.0]


def test_warmup_constant_is_linear_then_flat() -> None:
    f = [lr_factor("warmup_constant", s, warmup_steps=4) for s in range(7)]
    assert f == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]  # the first update never uses lr = 0


def test_cosine_key_steps() -> None:
    kw = dict(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_factor("cosine", 0, **kw) == pytest.approx(0.1)  # warm-up: (0 + 1) / 10
    assert lr_factor("cosine", 9, **kw) == pytest.approx(1.0)
    assert lr_factor("cosine", 10, **kw) == pytest.approx(1.0)  # peak at the end of warm-up
    assert lr_factor("cosine", 60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down
    assert lr_factor("cosine", 110, **kw) == pytest.approx(0.1)  # the floor
    assert lr_factor("cosine", 500, **kw) == pytest.approx(0.1)  # and it stays there


def test_linear_key_steps() -> None:
    kw = dict(warmup_steps=0, total_steps=100, min_lr_ratio=0.0)
    assert [lr_factor("linear", s, **kw) for s in (0, 25, 50, 100, 200)] == pytest.approx([1, 0.75, 0.5, 0, 0])


def test_inverse_sqrt() -> None:
    assert lr_factor("inverse_sqrt", 3, warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor("inverse_sqrt", 15, warmup_steps=4) == pytest.approx(math.sqrt(4 / 16))
    assert lr_factor("inverse_sqrt", 99, warmup_steps=0) == pytest.approx(0.1)
    assert lr_factor("inverse_sqrt", 4, warmup_steps=4) == pytest.approx(math.sqrt(4 / 5))  # decay from the end of warm-up


def test_lr_at_scales_and_decaying_needs_total() -> None:
    assert lr_at("cosine", 0, 2e-3, total_steps=10) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor("linear", 5)
    with pytest.raises(SpecError, match="unknown train.schedule 'cosin' .did you mean 'cosine'.") as err:
        lr_factor("cosin", 5)
    assert err.value.path == "train.schedule"


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_is_positive_and_bounded(name: str) -> None:
    for step in range(0, 300, 7):
        f = lr_factor(name, step, warmup_steps=20, total_steps=200, min_lr_ratio=0.05)
        assert 0 < f <= 1.0


def test_only_the_decaying_schedules_need_the_run_length() -> None:
    assert sorted(n for n in SCHEDULES.names() if SCHEDULES.get(n).decays) == ["cosine", "linear"]


def test_no_warm_up_and_the_defaults() -> None:
    """warmup_steps 0 (the default): the first update already uses the peak; lr_at scales the factor."""
    assert [lr_factor("warmup_constant", s, warmup_steps=0) for s in (0, 1, 50)] == [1.0, 1.0, 1.0]
    assert lr_factor("warmup_constant", 0) == 1.0
    assert lr_factor("linear", 5, total_steps=10) == 0.5  # lr_factor's own defaults: no warm-up, down to 0
    assert lr_factor("cosine", 10, total_steps=10) == 0.0
    assert lr_at("linear", 0, 0.5, total_steps=10) == 0.5  # no warm-up by default
    assert lr_at("linear", 5, 0.5, total_steps=10) == pytest.approx(0.25)
    assert lr_at("cosine", 10, 0.5, total_steps=10, min_lr_ratio=0.2) == pytest.approx(0.1)
    assert lr_at("inverse_sqrt", 0, 0.5) == 0.5 and lr_at("inverse_sqrt", 3, 0.5) == pytest.approx(0.25)


def test_decay_progress_and_degenerate_lengths() -> None:
    from lmbench.training.schedules import decay_progress, warmup_factor

    assert [decay_progress(s, 10, 20) for s in (5, 10, 15, 20, 25)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert decay_progress(9, 10, 10) == 0.0 and decay_progress(10, 10, 10) == 1.0  # no decay phase at all
    assert decay_progress(10, 10, 5) == 1.0
    assert [decay_progress(s, 5, 6) for s in (5, 6)] == [0.0, 1.0]  # a one-step decay phase starts at 0
    assert warmup_factor(0, 3) == pytest.approx(1 / 3) and warmup_factor(2, 3) == 1.0 and warmup_factor(5, -1) == 1.0
    assert lr_factor("linear", 12, warmup_steps=12, total_steps=12, min_lr_ratio=0.3) == pytest.approx(0.3)
