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


def reference_bootstrap(columns: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """The resampling lmbench promises, written plainly: row r of resample i is
    default_rng(seed).integers(0, n, size=(resamples, n))[i, r], one draw for every column (which pairs them)."""
    rows = np.random.default_rng(seed).integers(0, len(columns[0]), size=(resamples, len(columns[0])))
    return [np.asarray(col, dtype=np.float64)[rows].sum(axis=1) for col in columns]


NLL = np.array([3.0, 10.0, 1.5, 7.25, 4.0, 0.5, 12.0], dtype=np.float32)
BYTES = np.array([4, 11, 2, 9, 5, 1, 13], dtype=np.float32)


def test_ratio_interval_is_the_2_5_and_97_5_percentiles_of_the_resampled_ratio_of_sums() -> None:
    """Against the plain reference (float64 sums, percentiles 2.5 and 97.5), for the default seed and resamples
    and for others; float32 inputs are summed in float64."""
    for kwargs in ({}, {"resamples": 250, "seed": 7}, {"resamples": 100, "seed": 3}):
        resamples, seed = kwargs.get("resamples", 2000), kwargs.get("seed", 0)
        num, den = reference_bootstrap([NLL, BYTES], resamples, seed)
        low, high = np.percentile(num / den, [2.5, 97.5])
        got = ratio_interval(NLL, BYTES, **kwargs)
        assert got.estimate == pytest.approx(float(NLL.astype(np.float64).sum() / BYTES.astype(np.float64).sum()),
                                             rel=1e-15)
        assert (got.low, got.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    wide = ratio_interval(NLL, BYTES, resamples=500, seed=1, level=0.5)
    num, den = reference_bootstrap([NLL, BYTES], 500, 1)
    assert (wide.low, wide.high) == tuple(pytest.approx(v, rel=1e-12) for v in np.percentile(num / den, [25, 75]))
    exp = ratio_interval(NLL, BYTES, transform=np.exp, resamples=300, seed=2)
    num, den = reference_bootstrap([NLL, BYTES], 300, 2)
    assert exp.estimate == pytest.approx(math.exp(NLL.sum() / BYTES.sum()), rel=1e-6)
    assert (exp.low, exp.high) == tuple(pytest.approx(v, rel=1e-12) for v in np.percentile(np.exp(num / den),
                                                                                         [2.5, 97.5]))


def test_small_and_degenerate_inputs() -> None:
    """Two units already get an interval; one gets only the estimate; units with no bytes in a resample give no
    warning and are left out of the percentiles; an interval contains its own ends."""
    two = ratio_interval(NLL[:2], BYTES[:2], resamples=50)
    assert two.low < two.high and math.isfinite(two.low)
    one = ratio_interval(NLL[:1], BYTES[:1])
    assert one.estimate == pytest.approx(0.75) and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(paired_difference(NLL[:1], NLL[:1] * 2, BYTES[:1]).low)
    assert paired_difference(NLL[:1], NLL[:1] * 2, BYTES[:1]).estimate == pytest.approx(-3 / (4 * LN2))
    with np.errstate(all="raise"):  # a 0/0 resample must not warn or raise
        empty = ratio_interval(np.array([1.0, 0.0, 2.0]), np.array([2.0, 0.0, 0.0]), resamples=200)
    num, den = reference_bootstrap([np.array([1.0, 0.0, 2.0]), np.array([2.0, 0.0, 0.0])], 200, 0)
    with np.errstate(all="ignore"):
        ratios = num / den
    assert (empty.low, empty.high) == tuple(pytest.approx(v) for v in
                                            np.percentile(ratios[np.isfinite(ratios)], [2.5, 97.5]))
    assert Interval(1.0, 0.5, 2.0).contains(0.5) and Interval(1.0, 0.5, 2.0).contains(2.0)
    assert not Interval(1.0, 0.5, 2.0).contains(2.0000001) and Interval(1.0, 0.5, 2.0).half_width == 0.75


def test_unit_intervals_and_paired_difference_follow_the_reference() -> None:
    tokens = np.array([2, 5, 1, 4, 2, 1, 6])
    words = np.array([0, 1, 0, 0, 0, 0, 0])  # one word in all: word perplexity is still reported
    out = unit_intervals(NLL, tokens, BYTES, words, resamples=120, seed=4)
    num, den = reference_bootstrap([NLL, BYTES * LN2], 120, 4)
    assert out["bpb"].low == pytest.approx(np.percentile(num / den, 2.5), rel=1e-12)
    num, den = reference_bootstrap([NLL, tokens], 120, 4)
    assert out["ppl"].high == pytest.approx(np.percentile(np.exp(num / den), 97.5), rel=1e-12)
    assert out["word_ppl"].estimate == pytest.approx(math.exp(float(NLL.astype(np.float64).sum())), rel=1e-12)
    assert unit_intervals(NLL, tokens, BYTES, words)["bpb"] == ratio_interval(NLL, BYTES * LN2)  # seed 0, 2000
    other = NLL[::-1].copy()
    diff = paired_difference(NLL, other, BYTES, resamples=150, seed=9)
    a, b, den = reference_bootstrap([NLL, other, BYTES.astype(np.float64) * LN2], 150, 9)
    assert diff.estimate == pytest.approx(float((NLL.astype(np.float64).sum() - other.astype(np.float64).sum())
                                                / (BYTES.astype(np.float64).sum() * LN2)), rel=1e-12, abs=1e-15)
    assert (diff.low, diff.high) == tuple(pytest.approx(v, rel=1e-12) for v in np.percentile((a - b) / den,
                                                                                           [2.5, 97.5]))
    default = paired_difference(NLL, other, BYTES)
    a, b, den = reference_bootstrap([NLL, other, BYTES.astype(np.float64) * LN2], 2000, 0)
    assert default.low == pytest.approx(np.percentile((a - b) / den, 2.5), rel=1e-12)
    narrow = paired_difference(NLL, other, BYTES, resamples=150, seed=9, level=0.8)
    a, b, den = reference_bootstrap([NLL, other, BYTES.astype(np.float64) * LN2], 150, 9)
    assert narrow.high == pytest.approx(np.percentile((a - b) / den, 90), rel=1e-12)


SIZES = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 3e7])


