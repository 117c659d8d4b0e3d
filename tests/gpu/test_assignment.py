"""Device assignment by `lmbench run --jobs 2` on a real GPU box: every cell sees exactly one GPU, one that
exists here, never one held by another running cell; `--devices` puts the cells on the GPU it names.

The cells run a recording runner (tests/gpu/device_runner.py) through the real CLI in a subprocess. Dry run
(LMBENCH_GPU_TESTS_DEVICE=cpu): no GPU is visible, so a plain `--jobs 2` assigns nothing, and `--devices 0`
still hands out device 0 (the launcher takes an explicit list on any machine); only what CUDA itself reports
(device count, name, a kernel) is left unchecked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lmbench.results import read_summary

from ..experiment.grid_helpers import write_spec
from .device_runner import HOLD_ENV
from .helpers import subprocess_env

pytestmark = pytest.mark.gpu

RUNNER = "tests.gpu.device_runner:record_devices"
CELLS = ("seed=0", "seed=1")


def visible_ids() -> list[str]:
    """The GPU ids this process may hand out, as CUDA_VISIBLE_DEVICES names them (else 0..count-1)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def run_grid(where: Path, *flags: str) -> list[dict[str, Any]]:
    """`lmbench run` of a 2-cell grid with the recording runner -> what each cell saw (both completed)."""
    where.mkdir()
    spec = write_spec(where, "grid: {axes: {seed: [0, 1]}}")
    cmd = [sys.executable, "-m", "lmbench", "run", str(spec), "--results", str(where / "results"), "--no-report",
           "--runner", RUNNER, *flags]
    done = subprocess.run(cmd, cwd=where, env=subprocess_env(**{HOLD_ENV: "1"}), capture_output=True, text=True,
                          timeout=300)
    root = where / "results" / "tiny"
    logs = "".join((root / c / "run.log").read_text() for c in CELLS if (root / c / "run.log").exists())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + logs[-3000:]
    for cell in CELLS:
        summary = read_summary(root / cell)
        assert summary is not None and summary["status"] == "completed", (cell, summary)
    return [json.loads((root / c / "devices.json").read_text()) for c in CELLS]


def physical(record: dict[str, Any], parent: list[str]) -> list[str]:
    """The devices a cell could use: its CUDA_VISIBLE_DEVICES, or all of the parent's when it was left as is."""
    if record["visible"] is None or record["visible"] == os.environ.get("CUDA_VISIBLE_DEVICES"):
        return parent
    return record["visible"].split(",")


def assert_never_shared(records: list[dict[str, Any]], parent: list[str]) -> None:
    """Cells running at overlapping times saw disjoint devices."""
    a, b = records
    if a["start"] < b["end"] and b["start"] < a["end"]:
        shared = set(physical(a, parent)) & set(physical(b, parent))
        assert not shared, f"devices {shared} held by two running cells: {records}"


def test_each_running_cell_gets_one_gpu_of_its_own(tmp_path: Path, gpu_device: torch.device) -> None:
    cuda = gpu_device.type == "cuda"
    parent = visible_ids()
    assert bool(parent) == cuda
    plain = run_grid(tmp_path / "jobs2", "--jobs", "2")
    for record in plain:
        assigned = record["visible"] != os.environ.get("CUDA_VISIBLE_DEVICES")
        if assigned:  # a worker on devices of its own: exactly one, one that exists here
            assert record["visible"] in parent, (record, parent)
        if cuda:  # one GPU per cell: its own, or the only one of a one-GPU box, used in the launcher's process
            assert (record["cuda"], record["count"], record["sum"]) == (True, 1, 6.0), record
    assert_never_shared(plain, parent)

    first = parent[0] if parent else "0"
    named = run_grid(tmp_path / "devices", "--jobs", "2", "--devices", first)
    assert [r["visible"] for r in named] == [first, first]
    assert_never_shared(named, parent)  # one device, two cells: one after the other
    if cuda:
        props = torch.cuda.get_device_properties(parent.index(first))
        uuid = str(getattr(props, "uuid", "")) or None
        for record in named:
            assert (record["count"], record["sum"], record["name"]) == (1, 6.0, props.name), record
            assert uuid is None or record["uuid"] is None or record["uuid"] == uuid, (record, uuid)
