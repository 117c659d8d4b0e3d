"""Comparison reports: a results folder (or W&B project) -> pandas tables, plots, report.md and report.html.

    lmbench report results/<spec name>            # writes report.md, report.html, runs.csv, runs.parquet, plot_*.png
    lmbench report --wandb ENTITY/PROJECT         # the same tables from W&B runs (needs the network)

Reads only files (spec.yaml, summary.json, metrics.jsonl, samples.jsonl, sampler_metrics.csv|json of each cell),
never models or training code, and writes only relative links, so a folder copied from a cluster works.
Cells are ranked by bits per byte: token perplexities of different tokenizers count different units.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from lmbench import plots
from lmbench.errors import SpecError
from lmbench.locks import LOCK_NAME, is_locked

RUN_FILES = ("spec.yaml", "summary.json", "metrics.jsonl", "samples.jsonl")
RANK_METRICS = ("val_bpb", "test_bpb", "val_bits_per_char", "val_loss")
SPLIT_METRICS = ("loss", "ppl", "bpb", "word_ppl")
FIXED_AXES = {"family": ("model.family", "family"), "tokenizer": ("tokenizer.kind", "tokenizer"), "seed": ("seed",)}
COUNTS = ("num_params", "num_trainable_params", "tokens", "steps")
SAMPLES_PER_CELL = 3
SAMPLE_CHARS = 400
NOT_COMPARABLE = ("Token perplexity (`val_ppl`) is per token of each cell's own tokenizer, so it is not comparable "
                  "across tokenizers: a character model predicts far easier units than a word model. Bits per byte "
                  "of the raw validation text (`val_bpb`) and word perplexity (`val_word_ppl`) are normalised by the "
                  "text itself and are comparable, so cells are ranked by bits per byte.")
UNK_NOTE = ("Some cells map words outside their vocabulary to `<unk>` (`val_unk_rate` = share of validation "
            "tokens that are `<unk>`). Predicting `<unk>` is cheaper than spelling the word out, so their bits per "
            "byte are optimistic: compare them with lossless (char, BPE, byte-level) cells with that in mind.")
LOSS_ONLY = ("No cell reported bits per byte or per character: this ranking by `val_loss` (nats per token) is "
             "meaningful only among cells that share a tokenizer.")


@dataclass
class Run:
    """One cell of a results folder (or one W&B run): what the runner wrote, as plain data."""

    cell: str
    status: str  # completed | failed | running | incomplete | missing
    axes: dict[str, Any] = field(default_factory=dict)  # grid axis -> value of this cell
    spec: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    sampler_metrics: pd.DataFrame | None = None  # written by the runner with model-based metrics, if any


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None  # cells already formatted as strings
    images: list[Path] = field(default_factory=list)
    samples: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (cell, [(label, text)])
    collapsed: bool = False  # HTML: long content behind a <details> toggle


# ---------------------------------------------------------------------------------------------- loading
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file is empty and a torn last line (a running cell) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {"status": "failed", "error": f"summary.json is unreadable: {exc}"}
    return summary if isinstance(summary, dict) else {}


def _read_spec(path: Path) -> dict[str, Any]:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except yaml.YAMLError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _read_sampler_metrics(run_dir: Path) -> pd.DataFrame | None:
    if (run_dir / "sampler_metrics.csv").is_file():
        return pd.read_csv(run_dir / "sampler_metrics.csv")
    if (run_dir / "sampler_metrics.json").is_file():
        data = json.loads((run_dir / "sampler_metrics.json").read_text())
        return pd.DataFrame(data if isinstance(data, list) else data.get("rows", data))
    return None


def _status_without_summary(run_dir: Path, started: bool = False) -> str:
    """running: a launcher holds the cell's lock now; incomplete: it started (metrics, checkpoint) but nothing runs
    it here (killed, or a folder copied while running); missing: never started."""
    try:
        if is_locked(run_dir):
            return "running"
    except OSError:  # a read-only copy: the lock cannot be probed
        pass
    started = started or any((run_dir / name).exists() for name in ("metrics.jsonl", "checkpoint", "samples.jsonl"))
    return "incomplete" if started else "missing"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_run(run_dir: Path, axes: dict[str, Any] | None = None) -> Run:
    """Read one cell directory; axes from summary.json, else cell.json (written when the cell starts), else `axes`."""
    summary = _read_summary(run_dir / "summary.json")
    status = str(summary.get("status") or "completed") if summary else _status_without_summary(run_dir)
    if status == "running" and (run_dir / LOCK_NAME).exists():  # run by `lmbench run`: is it still?
        status = _status_without_summary(run_dir, started=True)
    cell_axes = summary.get("axes") or _read_json(run_dir / "cell.json").get("axes") or axes or {}
    order = [*(axes or {}), *cell_axes]  # the grid's order (cells.json) over summary.json's sorted keys
    ordered = {k: cell_axes[k] for k in dict.fromkeys(order) if k in cell_axes}
    return Run(cell=run_dir.name, status=status, axes=ordered, spec=_read_spec(run_dir / "spec.yaml"),
               summary=summary, metrics=pd.DataFrame(read_jsonl(run_dir / "metrics.jsonl")),
               samples=pd.DataFrame(read_jsonl(run_dir / "samples.jsonl")),
               sampler_metrics=_read_sampler_metrics(run_dir))


def run_dirs(results_dir: Path) -> list[Path]:
    """Cell directories of results/<spec name> (or the folder itself when it is one cell)."""
    if any((results_dir / name).is_file() for name in ("summary.json", "spec.yaml")):
        return [results_dir]
    markers = (*RUN_FILES, "cell.json", LOCK_NAME)
    return sorted(d for d in results_dir.iterdir() if d.is_dir() and any((d / f).exists() for f in markers))


def load_runs(results_dir: Path) -> list[Run]:
    """Every cell: those listed in cells.json (written by `lmbench run`, in grid order; listed cells without a
    folder are `missing`), then any other cell folder."""
    listed = _read_json(results_dir / "cells.json").get("cells") or []
    runs, seen = [], set()
    for entry in sorted(listed, key=lambda e: e.get("index", 0)):
        name = str(entry.get("name"))
        folder = results_dir / name
        runs.append(load_run(folder, entry.get("axes")) if folder.is_dir()
                    else Run(cell=name, status="missing", axes=dict(entry.get("axes") or {})))
        seen.add(name)
    return runs + [load_run(d) for d in run_dirs(results_dir) if d.name not in seen]


def load_wandb_runs(path: str, api: Any | None = None) -> list[Run]:
    """Runs of the W&B project `ENTITY/PROJECT` through the public API; SpecError when it cannot be reached."""
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=20)
        wb_runs = list(api.runs(path))
    except Exception as exc:  # network, authentication or a wrong path: one readable line
        raise SpecError("--wandb", f"cannot read the W&B runs of {path!r} ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}); W&B needs the network and "
                                   "`wandb login` (or WANDB_API_KEY). Offline runs: report from the results "
                                   "folder, or `wandb sync` them first.") from None
    return [_wandb_run(r) for r in wb_runs]


def _wandb_run(wb_run: Any) -> Run:
    config = {k: v for k, v in dict(wb_run.config).items() if not k.startswith("_")}
    raw = getattr(wb_run.summary, "_json_dict", None) or dict(wb_run.summary)
    summary = {k: v for k, v in raw.items() if not k.startswith("_")}
    state = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "failed"}
    status = str(summary.get("status") or state.get(wb_run.state, wb_run.state))
    metrics = pd.DataFrame(list(wb_run.scan_history()))
    if not metrics.empty:
        metrics = metrics.rename(columns={"_step": "step"})
        if "wall_s" not in metrics and "_runtime" in metrics:
            metrics = metrics.rename(columns={"_runtime": "wall_s"})
    cell = (config.get("lmbench") or {}).get("cell") or wb_run.name
    return Run(cell=str(cell), status=status, axes=dict(summary.get("axes") or {}), spec=config, summary=summary,
               metrics=metrics, samples=_wandb_samples(wb_run, raw.get("samples")))


def _wandb_samples(wb_run: Any, ref: Any) -> pd.DataFrame:
    """The logged samples wandb.Table, downloaded as JSON; empty when it is absent or unreachable."""
    import tempfile

    if not isinstance(ref, dict) or "path" not in ref:
        return pd.DataFrame()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wb_run.file(ref["path"]).download(root=tmp, replace=True)
            table = json.loads((Path(tmp) / ref["path"]).read_text())
        return pd.DataFrame(table["data"], columns=table["columns"])
    except Exception:  # samples are optional in a report
        return pd.DataFrame()


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


def rank_metric(frame: pd.DataFrame) -> str | None:
    return next((m for m in RANK_METRICS if m in frame and frame[m].notna().any()), None)


def seed_table(frame: pd.DataFrame, groups: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Completed cells grouped by every factor (not the seed): count, and mean ± std of each metric as text."""
    done = frame[frame["status"] == "completed"]
    metrics = [m for m in metrics if m in done and done[m].notna().any()]
    if done.empty or not metrics:
        return pd.DataFrame()
    keys = list(groups) or [pd.Series("all", index=done.index, name="runs")]
    rows = []
    for key, part in done.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip([g if isinstance(g, str) else g.name for g in keys], key))
        row["n"] = len(part)
        for m in metrics:
            values = part[m].dropna().astype(float)
            row[m] = _mean_std(m, values)
        rows.append(row)
    return pd.DataFrame(rows)


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
    done = frame[(frame["status"] == "completed") & frame[metric].notna()]
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


