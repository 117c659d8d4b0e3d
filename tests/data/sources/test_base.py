"""What every file-backed source shares: files, globs and folders, split names, first records."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.data.sources import SOURCES, check_source
from lmbench.errors import SpecError

from ..helpers import data_spec, write_lines


@pytest.mark.parametrize("field", ["path", "files"])
def test_missing_file_and_empty_glob(tmp_path: Path, field: str) -> None:
    missing = str(tmp_path / "nope.txt")
    spec = data_spec(source="text", **({"path": missing} if field == "path" else {"files": {"train": missing}}))
    with pytest.raises(SpecError) as err:
        check_source(spec)
    assert err.value.path == ("data.path" if field == "path" else "data.files.train")
    assert "not found" in err.value.message
    with pytest.raises(SpecError, match="no file matches") as err:
        check_source(data_spec(source="text", path=str(tmp_path / "*.nothing")))
    assert err.value.path == "data.path"


def test_path_required_and_split_names_checked(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        check_source(data_spec(source="text"))
    assert err.value.path == "data.path"
    f = str(write_lines(tmp_path / "t.txt", ["x"]))
    with pytest.raises(SpecError, match="did you mean 'validation'") as err:
        check_source(data_spec(source="text", files={"train": f, "valid": f}))
    assert err.value.path == "data.files.valid"
    with pytest.raises(SpecError, match="needs a train file"):
        check_source(data_spec(source="text", files={"test": f}))


def test_unknown_source_has_a_hint() -> None:
    with pytest.raises(SpecError, match="did you mean 'jsonl'") as err:
        SOURCES.get("jsnl")
    assert err.value.path == "data.source"


def test_json_check_reads_only_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('[{"summary": "ok"},\n' + "{broken json" * 1000, "utf-8")
    check_source(data_spec(source="json", path=str(path), text_field="summary"))
