"""Which GPUs each concurrently running cell of `lmbench run --jobs N` gets (`--devices`, `--gpus-per-cell`).

On a machine with GPUs every running cell gets devices of its own through `CUDA_VISIBLE_DEVICES`: `k` of them
(`--gpus-per-cell k`, default 1), so at most `len(devices) // k` cells run at once, however large `--jobs` is.
A device is never shared by two running cells; a finished or failed cell's devices go back to the pool and the
next cell takes them. `--devices 0,2,3` restricts the launcher to those GPUs (ids as CUDA_VISIBLE_DEVICES
takes them: indices, or `GPU-`/`MIG-` UUIDs) and, given explicitly, works on any machine (the tests drive the
assignment on CPU that way). Without GPUs and without `--devices`, nothing is assigned: cells share the CPU
and `--jobs` divides its threads between them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lmbench.errors import SpecError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
_DEVICE_ID = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z/-]+")


def visible_gpus() -> list[str]:
    """The GPU ids this process may give out: CUDA_VISIBLE_DEVICES' entries when it is set (as written, so a
    child's CUDA_VISIBLE_DEVICES names the same physical devices), else 0..count-1; [] without CUDA.

    torch.cuda.device_count() asks NVML and does not create a CUDA context, so the launcher stays light."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return []
    listed = [d.strip() for d in os.environ.get(VISIBLE_ENV, "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def parse_devices(text: str, available: Sequence[str]) -> list[str]:
    """`--devices 0,1,3` -> ['0', '1', '3'], checked: well-formed, no repeats, and (where GPUs are visible)
    among them."""
    devices = [d.strip() for d in text.split(",")]
    if not devices or any(not d for d in devices):
        raise SpecError("--devices", f"{text!r} is not a comma-separated list of GPU ids, e.g. 0,1,2,3")
    for d in devices:
        if not _DEVICE_ID.fullmatch(d):
            raise SpecError("--devices", f"{d!r} is not a GPU id (an index such as 0, or a GPU-/MIG- UUID)")
    repeated = sorted({d for d in devices if devices.count(d) > 1})
    if repeated:
        raise SpecError("--devices", f"{', '.join(repeated)} listed twice; a device is never shared by two cells")
    if available:
        unknown = [d for d in devices if d not in available]
        if unknown:
            raise SpecError("--devices", f"{', '.join(unknown)} not visible here; allowed: {', '.join(available)}")
    return devices


@dataclass
class DevicePlan:
    """How a grid launch uses the machine: the devices to give out (empty on CPU), devices per cell, and how
    many cells run at once."""

    devices: list[str]
    per_cell: int
    jobs: int
    notes: list[str] = field(default_factory=list)

    @property
    def assigns(self) -> bool:
        return bool(self.devices)


def plan_devices(jobs: int | None, devices: str | None, gpus_per_cell: int | None,
                 available: Sequence[str] | None = None) -> DevicePlan:
    """The plan for `--jobs`, `--devices` and `--gpus-per-cell` as given (None = not given). `available` is
    the visible GPUs (default: visible_gpus(); only asked when needed)."""
    if jobs is not None and jobs < 1:
        raise SpecError("--jobs", f"{jobs} is out of range; allowed: >= 1")
    if gpus_per_cell is not None and gpus_per_cell < 1:
        raise SpecError("--gpus-per-cell", f"{gpus_per_cell} is out of range; allowed: >= 1")
    if available is None:
        available = visible_gpus()
    pool = parse_devices(devices, available) if devices is not None else list(available)
    per_cell = gpus_per_cell or 1
    if not pool:
        if gpus_per_cell is not None:
            raise SpecError("--gpus-per-cell", "no GPU is visible here; name the devices with --devices")
        return DevicePlan([], 1, jobs or 1)
    if per_cell > len(pool):
        raise SpecError("--gpus-per-cell", f"{per_cell} is more than the {len(pool)} device(s) given "
                                           f"({','.join(pool)}); allowed: 1..{len(pool)}")
    slots = len(pool) // per_cell
    notes = []
    if len(pool) % per_cell:
        notes.append(f"{len(pool) % per_cell} device(s) of {','.join(pool)} stay idle: "
                     f"{len(pool)} is not a multiple of --gpus-per-cell {per_cell}")
    if jobs is not None and jobs > slots:
        notes.append(f"--jobs {jobs} lowered to {slots}: {len(pool)} device(s) / {per_cell} per cell "
                     "(a device is never shared by two running cells)")
    return DevicePlan(pool, per_cell, min(jobs, slots) if jobs is not None else slots, notes)


class DevicePool:
    """Devices handed to running cells: `take()` k free ones (None when fewer are free), `give_back()` them."""

    def __init__(self, devices: Sequence[str], per_cell: int) -> None:
        self.free = list(devices)
        self.per_cell = per_cell
        self.busy: dict[str, tuple[str, ...]] = {}  # cell name -> its devices

    def take(self, cell: str) -> tuple[str, ...] | None:
        if len(self.free) < self.per_cell:
            return None
        mine, self.free = tuple(self.free[: self.per_cell]), self.free[self.per_cell:]
        self.busy[cell] = mine
        return mine

    def give_back(self, cell: str) -> None:
        # Back in their original order at the front: the next cell gets the lowest free ids.
        returned = self.busy.pop(cell, ())
        self.free = list(returned) + self.free