def ranking_section(frame: pd.DataFrame, axes: Sequence[str], labels: dict[str, str], metric: str) -> Section:
    done = frame[(frame["status"] == "completed") & frame[metric].notna()].sort_values(metric, kind="stable")
    done = done.assign(rank=range(1, len(done) + 1))
    columns = ["rank", "cell", *axes, *_unaxed(axes), metric, "val_bits_per_char", "val_word_ppl", "val_ppl",
               "num_params"]
    lossy = "val_unk_rate" in done and bool((done["val_unk_rate"].fillna(0) > 0).any())
    columns = list(dict.fromkeys(columns + (["val_unk_rate"] if lossy else [])))
    notes = [NOT_COMPARABLE] + ([LOSS_ONLY] if metric == "val_loss" else []) + ([UNK_NOTE] if lossy else [])
    return Section(f"Ranking by {metric}", [*notes, f"Completed cells, best (lowest `{metric}`) first."],
                   formatted(done, columns, labels))


def seeds_section(frame: pd.DataFrame, factors: Sequence[str], labels: dict[str, str], metric: str) -> Section | None:
    metrics = list(dict.fromkeys([metric, "val_bpb", "val_loss", "val_ppl", "val_word_ppl", "test_bpb"]))
    table = seed_table(frame, factors, metrics)
    if table.empty or table["n"].max() < 2:
        return None
    table = table.astype({c: str for c in factors}).rename(columns=labels)
    return Section("Seeds aggregated", ["Completed cells grouped by every axis except the seed: mean ± sample "
                                        "standard deviation over `n` seeds."], table.astype(str))


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


