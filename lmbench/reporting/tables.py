"""Runs as pandas tables: one row per cell, rankings, pivots over grid axes, seeds aggregated, the sampler
comparison, and the text formatting of table cells (the second half of `lmbench report`).

Cells are ranked by bits per byte: token perplexities of different tokenizers count different units.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmbench.reporting.load import Run
from lmbench.results import COMPLETED

RANK_METRICS = ("val_bpb", "test_bpb", "val_bits_per_char", "val_loss")
FIXED_AXES = {"family": ("model.family", "family"), "tokenizer": ("tokenizer.kind", "tokenizer"), "seed": ("seed",)}
COUNTS = ("num_params", "num_trainable_params", "tokens", "steps")
NOT_COMPARABLE = ("Token perplexity (`val_ppl`) is per token of each cell's own tokenizer, so it is not comparable "
                  "across tokenizers: a character model predicts far easier units than a word model. Bits per byte "
                  "of the raw validation text (`val_bpb`) and word perplexity (`val_word_ppl`) are normalised by the "
                  "text itself and are comparable, so cells are ranked by bits per byte.")
UNK_NOTE = ("Some cells map words outside their vocabulary to `<unk>` (`val_unk_rate` = share of validation "
            "tokens that are `<unk>`). Predicting `<unk>` is cheaper than spelling the word out, so their bits per "
            "byte are optimistic: compare them with lossless (char, BPE, byte-level) cells with that in mind.")
LOSS_ONLY = ("No cell reported bits per byte or per character: this ranking by `val_loss` (nats per token) is "
             "meaningful only among cells that share a tokenizer.")


# ---------------------------------------------------------------------------------------------- tables
def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _scalar(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict, tuple)) else value


def axis_names(runs: Sequence[Run]) -> list[str]:
    """Grid axes: the keys of every cell's axes (summary.json / cell.json / cells.json), in first-seen order,
    seeds last."""
    names = list(dict.fromkeys(k for r in runs for k in r.axes))
    return [a for a in names if not is_seed_axis(a)] + [a for a in names if is_seed_axis(a)]


def is_seed_axis(name: str) -> bool:
    return name.split(".")[-1] == "seed"


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per cell: cell, status, grid axes, family, tokenizer, seed, then every scalar of summary.json.

    Axis values of cells without a summary (running, missing) come from their spec.yaml at the axis' path.
    """
    axes = axis_names(runs)
    rows = []
    for run in runs:
        flat = _flatten(run.spec)
        row: dict[str, Any] = {"cell": run.cell, "status": run.status}
        row.update({a: _scalar(run.axes[a] if a in run.axes else flat.get(a)) for a in axes})
        for name, paths in FIXED_AXES.items():
            if name not in row:
                row[name] = next((flat[p] for p in paths if flat.get(p) is not None), run.summary.get(name))
        for key, value in run.summary.items():
            if key not in row and key != "axes" and (value is None or isinstance(value, (bool, int, float, str))):
                row[key] = value
        rows.append(row)
    return pd.DataFrame(rows)


