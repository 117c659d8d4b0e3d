"""Looking at a spec without training it: `lmbench show SPEC` (the resolved spec, the grid cells, the
data/tokenizer summary and each cell's model size) and `lmbench data SPEC` (build the token cache and print
corpus and token statistics)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmbench.errors import SpecError
from lmbench.spec import ExperimentSpec, spec_to_yaml


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _table(rows: list[dict[str, Any]]) -> str:
    """A plain fixed-width table (no pandas import for a quick look)."""
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def describe_data(spec: ExperimentSpec) -> str:
    d, t = spec.data, spec.tokenizer
    where = d.path or ", ".join(f"{k}={v}" for k, v in d.files.items()) or "(built in)"
    params = ", ".join(f"{k}={v}" for k, v in t.params.items())
    return (
        f"data: source={d.source} path={where} batching={d.batching} block_size={d.block_size} "
        f"split={d.split} val_fraction={d.val_fraction}\n"
        f"tokenizer: kind={t.kind}" + (f" ({params})" if params else "")
    )


def model_rows(cells: list[Any]) -> list[dict[str, Any]]:
    """Build each cell's model on its (cached) tokenizer to count parameters; the data cache is prepared once."""
    from lmbench.data import prepare_data
    from lmbench.models import build_model

    rows = []
    for cell in cells:
        prepared = prepare_data(cell.spec, progress=False)
        model = build_model(cell.spec.model, prepared.tokenizer)
        coverage = model.describe().get("coverage")
        rows.append({
            "cell": cell.name,
            "family": cell.spec.model.family,
            "tokenizer": cell.spec.tokenizer.kind,
            "vocab": prepared.tokenizer.vocab_size,
            "params": _human(model.num_params()),
            "trainable": _human(model.num_params(trainable_only=True)),
            "train FLOPs/token": _human(model.flops_per_token(cell.spec.data.block_size)),
            **({"embedding coverage": coverage} if coverage else {}),
        })
    return rows


def cmd_show(args: argparse.Namespace) -> int:
    from lmbench.experiment.grid import load_cells

    grid_name, cells = load_cells(args.spec, args.overrides)
    if getattr(args, "cell", None) is not None:  # one cell's resolved spec (presets, axes, overrides applied)
        from lmbench.experiment.grid import find_cell

        cells = [find_cell(cells, str(args.cell))]
        print(f"# cell {cells[0].index} {cells[0].name} (id {cells[0].id}) of {grid_name}")
    if len(cells) == 1:
        print(spec_to_yaml(cells[0].spec))
    else:
        print(f"grid {grid_name}: {len(cells)} cells\n")
        print(_table([{"index": c.index, "cell": c.name, "id": c.id, **c.axes} for c in cells]))
        print()
    for text in dict.fromkeys(describe_data(c.spec) for c in cells):
        print(text)
    if not args.no_models:
        print()
        try:
            print(_table(model_rows(cells)))
        except SpecError as exc:  # e.g. a Hub tokenizer not cached on an offline node: the spec is still shown
            print(f"model sizes not shown: {exc}")
    return 0


# ---------------------------------------------------------------------------------------------- lmbench data
DATA_COLUMNS = (("split", "{}"), ("docs", "{:,}"), ("tokens", "{:,}"), ("bytes", "{:,}"), ("chars", "{:,}"),
           ("words", "{:,}"), ("tokens/doc", "{:.1f}"), ("bytes/token", "{:.2f}"), ("tok MB/s", "{:.2f}"))


def format_data_summary(summary: dict[str, Any]) -> str:
    """A plain-text table per split plus the tokenizer, cache and reuse lines."""
    rows = [[name, s["num_docs"], s["num_tokens"], s["num_bytes"], s["num_chars"], s["num_words"],
             s["tokens_per_doc"], s["bytes_per_token"], s["tokenize_mb_per_s"]]
            for name, s in summary["splits"].items()]
    cells = [[h for h, _ in DATA_COLUMNS]] + [[fmt.format(v) for (_, fmt), v in zip(DATA_COLUMNS, row)] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(DATA_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    tok = summary["tokenizer"]
    how = "reused, nothing tokenized" if summary["reused"] else f"built in {summary['build_seconds']:.1f} s"
    lines += ["", f"tokenizer: {tok['kind']}, vocab size {tok['vocab_size']:,} ({tok['dtype']} ids)",
              f"cache: {summary['cache_dir']} ({summary['cache_mb']:,.1f} MB, {how})",
              f"fingerprint: {summary['fingerprint'][:16]}"]
    if "sha256" in summary["source"]:
        src = summary["source"]
        lines.append(f"builtin corpus: Python {src['python']}, {src['num_docs']:,} docs, sha256 {src['sha256'][:16]}")
    lines.append(f"peak RSS: {summary['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def cmd_data(args: argparse.Namespace) -> int:
    """`lmbench data SPEC [key=value ...] [--cell NAME] [--json PATH]`: validate, prepare the token cache of the
    spec, of one grid cell, or of every distinct cache of a grid (cells with the same data and tokenizer share
    one), and print the statistics. --json: the statistics (one cache), or {fingerprint: statistics}."""
    from lmbench.data.cache import data_fingerprint, data_summary, prepare_data
    from lmbench.experiment.grid import find_cell, load_cells
    from lmbench.results import write_json_atomic
    from lmbench.validate import validate

    _, cells = load_cells(args.spec, args.overrides)
    if getattr(args, "cell", None) is not None:
        cells = [find_cell(cells, str(args.cell))]
    for cell in cells:  # every cell checked before any data is read
        validate(cell.spec)
    caches: dict[str, list[Any]] = {}
    for cell in cells:
        caches.setdefault(data_fingerprint(cell.spec), []).append(cell)
    summaries = {}
    for fingerprint, users in caches.items():
        if len(cells) > 1:
            print(f"# cache {fingerprint[:16]} for {', '.join(c.name for c in users)}")
        summaries[fingerprint] = data_summary(prepare_data(users[0].spec, progress=True))
        print(format_data_summary(summaries[fingerprint]))
    if getattr(args, "json_out", None):
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        out = next(iter(summaries.values())) if len(summaries) == 1 else summaries
        write_json_atomic(Path(args.json_out), out, sort_keys=True)
    return 0
