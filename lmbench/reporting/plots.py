"""Report figures (matplotlib, Agg canvas, no pyplot global state): curves, bpb vs size, sampler trade-off.

Each function takes tidy pandas frames built by `lmbench.reporting.report`, writes one PNG and returns its path, or
returns None when there is nothing to draw (no evaluation rows, no completed cell, no coherence column).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _compact_count(value: float, _pos: int | None = None) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def _colors(names: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def plot_val_curves(curves: pd.DataFrame, path: Path, metric: str = "val_loss") -> Path | None:
    """Validation `metric` per cell against optimizer steps (left) and wall-clock seconds (right).

    `curves`: rows {cell, step, wall_s, <metric>} from the evaluation rows of each metrics.jsonl.
    """
    if curves.empty or metric not in curves or curves[metric].notna().sum() == 0:
        return None
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    cells = list(dict.fromkeys(curves["cell"]))
    colors = _colors(cells)
    for cell in cells:
        rows = curves[(curves["cell"] == cell) & curves[metric].notna()]
        for ax, x in zip(axes, ("step", "wall_s")):
            if x in rows and rows[x].notna().any():
                ax.plot(rows[x], rows[metric], marker="o", markersize=3, color=colors[cell], label=cell)
    axes[0].set(xlabel="step", ylabel=f"{metric} (nats/token)" if metric.endswith("loss") else metric,
                title=f"{metric} against steps")
    axes[1].set(xlabel="wall-clock time (s)", title=f"{metric} against time")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_bpb_vs_params(points: pd.DataFrame, path: Path, metric: str = "val_bpb", hue: str = "family",
                       hue_label: str | None = None) -> Path | None:
    """`metric` (bits per byte) against the number of parameters (log x), one colour per `hue` value.

    `points`: one row per configuration {label, num_params, <metric>, <metric>_std (seeds; NaN for one), <hue>}.
    """
    if metric not in points or "num_params" not in points:
        return None
    rows = points[points[metric].notna() & points["num_params"].notna()]
    if rows.empty:
        return None
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    groups = list(dict.fromkeys(rows[hue].astype(str))) if hue in rows else ["all"]
    colors = _colors(groups)
    for group in groups:
        part = rows[rows[hue].astype(str) == group] if hue in rows else rows
        ax.errorbar(part["num_params"], part[metric], yerr=part.get(f"{metric}_std"), fmt="o", markersize=6,
                    capsize=3, color=colors[group], label=group, zorder=3)
    _label_points(ax, rows["num_params"].to_numpy(float), rows[metric].to_numpy(float), list(rows["label"]))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 10k 20k 50k 100k ...
    ax.xaxis.set_major_formatter(FuncFormatter(_compact_count))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.25, y=0.1)  # room for the labels
    ax.set(xlabel="parameters (log scale)", ylabel=f"{metric} (bits per byte, lower is better)",
           title="bits per byte against model size (mean ± std over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title=hue_label or hue, fontsize=8)
    return _save(fig, path)


def _label_points(ax: Any, x: np.ndarray, y: np.ndarray, labels: list[str]) -> None:
    """Annotate points on a log-x axis; labels of points that nearly coincide are stacked instead of overprinted."""
    span = float(np.ptp(y)) or 1.0
    placed: list[tuple[float, float]] = []
    for xi, yi, label in zip(x, y, labels):
        near = sum(abs(np.log10(xi) - px) < 0.08 and abs(yi - py) < 0.04 * span for px, py in placed)
        placed.append((float(np.log10(xi)), float(yi)))
        ax.annotate(str(label), (xi, yi), fontsize=7, alpha=0.8, xytext=(6, 4 - 10 * near), textcoords="offset points")


def plot_sampler_tradeoff(samplers: pd.DataFrame, path: Path, coherence: str | None,
                          diversity: str = "distinct_2") -> Path | None:
    """Diversity (distinct-2) against coherence (reference or self perplexity) per (cell, sampler)."""
    if samplers.empty or coherence is None or diversity not in samplers or coherence not in samplers:
        return None
    rows = samplers[samplers[diversity].notna() & samplers[coherence].notna()]
    if rows.empty:
        return None
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    names = list(dict.fromkeys(rows["sampler"].astype(str)))
    colors = _colors(names)
    for name in names:
        part = rows[rows["sampler"].astype(str) == name]
        ax.scatter(part[diversity], part[coherence], s=40, color=colors[name], label=name, zorder=3)
        for _, row in part.iterrows():
            ax.annotate(str(row["cell"]), (row[diversity], row[coherence]), fontsize=7, alpha=0.6,
                        xytext=(4, 3), textcoords="offset points")
    log_y = rows[coherence].max() > 10 * rows[coherence].min() > 0
    if log_y:
        ax.set_yscale("log")
    ax.margins(x=0.2, y=0.1)
    ax.set(xlabel=f"{diversity} (higher = more diverse)",
           ylabel=f"{coherence} (lower = more coherent{', log scale' if log_y else ''})",
           title="samplers: diversity against coherence")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="sampler", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return _save(fig, path)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True for the points no other point beats on both axes (less x and less y): the compute frontier."""
    order = np.lexsort((y, x))
    mask = np.zeros(len(x), dtype=bool)
    best = np.inf
    for i in order:
        if y[i] < best:
            mask[i], best = True, y[i]
    return mask


