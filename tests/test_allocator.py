"""lmbench.allocator: freed buffers stay in the heap (no page faults per allocation), and user settings win."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

CHILD = """
import resource, sys
import numpy as np
from lmbench.allocator import keep_freed_memory
set_ = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
if sys.argv[2] == "batch":
    for _ in range(200):  # the pattern of building a packed batch: a few 0.5 MiB arrays made and freed per round
        a = np.ones((64, 1025))
        b = np.cumsum(a, axis=1)
        c = np.where(a + b > 3, a, b)
        del a, b, c
else:
    for _ in range(20):  # a training step's large buffers: 64 MiB (LSTM gates at 64 x 128 x 2048), over any mmap threshold
        a = np.ones(8 << 20)
        b = a * 2
        del a, b
print(set_, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, env: dict[str, str] | None = None, pattern: str = "batch") -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, pattern], capture_output=True, text=True, check=True,
                         env=env)
    flag, count = out.stdout.split()
    return flag, int(count)


def test_freed_buffers_are_reused_without_page_faults() -> None:
    """200 rounds of half-MiB arrays: glibc's defaults map and unmap (or trim) them over and over (about 128 page
    faults per array, tens of thousands in all); with lmbench's settings the first round's pages are reused."""
    _, default = faults("default")
    flag, kept = faults("keep")
    assert flag == "True"
    assert default > 25_000 and kept < default / 20, (default, kept)


def test_buffers_above_any_mmap_threshold_are_reused_too() -> None:
    """20 rounds of two 64 MiB arrays (glibc serves blocks above 32 MiB with mmap whatever its threshold): by
    default every round maps and faults them in again (about 32,000 faults a round with 4 KiB pages, about 1,000
    with transparent huge pages); served from the heap, the first round's pages are reused."""
    _, default = faults("default", pattern="large")
    flag, kept = faults("keep", pattern="large")
    assert flag == "True"
    assert default > 10_000 and kept < default / 5, (default, kept)


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_"])
def test_the_users_malloc_settings_are_left_alone(name: str) -> None:
    import os

    flag, _ = faults("keep", env={**os.environ, name: "131072"})
    assert flag == "False"
