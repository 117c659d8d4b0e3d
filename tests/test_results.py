"""summary.json: one reader, one atomic writer, a status from a closed set; JSON written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbench.results import (COMPLETED, FAILED, STATUSES, Summary, read_json, read_summary, write_json_atomic,
                             write_summary)


def test_write_then_read(tmp_path: Path) -> None:
    summary = Summary(status=COMPLETED, cell="seed=0", axes={"seed": 0}, val_loss=1.5)  # type: ignore[typeddict-item]
    write_summary(tmp_path, summary)
    assert read_summary(tmp_path) == summary
    assert list(json.loads((tmp_path / "summary.json").read_text())) == sorted(summary)  # sorted keys
    assert not [p for p in tmp_path.iterdir() if p.name != "summary.json"]  # no temporary file left


def test_status_must_be_one_of_the_statuses(tmp_path: Path) -> None:
    assert STATUSES == ("running", "completed", "failed")
    with pytest.raises(ValueError, match="status must be one of running, completed, failed"):
        write_summary(tmp_path, {"status": "done"})  # type: ignore[typeddict-item]
    assert read_summary(tmp_path) is None


def test_unreadable_summary_reads_as_failed_saying_why(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"status": "comp')
    summary = read_summary(tmp_path)
    assert summary is not None and summary["status"] == FAILED and "unreadable" in summary["error"]
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert read_summary(tmp_path)["status"] == FAILED  # type: ignore[index]


def test_atomic_json_keeps_key_order_unless_asked(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "cells.json", {"grid": "g", "axes": {"z": 1, "a": 2}})
    assert list(json.loads((tmp_path / "cells.json").read_text())["axes"]) == ["z", "a"]  # grid order
    write_json_atomic(tmp_path / "s.json", {"z": 1, "a": Path("p")}, sort_keys=True)
    assert (tmp_path / "s.json").read_text() == '{\n  "a": "p",\n  "z": 1\n}\n'
    assert read_json(tmp_path / "missing.json") is None and read_json(tmp_path / "s.json") == {"a": "p", "z": 1}
