"""Device plans and the device pool (lmbench/experiment/devices.py); the launcher's use of them is tested in
test_launch.py (cells on --devices through real worker processes)."""

from __future__ import annotations

import pytest

from lmbench.errors import SpecError
from lmbench.experiment.devices import DevicePool, parse_devices, plan_devices


def test_one_cell_per_visible_gpu_by_default() -> None:
    plan = plan_devices(None, None, None, available=["0", "1", "2", "3"])
    assert (plan.devices, plan.per_cell, plan.jobs, plan.notes) == (["0", "1", "2", "3"], 1, 4, [])


def test_without_gpus_jobs_only_divide_the_cpu() -> None:
    plan = plan_devices(None, None, None, available=[])
    assert (plan.assigns, plan.jobs) == (False, 1)
    assert plan_devices(3, None, None, available=[]).jobs == 3


def test_devices_restrict_the_pool_and_cells_over_k_gpus_run_len_over_k_at_once() -> None:
    plan = plan_devices(None, "1,3,0", 2, available=["0", "1", "2", "3"])
    assert (plan.devices, plan.per_cell, plan.jobs) == (["1", "3", "0"], 2, 1)
    assert "1 device(s) of 1,3,0 stay idle" in plan.notes[0]


def test_jobs_beyond_the_devices_are_lowered_and_say_why() -> None:
    plan = plan_devices(8, "0,1", None, available=[])
    assert plan.jobs == 2 and "--jobs 8 lowered to 2" in plan.notes[0]
    assert plan_devices(1, "0,1", None, available=[]).jobs == 1  # fewer jobs than devices: as asked


def test_uuids_are_device_ids() -> None:
    assert parse_devices("GPU-8f1c2d3e-aaaa,MIG-GPU-1/2/0", []) == ["GPU-8f1c2d3e-aaaa", "MIG-GPU-1/2/0"]


@pytest.mark.parametrize(("jobs", "devices", "per_cell", "available", "field", "says"), [
    (0, None, None, [], "--jobs", "0 is out of range; allowed: >= 1"),
    (None, "0,,1", None, [], "--devices", "not a comma-separated list"),
    (None, "cuda:0", None, [], "--devices", "'cuda:0' is not a GPU id"),
    (None, "0,1,0", None, [], "--devices", "0 listed twice"),
    (None, "0,5", None, ["0", "1"], "--devices", "5 not visible here; allowed: 0, 1"),
    (None, None, 2, [], "--gpus-per-cell", "no GPU is visible here; name the devices with --devices"),
    (None, "0,1", 3, [], "--gpus-per-cell", "3 is more than the 2 device(s) given (0,1); allowed: 1..2"),
    (None, "0", 0, [], "--gpus-per-cell", "0 is out of range"),
])
def test_bad_plans_name_the_flag_and_what_is_allowed(jobs: int | None, devices: str | None, per_cell: int | None,
                                                     available: list[str], field: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        plan_devices(jobs, devices, per_cell, available=available)
    assert err.value.path == field and says in err.value.message


def test_pool_never_hands_out_a_busy_device_and_returns_them_in_order() -> None:
    pool = DevicePool(["0", "1", "2", "3"], per_cell=2)
    assert pool.take("a") == ("0", "1") and pool.take("b") == ("2", "3")
    assert pool.take("c") is None  # both pairs busy: the cell waits
    pool.give_back("a")
    assert pool.take("c") == ("0", "1")
    pool.give_back("b")
    pool.give_back("c")
    assert pool.free == ["0", "1", "2", "3"] and pool.busy == {}
