"""W&B offline runs read back without the network: the `.wandb` transaction log of `run_dir/wandb/*run-*`.

`wandb sync` uploads these files; reading them here lets a test (or a curious user) check what an offline run
recorded (history rows, summary, config) on a machine with no W&B account.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def offline_runs(run_dir: Path) -> list[Path]:
    """W&B run folders under run_dir/wandb (offline-run-* and run-*), oldest first."""
    root = Path(run_dir) / "wandb"
    return sorted(p for p in root.glob("*run-*") if p.is_dir() and not p.is_symlink())


def read_wandb_records(wandb_file: Path) -> Iterator[Any]:
    """Yield the protobuf `Record`s of a `.wandb` transaction log (what `wandb sync` uploads).

    wandb >= 0.2x dropped its Python reader (the Go core reads these files); the format is LevelDB's log format
    behind a 7-byte ":W&B" header: 32 KiB blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first,
    3 middle, 4 last), each record a serialized `wandb_internal_pb2.Record`.
    """
    from wandb.proto import wandb_internal_pb2

    block = 32768
    data = Path(wandb_file).read_bytes()
    if len(data) < 7:  # wandb's core has created the file but not written its header yet
        return
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B":
        raise ValueError(f"{wandb_file} is not a W&B transaction log")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / zero padding
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            return
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_offline_history(run_path: Path, wait_s: float = 15.0) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                                   dict[str, Any]]:
    """(history rows, final summary, config) of one offline W&B run folder, read from its `.wandb` file.

    wandb's core process may still be writing the file when `run.finish()` returns, so this waits up to `wait_s`
    seconds for the final `exit` record (then reads whatever is there).
    """
    deadline = time.monotonic() + wait_s
    while True:
        records = [r for f in sorted(Path(run_path).glob("*.wandb")) for r in read_wandb_records(f)]
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    history, summary, config = [], {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind in ("config", "run"):  # wandb.init(config=...) arrives inside the run record
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({i.key: json.loads(i.value_json) for i in updates if i.key != "_wandb"})
    return history, summary, config


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)
