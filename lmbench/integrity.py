"""Files written whole and checked before use: manifests of sizes and xxh3 checksums, fsync of files and folders.

Checkpoints and the token cache record a manifest of their files when they are written (the checksum is
computed while the file is read back for its fsync, at ~8 GB/s) and verify it before they are used, so a
truncated, zeroed or garbled file is found and named instead of loading silently wrong numbers.

    manifest = write_manifest_of(folder, exclude=("best",))   # {relative path: [bytes, xxh3-128 hex]}
    problem = check_manifest(folder, manifest)               # None, or "model.safetensors: 4,096 bytes, expected ..."
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import xxhash

CHUNK = 1 << 22

Manifest = dict[str, list]  # relative path -> [size in bytes, xxh3-128 hex digest]


def file_digest(path: Path, *, fsync: bool = False) -> str:
    """xxh3-128 hex digest of a file's bytes (and, with `fsync`, the file flushed to disk first)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        if fsync:
            os.fsync(f.fileno())
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _files(folder: Path, exclude: Iterable[str]) -> list[Path]:
    skip = set(exclude)
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] not in skip)


def manifest_of(folder: Path, *, exclude: Iterable[str] = (), fsync: bool = False) -> Manifest:
    """{relative path: [size, digest]} of every file under `folder` except those under the `exclude` names."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, file_digest(p, fsync=fsync)]
            for p in _files(folder, exclude)}


def check_manifest(folder: Path, manifest: Manifest, *, checksums: bool = True) -> str | None:
    """None when every file of `manifest` is in `folder` with its size (and checksum); else what is wrong with
    the first file that differs, naming it."""
    folder = Path(folder)
    for name, (size, digest) in manifest.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{path} has {actual:,} bytes, expected {size:,} (truncated or overwritten)"
        if checksums and file_digest(path) != digest:
            return f"{path} does not match its checksum (its bytes were changed after it was written)"
    return None