def failures_section(frame: pd.DataFrame) -> Section | None:
    bad = frame[frame["status"] != "completed"]
    if bad.empty:
        return None
    errors = bad.get("error", pd.Series("", index=bad.index)).fillna("").astype(str)
    table = pd.DataFrame({"cell": bad["cell"], "status": bad["status"],
                          "error": [e.splitlines()[-1][:300] if e.strip() else "" for e in errors]})
    return Section("Cells not completed", ["Failed cells keep their error; running and missing cells have no "
                                           "summary.json yet."], table)


def build_sections(runs: Sequence[Run], frame: pd.DataFrame, samplers: pd.DataFrame, source: str,
                   images: dict[str, Path]) -> list[Section]:
    axes = axis_names(runs)
    labels = display_names(axes)
    factors = factor_columns(frame, axes)
    metric = rank_metric(frame)
    sections: list[Section | None] = []
    if metric:
        sections += [ranking_section(frame, axes, labels, metric), *pivot_sections(frame, factors, labels, metric),
                     seeds_section(frame, factors, labels, metric)]
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
    done = frame[(frame["status"] == "completed")]
    if done.empty or metric not in done or "num_params" not in done:
        return pd.DataFrame()
    keys = list(factors) or [pd.Series("all", index=done.index, name="_all")]
    rows = []
    for key, part in done.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip([k if isinstance(k, str) else k.name for k in keys], key))
        row.update(label=" / ".join(str(v) for v in key) if factors else "", num_params=part["num_params"].mean(),
                   **{metric: part[metric].mean(), f"{metric}_std": part[metric].std(ddof=1)})
        rows.append(row)
    return pd.DataFrame(rows)


def make_plots(runs: Sequence[Run], frame: pd.DataFrame, samplers: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
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
    images = make_plots(runs, frame, samplers, out_dir) if not frame.empty else {}
    sections = build_sections(runs, frame, samplers, sampler_source, images) if not frame.empty else []
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
    return write_report(runs, Path(out_dir) if out_dir else results_dir, f"lmbench report: {results_dir.name}",
                        f"`{results_dir.name}/` ({len(runs)} cell folders)")


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
