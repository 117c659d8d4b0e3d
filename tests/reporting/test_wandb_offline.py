"""The offline W&B reader on `.wandb` files written here in LevelDB's log format (what wandb's core writes)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from ..wandb_records import offline_runs, read_offline_history, read_wandb_records

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(payload: bytes, pos: int) -> bytes:
    """`payload` as log chunks starting at file offset `pos`, split across 32 KiB blocks as LevelDB does."""
    out, first = b"", True
    while True:
        left = BLOCK - pos % BLOCK
        if left < 7:  # no room for a chunk header: zero trailer, next block
            out, pos = out + b"\0" * left, pos + left
            continue
        piece, payload = payload[: left - 7], payload[left - 7:]
        kind = (FULL if first else LAST) if not payload else (FIRST if first else MIDDLE)
        out += struct.pack("<IHB", zlib.crc32(piece), len(piece), kind) + piece
        pos += 7 + len(piece)
        first = False
        if not payload:
            return out


def _records() -> list[bytes]:
    from wandb.proto import wandb_internal_pb2

    history = wandb_internal_pb2.Record()
    history.history.item.add(key="train_loss", value_json="2.5")
    history.history.item.add(key="step", value_json="10")
    big = wandb_internal_pb2.Record()  # longer than a block: FIRST + MIDDLE + LAST chunks
    big.summary.update.add(key="samples", value_json=json.dumps("x" * 70_000))
    config = wandb_internal_pb2.Record()
    config.config.update.add(key="seed", value_json="3")
    done = wandb_internal_pb2.Record()
    done.exit.exit_code = 0
    return [r.SerializeToString() for r in (history, big, config, done)]


def _write_log(path: Path, records: list[bytes]) -> None:
    data = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
    for payload in records:
        data += _chunks(payload, len(data))
    path.write_bytes(data)


def test_records_read_back_across_blocks(tmp_path: Path) -> None:
    run = tmp_path / "wandb" / "offline-run-20261130_000000-abc"
    run.mkdir(parents=True)
    _write_log(run / "run-abc.wandb", _records())
    assert offline_runs(tmp_path) == [run]
    history, summary, config = read_offline_history(run, wait_s=0)
    assert history == [{"train_loss": 2.5, "step": 10}] and config == {"seed": 3}
    assert summary == {"samples": "x" * 70_000}


def test_a_record_still_being_written_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "run.wandb"
    _write_log(path, _records()[:2])
    path.write_bytes(path.read_bytes()[:-100])  # the second record is torn
    assert [r.WhichOneof("record_type") for r in read_wandb_records(path)] == ["history"]


def test_a_log_without_its_header_yet_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "run.wandb"
    for written in (b"", b":W&"):  # created, header not (fully) written: what a reader can race into
        path.write_bytes(written)
        assert list(read_wandb_records(path)) == []


def test_not_a_wandb_log(tmp_path: Path) -> None:
    path = tmp_path / "x.wandb"
    path.write_bytes(b"PK\x03\x04 not a wandb file")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        list(read_wandb_records(path))