def test_scaling_fit_recovers_noiseless_laws_exactly_and_respects_its_bounds() -> None:
    """L = E + A x^-alpha without noise is recovered to 1e-6, for E near 0 and far from it; alpha is capped at 5
    and E is kept >= 0 (a law that wants more is fitted at the bound)."""
    for E, A, alpha in ((1.5, 40.0, 0.3), (0.2, 8.0, 0.12), (3.0, 1e3, 0.7)):
        fit = fit_scaling(SIZES, E + A * SIZES ** -alpha, resamples=5)
        assert (fit.E, fit.A, fit.alpha) == (pytest.approx(E, rel=1e-6), pytest.approx(A, rel=1e-6),
                                             pytest.approx(alpha, rel=1e-6))
    x = np.array([1.0, 1.5, 2.0, 3.0, 4.0])
    steep = fit_scaling(x, 2.0 + 3.0 * x ** -7.0, resamples=5)
    assert steep.alpha == pytest.approx(5.0)
    below = fit_scaling(SIZES, -0.5 + 40.0 * SIZES ** -0.3, resamples=5)
    assert below.E == pytest.approx(0.0, abs=1e-9)


def test_scaling_fit_points_and_intervals_follow_a_plain_bootstrap() -> None:
    """Points with a non-finite value or a size <= 0 are dropped (sizes below 1 are kept); the intervals are the
    percentiles of refits over point resamples drawn with default_rng(seed), skipping resamples with fewer than 3
    sizes, written out here."""
    from lmbench.stats import _fit_power_law

    rng = np.random.default_rng(3)
    x = np.concatenate([[0.5] * 6, [2.0, 8.0, 32.0], [0.0, -1.0, np.inf, 16.0]])
    y = 1.0 + 2.0 * x.clip(min=1e-9) ** -0.5 + rng.normal(0.0, 0.01, len(x))
    y[-1] = np.nan
    fit = fit_scaling(x, y, resamples=40, seed=5)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    assert fit.num_points == 9 == keep.sum()
    kx, ky = x[keep], y[keep]
    draws, draw_rng = [], np.random.default_rng(5)
    for _ in range(40):
        rows = draw_rng.integers(0, len(kx), size=len(kx))
        if len(np.unique(kx[rows])) >= 3:
            draws.append(_fit_power_law(kx[rows], ky[rows]))
    draws_arr = np.asarray(draws)
    assert len(draws_arr) < 40  # some resamples had fewer than 3 sizes and were skipped, not the end of the loop
    assert fit.alpha_interval == Interval(fit.alpha, *(pytest.approx(v, rel=1e-9)
                                                       for v in np.percentile(draws_arr[:, 2], [2.5, 97.5])))
    assert fit.E_interval == Interval(fit.E, *(pytest.approx(v, rel=1e-9)
                                               for v in np.percentile(draws_arr[:, 0], [2.5, 97.5])))
    assert fit_scaling(x, y, resamples=40).alpha_interval != fit.alpha_interval  # the seed (default 0) matters
    four = fit_scaling(SIZES[:4], 1.5 + 40.0 * SIZES[:4] ** -0.3, resamples=5)  # exactly four sizes: fitted
    assert four.num_points == 4


