"""Runs of a results folder (or a W&B project) read into plain data: the first half of `lmbench report`.

Reads only files (spec.yaml, summary.json, metrics.jsonl, samples.jsonl, sampler_metrics.csv|json and cell.json of
each cell, cells.json of the folder), never models or training code, so a folder copied from a cluster works.
The tables built from the runs are tables.py; rendering and writing the report is report.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from lmbench.errors import SpecError
from lmbench.experiment.locks import LOCK_NAME, is_locked
from lmbench.results import (CELL_FILE, CELLS_FILE, COMPLETED, FAILED, RUNNING, SUMMARY_FILE, Status, read_json,
                             read_rows, read_summary)

RUN_FILES = ("spec.yaml", SUMMARY_FILE, "metrics.jsonl", "samples.jsonl")


# A cell in a report: a summary's status, or one of two states of a folder without a summary:
# incomplete (it started, nothing runs it now: killed, or copied while running) and missing (never started).
RunStatus = Status | Literal["incomplete", "missing"]


@dataclass
class Run:
    """One cell of a results folder (or one W&B run): what the runner wrote, as plain data."""

    cell: str
    status: RunStatus
    axes: dict[str, Any] = field(default_factory=dict)  # grid axis -> value of this cell
    spec: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    sampler_metrics: pd.DataFrame | None = None  # written by the runner with model-based metrics, if any
    units: dict[str, pd.DataFrame] = field(default_factory=dict)  # split -> units_<split>.parquet (paired tests)


# ---------------------------------------------------------------------------------------------- loading
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file is empty, an unreadable line is skipped with a warning naming
    the file and the line (a running cell's last line may be half written)."""
    if not path.is_file():
        return []
    return [row for _, row in read_rows(path, strict=False)]


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


def _read_units(run_dir: Path) -> dict[str, pd.DataFrame]:
    """split -> per-unit evaluation records (doc, chunk, nll_nats, tokens, bytes, chars, words); unreadable
    files are skipped (a report never fails on one cell's file)."""
    out = {}
    for path in sorted(run_dir.glob("units_*.parquet")):
        try:
            out[path.stem[len("units_"):]] = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            import logging

            logging.getLogger(__name__).warning("%s is unreadable (%s): no paired comparison for this cell",
                                                path, type(exc).__name__)
    return out


def _status_without_summary(run_dir: Path, started: bool = False) -> str:
    """running: a launcher holds the cell's lock now; incomplete: it started (metrics, checkpoint) but nothing runs
    it here (killed, or a folder copied while running); missing: never started."""
    try:
        if is_locked(run_dir):
            return RUNNING
    except OSError:  # a read-only copy: the lock cannot be probed
        pass
    started = started or any((run_dir / name).exists() for name in ("metrics.jsonl", "checkpoint", "samples.jsonl"))
    return "incomplete" if started else "missing"


def load_run(run_dir: Path, axes: dict[str, Any] | None = None) -> Run:
    """Read one cell directory (its per-unit records too); axes from summary.json, else cell.json (written when the cell starts), else `axes`."""
    summary: dict[str, Any] = dict(read_summary(run_dir) or {})
    status = str(summary.get("status") or COMPLETED) if summary else _status_without_summary(run_dir)
    if status == RUNNING and (run_dir / LOCK_NAME).exists():  # run by `lmbench run`: is it still?
        status = _status_without_summary(run_dir, started=True)
    cell_axes = summary.get("axes") or (read_json(run_dir / CELL_FILE) or {}).get("axes") or axes or {}
    order = [*(axes or {}), *cell_axes]  # the grid's order (cells.json) over summary.json's sorted keys
    ordered = {k: cell_axes[k] for k in dict.fromkeys(order) if k in cell_axes}
    return Run(cell=run_dir.name, status=status, axes=ordered, spec=_read_spec(run_dir / "spec.yaml"),
               summary=summary, metrics=pd.DataFrame(read_jsonl(run_dir / "metrics.jsonl")),
               samples=pd.DataFrame(read_jsonl(run_dir / "samples.jsonl")),
               sampler_metrics=_read_sampler_metrics(run_dir), units=_read_units(run_dir))


def run_dirs(results_dir: Path) -> list[Path]:
    """Cell directories of results/<spec name> (or the folder itself when it is one cell)."""
    if any((results_dir / name).is_file() for name in (SUMMARY_FILE, "spec.yaml")):
        return [results_dir]
    markers = (*RUN_FILES, CELL_FILE, LOCK_NAME)
    return sorted(d for d in results_dir.iterdir() if d.is_dir() and any((d / f).exists() for f in markers))


def load_runs(results_dir: Path) -> list[Run]:
    """Every cell: those listed in cells.json (written by `lmbench run`, in grid order; listed cells without a
    folder are `missing`), then any other cell folder."""
    listed = (read_json(results_dir / CELLS_FILE) or {}).get("cells") or []
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
    return [_wandb_run(r) for r in _one_per_cell(wb_runs)]


def _one_per_cell(wb_runs: list[Any]) -> list[Any]:
    """Each cell once: lmbench resumes a cell into the same W&B run, but runs logged before that (or a cell
    re-run from scratch) leave several runs of one (group, cell); the most recently created one stands."""
    latest: dict[tuple[str, str], Any] = {}
    for wb_run in wb_runs:
        facts = dict(wb_run.config).get("lmbench") or {}
        key = (str(facts.get("group") or getattr(wb_run, "group", "") or ""), str(facts.get("cell") or wb_run.name))
        if key not in latest or str(getattr(wb_run, "created_at", "")) >= str(getattr(latest[key], "created_at", "")):
            latest[key] = wb_run
    return list(latest.values())


def _wandb_run(wb_run: Any) -> Run:
    config = {k: v for k, v in dict(wb_run.config).items() if not k.startswith("_")}
    raw = getattr(wb_run.summary, "_json_dict", None) or dict(wb_run.summary)
    summary = {k: v for k, v in raw.items() if not k.startswith("_")}
    state = {"finished": COMPLETED, "crashed": FAILED, "failed": FAILED, "killed": FAILED}  # W&B run states
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
