"""`lmbench show` and `lmbench data`: a spec looked at without training it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbench.cli import main

GRID = """\
name: peek
data: {{source: text, path: {corpus}, unit: line, block_size: 16, cache_dir: {cache}}}
tokenizer: {{kind: char}}
model: {{family: lstm, params: {{d_hidden: 8, num_layers: 1}}}}
train: {{max_steps: 1}}
tracking: {{backends: [none]}}
grid: {{axes: {{model.family: [rnn, gru]}}}}
"""


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i} of the corpus\n" for i in range(60)))
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(corpus=corpus, cache=tmp_path / "cache"))
    return path


def test_show_lists_cells_data_and_model_sizes(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "grid peek: 2 cells" in out and "family=rnn" in out and "family=gru" in out
    assert "tokenizer: kind=char" in out and "block_size=16" in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("family=rnn ", "family=gru "))]
    params = {r[0]: r[4] for r in rows if len(r) > 4}  # cell family tokenizer vocab params ...
    assert set(params) == {"family=rnn", "family=gru"} and params["family=rnn"] != params["family=gru"]


def test_show_without_models_builds_nothing(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(grid), "--no-models"]) == 0
    assert "params" not in capsys.readouterr().out
    assert not (grid.parent / "cache").exists()  # the token cache is built only to size the models


def test_data_prints_statistics_and_writes_json(grid: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "stats" / "data.json"
    assert main(["data", str(grid), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    stats = json.loads(out_json.read_text())
    total_docs = sum(s["num_docs"] for s in stats["splits"].values())
    assert total_docs == 60 and stats["tokenizer"]["kind"] == "char" and not stats["reused"]
    assert "tokenizer: char" in printed and f"{stats['splits']['train']['num_tokens']:,}" in printed
    assert main(["data", str(grid)]) == 0 and "reused, nothing tokenized" in capsys.readouterr().out


def test_show_one_cell_prints_its_resolved_spec(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(grid), "--cell", "family=gru", "--no-models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# cell 1 family=gru (id ")
    assert "family: gru" in out and "family: rnn" not in out and "grid peek" not in out
    assert main(["show", str(grid), "--cell", "7", "--no-models"]) == 2
    assert "--cell" in capsys.readouterr().err


def test_every_flag_of_every_subcommand_has_help() -> None:
    import argparse

    from lmbench.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}" for name, parser in sub.choices.items()
               for action in parser._actions if not isinstance(action, argparse._HelpAction) and not action.help]
    assert missing == []
