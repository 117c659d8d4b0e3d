"""Comparison reports: a results folder (or W&B project) -> pandas tables, plots, report.md and report.html.

    lmbench report results/<spec name>            # writes report.md, report.html, runs.csv, runs.parquet, plot_*.png
    lmbench report --wandb ENTITY/PROJECT         # the same tables from W&B runs (needs the network)

The cells are loaded by load.py and aggregated by tables.py; this module turns the tables into sections, renders
them as Markdown and as one self-contained HTML page, draws the plots (plots.py) and writes the files, with only
relative links, so a folder copied from a cluster works.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmbench.errors import SpecError
from lmbench.reporting import plots
from lmbench.reporting.load import Run, load_runs, load_wandb_runs
from lmbench.results import COMPLETED
from lmbench.reporting.tables import (FIXED_AXES, LOSS_ONLY, NOT_COMPARABLE, UNK_NOTE, axis_names, coherence_column,
                                      completed_groups, display_names, diverged, factor_columns, fmt, formatted, pivot,
                                      paired_to_best, ranked, rank_metric, runs_frame, sampler_frame, seed_intervals,
                                      seed_table, unranked, with_interval)

SPLIT_METRICS = ("loss", "ppl", "bpb", "word_ppl")
SAMPLES_PER_CELL = 3
SAMPLE_CHARS = 400


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None  # cells already formatted as strings
    images: list[Path] = field(default_factory=list)
    samples: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (cell, [(label, text)])
    collapsed: bool = False  # HTML: long content behind a <details> toggle


# ---------------------------------------------------------------------------------------------- sections
def _status_line(frame: pd.DataFrame) -> str:
    counts = frame["status"].value_counts() if not frame.empty else pd.Series(dtype=int)
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(frame)} cells: {parts}." if len(frame) else "No cells found."


def runs_section(frame: pd.DataFrame, axes: Sequence[str], labels: dict[str, str]) -> Section:
    table = frame.copy()
    if "num_params" in table:
        trainable = table.get("num_trainable_params", table["num_params"])
        table["params"] = [f"{fmt('num_params', t)} / {fmt('num_params', n)}" if pd.notna(n) else ""
                           for t, n in zip(trainable, table["num_params"])]
    split_cols = [f"{s}_{m}" for s in ("val", "test") for m in SPLIT_METRICS]
    columns = ["cell", "status", *axes, *_unaxed(axes), "params", *split_cols, "tokens", "train_s", "wall_s",
               "train_tokens_per_s"]
    names = {**labels, "params": "params (trainable / total)", "train_s": "train time", "wall_s": "wall time",
             "train_tokens_per_s": "tokens/s"}
    return Section("Runs", ["One row per cell. Losses are in nats per token, `*_bpb` in bits per UTF-8 byte of the "
                            "raw text, `*_word_ppl` per whitespace word; wall time includes data preparation and "
                            "evaluation, tokens/s counts training tokens over training time."],
                   formatted(table, columns, names))


def _unaxed(axes: Sequence[str]) -> list[str]:
    """family/tokenizer columns unless a grid axis already shows them."""
    return [f for f in ("family", "tokenizer") if not any(a in FIXED_AXES[f] for a in axes)]


PAIRED_NOTE = ("`± ` is half the width of a 95% bootstrap interval over the evaluation units (documents, or "
               "1,000-character chunks of a single text; 2,000 resamples of the ratio of sums). `Δ to best` is the "
               "cell's bits per byte minus the best cell's with a 95% paired bootstrap interval: both cells scored "
               "on the same resampled units, so it holds across tokenizers; `tie` marks an interval that contains "
               "0, a difference the held-out text cannot tell from noise.")


def ranking_section(frame: pd.DataFrame, axes: Sequence[str], labels: dict[str, str], metric: str,
                    units: dict[str, dict[str, pd.DataFrame]] | None = None) -> Section:
    done = ranked(frame, metric).sort_values(metric, kind="stable")
    done = done.assign(rank=range(1, len(done) + 1))
    columns = ["rank", "cell", *axes, *_unaxed(axes), metric, "val_bits_per_char", "val_word_ppl", "val_ppl",
               "num_params"]
    lossy = "val_unk_rate" in done and bool((done["val_unk_rate"].fillna(0) > 0).any())
    columns = list(dict.fromkeys(columns + (["val_unk_rate"] if lossy else [])))
    notes = [NOT_COMPARABLE] + ([LOSS_ONLY] if metric == "val_loss" else []) + ([UNK_NOTE] if lossy else [])
    table = formatted(done, columns, labels)
    if f"{metric}_low" in done:
        table[labels.get(metric, metric)] = with_interval(done, metric)
    if metric.endswith("bpb") and units:
        paired = paired_to_best(done, units, "validation" if metric.startswith("val") else "test")
        if paired["delta"].notna().sum() > 1:
            notes.append(PAIRED_NOTE)
            table.insert(table.columns.get_loc(labels.get(metric, metric)) + 1, "Δ to best (95% CI)",
                         [_delta(r) for r in paired.itertuples()])
            table.insert(table.columns.get_loc("Δ to best (95% CI)") + 1, "tie",
                         ["tie" if r.tie else "" for r in paired.itertuples()])
    return Section(f"Ranking by {metric}", [*notes, f"Completed cells, best (lowest `{metric}`) first."], table)


def _delta(row: Any) -> str:
    if not math.isfinite(row.delta):
        return ""
    if row.tie is None:
        return "best" if row.delta == 0 else f"{row.delta:+.4f}"
    return f"{row.delta:+.4f} [{row.delta_low:+.4f}, {row.delta_high:+.4f}]"


def seeds_section(frame: pd.DataFrame, factors: Sequence[str], labels: dict[str, str], metric: str) -> Section | None:
    metrics = list(dict.fromkeys([metric, "val_bpb", "val_loss", "val_ppl", "val_word_ppl", "test_bpb"]))
    table = seed_table(frame, factors, metrics)
    if table.empty or table["n"].max() < 2:
        return None
    notes = ["Completed cells grouped by every axis except the seed: mean ± sample standard deviation over `n` "
             "seeds."]
    intervals = seed_intervals(frame, factors, metric)
    column = f"{metric} 95% CI over seeds"
    if not intervals.empty and (intervals[column] != "").any():
        table.insert(table.columns.get_loc(metric) + 1, column, intervals[column].to_numpy())
        notes.append(f"With 3 or more seeds, `{column}` is a Student-t interval for the mean over seeds.")
    table = table.astype({c: str for c in factors}).rename(columns=labels)
    return Section("Seeds aggregated", notes, table.astype(str))


def pivot_sections(frame: pd.DataFrame, factors: Sequence[str], labels: dict[str, str], metric: str) -> list[Section]:
    pairs = [(a, b) for i, a in enumerate(factors) for b in factors[i + 1 :]][:6]
    if not pairs and factors:
        pairs = [(factors[0], None)]
    sections = []
    for rows, cols in pairs:
        table = pivot(frame, rows, cols, metric)
        if table.empty:
            continue
        text = table.map(lambda v: fmt(metric, v)).reset_index()
        head = labels.get(rows, rows) + (f" \u2193 / {labels.get(cols, cols)} \u2192" if cols else "")
        text.columns = [head, *[str(c) for c in text.columns[1:]]]
        title = f"{labels.get(rows, rows)} × {labels.get(cols, cols)} → {metric}" if cols else f"{rows} → {metric}"
        sections.append(Section(f"Pivot: {title}", [f"Mean `{metric}` of completed cells over every other axis "
                                                    "and seed; empty = no completed cell."], text))
    return sections


def untrained_section(frame: pd.DataFrame, axes: Sequence[str], labels: dict[str, str]) -> Section | None:
    pairs = [(f"untrained_val_{m}", f"val_{m}") for m in ("loss", "ppl", "bpb", "word_ppl")]
    pairs = [(u, t) for u, t in pairs if u in frame and frame[u].notna().any()]
    if not pairs:
        return None
    rows = frame[frame[pairs[0][0]].notna()]
    columns = ["cell", *axes, *_unaxed(axes), *[c for pair in pairs for c in pair]]
    return Section("Untrained vs trained", ["The same validation metrics for the freshly initialised model and after "
                                            "training (an untrained model's perplexity is about the vocabulary size)."],
                   formatted(rows, columns, labels))


SAMPLER_COLUMNS = ["cell", "sampler", "num_samples", "mean_length", "eos_fraction", "distinct_1", "distinct_2",
                   "distinct_3", "rep_4gram", "self_ppl", "reference_ppl", "tokens_per_s"]


def sampler_sections(samplers: pd.DataFrame, source: str) -> list[Section]:
    """The sampler comparison: mean over cells per sampler, then every (cell, sampler) row (collapsed in HTML)."""
    if samplers.empty:
        return []
    note = ("distinct-n: unique / total word n-grams over a sampler's samples (higher = more diverse); rep_4gram: "
            "share of 4-grams repeating an earlier one within a sample; mean_length in new tokens; "
            f"reference/self perplexity (when present) is the coherence proxy. Source: {source}.")
    if coherence_column(samplers) is None:
        note += (" No sample perplexity was found (the runner writes it to sampler_metrics.csv), so the "
                 "diversity against coherence plot is left out.")
    columns = SAMPLER_COLUMNS + [c for c in samplers if c not in SAMPLER_COLUMNS]
    per_cell = Section("Samplers per cell", [], formatted(samplers, columns), collapsed=True)
    if samplers["cell"].nunique() < 2:
        return [Section("Samplers", [note], per_cell.table)]
    numeric = [c for c in columns[2:] if c in samplers and pd.api.types.is_numeric_dtype(samplers[c])]
    groups = samplers.groupby("sampler", sort=False)
    overview = groups[numeric].mean().reset_index()
    overview.insert(1, "cells", groups["cell"].nunique().to_numpy())
    return [Section("Samplers", [note, "Mean over the cells that ran each sampler (the next table has every cell)."],
                    formatted(overview, ["sampler", "cells", *numeric])), per_cell]


def samples_section(runs: Sequence[Run]) -> Section | None:
    blocks = []
    for run in runs:
        if run.samples.empty or "text" not in run.samples:
            continue
        rows = run.samples.drop_duplicates("sampler") if "sampler" in run.samples else run.samples
        rows = pd.concat([rows, run.samples]).drop_duplicates(subset=[c for c in ("sampler", "prompt", "index", "text")
                                                                      if c in rows]).head(SAMPLES_PER_CELL)
        items = []
        for _, row in rows.iterrows():
            text = str(row.get("text", ""))
            label = f"{row.get('sampler', 'sample')} · prompt: {row.get('prompt', '')!s}"
            items.append((label, text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + " ..."))
        blocks.append((run.cell, items))
    return Section("Sample texts", [f"Up to {SAMPLES_PER_CELL} samples per cell, one per sampler first, prompt "
                                    f"included, cut at {SAMPLE_CHARS} characters."],
                   samples=blocks, collapsed=len(blocks) > 2) if blocks else None


def unranked_section(frame: pd.DataFrame, metric: str) -> Section | None:
    bad = unranked(frame, metric)
    if bad.empty:
        return None
    table = pd.DataFrame({"cell": bad["cell"], metric: [fmt(metric, v) for v in bad[metric]],
                          "val_loss": [fmt("val_loss", v) for v in bad.get("val_loss", pd.Series(index=bad.index))]})
    return Section("Completed but not ranked", [f"These cells finished with a non-finite `{metric}` (the loss blew "
                                                "up: lower train.lr or set train.grad_clip); they are left out of "
                                                "the ranking, pivots and averages."], table)


def diverged_section(frame: pd.DataFrame, labels: dict[str, str]) -> Section | None:
    bad = diverged(frame)
    if bad.empty:
        return None
    columns = ["cell", "divergence_reason", "val_loss", "untrained_val_loss", "first_train_loss", "min_train_loss",
               "last_train_loss", "stop_reason"]
    return Section("Diverged or did not learn", [
        "These cells completed but learned nothing, or their loss blew up and stayed up (the reason says which "
        "check: final validation loss not below the untrained one, training loss ending above its start or above "
        "train.divergence_factor x its lowest, or train.stop_on_divergence). They are not ranked, pivoted or "
        "averaged: lower train.lr or set train.grad_clip."],
        formatted(bad, columns, {**labels, "divergence_reason": "reason"}))


def failures_section(frame: pd.DataFrame) -> Section | None:
    bad = frame[frame["status"] != COMPLETED]
    if bad.empty:
        return None
    errors = bad.get("error", pd.Series("", index=bad.index)).fillna("").astype(str)
    table = pd.DataFrame({"cell": bad["cell"], "status": bad["status"],
                          "error": [e.splitlines()[-1][:300] if e.strip() else "" for e in errors]})
    return Section("Cells not completed", ["Failed cells keep their error; running and missing cells have no "
                                           "summary.json yet."], table)


def build_sections(runs: Sequence[Run], frame: pd.DataFrame, samplers: pd.DataFrame, source: str,
                   images: dict[str, Path], views: ComputeViews | None = None) -> list[Section]:
    axes = axis_names(runs)
    labels = display_names(axes)
    factors = factor_columns(frame, axes)
    metric = rank_metric(frame)
    sections: list[Section | None] = []
    if metric:
        units = {r.cell: r.units for r in runs if r.units}
        sections += [ranking_section(frame, axes, labels, metric, units),
                     *pivot_sections(frame, factors, labels, metric),
                     seeds_section(frame, factors, labels, metric)]
    sections.append(diverged_section(frame, labels))
    if metric:
        sections.append(unranked_section(frame, metric))
    if views is not None:
        sections.append(compute_section(views.curves, views.finals, views.metric, images.get("compute")))
        sections.append(scaling_section(views.scaling, views.metric,
                                        [images[k] for k in ("scaling_params", "scaling_flops") if k in images]))
    sections += [runs_section(frame, axes, labels), untrained_section(frame, axes, labels)]
    plots_found = [images[k] for k in ("curves", "bpb", "samplers") if images.get(k)]
    if plots_found:
        sections.append(Section("Plots", [], images=plots_found))
    sections += [*sampler_sections(samplers, source), samples_section(runs), failures_section(frame)]
    return [s for s in sections if s is not None]


# ---------------------------------------------------------------------------------------------- rendering
def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, intro: list[str], sections: Sequence[Section]) -> str:
    lines = [f"# {title}", "", *[p + "\n" for p in intro]]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [p + "\n" for p in s.paragraphs]
        if s.table is not None and not s.table.empty:
            lines += [s.table.map(_md_cell).to_markdown(index=False, disable_numparse=True), ""]
        lines += [f"![{p.stem}]({p.name})\n" for p in s.images]
        for cell, items in s.samples:
            lines += [f"### {cell}", ""]
            for label, text in items:
                safe = (text or "(empty)").replace("&", "&amp;").replace("<", "&lt;")  # keep <sep>, <unk> visible
                quoted = "\n".join("> " + ln for ln in safe.splitlines() or [""])
                lines += [f"*{_md_cell(label)}*", "", quoted, ""]
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body{font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;
max-width:1400px;margin:2em auto;padding:0 1.5em;background:#fff}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #d0d7de}
h3{margin:1.2em 0 .4em;font-size:1em}code{background:#f0f2f4;padding:.1em .3em;border-radius:4px;font-size:90%}
.wrap{overflow-x:auto}table{border-collapse:collapse;margin:.8em 0;font-size:13.5px}
th,td{border:1px solid #d0d7de;padding:4px 9px;white-space:nowrap}th{background:#f3f5f7;text-align:left}
tr:nth-child(even) td{background:#fafbfc}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.status-completed{color:#1a7f37}td.status-failed{color:#cf222e;font-weight:600}
td.status-running{color:#9a6700}td.status-missing{color:#57606a;font-style:italic}
details{margin:.4em 0}summary{cursor:pointer;color:#0969da;margin:.3em 0}
img{max-width:100%;border:1px solid #eaeef2;margin:.5em 0}.meta{color:#57606a;font-size:13px}
blockquote{margin:.3em 0 1em;padding:.4em 1em;border-left:4px solid #d0d7de;background:#f6f8fa;
white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
"""
_NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?([kMB]|s|m\d\ds|h\d\dm)?( ± [\d,.e+-]+)?( / [\d.,]+[kMB]?)?$")


