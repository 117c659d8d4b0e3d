"""Runs of a results folder (or W&B project) as pandas tables: the data half of `lmbench report`.

Reads only files (spec.yaml, summary.json, metrics.jsonl, samples.jsonl, sampler_metrics.csv|json and cell.json of
each cell, cells.json of the folder), never models or training code, so a folder copied from a cluster works.
Cells are ranked by bits per byte: token perplexities of different tokenizers count different units.
Rendering the tables and writing the report files is `lmbench.reporting.report`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lmbench.errors import SpecError
from lmbench.experiment.locks import LOCK_NAME, is_locked

RUN_FILES = ("spec.yaml", "summary.json", "metrics.jsonl", "samples.jsonl")
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
    rows = []
    for _, row, part in completed_groups(done, groups, placeholder="runs"):
        row["n"] = len(part)
        for m in metrics:
            values = part[m].dropna().astype(float)
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