def factor_columns(frame: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """Columns that vary across cells and are not seeds: the grid axes (family and tokenizer only vary through them),
    or family/tokenizer for a folder whose cells record no axes."""
    candidates = [a for a in axes if not is_seed_axis(a)] if axes else ["family", "tokenizer"]
    return [c for c in candidates if c in frame and frame[c].astype(str).nunique() > 1]


def display_names(axes: Sequence[str]) -> dict[str, str]:
    """Short column labels: model.family -> family, tokenizer.kind -> tokenizer, and the last dotted part of other
    axes when that is unique and clashes with no other column (model.params.d_hidden -> d_hidden)."""
    last = Counter(a.split(".")[-1] for a in axes)
    out = {}
    for axis in axes:
        fixed = next((name for name, paths in FIXED_AXES.items() if axis in paths), None)
        short = axis.split(".")[-1]
        clash = last[short] > 1 or short in ("cell", "status", *FIXED_AXES)
        out[axis] = fixed or (axis if clash else short)
    return out


def _finite(frame: pd.DataFrame, metric: str) -> pd.Series:
    """True where `metric` is a finite number (False for NaN, inf, text, or a missing column)."""
    if metric not in frame:
        return pd.Series(False, index=frame.index)
    values = pd.to_numeric(frame[metric], errors="coerce").astype(float)
    return pd.Series(np.isfinite(values.to_numpy()), index=frame.index)


def is_diverged(frame: pd.DataFrame) -> pd.Series:
    """True for cells whose summary flags `diverged` (they learned nothing, or blew up and stayed up)."""
    if "diverged" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["diverged"].map(lambda v: v is True or v == 1 or str(v).lower() == "true")


def learned(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed cells not flagged diverged: the only ones averaged over seeds."""
    return frame[(frame["status"] == COMPLETED) & ~is_diverged(frame)]


def ranked(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Completed, not diverged cells with a finite `metric`: the only ones ranked, pivoted or averaged (an
    infinite loss is a run that blew up, never a result)."""
    return frame[(frame["status"] == COMPLETED) & _finite(frame, metric) & ~is_diverged(frame)]


def unranked(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Completed cells whose `metric` is infinite or NaN (and not already flagged diverged)."""
    return frame[(frame["status"] == COMPLETED) & ~_finite(frame, metric) & ~is_diverged(frame)]


def diverged(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed cells flagged diverged, with their reason."""
    return frame[(frame["status"] == COMPLETED) & is_diverged(frame)]


def rank_metric(frame: pd.DataFrame) -> str | None:
    return next((m for m in RANK_METRICS if m in frame and frame[m].notna().any()), None)


def seed_table(frame: pd.DataFrame, groups: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Completed, not diverged cells grouped by every factor (not the seed): count, and mean ± std of each metric
    as text."""
    done = learned(frame)
    metrics = [m for m in metrics if m in done and done[m].notna().any()]
    if done.empty or not metrics:
        return pd.DataFrame()
    rows = []
    for _, row, part in completed_groups(done, groups, placeholder="runs"):
        row["n"] = len(part)
        for m in metrics:
            values = part[m][_finite(part, m)].astype(float)
            row[m] = _mean_std(m, values)
        rows.append(row)
    return pd.DataFrame(rows)


def completed_groups(done: pd.DataFrame, factors: Sequence[str], placeholder: str
                     ) -> Iterator[tuple[tuple[Any, ...], dict[str, Any], pd.DataFrame]]:
    """`done` grouped by the factor columns, in order of appearance (NaN a value of its own); with no factors one
    group whose key column is `placeholder` = "all" -> (key values, {column: value}, the group's rows)."""
    keys = list(factors) or [pd.Series("all", index=done.index, name=placeholder)]
    names = [k if isinstance(k, str) else k.name for k in keys]
    for key, part in done.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        yield key, dict(zip(names, key)), part


def seed_intervals(frame: pd.DataFrame, groups: Sequence[str], metric: str) -> pd.DataFrame:
    """Per group of completed, not diverged cells (every factor but the seed): n and a 95% Student-t interval
    of the mean of `metric` over seeds (empty text below 3 seeds)."""
    from lmbench.stats import seed_interval

    done = learned(frame)
    if done.empty or metric not in done:
        return pd.DataFrame()
    rows = []
    for _, row, part in completed_groups(done, groups, placeholder="runs"):
        interval = seed_interval(part[metric][_finite(part, metric)].astype(float).to_numpy())
        row[f"{metric} 95% CI over seeds"] = "" if interval is None else \
            f"[{fmt(metric, interval.low)}, {fmt(metric, interval.high)}]"
        rows.append(row)
    return pd.DataFrame(rows)


def with_interval(frame: pd.DataFrame, metric: str) -> list[str]:
    """`metric` of each row as "value ± half-width" of its 95% bootstrap interval over evaluation units
    (`<metric>_low/_high` in summary.json), or the value alone when the run recorded none."""
    out = []
    for _, row in frame.iterrows():
        value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
        if low is None or high is None or not np.isfinite([float(low), float(high)]).all():
            out.append(fmt(metric, value))
        else:
            out.append(f"{fmt(metric, value)} ± {fmt(metric, (float(high) - float(low)) / 2)}")
    return out


def paired_to_best(done: pd.DataFrame, units: dict[str, dict[str, pd.DataFrame]], split: str,
                   resamples: int = 2000) -> pd.DataFrame:
    """For ranked cells `done` (best first): bits per byte minus the best cell's, with a 95% paired bootstrap
    interval over the evaluation units both were scored on, and `tie` when the interval holds 0. Pairs need the
    same units with the same bytes (the same held-out text; any tokenizers); otherwise the row stays empty.
    `units`: cell -> split -> per-unit records. Columns: cell, delta, delta_low, delta_high, tie."""
    from lmbench.stats import paired_difference

    rows = []
    cells = list(done["cell"])
    best = units.get(cells[0], {}).get(split) if cells else None
    for cell in cells:
        row: dict[str, Any] = {"cell": cell, "delta": math.nan, "delta_low": math.nan, "delta_high": math.nan,
                               "tie": None}
        mine = units.get(cell, {}).get(split)
        if best is not None and mine is not None and len(mine) == len(best):
            both = best.merge(mine, on=["doc", "chunk"], suffixes=("_best", ""))
            if len(both) == len(best) and (both["bytes_best"] == both["bytes"]).all():
                if cell == cells[0]:
                    row.update(delta=0.0, delta_low=0.0, delta_high=0.0)
                else:
                    d = paired_difference(both["nll_nats"].to_numpy(), both["nll_nats_best"].to_numpy(),
                                          both["bytes"].to_numpy(), resamples=resamples)
                    row.update(delta=d.estimate, delta_low=d.low, delta_high=d.high, tie=bool(d.contains(0.0)))
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell", "delta", "delta_low", "delta_high", "tie"])


def _mean_std(metric: str, values: pd.Series) -> str:
    if values.empty:
        return ""
    if len(values) == 1:
        return fmt(metric, float(values.iloc[0]))
    return f"{fmt(metric, float(values.mean()))} ± {fmt(metric, float(values.std(ddof=1)))}"


def _levels(values: pd.Series) -> list[Any]:
    """An axis' values in order: numbers ascending, anything else in grid order (first appearance)."""
    unique = list(dict.fromkeys(values))
    return sorted(unique) if pd.api.types.is_numeric_dtype(values) else unique


def pivot(frame: pd.DataFrame, rows: str, cols: str | None, metric: str) -> pd.DataFrame:
    """Mean `metric` of completed cells over every other axis and seed: `rows` x `cols` (or one column of `metric`)."""
    done = ranked(frame, metric)
    keys = [rows] if cols is None else [rows, cols]
    done = done.assign(**{k: done[k] if pd.api.types.is_numeric_dtype(done[k]) else done[k].astype(str) for k in keys})
    means = done.groupby(keys, sort=False)[metric].mean()
    table = means.to_frame() if cols is None else means.unstack(cols)
    if table.empty:
        return table
    table = table.reindex(index=_levels(done[rows]))
    return table if cols is None else table.reindex(columns=_levels(done[cols]))


# ---------------------------------------------------------------------------------------------- samplers
def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def text_sampler_metrics(samples: pd.DataFrame) -> pd.DataFrame:
    """Per sampler, from the new text alone (words = whitespace split, lower-cased): number of samples, mean length
    (new tokens, or words when not recorded), EOS fraction, distinct-1/2/3 (unique / total n-grams pooled over
    the sampler's samples), rep_4gram (fraction of 4-grams repeating an earlier one in the same sample), tokens/s."""
    if samples.empty or "text" not in samples:
        return pd.DataFrame()
    rows = []
    for name, part in samples.groupby(samples.get("sampler", pd.Series("default", index=samples.index)), sort=False):
        column = "continuation" if "continuation" in part else "text"  # new text only, without the prompt
        texts = [str(t).lower().split() for t in part[column].fillna("")]
        row: dict[str, Any] = {"sampler": name, "num_samples": len(part)}
        lengths = part["num_new_tokens"] if "num_new_tokens" in part else pd.Series([len(t) for t in texts])
        row["mean_length"] = float(pd.to_numeric(lengths, errors="coerce").mean())
        if "ended_with_eos" in part:
            row["eos_fraction"] = float(part["ended_with_eos"].astype(float).mean())
        for n in (1, 2, 3):
            grams = [g for t in texts for g in _ngrams(t, n)]
            row[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else math.nan
        totals = [(len(g) - len(set(g)), len(g)) for g in (_ngrams(t, 4) for t in texts)]
        row["rep_4gram"] = sum(r for r, _ in totals) / max(1, sum(t for _, t in totals))
        if "tokens_per_s" in part:
            row["tokens_per_s"] = float(pd.to_numeric(part["tokens_per_s"], errors="coerce").mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={c: re.sub(r"[^0-9a-z]+", "_", str(c).lower()).strip("_") for c in frame.columns})


def sampler_frame(runs: Sequence[Run]) -> tuple[pd.DataFrame, str]:
    """(cell x sampler table, where it came from). The runner's sampler_metrics file wins column by column;
    the text-only metrics fill what it lacks."""
    parts, sources = [], set()
    for run in runs:
        text = text_sampler_metrics(run.samples)
        given = _normalise_columns(run.sampler_metrics) if run.sampler_metrics is not None else None
        if given is not None and "sampler" in given:
            merged = given.merge(text, on="sampler", how="outer", suffixes=("", "_text")) if not text.empty else given
            merged = merged.drop(columns=[c for c in merged if c.endswith("_text")])
            sources.add("sampler_metrics file")
        else:
            merged = text
            sources.add("text")
        if not merged.empty:
            parts.append(merged.assign(cell=run.cell))
    if not parts:
        return pd.DataFrame(), ""
    frame = pd.concat(parts, ignore_index=True)
    first = ["cell", "sampler"]
    return frame[first + [c for c in frame if c not in first]], " and ".join(sorted(sources))


def coherence_column(samplers: pd.DataFrame) -> str | None:
    return next((c for c in ("reference_ppl", "ref_ppl", "self_ppl") if c in samplers and samplers[c].notna().any()),
                None)


# ---------------------------------------------------------------------------------------------- formatting
def fmt(column: str, value: Any) -> str:
    """One table cell as text: losses and bits to 4 decimals, perplexities to 2, counts compact, times as h/m/s."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar -> Python number
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("\n", " ")
    if column in COUNTS:
        return _compact(value)
    if column.endswith(("wall_s", "train_s")):
        return _duration(value)
    if column.endswith("tokens_per_s"):
        return f"{value:,.0f}"
    if column.endswith("ppl"):
        return f"{value:,.2f}" if abs(value) < 1e7 else f"{value:.3e}"
    if re.search(r"(loss|bpb|bits_per_char|distinct_\d|rep_4gram|fraction)$", column):
        return f"{value:.4f}"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _compact(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def formatted(frame: pd.DataFrame, columns: Iterable[str], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Columns of `frame` that exist, as strings through `fmt`, renamed by `labels`."""
    cols = [c for c in columns if c in frame]
    out = pd.DataFrame({c: [fmt(c, v) for v in frame[c]] for c in cols}, index=frame.index)
    return out.rename(columns=labels or {})
