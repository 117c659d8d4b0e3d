"""Process-wide glibc malloc settings for lmbench's own processes (the CLI calls `keep_freed_memory` first).

glibc serves allocations above its mmap threshold (128 KiB at start, adjusted as blocks are freed, at most 32 MiB)
with a fresh `mmap` and gives them back with `munmap` when freed, and trims the top of its heap whenever more than
twice that is free. A training step or a batch of numpy work allocates and frees the same buffers over and over
(activations, gradients, batch arrays), so every one of them costs page faults and system calls:
- building one 64 x 1024 packed batch took 1.2 ms that way and 0.25 ms with freed memory kept for reuse;
- the 140 s character LSTM recipe (64 x 128 windows, 1 x 512: its gate buffers are 64 MiB, above any mmap
  threshold) spent 12.5 s of 26 s in the kernel and trained at 30k characters/s; served from the heap, 1.0 s and
  48k characters/s.
So lmbench serves every allocation from the heap (`M_MMAP_MAX` 0: no mmap for large blocks) and keeps up to 256 MiB
free at its top (`M_TRIM_THRESHOLD`): freed buffers are reused, and a process holds at most that much more than it
uses at its top (memory freed below the top stays in the process for reuse, as any heap block does).
Settings the user made with MALLOC_MMAP_THRESHOLD_ / MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ are left alone, as
is any libc that is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic mmap threshold on 64-bit systems
TRIM_THRESHOLD = 256 << 20
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set the thresholds above on glibc; True when they were set (False elsewhere or when the user set them)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_MMAP_MAX, 0),
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)])
