"""Grid expansion (product, zip, presets, include/exclude, ids, names); `lmbench run` is test_launch.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.errors import SpecError
from lmbench.experiment.grid import Cell, cell_id, expand, find_cell, load_cells

from .grid_helpers import FAMILY_SEED, write_spec


def cells_of(tmp_path: Path, grid: str, overrides: tuple[str, ...] = ()) -> list[Cell]:
    from lmbench.spec import raw_spec

    return expand(raw_spec(write_spec(tmp_path, grid), overrides), overrides)


# ---------------------------------------------------------------------------------------------------------------
# Expansion


def test_product_in_order_with_names_indices_and_axes(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, FAMILY_SEED)
    assert [c.name for c in cells] == ["family=rnn,seed=0", "family=rnn,seed=1", "family=lstm,seed=0",
                                       "family=lstm,seed=1"]
    assert [c.index for c in cells] == [0, 1, 2, 3]
    assert cells[3].axes == {"model.family": "lstm", "seed": 1}
    assert (cells[3].spec.model.family, cells[3].spec.seed, cells[3].spec.grid) == ("lstm", 1, None)
    assert cells[3].spec.model.params == {"d_hidden": 8, "num_layers": 1}  # the base's other fields stay
    assert len({c.id for c in cells}) == 4


def test_zip_varies_fields_together(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, """\
        grid:
          axes: {seed: [0, 1]}
          zip:
            - {model.params.d_hidden: [16, 32], train.lr: [3.0e-3, 1.0e-3]}
        """)
    pairs = [(c.spec.seed, c.spec.model.params["d_hidden"], c.spec.train.lr) for c in cells]
    assert pairs == [(0, 16, 3e-3), (0, 32, 1e-3), (1, 16, 3e-3), (1, 32, 1e-3)]
    assert cells[1].name == "seed=0,d_hidden=32,lr=0.001"
    assert cells[1].spec.model.params["num_layers"] == 1  # a dotted leaf changes one value only
    with pytest.raises(SpecError, match=r"grid.zip\[0\].*common length"):
        cells_of(tmp_path, "grid: {zip: [{seed: [0, 1], train.lr: [0.1]}]}")


def test_presets_set_several_fields_and_plain_axes_win(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, """\
        grid:
          presets:
            arch:
              char_lstm: {tokenizer.kind: char, model.params: {d_embed: 16, d_hidden: 16}}
              word_gru: {tokenizer: {kind: word, params: {min_freq: 1}}, model.family: gru, train.lr: 0.5}
          axes: {train.lr: [0.01]}
        """)
    assert [c.name for c in cells] == ["arch=char_lstm,lr=0.01", "arch=word_gru,lr=0.01"]
    char, word = cells
    assert char.spec.model.params == {"d_embed": 16, "d_hidden": 16}  # a mapping replaces the sub-tree
    assert (word.spec.tokenizer.kind, word.spec.tokenizer.params) == ("word", {"min_freq": 1})
    assert word.spec.model.family == "gru"
    assert word.spec.train.lr == 0.01  # the plain axis is applied after the preset
    assert word.axes == {"arch": "word_gru", "train.lr": 0.01}
    subset = cells_of(tmp_path, """\
        grid:
          presets: {arch: {a: {seed: 1}, b: {seed: 2}, c: {seed: 3}}}
          axes: {arch: [c, a]}
        """)
    assert [c.spec.seed for c in subset] == [3, 1]
    with pytest.raises(SpecError, match="unknown preset of group 'arch' 'd'"):
        cells_of(tmp_path, "grid: {presets: {arch: {a: {seed: 1}}}, axes: {arch: [d]}}")


def test_include_and_exclude(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, """\
        grid:
          presets: {arch: {small: {model.params.d_hidden: 4}, big: {model.params.d_hidden: 64}}}
          axes: {model.family: [rnn, lstm], seed: [0, 1]}
          exclude:
            - {model.family: rnn, seed: 1}
            - {arch: big, model.family: rnn}
            - {model.params.d_hidden: 64, seed: 0}   # a field set by a preset matches too
          include:
            - {arch: big, model.family: gru, seed: 7}
            - {model.family: lstm, seed: 0}   # equal to the base + these: a new cell without the preset
        """)
    names = [c.name for c in cells]
    assert names == ["arch=small,family=rnn,seed=0", "arch=small,family=lstm,seed=0", "arch=small,family=lstm,seed=1",
                     "arch=big,family=lstm,seed=1", "arch=big,family=gru,seed=7", "family=lstm,seed=0"]
    assert cells[4].spec.model.params["d_hidden"] == 64 and cells[4].spec.seed == 7
    assert cells[5].spec.model.params["d_hidden"] == 8
    with pytest.raises(SpecError, match=r"grid.exclude\[0\].seeed: unknown field 'seeed' \(did you mean 'seed'\?\)"):
        cells_of(tmp_path, "grid: {axes: {seed: [0]}, exclude: [{seeed: 1}]}")
    with pytest.raises(SpecError, match="excludes every cell"):
        cells_of(tmp_path, "grid: {axes: {seed: [0]}, exclude: [{seed: 0}]}")


def test_duplicate_cells_are_dropped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cells = cells_of(tmp_path, "grid: {axes: {seed: [0, 1]}, include: [{seed: 1}, {seed: 2}]}")
    assert [c.name for c in cells] == ["seed=0", "seed=1", "seed=2"]
    assert "equals cell 'seed=1'" in capsys.readouterr().err


def test_ids_are_stable_and_depend_on_the_resolved_spec_only(tmp_path: Path) -> None:
    a = cells_of(tmp_path, FAMILY_SEED)
    again = cells_of(tmp_path, FAMILY_SEED)
    reordered = cells_of(tmp_path, """\
        grid:
          axes:
            seed: [1, 0]
            model: {family: [lstm, rnn]}   # nested form of the dotted key
        """)
    assert [c.id for c in a] == [c.id for c in again]
    by_values = {(c.spec.model.family, c.spec.seed): c.id for c in a}
    assert {(c.spec.model.family, c.spec.seed): c.id for c in reordered} == by_values
    changed = cells_of(tmp_path, FAMILY_SEED, ("train.lr=0.5",))
    assert not {c.id for c in changed} & set(by_values.values())
    tracking_only = cells_of(tmp_path, FAMILY_SEED, ("tracking.project=other", "data.cache_dir=/elsewhere"))
    assert [c.id for c in tracking_only] == [c.id for c in a]
    spec = a[0].spec
    assert cell_id(spec) == a[0].id and len(a[0].id) == 12
    bf16 = cells_of(tmp_path, FAMILY_SEED, ("sample.dtype=bf16",))  # a later field: in the id once it is set
    assert not {c.id for c in bf16} & set(by_values.values())
    assert [c.id for c in cells_of(tmp_path, FAMILY_SEED, ("sample.dtype=auto",))] == [c.id for c in a]


def test_a_spec_without_grid_is_one_cell_named_main(tmp_path: Path) -> None:
    (cell,) = cells_of(tmp_path, "")
    assert (cell.name, cell.index, cell.axes) == ("main", 0, {})
    assert cell.id == cell_id(cell.spec)


def test_names_are_slugified_shortened_and_unique(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, """\
        grid:
          axes:
            data.path: ["a/b c.txt", "a?b c.txt"]
            model.params.dropout: [0.1]
            train.weight_decay: [0.0]
        """)
    assert cells[0].name == "path=a-b-c.txt,dropout=0.1,weight_decay=0"
    assert cells[1].name.startswith("path=a-b-c.txt,dropout=0.1,weight_decay=0~")  # collision: id suffix
    long = cells_of(tmp_path, "grid: {axes: {data.path: ['" + "x" * 200 + "']}}")
    assert len(long[0].name) <= 96 and long[0].name.endswith(long[0].id[:8])


@pytest.mark.parametrize(("grid", "match"), [
    ("grid: {axes: {model.famly: [rnn]}}",
     r"grid.axes.model.famly: unknown field 'famly' \(did you mean 'family'\?\)"),
    ("grid: {axes: {sample.samplers: [[{kind: greedy}]]}}", "samplers are an evaluation axis"),
    ("grid: {axes: {sample.max_new_tokens: [5, 10]}}", "samplers are an evaluation axis"),
    ("grid: {presets: {p: {a: {sample.num_samples: 2}}}}", "samplers are an evaluation axis"),
    ("grid: {axes: {name: [a, b]}}", "results folder"),
    ("grid: {axes: {tracking.results_dir: [a, b]}}", "share one results folder"),
    ("grid: {axes: {seed.x: [1]}}", "seed is a value, not a section"),
    ("grid: {axis: {seed: [1]}}", r"unknown grid key 'axis' \(did you mean 'axes'\?\)"),
    ("grid: {axes: {seed: 3}}", "non-empty list"),
    ("grid: {axes: {seed: [0]}, zip: [{seed: [1]}]}", "appears twice"),
])
def test_grid_errors_name_the_field(tmp_path: Path, grid: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        cells_of(tmp_path, grid)


def test_overrides_apply_over_grid_values_but_not_to_axes(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, "grid: {presets: {p: {a: {train.max_steps: 50}}}, axes: {seed: [0]}}",
                     ("train.max_steps=3", "grid.axes.seed=[4,5]"))
    assert [(c.spec.seed, c.spec.train.max_steps) for c in cells] == [(4, 3), (5, 3)]
    with pytest.raises(SpecError, match=r"seed: is a grid axis.*grid.axes.seed"):
        cells_of(tmp_path, "grid: {axes: {seed: [0, 1]}}", ("seed=3",))


def test_load_cells_validates_every_cell_and_names_it(tmp_path: Path) -> None:
    path = write_spec(tmp_path, """\
        grid:
          axes: {model.family: [lstm, transformer]}
        """)
    with pytest.raises(SpecError) as err:
        load_cells(path)
    assert err.value.path.startswith("model.params")
    assert "[grid cell 1 'family=transformer']" in str(err.value)
    name, cells = load_cells(write_spec(tmp_path, FAMILY_SEED))
    assert name == "tiny" and len(cells) == 4


def test_find_cell_by_index_name_or_id(tmp_path: Path) -> None:
    cells = cells_of(tmp_path, FAMILY_SEED)
    assert find_cell(cells, "2") is cells[2]
    assert find_cell(cells, "family=rnn,seed=1") is cells[1]
    assert find_cell(cells, cells[3].id[:8]) is cells[3]
    with pytest.raises(SpecError, match=r"did you mean 'family=rnn,seed=1'"):
        find_cell(cells, "family=rnn,sed=1")
    with pytest.raises(SpecError, match="out of range"):
        find_cell(cells, "9")

