"""A cell runner for tests/gpu/test_assignment.py (`lmbench run --runner tests.gpu.device_runner:record_devices`):
trains nothing, records which GPUs the cell saw (CUDA_VISIBLE_DEVICES, torch's count, the device's name and
UUID, a kernel run on it) and when, in run_dir/devices.json, and completes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

HOLD_ENV = "LMBENCH_TEST_HOLD_S"  # seconds each cell holds its devices (default 1: overlaps become visible)


def record_devices(spec: Any, run_dir: Path, *, cell_name: str, group: str | None, axes: dict[str, Any]) -> dict:
    import torch

    start = time.time()
    info: dict[str, Any] = {"cell": cell_name, "pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "cuda": torch.cuda.is_available(), "count": 0, "name": None, "uuid": None, "sum": None}
    if info["cuda"]:
        info["count"] = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        info["name"], info["uuid"] = props.name, str(getattr(props, "uuid", "")) or None
        info["sum"] = float(torch.arange(4.0, device="cuda").sum())  # a kernel runs on the device it was given
    time.sleep(float(os.environ.get(HOLD_ENV, "1")))
    info["start"], info["end"] = start, time.time()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "devices.json").write_text(json.dumps(info))
    return {"status": "completed", "cell": cell_name, "group": group, "axes": axes}
