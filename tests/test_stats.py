"""Intervals with a known answer: bootstrap coverage, paired differences, seed intervals, scaling fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmbench.stats import (LN2, Interval, fit_scaling, paired_difference, ratio_interval, seed_interval,
                           unit_intervals)

TRUE_BPB = 1.2


def simulated_units(rng: np.random.Generator, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(nll nats, bytes) of n documents of varied length whose bits per byte scatter around TRUE_BPB: the ratio of
    sums estimates TRUE_BPB (rates independent of length)."""
    num_bytes = rng.integers(20, 2000, size=n)
    rate = rng.gamma(shape=8.0, scale=TRUE_BPB / 8.0, size=n)  # bits per byte of each document, mean TRUE_BPB
    return num_bytes * rate * LN2, num_bytes


def test_bootstrap_interval_covers_the_true_bpb_in_at_least_90_percent_of_200_datasets() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(200):
        nll, num_bytes = simulated_units(rng)
        covered += ratio_interval(nll, num_bytes * LN2, resamples=1000, seed=i).contains(TRUE_BPB)
    assert covered >= 180, covered  # nominal 95%


def test_ratio_of_sums_not_mean_of_ratios() -> None:
    nll = np.array([10.0 * LN2, 1.0 * LN2])  # 10 bits over 100 bytes, 1 bit over 1 byte
    interval = ratio_interval(nll, np.array([100.0, 1.0]) * LN2, resamples=200)
    assert interval.estimate == pytest.approx(11 / 101)  # not (0.1 + 1) / 2


def test_unit_intervals_give_bpb_ppl_and_word_ppl() -> None:
    rng = np.random.default_rng(1)
    nll, num_bytes = simulated_units(rng, 100)
    tokens, words = num_bytes // 3, num_bytes // 5
    out = unit_intervals(nll, tokens, num_bytes, words, resamples=500)
    assert out["bpb"].estimate == pytest.approx(nll.sum() / (LN2 * num_bytes.sum()))
    assert out["ppl"].estimate == pytest.approx(math.exp(nll.sum() / tokens.sum()))
    assert out["word_ppl"].estimate == pytest.approx(math.exp(nll.sum() / words.sum()))
    for interval in out.values():
        assert interval.low < interval.estimate < interval.high
    assert "word_ppl" not in unit_intervals(nll, tokens, num_bytes, np.zeros_like(words), resamples=10)
    assert math.isnan(ratio_interval(nll[:1], num_bytes[:1]).low)  # one unit: no interval


def test_paired_bootstrap_detects_a_planted_difference_and_calls_equal_cells_a_tie() -> None:
    rng = np.random.default_rng(2)
    nll_a, num_bytes = simulated_units(rng, 200)
    # B is worse by 0.02 bits per byte on every document, plus document-level noise that is larger than the
    # difference itself (an unpaired comparison of the two totals would not see it)
    noise = rng.normal(0.0, 0.01, size=len(num_bytes)) * num_bytes * LN2
    nll_b = nll_a + 0.02 * num_bytes * LN2 + noise
    diff = paired_difference(nll_b, nll_a, num_bytes, resamples=1000)
    assert diff.estimate == pytest.approx(0.02, abs=0.005) and diff.low > 0 and diff.contains(0.02)
    same = nll_a + rng.normal(0.0, 0.01, size=len(num_bytes)) * num_bytes * LN2
    tie = paired_difference(same, nll_a, num_bytes, resamples=1000)
    assert tie.contains(0.0) and abs(tie.estimate) < 0.005


def test_seed_interval_is_a_t_interval_from_three_seeds() -> None:
    assert seed_interval(np.array([1.0, 2.0])) is None
    interval = seed_interval(np.array([1.0, 2.0, 3.0]))
    # mean 2, std 1, n 3: t(0.975, 2) = 4.303 -> 2 ± 4.303 / sqrt(3)
    assert interval == Interval(2.0, pytest.approx(2 - 2.4843, abs=1e-3), pytest.approx(2 + 2.4843, abs=1e-3))


def test_scaling_fit_recovers_a_known_exponent() -> None:
    rng = np.random.default_rng(3)
    sizes = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 3e7])
    x = np.repeat(sizes, 3)  # three seeds per size
    y = 1.5 + 40.0 * x ** -0.3 + rng.normal(0.0, 0.005, size=len(x))
    fit = fit_scaling(x, y, resamples=200)
    assert fit.alpha == pytest.approx(0.3, abs=0.05) and fit.E == pytest.approx(1.5, abs=0.1)
    assert fit.alpha_interval.contains(0.3) and fit.alpha_interval.half_width < 0.15
    assert fit.predict(1e8) == pytest.approx(1.5 + 40.0 * 1e8 ** -0.3, abs=0.02)


def test_scaling_fit_is_refused_below_four_sizes() -> None:
    with pytest.raises(ValueError, match="at least 4 different sizes"):
        fit_scaling(np.array([1e5, 1e5, 1e6, 1e7]), np.array([3.0, 3.1, 2.5, 2.0]))
