"""The `hf` source on datasets the tests write (save_to_disk folders, folders of data files); never the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.data.corpus import split_names
from lmbench.data.sources import check_source, make_source
from lmbench.errors import SpecError

from ..helpers import data_spec, write_jsonl


def texts(spec, split: str = "train") -> list[str]:
    return [d.text for d in make_source(spec).documents(split)]


def test_hf_saved_to_disk_dataset(tmp_path: Path) -> None:
    import datasets

    rows = {"train": [f"train story {i}" for i in range(5)], "validation": ["val a", "val b"]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v, "n": list(range(len(v)))})
                          for k, v in rows.items()}).save_to_disk(str(tmp_path / "saved"))
    spec = data_spec(source="hf", path=str(tmp_path / "saved"))
    check_source(spec)
    assert split_names(spec) == ["train", "validation"]
    assert texts(spec, "validation") == rows["validation"]
    streamed = data_spec(source="hf", path=str(tmp_path / "saved"), streaming=True)
    assert texts(streamed, "train") == rows["train"]
    with pytest.raises(SpecError, match="did you mean 'text'") as err:
        check_source(data_spec(source="hf", path=str(tmp_path / "saved"), text_field="txt"))
    assert err.value.path == "data.text_field"


def test_hf_local_folder_of_files_with_valid_split(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    write_jsonl(tmp_path / "ds" / "train.jsonl", [{"text": f"t{i}"} for i in range(4)])
    write_jsonl(tmp_path / "ds" / "validation.jsonl", [{"text": "v0"}])
    spec = data_spec(source="hf", path=str(tmp_path / "ds"))
    check_source(spec)
    assert split_names(spec) == ["train", "validation"]
    assert texts(spec, "validation") == ["v0"]
    sliced = data_spec(source="hf", path=str(tmp_path / "ds"), files={"train": "train[:2]", "validation": "validation"})
    assert texts(sliced, "train") == ["t0", "t1"]


def test_hf_check_never_touches_the_network() -> None:
    """A hub id that is not in the local cache: field names cannot be checked cheaply, so check() passes."""
    check_source(data_spec(source="hf", path="nobody/not-a-cached-dataset", text_field="anything"))