def test_seed_interval_computes_in_float64() -> None:
    values = np.array([1.1, 2.2, 3.3, 2.9], dtype=np.float32)
    x = values.astype(np.float64)
    mean, sem = x.mean(), x.std(ddof=1) / 2
    got = seed_interval(values)
    assert got is not None and got.estimate == pytest.approx(mean, rel=1e-15)
    assert got.high - got.estimate == pytest.approx(3.182446305284263 * sem, rel=1e-12)  # t(0.975, 3)


def test_word_ppl_two_unit_pairs_and_overflow_follow_the_reference() -> None:
    words = np.array([2, 1, 1, 3, 2, 1, 4])
    out = unit_intervals(NLL, np.ones(7), BYTES, words, resamples=90, seed=6)
    num, den = reference_bootstrap([NLL, words], 90, 6)
    assert (out["word_ppl"].low, out["word_ppl"].high) == tuple(
        pytest.approx(v, rel=1e-12) for v in np.percentile(np.exp(num / den), [2.5, 97.5]))
    other = (NLL * 1.5 + 1.0).astype(np.float32)  # not a permutation: the sums differ in float32
    diff = paired_difference(NLL, other, BYTES)
    expected = (NLL.astype(np.float64).sum() - other.astype(np.float64).sum()) / (BYTES.astype(np.float64).sum() * LN2)
    assert diff.estimate == pytest.approx(float(expected), rel=1e-14)
    two = paired_difference(NLL[:2], other[:2], BYTES[:2], resamples=50)
    assert math.isfinite(two.low) and math.isfinite(two.high)
    one = paired_difference(NLL[:1], other[:1], BYTES[:1])
    assert math.isnan(one.low) and math.isnan(one.high)
    with np.errstate(all="raise"):  # exp of a huge resampled ratio overflows to inf quietly
        huge = ratio_interval(np.array([1800.0, 10.0, 1900.0]), np.array([1.0, 1.0, 0.5]), transform=np.exp,
                              resamples=50)
    assert math.isinf(huge.estimate) and huge.low <= huge.high
    default = fit_scaling(SIZES, 1.5 + 40.0 * SIZES ** -0.3)
    assert default.alpha_interval == fit_scaling(SIZES, 1.5 + 40.0 * SIZES ** -0.3, resamples=500, seed=0).alpha_interval


