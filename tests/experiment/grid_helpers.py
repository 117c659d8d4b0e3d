"""Spec helpers shared by tests/experiment/test_grid.py and test_launch.py: a tiny base spec plus a grid block."""

from __future__ import annotations

import textwrap
from pathlib import Path

TINY = """\
name: tiny
model: {family: lstm, params: {d_hidden: 8, num_layers: 1}}
train: {max_steps: 2}
tracking: {backends: [none]}
"""


def write_spec(tmp_path: Path, grid: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(TINY + textwrap.dedent(grid))
    return path


FAMILY_SEED = """\
grid:
  axes:
    model.family: [rnn, lstm]
    seed: [0, 1]
"""