def _html_text(text: str) -> str:
    import html

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def html_table(table: pd.DataFrame) -> str:
    """A plain HTML table: numeric-looking cells right-aligned, status cells coloured, everything escaped."""
    import html

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cells = []
        for col, value in zip(table.columns, row):
            text = str(value)
            cls = f"status-{text}" if col == "status" else "num" if _NUMERIC.match(text) else ""
            cells.append(f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def render_html(title: str, intro: list[str], sections: Sequence[Section]) -> str:
    """One self-contained page: inline CSS, plots embedded as base64 PNG, no external resource."""
    import base64
    import html

    parts = [f"<h1>{html.escape(title)}</h1>", *[f'<p class="meta">{_html_text(p)}</p>' for p in intro]]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{_html_text(p)}</p>" for p in s.paragraphs]
        if s.table is not None and not s.table.empty:
            table = html_table(s.table)
            parts.append(f"<details><summary>{len(s.table)} rows</summary>{table}</details>" if s.collapsed else table)
        for p in s.images:
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}">')
        for i, (cell, items) in enumerate(s.samples):
            body = "".join(f'<div class="meta">{html.escape(label)}</div><blockquote>{html.escape(text)}</blockquote>'
                           for label, text in items)
            if s.collapsed:  # every cell behind its own toggle, the first one open
                parts.append(f'<details{" open" if i == 0 else ""}><summary><b>{html.escape(cell)}</b></summary>'
                             f"{body}</details>")
            else:
                parts.append(f"<h3>{html.escape(cell)}</h3>{body}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------- writing
def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (an axis of ints and strings, None) become strings so pyarrow accepts them."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                out[col] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in out[col]]
    return out


def val_curve(run: Run) -> pd.DataFrame:
    """(cell, step, wall_s, val_loss) rows of one run: the untrained evaluation (as step 0) and every evaluation,
    one row per step (the final re-evaluation replaces the periodic one at the same step)."""
    m = run.metrics
    if m.empty or "step" not in m or not {"val_loss", "untrained_val_loss"} & set(m.columns):
        return pd.DataFrame()
    loss = m["val_loss"] if "val_loss" in m else pd.Series(math.nan, index=m.index)
    if "untrained_val_loss" in m:
        loss = loss.fillna(m["untrained_val_loss"])
    rows = pd.DataFrame({"cell": run.cell, "step": m["step"], "wall_s": m.get("wall_s"), "val_loss": loss})
    return rows[rows["val_loss"].notna()].drop_duplicates("step", keep="last")


def size_points(frame: pd.DataFrame, factors: Sequence[str], metric: str) -> pd.DataFrame:
    """One point per configuration (completed cells grouped by the factors, seeds averaged): label, num_params,
    mean and std of `metric`, and the factor columns."""
    done = ranked(frame, metric)
    if done.empty or metric not in done or "num_params" not in done:
        return pd.DataFrame()
    rows = []
    for key, row, part in completed_groups(done, factors, placeholder="_all"):
        row.update(label=" / ".join(str(v) for v in key) if factors else "", num_params=part["num_params"].mean(),
                   **{metric: part[metric].mean(), f"{metric}_std": part[metric].std(ddof=1)})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- compute and scaling
def compute_frames(runs: Sequence[Run], frame: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, finals) for compute-matched views: every evaluation of each ranked cell and its final point, with
    training FLOPs (tokens x the model's FLOPs per token) and wall-clock seconds. Empty without FLOP counts."""
    done = ranked(frame, metric) if metric in frame else frame.iloc[0:0]
    if done.empty or "flops_per_token" not in done or "tokens" not in done:
        return pd.DataFrame(), pd.DataFrame()
    finals = pd.DataFrame({"cell": done["cell"], "flops": done["tokens"] * done["flops_per_token"],
                           "wall_s": done.get("wall_s"), metric: done[metric]}).dropna(subset=["flops", metric])
    per_token = dict(zip(done["cell"], done["flops_per_token"]))
    curves = []
    for run in runs:
        m = run.metrics
        if run.cell not in per_token or m.empty or metric not in m or "tokens" not in m:
            continue
        rows = m[m[metric].notna() & (m["tokens"] > 0)].drop_duplicates("step", keep="last")
        curves.append(pd.DataFrame({"cell": run.cell, "flops": rows["tokens"] * per_token[run.cell],
                                    "wall_s": rows.get("wall_s"), metric: rows[metric]}))
    return (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()), finals


def best_at_compute(curves: pd.DataFrame, finals: pd.DataFrame, metric: str, max_budgets: int = 6) -> pd.DataFrame:
    """For FLOP budgets (the cells' final FLOPs, at most `max_budgets` spread over them): the cell whose
    evaluations reached the lowest `metric` within that many training FLOPs, and how many cells had an
    evaluation within it."""
    if finals.empty:
        return pd.DataFrame()
    points = pd.concat([curves, finals], ignore_index=True) if not curves.empty else finals
    budgets = sorted(set(finals["flops"].astype(float)))
    if len(budgets) > max_budgets:
        budgets = [budgets[round(i)] for i in np.linspace(0, len(budgets) - 1, max_budgets)]
    rows = []
    for budget in budgets:
        within = points[points["flops"] <= budget * (1 + 1e-9)]
        best = within.groupby("cell")[metric].min()
        if best.empty:
            continue
        rows.append({"training FLOPs": _flops(budget), "best cell": best.idxmin(), metric: best.min(),
                     "cells evaluated within it": len(best)})
    return pd.DataFrame(rows)


def _flops(value: float) -> str:
    return f"{value:.2e}"


def compute_section(curves: pd.DataFrame, finals: pd.DataFrame, metric: str, image: Path | None) -> Section | None:
    table = best_at_compute(curves, finals, metric)
    if table.empty or len(finals) < 2:
        return None
    table[metric] = [fmt(metric, v) for v in table[metric]]
    return Section("Compute-matched", [
        f"`{metric}` against training FLOPs (tokens x the model's FLOPs per token, forward + backward) and against "
        "wall-clock time, one point per cell and its curve over evaluations; the dashed line is the Pareto "
        "frontier (no other cell is both cheaper and better). The table names the best cell at equal FLOPs: the "
        "lowest value any evaluation reached within each budget."], table.astype(str),
        images=[image] if image else [])


SIZE_AXIS_PREFIXES = ("model.params.", "model.size", "size")


@dataclass
class ScalingResult:
    points: pd.DataFrame  # group, num_params, flops, <metric>
    fits: dict[str, dict[str, Any]]  # "params" | "flops" -> group -> ScalingFit
    refused: list[str]  # one line per group (and x) that could not be fitted, with the reason


def scaling_fits(frame: pd.DataFrame, axes: Sequence[str], metric: str) -> ScalingResult | None:
    """L(N) = E + A N^-alpha (and the same against training FLOPs) per group of ranked cells that differ only in
    size: only when a grid axis changes the model's size (model.params.*); None otherwise."""
    from lmbench.stats import MIN_SIZES, fit_scaling

    size_axes = [a for a in axes if a.startswith(SIZE_AXIS_PREFIXES)]
    done = ranked(frame, metric) if metric in frame else frame.iloc[0:0]
    if not size_axes or done.empty or "num_params" not in done:
        return None
    groups = [c for c in factor_columns(frame, axes) if c not in size_axes]
    done = done.assign(flops=done["tokens"] * done["flops_per_token"] if "flops_per_token" in done else np.nan)
    points, fits, refused = [], {"params": {}, "flops": {}}, []
    for key, _, part in completed_groups(done, groups, placeholder="_all"):
        group = " / ".join(str(k) for k in key) if groups else "all cells"
        points.append(part.assign(group=group)[["group", "num_params", "flops", metric]])
        for x in ("params", "flops"):
            column = "num_params" if x == "params" else "flops"
            sizes = part[column].dropna().nunique()
            if sizes < MIN_SIZES:
                refused.append(f"{group} against {x}: {sizes} different value(s); a fit of E + A x^-alpha needs at "
                               f"least {MIN_SIZES} (three points fit any three-parameter curve)")
                continue
            try:
                fits[x][group] = fit_scaling(part[column].to_numpy(float), part[metric].to_numpy(float))
            except (RuntimeError, ValueError) as exc:
                refused.append(f"{group} against {x}: the fit did not converge ({exc})")
    return ScalingResult(pd.concat(points, ignore_index=True), fits, refused)


@dataclass
class ComputeViews:
    """What the compute-matched and scaling sections and their plots share, computed once per report."""

    metric: str
    curves: pd.DataFrame  # every evaluation of each ranked cell: cell, flops, wall_s, <metric>
    finals: pd.DataFrame  # each ranked cell's final point
    scaling: ScalingResult | None


def compute_views(runs: Sequence[Run], frame: pd.DataFrame) -> ComputeViews | None:
    """Compute-matched frames and scaling fits when cells are ranked by bits per byte; None otherwise."""
    metric = rank_metric(frame)
    if not metric or not metric.endswith("bpb"):
        return None
    curves, finals = compute_frames(runs, frame, metric)
    return ComputeViews(metric, curves, finals, scaling_fits(frame, axis_names(runs), metric))


def scaling_section(result: ScalingResult | None, metric: str, images: list[Path]) -> Section | None:
    if result is None:
        return None
    rows = []
    for x, fits in result.fits.items():
        column = "num_params" if x == "params" else "flops"
        for group, fit in fits.items():
            sizes = sorted(result.points.loc[result.points["group"] == group, column].dropna().unique())
            next_size = sizes[-1] * sizes[-1] / sizes[-2]
            rows.append({"group": group, "against": x, "points": fit.num_points,
                         "E [95% CI]": f"{fit.E:.4f} [{fit.E_interval.low:.4f}, {fit.E_interval.high:.4f}]",
                         "alpha [95% CI]": f"{fit.alpha:.3f} [{fit.alpha_interval.low:.3f}, "
                                           f"{fit.alpha_interval.high:.3f}]",
                         "next size": _flops(next_size), f"predicted {metric}": f"{float(fit.predict(next_size)):.4f}"})
    notes = [f"`{metric}` fitted as E + A x^-alpha against parameters and against training FLOPs, per group of "
             "cells that differ only in size (least squares, scipy's curve_fit); intervals from 500 bootstrap "
             "resamples of the points. `next size` continues the grid's last size ratio; the prediction there is "
             "an extrapolation."]
    notes += [f"Not fitted: {line}." for line in result.refused]
    return Section("Scaling", notes, pd.DataFrame(rows) if rows else None, images=images)


def make_plots(runs: Sequence[Run], frame: pd.DataFrame, samplers: pd.DataFrame, out_dir: Path,
               views: ComputeViews | None = None) -> dict[str, Path]:
    curves = [c for c in (val_curve(r) for r in runs) if not c.empty]
    curves_frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    axes = axis_names(runs)
    labels = display_names(axes)
    factors = factor_columns(frame, axes)
    hue = next((f for f in factors if f in ("family", "tokenizer", *FIXED_AXES["family"], *FIXED_AXES["tokenizer"])),
               factors[0] if factors else "family")
    metric = rank_metric(frame) or "val_bpb"
    found = {
        "curves": plots.plot_val_curves(curves_frame, out_dir / "plot_val_loss.png"),
        "bpb": plots.plot_bpb_vs_params(size_points(frame, factors, metric), out_dir / "plot_bpb_vs_params.png",
                                        metric, hue, labels.get(hue, hue)),
        "samplers": plots.plot_sampler_tradeoff(samplers, out_dir / "plot_samplers.png", coherence_column(samplers)),
    }
    if views is not None:
        if len(views.finals) > 1:
            found["compute"] = plots.plot_compute(views.curves, views.finals, out_dir / "plot_bpb_vs_compute.png",
                                                  views.metric)
        if views.scaling is not None:
            points = views.scaling.points.rename(columns={"num_params": "params"})
            for x, label in (("params", "parameters"), ("flops", "training FLOPs")):
                found[f"scaling_{x}"] = plots.plot_scaling(points, views.scaling.fits[x],
                                                           out_dir / f"plot_scaling_{x}.png", views.metric, x, label)
    return {k: v for k, v in found.items() if v is not None}


def write_report(runs: Sequence[Run], out_dir: Path, title: str, source: str) -> Path:
    """Write report.md, report.html, runs.csv, runs.parquet, samplers.csv and plot_*.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = runs_frame(runs)
    frame.to_csv(out_dir / "runs.csv", index=False)
    _parquet_safe(frame).to_parquet(out_dir / "runs.parquet", index=False)
    samplers, sampler_source = sampler_frame(runs)
    if not samplers.empty:
        samplers.to_csv(out_dir / "samplers.csv", index=False)
    views = compute_views(runs, frame) if not frame.empty else None
    images = make_plots(runs, frame, samplers, out_dir, views) if not frame.empty else {}
    sections = build_sections(runs, frame, samplers, sampler_source, images, views) if not frame.empty else []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = [f"Source: {source}. Generated {stamp} by `lmbench report`. {_status_line(frame)}"]
    (out_dir / "report.html").write_text(render_html(title, intro, sections), encoding="utf-8")
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(title, intro, sections), encoding="utf-8")
    return md_path


def build_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Report of results/<spec name> written next to the cells (or into `out_dir`); returns report.md's path."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise SpecError("results_dir", f"{results_dir} is not a folder (expected results/<spec name>)")
    runs = load_runs(results_dir)
    if not runs:
        raise SpecError("results_dir", f"{results_dir} holds no cell folders (expected results/<spec name> of "
                                       "`lmbench run`, or one cell's folder)")
    return write_report(runs, Path(out_dir) if out_dir else results_dir, f"lmbench report: {results_dir.name}",
                        f"`{results_dir.name}/` ({len(runs)} cell folders)")


def compare_runs(folders: Sequence[Path]) -> list[Run]:
    """The runs of several results folders as one list: cells named `<folder>/<cell>` and a `results` axis (the
    folder), so every table and plot of the report sets the folders side by side (e.g. before/after a change)."""
    folders = [Path(f) for f in folders]
    labels = [f.name for f in folders]
    if len(set(labels)) < len(labels):  # same names in different places: name them by their parent too
        labels = [f"{f.parent.name}/{f.name}" for f in folders]
    runs: list[Run] = []
    for folder, label in zip(folders, labels):
        if not folder.is_dir():
            raise SpecError("results_dirs", f"{folder} is not a folder (expected results/<spec name>)")
        found = load_runs(folder)
        if not found:
            raise SpecError("results_dirs", f"{folder} holds no cell folders")
        for run in found:
            run.cell = f"{label}/{run.cell}"
            run.axes = {"results": label, **run.axes}
        runs += found
    return runs


def cmd_compare(args: Any) -> int:
    """`lmbench compare RESULTS_A RESULTS_B [...] [--out DIR]`: one report over several results folders."""
    if len(args.results_dirs) < 2:
        raise SpecError("results_dirs", "give at least two results folders to compare")
    runs = compare_runs(args.results_dirs)
    names = [Path(f).name for f in args.results_dirs]
    out = Path(args.out) if args.out else Path("results") / "compare" / "_vs_".join(names)
    path = write_report(runs, out, f"lmbench compare: {' vs '.join(names)}",
                        f"{len(args.results_dirs)} results folders ({len(runs)} cells): "
                        + ", ".join(f"`{f}`" for f in args.results_dirs))
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


def cmd_report(args: Any) -> int:
    """`lmbench report results/<spec name> [--out DIR]` or `lmbench report --wandb ENTITY/PROJECT [--out DIR]`."""
    if args.wandb:
        if args.wandb.count("/") != 1:
            raise SpecError("--wandb", f"expected ENTITY/PROJECT, got {args.wandb!r}")
        runs = load_wandb_runs(args.wandb)
        out = Path(args.out) if args.out else Path("results") / "wandb-reports" / args.wandb.replace("/", "__")
        path = write_report(runs, out, f"lmbench report: W&B {args.wandb}", f"W&B project `{args.wandb}` "
                                                                               f"({len(runs)} runs)")
    elif args.results_dir:
        path = build_report(Path(args.results_dir), Path(args.out) if args.out else None)
    else:
        raise SpecError("results_dir", "give a results folder (results/<spec name>) or --wandb ENTITY/PROJECT")
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0