def plot_compute(curves: pd.DataFrame, finals: pd.DataFrame, path: Path, metric: str = "val_bpb") -> Path | None:
    """`metric` against training FLOPs (left) and wall-clock time (right), log x: each cell's evaluation curve
    (thin), its final point (dot), and the Pareto frontier of the final points (dashed).

    `curves`: {cell, flops, wall_s, <metric>} per evaluation; `finals`: {cell, flops, wall_s, <metric>}."""
    if finals.empty or metric not in finals or finals[metric].notna().sum() == 0:
        return None
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    cells = list(dict.fromkeys(finals["cell"]))
    colors = _colors(cells)
    for ax, x, label in zip(axes, ("flops", "wall_s"), ("training FLOPs", "wall-clock time (s)")):
        for cell in cells:
            rows = curves[(curves["cell"] == cell) & curves[metric].notna() & (curves[x] > 0)] if not curves.empty \
                else curves
            if not rows.empty:
                ax.plot(rows[x], rows[metric], color=colors[cell], alpha=0.45, linewidth=1)
            final = finals[finals["cell"] == cell]
            ax.scatter(final[x], final[metric], color=colors[cell], s=36, zorder=3, label=cell)
        ok = finals[finals[x].notna() & (finals[x] > 0) & finals[metric].notna()]
        if len(ok) > 1:
            front = ok[pareto_mask(ok[x].to_numpy(float), ok[metric].to_numpy(float))].sort_values(x)
            ax.step(front[x], front[metric], where="post", color="black", linestyle="--", linewidth=1.2,
                    label="Pareto frontier" if x == "flops" else None, zorder=2)
        ax.set_xscale("log")
        ax.set(xlabel=f"{label} (log scale)", title=f"{metric} against {label.split(' (')[0]}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"{metric} (bits per byte, lower is better)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_scaling(points: pd.DataFrame, fits: dict[str, Any], path: Path, metric: str, x: str,
                 x_label: str) -> Path | None:
    """Points (x, metric) per group and each group's fitted L(x) = E + A x^-alpha over a range one step past
    the data. `fits`: group -> ScalingFit."""
    if not fits:
        return None
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    colors = _colors(list(fits))
    for group, fit in fits.items():
        part = points[points["group"] == group]
        ax.scatter(part[x], part[metric], color=colors[group], s=30, zorder=3)
        lo, hi = float(part[x].min()), float(part[x].max())
        grid = np.geomspace(lo, hi * (hi / lo) ** 0.25, 100)
        ax.plot(grid, fit.predict(grid), color=colors[group],
                label=f"{group}: E={fit.E:.3f}, alpha={fit.alpha:.3f} [{fit.alpha_interval.low:.3f}, "
                      f"{fit.alpha_interval.high:.3f}]")
    ax.set_xscale("log")
    ax.set(xlabel=f"{x_label} (log scale)", ylabel=f"{metric} (lower is better)",
           title=f"scaling fit: {metric} = E + A * {x}^-alpha")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)
