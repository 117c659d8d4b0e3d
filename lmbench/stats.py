"""How sure a comparison is: bootstrap intervals over evaluation units, paired differences, seed intervals, and
scaling-law fits. Pure numpy/scipy on arrays; the runner and the report call it, nothing here imports torch.

Units are what the evaluation records one row for (`units_<split>.parquet`: documents, or fixed-size chunks of a
single-text corpus). A corpus metric is a ratio of sums (bits per byte = sum NLL / (ln 2 x sum bytes)), so each
bootstrap resample recomputes that ratio over resampled units (never a mean of per-unit ratios, which would
weight a 10-byte document like a 10,000-byte one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2.0)
RESAMPLES = 2000
LEVEL = 0.95
BATCH = 100  # resamples drawn at once (memory: BATCH x units indices)


@dataclass(frozen=True)
class Interval:
    """An estimate and its two-sided interval (`level`, percentile bootstrap or t)."""

    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _resampled_sums(columns: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """For each column, its sum over `resamples` bootstrap resamples of the rows (the same rows for every column,
    which is what pairs them)."""
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in columns]
    for start in range(0, resamples, BATCH):
        rows = rng.integers(0, n, size=(min(BATCH, resamples - start), n))
        for acc, col in zip(out, columns):
            acc.append(col[rows].sum(axis=1))
    return [np.concatenate(acc) for acc in out]


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, *, transform: Callable[[np.ndarray], np.ndarray]
                   = lambda r: r, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """transform(sum(numerator) / sum(denominator)) with a percentile bootstrap interval over rows (units)."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        estimate = float(transform(np.array([num.sum() / den.sum()]))[0])
        if len(num) < 2:
            return Interval(estimate, math.nan, math.nan)
        sums_num, sums_den = _resampled_sums([num, den], resamples, seed)
        return Interval(estimate, *_percentiles(transform(sums_num / sums_den), level))


def unit_intervals(nll: np.ndarray, tokens: np.ndarray, num_bytes: np.ndarray, words: np.ndarray, *,
                   resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Interval]:
    """{bpb, ppl, word_ppl} of a split from its per-unit sums, each with a 95% bootstrap interval over units."""
    out = {"bpb": ratio_interval(nll, np.asarray(num_bytes) * LN2, resamples=resamples, seed=seed),
           "ppl": ratio_interval(nll, tokens, transform=np.exp, resamples=resamples, seed=seed)}
    if np.asarray(words).sum() > 0:
        out["word_ppl"] = ratio_interval(nll, words, transform=np.exp, resamples=resamples, seed=seed)
    return out


def paired_difference(nll_a: np.ndarray, nll_b: np.ndarray, num_bytes: np.ndarray, *, resamples: int = RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> Interval:
    """bpb(A) - bpb(B) on the same units (same text), with a paired bootstrap interval: each resample draws one
    set of units and scores both cells on it. Valid across tokenizers: both sides are bits per byte of the same
    bytes. An interval containing 0 is a tie."""
    a, b = np.asarray(nll_a, dtype=np.float64), np.asarray(nll_b, dtype=np.float64)
    den = np.asarray(num_bytes, dtype=np.float64) * LN2
    estimate = float((a.sum() - b.sum()) / den.sum())
    if len(a) < 2:
        return Interval(estimate, math.nan, math.nan)
    sums_a, sums_b, sums_den = _resampled_sums([a, b, den], resamples, seed)
    return Interval(estimate, *_percentiles((sums_a - sums_b) / sums_den, level))


def seed_interval(values: np.ndarray, level: float = LEVEL) -> Interval | None:
    """Mean over seeds with a Student-t interval (mean ± t * std / sqrt(n)); None below 3 seeds."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return None
    mean, sem = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    t = float(stats.t.ppf(1 - (1 - level) / 2, df=len(x) - 1))
    return Interval(mean, mean - t * sem, mean + t * sem)


# ---------------------------------------------------------------------------------------------- scaling fits
MIN_SIZES = 4


@dataclass(frozen=True)
class ScalingFit:
    """L(x) = E + A * x^(-alpha) fitted to (x, loss) points, with bootstrap intervals on alpha and E."""

    E: float
    A: float
    alpha: float
    alpha_interval: Interval
    E_interval: Interval
    num_points: int

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A * np.power(x, -self.alpha)


def _fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(E, A, alpha) by least squares (scipy's curve_fit) in log-x space, started from a log-log line fit."""
    from scipy.optimize import curve_fit

    scale = float(np.exp(np.log(x).mean()))  # fit in x / scale: keeps A near the data's range
    u = x / scale

    def law(u_: np.ndarray, E: float, A: float, alpha: float) -> np.ndarray:
        return E + A * np.power(u_, -alpha)

    E0 = max(float(y.min()) - 0.5 * float(np.ptp(y)) - 1e-6, 0.0)
    slope, intercept = np.polyfit(np.log(u), np.log(np.maximum(y - E0, 1e-9)), 1)
    p0 = (E0, float(np.exp(intercept)), max(float(-slope), 1e-3))
    (E, A, alpha), _ = curve_fit(law, u, y, p0=p0, bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, 5.0]), maxfev=20000)
    return float(E), float(A * scale ** alpha), float(alpha)


def fit_scaling(x: np.ndarray, y: np.ndarray, *, resamples: int = 500, seed: int = 0,
                level: float = LEVEL) -> ScalingFit:
    """Fit L(x) = E + A x^-alpha to points (several seeds per size allowed); intervals from a bootstrap over
    points. ValueError below MIN_SIZES distinct x values (three points fit any three-parameter curve)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < MIN_SIZES:
        raise ValueError(f"a scaling fit needs at least {MIN_SIZES} different sizes, got {len(np.unique(x))}")
    E, A, alpha = _fit_power_law(x, y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        rows = rng.integers(0, len(x), size=len(x))
        if len(np.unique(x[rows])) < 3:
            continue
        try:
            draws.append(_fit_power_law(x[rows], y[rows]))
        except (RuntimeError, ValueError):  # curve_fit did not converge on this resample
            continue
    draws_arr = np.asarray(draws).reshape(-1, 3)
    return ScalingFit(E, A, alpha, Interval(alpha, *_percentiles(draws_arr[:, 2], level)),
                      Interval(E, *_percentiles(draws_arr[:, 0], level)), len(x))
