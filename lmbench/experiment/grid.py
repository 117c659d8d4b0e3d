"""Experiment grids: a spec's `grid:` block turned into cells (`lmbench run` over those cells is launch.py).

Grid syntax (every part optional; a spec without `grid:` is one cell named ``main``)::

    grid:
      axes:                          # cartesian product, first axis slowest
        model.family: [rnn, lstm]    # any dotted spec field (nested mappings are read as dotted keys too)
        seed: [0, 1]
      zip:                           # each group varies together: one axis of equal-length lists
        - {model.params.d_hidden: [128, 256], train.lr: [3.0e-3, 1.0e-3]}
      presets:                       # named values that set several fields at once
        arch:                        # a preset group: an axis whose values are preset names
          char_lstm: {tokenizer.kind: char, model.params: {d_embed: 256, d_hidden: 256}}
          glove_lstm: {model.params.embeddings: glove}
      include:                       # extra cells: base spec + these values (fields or preset names)
        - {arch: char_lstm, seed: 7}
      exclude:                       # drop product cells whose values match all of these
        - {model.family: rnn, seed: 1}

Rules:
- Setting a field sets it to exactly that value: a mapping value *replaces* the whole sub-tree (so a preset with
  `model: {family: transformer, params: {...}}` drops the base's LSTM params). Change one leaf with its dotted path.
- A preset group is a product axis over all its presets (declaration order), placed before `axes`, unless `axes`
  or `zip` lists it (then only the listed presets, e.g. `axes: {arch: [char_lstm]}`).
- Inside a cell presets apply first, then plain field values, then command-line overrides (overrides win; an
  override of an axis field itself is an error: override `grid.axes.<field>=[...]` instead).
- `exclude` matches the resolved values of a product cell (a preset group key matches the preset name) and
  never removes `include` cells. A cell whose resolved spec equals an earlier one is dropped with a warning.
- Samplers are an evaluation axis, not a training axis: `sample.*` cannot appear in a grid; list every sampler in
  `sample.samplers` and each trained cell evaluates all of them. `name`, `grid` and `tracking.results_dir`
  cannot vary either.

Each cell has an `index` (expansion order: product cells, then includes), a readable `name` built from its
values (`family=lstm,seed=1`; keys shortened to their shortest unique dotted suffix, a mapping value named by its
family/kind/source/name or a short hash, slugified, made unique with an id suffix)
and an `id`: a hash of the resolved spec without name, tracking, data.cache_dir and train.num_threads, so the
same settings give the same id however the grid is written. Results go to `<results_dir>/<spec name>/<cell name>/`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmbench.errors import SpecError, choice_error, did_you_mean
from lmbench.spec import ExperimentSpec, check_name, raw_spec, spec_to_dict, to_spec

GRID_KEYS = ("axes", "zip", "presets", "include", "exclude")
# Fields (and everything under them) that cannot vary across cells, and why.
FIXED_FIELDS = {
    "name": "the spec name is the results folder of the whole grid",
    "grid": "a grid cannot vary its own grid",
    "sample": "samplers are an evaluation axis: list them all in sample.samplers and every trained cell "
              "evaluates each of them",
    "tracking.results_dir": "all cells of a grid share one results folder (use --results)",
}
# Left out of a cell's id: they name or place a run, they do not change what is trained or measured.
ID_EXCLUDED = ("name", "grid", "tracking", "data.cache_dir", "train.num_threads")
# Fields added after ids were first written: left out of the id at their default, so that a grid's existing runs
# keep their ids (and resume) when lmbench gains a field.
ID_DEFAULTS_LEFT_OUT = {"sample.dtype": "auto"}
MAX_NAME_CHARS = 96
NAMING_KEYS = ("family", "kind", "source", "name")  # a mapping value is named by the first of these it has
SINGLE_CELL_NAME = "main"

Assignment = list[tuple[str, Any]]  # ordered (axis key, value); a preset group key maps to a preset name


@dataclass(frozen=True)
class Cell:
    """One point of a grid: a fully resolved spec and where it came from."""

    name: str  # readable and unique within the grid; the run folder name
    index: int  # position in expansion order (what `--cell INDEX` and Slurm array tasks use)
    id: str  # 12 hex chars of the resolved spec's hash (stable across grid rewrites)
    spec: ExperimentSpec  # grid=None
    axes: dict[str, Any]  # axis key -> value (preset group -> preset name)


@dataclass(frozen=True)
class _Grid:
    dims: list[list[Assignment]]  # product dimensions; each entry is one choice along that dimension
    presets: dict[str, dict[str, dict[str, Any]]]  # group -> preset name -> {dotted field: value}
    include: list[Assignment]
    exclude: list[dict[str, Any]]

    @property
    def axis_keys(self) -> list[str]:
        return [key for dim in self.dims for key, _ in dim[0]]


# ---------------------------------------------------------------------------------------------------------------
# Parsing the grid block


def _check_field(key: str, where: str) -> None:
    """SpecError unless `key` is a dotted ExperimentSpec field that may vary (params dicts accept any key)."""
    for fixed, why in FIXED_FIELDS.items():
        if key == fixed or key.startswith(fixed + "."):
            raise SpecError(f"{where}.{key}", f"cannot be a grid axis: {why}")
    parts = key.split(".")
    cls: Any = ExperimentSpec
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            known = sorted(hints)
            raise SpecError(f"{where}.{key}", f"unknown field {part!r}{did_you_mean(part, known)}; "
                                              f"known fields: {', '.join(known)}")
        hint = hints[part]
        if dataclasses.is_dataclass(hint):
            cls = hint
        elif typing.get_origin(hint) is dict:
            return  # model.params, tokenizer.params, data.files, data.replace: checked per family later
        elif depth < len(parts) - 1:
            raise SpecError(f"{where}.{key}", f"{'.'.join(parts[:depth + 1])} is a value, not a section")


def _check_key(key: str, where: str, presets: dict[str, Any]) -> None:
    if key not in presets:
        _check_field(key, where)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'family': [..]}} -> {'model.family': [..]}; later keys win (so dotlist overrides apply)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, dotted) if isinstance(value, dict) else {dotted: value})
    return out


def _values(key: str, values: Any, where: str, presets: dict[str, Any]) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise SpecError(f"{where}.{key}", f"must be a non-empty list of values, got {values!r}")
    for value in values if key in presets else []:
        if value not in presets[key]:
            raise choice_error(f"{where}.{key}", value, presets[key], what=f"preset of group {key!r}")
    return values


def _parse_presets(raw: Any) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(raw, dict):
        raise SpecError("grid.presets", "must map group -> preset name -> {field: value}")
    for group, named in raw.items():
        if "." in group or not isinstance(named, dict) or not named:
            raise SpecError(f"grid.presets.{group}", "a preset group is a plain name mapping preset names to "
                                                     "{field: value} settings")
        for preset, settings in named.items():
            if not isinstance(settings, dict):
                raise SpecError(f"grid.presets.{group}.{preset}", "must map dotted fields to values")
            for key in settings:
                _check_field(key, f"grid.presets.{group}.{preset}")
    return raw


def _parse_entries(raw: Any, where: str, presets: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise SpecError(where, "must be a list of {field or preset group: value} mappings")
    for i, entry in enumerate(raw):
        for key, value in entry.items():
            _check_key(key, f"{where}[{i}]", presets)
            if key in presets and value not in presets[key]:
                raise choice_error(f"{where}[{i}].{key}", value, presets[key], what=f"preset of group {key!r}")
    return raw


def _parse_dims(raw: dict[str, Any], presets: dict[str, Any]) -> list[list[Assignment]]:
    axes = _flatten(raw.get("axes") or {})
    dims = [[[(key, v)] for v in _values(key, values, "grid.axes", presets)] for key, values in axes.items()]
    zips = raw.get("zip") or []
    if not isinstance(zips, list):
        raise SpecError("grid.zip", "must be a list of {field: [values]} groups")
    for i, group in enumerate(zips):
        flat = _flatten(group) if isinstance(group, dict) else {}
        lists = {key: _values(key, values, f"grid.zip[{i}]", presets) for key, values in flat.items()}
        if not lists or len({len(v) for v in lists.values()}) != 1:
            lengths = {key: len(v) for key, v in lists.items()}
            raise SpecError(f"grid.zip[{i}]", f"needs lists of one common length, got {lengths or group!r}")
        dims.append([list(zip(lists, row)) for row in zip(*lists.values())])
    used = [key for dim in dims for key, _ in dim[0]]
    for key in used:
        _check_key(key, "grid.axes" if key in axes else "grid.zip", presets)
    if len(set(used)) != len(used):
        twice = sorted({k for k in used if used.count(k) > 1})
        raise SpecError("grid", f"an axis appears twice in axes/zip: {twice}")
    auto = [[[(g, name)] for name in presets[g]] for g in presets if g not in used]
    return auto + dims


def parse_grid(raw: Any) -> _Grid:
    """Check a `grid:` block (plain containers) and turn it into product dimensions, includes and excludes."""
    if raw is None:
        return _Grid([], {}, [], [])
    if not isinstance(raw, dict):
        raise SpecError("grid", f"must be a mapping with keys {', '.join(GRID_KEYS)}")
    for key in raw:
        if key not in GRID_KEYS:
            raise choice_error("grid", key, GRID_KEYS, what="grid key")
    presets = _parse_presets(raw.get("presets") or {})
    include = _parse_entries(raw.get("include") or [], "grid.include", presets)
    exclude = _parse_entries(raw.get("exclude") or [], "grid.exclude", presets)
    dims = _parse_dims(raw, presets)
    return _Grid(dims, presets, [list(entry.items()) for entry in include], exclude)


# ---------------------------------------------------------------------------------------------------------------
# Cells: values applied to the base spec, names and ids


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    OmegaConf.update(cfg, key, copy.deepcopy(value), merge=False, force_add=True)


def _cell_cfg(base: DictConfig, assignment: Assignment, grid: _Grid, overrides: Sequence[str]) -> DictConfig:
    cfg = copy.deepcopy(base)
    for key, value in assignment:
        for field_key, field_value in (grid.presets[key][value].items() if key in grid.presets else ()):
            _set(cfg, field_key, field_value)
    for key, value in assignment:
        if key not in grid.presets:
            _set(cfg, key, value)
    late = [o for o in overrides if not o.split("=", 1)[0].startswith("grid")]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(late)) if late else cfg


_MISSING = object()


def _lookup(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if value is _MISSING:
        value = OmegaConf.select(OmegaConf.structured(ExperimentSpec), key, default=None, throw_on_missing=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _excluded(cfg: DictConfig, assignment: Assignment, grid: _Grid) -> bool:
    given = dict(assignment)
    for entry in grid.exclude:
        if all((given.get(k) if k in grid.presets else _lookup(cfg, k)) == v for k, v in entry.items()):
            return True
    return False


def cell_id(spec: ExperimentSpec) -> str:
    """12 hex chars of sha256 over the resolved spec, without the fields in ID_EXCLUDED and those of
    ID_DEFAULTS_LEFT_OUT at their default (sorted keys: order-free)."""
    data = spec_to_dict(spec)
    for path in (*ID_EXCLUDED, *ID_DEFAULTS_LEFT_OUT):
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        if path in ID_EXCLUDED or node.get(leaf) == ID_DEFAULTS_LEFT_OUT[path]:
            node.pop(leaf, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _labels(keys: list[str]) -> dict[str, str]:
    """Shortest dotted suffix of each key that no other key ends with: model.params.d_hidden -> d_hidden."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(other != key and (other == label or other.endswith("." + label)) for other in keys):
                break
        out[key] = label
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_fmt(v) for v in value)
    if isinstance(value, dict):  # a section: its family/kind names it, else a short hash of its content
        named = [value[k] for k in NAMING_KEYS if isinstance(value.get(k), (str, int, float))]
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        return _fmt(named[0]) if named else "h" + digest[:6]
    return str(value)


