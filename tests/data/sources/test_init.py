"""One shape for the source axis: each source's Config is the data.* fields it reads, resolved in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.data.sources import SOURCES, check_source, resolve_config, unread_fields
from lmbench.data.sources.hf import HFConfig
from lmbench.data.sources.local import JsonSource, PromptStoryConfig, TextConfig
from lmbench.errors import SpecError

from ..helpers import data_spec, write_lines


def test_each_source_gets_the_fields_it_reads(tmp_path: Path) -> None:
    text = resolve_config(data_spec(source="text", path="a.txt", unit="file", text_field="ignored"))
    assert text == TextConfig(path="a.txt", unit="file")
    story = resolve_config(data_spec(source="prompt_story", path="s.txt", prompt_path="p.txt"))
    assert story == PromptStoryConfig(path="s.txt", prompt_path="p.txt")
    assert resolve_config(data_spec(source="hf", path="roneneldan/TinyStories", streaming=True)) == HFConfig(
        path="roneneldan/TinyStories", streaming=True)


def test_every_source_config_defaults_to_the_data_spec_defaults() -> None:
    """A source sees exactly what the spec says: its Config's defaults are DataSpec's."""
    for name in SOURCES.names():
        assert resolve_config(data_spec(source=name)) == SOURCES.get(name).Config(), name


def test_a_bad_unit_names_the_field_and_the_choices() -> None:
    with pytest.raises(SpecError) as err:
        resolve_config(data_spec(source="text", path="a.txt", unit="lines"))
    assert err.value.path == "data.unit"
    assert "'lines'" in err.value.message and "did you mean 'line'" in err.value.message
    assert "choose from: file, line, separator" in err.value.message


def test_fields_the_source_does_not_read_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_lines(tmp_path / "t.txt", ["x", "y"]))
    assert unread_fields(data_spec(source="text", path=path, text_field="abstract", streaming=True)) == [
        "data.text_field", "data.streaming"]
    check_source(data_spec(source="text", path=path, text_field="abstract"))
    assert "data.text_field is not read by data.source 'text'" in capsys.readouterr().err
    check_source(data_spec(source="text", path=path))
    assert capsys.readouterr().err == ""


def test_json_and_jsonl_are_one_reader() -> None:
    assert SOURCES.get("json") is SOURCES.get("jsonl") is JsonSource
