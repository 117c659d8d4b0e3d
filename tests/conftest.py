"""Test-wide settings: no network, no W&B uploads, one thread per process (the machine has two cores)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# The corpora beside the checkout, or wherever LMBENCH_DATA points (the recipes read the same variable).
SHARED_DATA = Path(os.environ.get("LMBENCH_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """$LMBENCH_DATA or ../shared/data, or skip when neither is there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no corpora at {SHARED_DATA} (set LMBENCH_DATA or put ../shared beside this checkout)")
    return SHARED_DATA


GPU_TESTS_DEVICE = "LMBENCH_GPU_TESTS_DEVICE"  # "cpu": dry-run the gpu-marked tests on the CPU


def gpu_dry_run() -> bool:
    """LMBENCH_GPU_TESTS_DEVICE=cpu: run the gpu-marked tests on the CPU (their logic, not CUDA's numbers)."""
    return os.environ.get(GPU_TESTS_DEVICE, "").strip().lower() == "cpu"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the gpu-marked tests without CUDA, unless LMBENCH_GPU_TESTS_DEVICE=cpu asks for a dry run."""
    value = os.environ.get(GPU_TESTS_DEVICE, "").strip().lower()
    if value not in ("", "cpu"):
        raise pytest.UsageError(f"{GPU_TESTS_DEVICE}={value!r}: allowed: cpu (dry run) or unset")
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or gpu_dry_run():
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu_device() -> torch.device:
    """The device of the gpu-marked tests: cuda, or the CPU in a dry run (LMBENCH_GPU_TESTS_DEVICE=cpu)."""
    import torch

    if gpu_dry_run():
        if torch.cuda.is_available():
            pytest.skip(f"{GPU_TESTS_DEVICE}=cpu is a dry run for machines without CUDA (Accelerate would use it)")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda", torch.cuda.current_device())


@pytest.fixture(autouse=True)
def _lmbench_logger() -> Iterator[None]:
    """`lmbench.cli.main` configures the `lmbench` logger for a command line (its own handler, no propagation);
    put it back after each test, or caplog in later tests would see nothing."""
    import logging

    logger = logging.getLogger("lmbench")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