def _cell_name(assignment: Assignment, labels: dict[str, str]) -> str:
    text = ",".join(f"{labels[k]}={_fmt(v)}" for k, v in assignment)
    return re.sub(r"[^A-Za-z0-9._+=,-]+", "-", text).strip("-.") or "base"


def _in_cell(err: SpecError, index: int, name: str) -> SpecError:
    return SpecError(err.path, f"{err.message} [grid cell {index} {name!r}]")


def _typed(cfg: DictConfig, index: int, name: str) -> ExperimentSpec:
    try:
        return to_spec(cfg)
    except SpecError as err:
        raise _in_cell(err, index, name) from None


def _check_overrides(overrides: Sequence[str], grid: _Grid) -> None:
    axes = set(grid.axis_keys) | {k for entry in grid.include for k, _ in entry}
    for item in overrides:
        key = item.split("=", 1)[0]
        if key in axes:
            raise SpecError(key, f"is a grid axis; pick cells with --cell, or override the axis itself: "
                                 f"grid.axes.{key}=[...]")


def _unique(cells: list[tuple[Assignment, str, ExperimentSpec]]) -> list[Cell]:
    """Drop cells equal to an earlier one (same id), make names unique, number them."""
    out: list[Cell] = []
    ids: dict[str, str] = {}
    names: set[str] = set()
    for assignment, name, spec in cells:
        cid = cell_id(spec)
        if cid in ids:
            print(f"lmbench: warning: grid cell {name!r} equals cell {ids[cid]!r}; dropped", file=sys.stderr)
            continue
        if len(name) > MAX_NAME_CHARS:
            name = f"{name[:MAX_NAME_CHARS - 9]}~{cid[:8]}"
        if name in names:
            name = f"{name}~{cid[:8]}"
        check_name(f"grid cell {len(out)}", name)  # slugified above; refused here if it could still leave
        ids[cid] = name
        names.add(name)
        out.append(Cell(name=name, index=len(out), id=cid, spec=spec, axes=dict(assignment)))
    return out