def test_float32_inputs_are_computed_in_float64() -> None:
    """Per-unit NLLs and byte counts often arrive as float32 (parquet, torch): every sum is taken in float64, so
    the result is that of the same values given as float64, not float32 sums that lose digits."""
    rng = np.random.default_rng(5)
    nll_a = rng.uniform(1.0, 900.0, size=3000).astype(np.float32)
    nll_b = (nll_a * rng.uniform(0.9, 1.1, size=3000)).astype(np.float32)
    num_bytes = rng.uniform(10.0, 500.0, size=3000).astype(np.float32)
    wide = [a.astype(np.float64) for a in (nll_a, nll_b, num_bytes)]
    for got, want in ((ratio_interval(nll_a, num_bytes, resamples=50), ratio_interval(wide[0], wide[2], resamples=50)),
                      (paired_difference(nll_b, nll_a, num_bytes, resamples=50),
                       paired_difference(wide[1], wide[0], wide[2], resamples=50))):
        assert (got.estimate, got.low, got.high) == (pytest.approx(want.estimate, rel=1e-13),
                                                     pytest.approx(want.low, rel=1e-13),
                                                     pytest.approx(want.high, rel=1e-13))
    sizes = np.repeat(np.array([1e5, 3e5, 1e6, 3e6, 1e7]), 2)
    loss = (1.5 + 40.0 * sizes ** -0.3 + rng.normal(0.0, 0.003, size=len(sizes)))
    narrow = fit_scaling(sizes.astype(np.float32), loss.astype(np.float32), resamples=20)
    same = fit_scaling(sizes.astype(np.float32).astype(np.float64), loss.astype(np.float32).astype(np.float64),
                       resamples=20)
    assert (narrow.E, narrow.A, narrow.alpha) == (same.E, same.A, same.alpha)


def test_a_scaling_bootstrap_skips_resamples_with_too_few_sizes() -> None:
    """Four sizes, one point each: most resamples hold fewer than 3 sizes and are skipped, not the end of the
    bootstrap; the rest still give an interval."""
    from lmbench.stats import _fit_power_law

    sizes = np.array([1e5, 1e6, 1e7, 1e8])
    loss = 1.5 + 40.0 * sizes ** -0.3 + np.array([0.002, -0.001, 0.003, -0.002])
    fit = fit_scaling(sizes, loss, resamples=60, seed=4)
    rng, alphas = np.random.default_rng(4), []
    for _ in range(60):  # the bootstrap written plainly
        rows = rng.integers(0, 4, size=4)
        if len(np.unique(sizes[rows])) >= 3:
            alphas.append(_fit_power_law(sizes[rows], loss[rows])[2])
    assert 10 < len(alphas) < 60  # some resamples skipped, most kept
    low, high = np.percentile(alphas, [2.5, 97.5])
    assert (fit.alpha_interval.low, fit.alpha_interval.high) == (pytest.approx(low), pytest.approx(high))


def test_a_resample_whose_fit_fails_is_skipped_and_the_bootstrap_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench import stats

    sizes = np.repeat(np.array([1e5, 1e6, 1e7, 1e8]), 2)
    loss = 1.5 + 40.0 * sizes ** -0.3
    real, calls = stats._fit_power_law, []

    def flaky(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
        calls.append(1)
        if len(calls) == 3:  # the second resample's fit (the first call fits all points)
            raise RuntimeError("Optimal parameters not found")
        return real(x, y)

    monkeypatch.setattr(stats, "_fit_power_law", flaky)
    stats.fit_scaling(sizes, loss, resamples=20, seed=1)
    rng, tried = np.random.default_rng(1), 0
    for _ in range(20):
        tried += len(np.unique(sizes[rng.integers(0, len(sizes), size=len(sizes))])) >= 3
    assert len(calls) == 1 + tried  # every resample with enough sizes was fitted, after the failure too
