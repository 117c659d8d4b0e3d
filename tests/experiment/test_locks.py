"""Cell locks: exclusive, released however the holder ends, probed without disturbing the holder's note."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmbench.experiment.locks import LOCK_NAME, CellLock, is_locked


def test_locks_are_exclusive_and_released(tmp_path: Path) -> None:
    first, second = CellLock(tmp_path), CellLock(tmp_path)
    assert first.acquire(blocking=False) and not second.acquire(blocking=False)
    assert is_locked(tmp_path) and str(os.getpid()) in first.holder()
    first.release()
    assert not is_locked(tmp_path) and second.acquire(blocking=False)
    second.release()


def test_a_probe_leaves_the_holders_note_alone(tmp_path: Path) -> None:
    with CellLock(tmp_path) as lock:
        note = lock.holder()
    assert not is_locked(tmp_path)  # probing takes and drops the lock at once...
    assert CellLock(tmp_path).holder() == note  # ...without writing its own note
    assert not is_locked(tmp_path / "never-locked") and not (tmp_path / "never-locked" / LOCK_NAME).exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = ("import sys, os; from lmbench.experiment.locks import CellLock; "
            f"assert CellLock({str(tmp_path)!r}).acquire(blocking=False); print('held', flush=True); os._exit(9)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "held" and done.returncode == 9  # died holding the lock, never released it
    assert not is_locked(tmp_path) and CellLock(tmp_path).acquire(blocking=False)