def expand(cfg: DictConfig, overrides: Sequence[str] = ()) -> list[Cell]:
    """Expand a merged, untyped spec (raw_spec) into typed cells; `overrides` are re-applied over grid values.

    Raises SpecError naming the cell and the field. Registry-level checks (lmbench.validate) are load_cells' job.
    """
    base = copy.deepcopy(cfg)
    raw = base.pop("grid", None)
    grid = parse_grid(OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw)
    _check_overrides(overrides, grid)
    if raw is None or not (grid.dims or grid.include):
        return _single(base)
    combos = itertools.product(*grid.dims) if grid.dims else ()
    product = [[pair for choice in combo for pair in choice] for combo in combos]
    labels = _labels(list(dict.fromkeys(k for a in product + grid.include for k, _ in a)))
    staged = []
    for assignment in product:
        cell_cfg = _cell_cfg(base, assignment, grid, overrides)
        if not _excluded(cell_cfg, assignment, grid):
            staged.append((assignment, cell_cfg))
    staged += [(a, _cell_cfg(base, a, grid, overrides)) for a in grid.include]
    if not staged:
        raise SpecError("grid.exclude", "excludes every cell of the grid")
    typed = []
    for index, (assignment, cell_cfg) in enumerate(staged):
        name = _cell_name(assignment, labels)
        typed.append((assignment, name, _typed(cell_cfg, index, name)))
    return _unique(typed)


