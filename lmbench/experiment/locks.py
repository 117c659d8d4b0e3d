"""Exclusive per-cell file locks, so that two launchers never run the same grid cell at once.

A lock is `fcntl.flock(LOCK_EX)` on `<run_dir>/.lock`. The kernel drops it when the holder exits, however it
exits (kill -9, OOM, node reboot), so a dead launcher never leaves a stale lock behind. The file itself is never
deleted (deleting a lock file races with a second process opening it); it holds "host pid time" of the last
holder, for messages only.

On a cluster the results folder must be on a file system with working flock: local disks and NFSv4 are fine
(Linux emulates flock with POSIX locks there), Lustre needs the `flock` mount option, and some FUSE mounts
silently grant every lock. Slurm array tasks each own one cell, so there locks only guard against overlaps (a
requeued task whose previous run is still dying, or a second `lmbench run` started by hand).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"


class CellLock:
    """An exclusive lock on one run directory, held while the cell runs.

        lock = CellLock(run_dir)
        if lock.acquire(blocking=False):
            try: ...
            finally: lock.release()
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True, note_holder: bool = True) -> bool:
        """Take the lock; False (without waiting) when `blocking` is False and another process holds it.

        `note_holder` writes "host pid time" into the lock file (a probe leaves the last holder's note alone).
        """
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if note_holder:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> str:
        """'host pid time' of the last holder, or '' when the lock file is absent or empty."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def __enter__(self) -> "CellLock":
        self.acquire(blocking=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """Whether another process holds the lock of `run_dir` right now (a probe: takes and drops it at once)."""
    lock = CellLock(run_dir)
    if not lock.path.exists():
        return False
    if lock.acquire(blocking=False, note_holder=False):
        lock.release()
        return False
    return True
