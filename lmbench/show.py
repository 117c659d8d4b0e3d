"""`lmbench show SPEC`: the resolved spec, the grid cells, the data/tokenizer summary and each cell's model size."""

from __future__ import annotations

import argparse
from typing import Any

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
    from lmbench.data.cache import prepare_data
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
        print(_table(model_rows(cells)))
    return 0