def _single(base: DictConfig) -> list[Cell]:
    spec = to_spec(base)
    return [Cell(SINGLE_CELL_NAME, 0, cell_id(spec), spec, {})]


def load_cells(path: str | Path, overrides: Sequence[str] = ()) -> tuple[str, list[Cell]]:
    """(grid name = spec name, cells), every cell checked with lmbench.validate before anything runs."""
    from lmbench.validate import validate

    cfg = raw_spec(path, overrides)
    cells = expand(cfg, overrides)
    has_grid = cfg.get("grid") is not None
    for cell in cells:
        try:
            validate(cell.spec)
        except SpecError as err:
            raise (_in_cell(err, cell.index, cell.name) if has_grid else err) from None
    return cells[0].spec.name, cells


def find_cell(cells: Sequence[Cell], key: str) -> Cell:
    """The cell named `key`, at index `key`, or with id (prefix, >= 6 chars) `key`; SpecError otherwise."""
    if key.isdigit():
        if int(key) < len(cells):
            return cells[int(key)]
        raise SpecError("--cell", f"index {key} is out of range: the grid has {len(cells)} cells "
                                  f"(0-{len(cells) - 1})")
    for cell in cells:
        if cell.name == key or (len(key) >= 6 and cell.id.startswith(key)):
            return cell
    names = [c.name for c in cells]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise SpecError("--cell", f"no cell {key!r}{did_you_mean(key, names)}; cells: {shown}")


def format_cells(cells: Sequence[Cell]) -> str:
    """A table of index, id and name, one cell a line (for `lmbench show` and `lmbench slurm`)."""
    width = len(str(len(cells) - 1))
    return "\n".join(f"{c.index:>{width}}  {c.id}  {c.name}" for c in cells)
