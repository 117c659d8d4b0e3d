"""The local sources (text, tables, prompt/story) on small files written by the tests, and the shared corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbench.data.corpus import iter_documents, split_names
from lmbench.data.sources import Document, check_source, first_record_fields, make_source
from lmbench.errors import SpecError

from ..helpers import data_spec, write_jsonl, write_lines

RECORDS = [{"summary": f"abstract {i}: we propose a model.", "title": f"paper {i}"} for i in range(12)]


def docs(spec, split: str = "train") -> list[Document]:
    return list(make_source(spec).documents(split))


def texts(spec, split: str = "train") -> list[str]:
    return [d.text for d in docs(spec, split)]


# ---------------------------------------------------------------------------------------------- text


def test_text_units(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first line\nsecond line\n\nfourth<|endoftext|>\n second story \n<|endoftext|>last", "utf-8")
    assert texts(data_spec(source="text", path=str(path), unit="line")) == [
        "first line", "second line", "", "fourth<|endoftext|>", " second story ", "<|endoftext|>last"]
    assert texts(data_spec(source="text", path=str(path), unit="file")) == [path.read_text("utf-8")]
    assert texts(data_spec(source="text", path=str(path), unit="separator")) == [
        "first line\nsecond line\n\nfourth", "second story", "last"]


def test_separator_split_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.data.sources import local

    monkeypatch.setattr(local, "CHUNK_CHARS", 7)  # separators straddle chunk boundaries
    stories = [f"story {i} " + "x" * (i + 1) for i in range(20)]
    path = tmp_path / "s.txt"
    path.write_text("\n<|endoftext|>\n".join(stories), "utf-8")
    assert texts(data_spec(source="text", path=str(path), unit="separator")) == stories


def test_text_glob_and_directory_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", "c.md"):
        write_lines(tmp_path / "d" / name, [name])
    assert texts(data_spec(source="text", path=str(tmp_path / "d" / "*.txt"), unit="file")) == ["a.txt\n", "b.txt\n"]
    assert texts(data_spec(source="text", path=str(tmp_path / "d"), unit="file")) == ["a.txt\n", "b.txt\n", "c.md\n"]


def test_text_native_split_files(tmp_path: Path) -> None:
    files = {s: str(write_lines(tmp_path / f"{s}.txt", [f"{s} {i}" for i in range(3)])) for s in ("train", "test")}
    spec = data_spec(source="text", files=files, val_fraction=0.0)
    assert split_names(spec) == ["train", "test"]
    assert texts(spec, "test") == ["test 0", "test 1", "test 2"]


# ---------------------------------------------------------------------------------------------- tables


def write_table(tmp_path: Path, kind: str, records: list[dict]) -> Path:
    import pandas as pd

    path = tmp_path / f"t.{kind}"
    if kind == "json":  # Kaggle's arxivData.json layout: one top-level list
        path.write_text(json.dumps(records, indent=1), "utf-8")
    elif kind == "jsonl":
        write_jsonl(path, records)
    elif kind == "csv":
        pd.DataFrame(records).to_csv(path, index=False)
    else:
        pd.DataFrame(records).to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "parquet"])
def test_table_sources(tmp_path: Path, kind: str) -> None:
    path = write_table(tmp_path, kind, RECORDS)
    spec = data_spec(source=kind, path=str(path), text_field="summary")
    check_source(spec)
    assert texts(spec) == [r["summary"] for r in RECORDS]
    assert first_record_fields(path, "json" if kind.startswith("json") else kind) == ["summary", "title"]


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "parquet"])
def test_absent_text_field_names_the_close_match(tmp_path: Path, kind: str) -> None:
    path = write_table(tmp_path, kind, RECORDS)
    with pytest.raises(SpecError) as err:
        check_source(data_spec(source=kind, path=str(path), text_field="summry"))
    assert err.value.path == "data.text_field"
    assert err.value.message == f"'summry' not in {path}; fields: summary, title (did you mean 'summary'?)"


# ---------------------------------------------------------------------------------------------- prompt/story


def test_prompt_story_two_files_with_replace(tmp_path: Path) -> None:
    stories = write_lines(tmp_path / "stories.txt", ["Once . <newline> The end .", "Second story ."])
    prompts = write_lines(tmp_path / "prompts.txt", ["[ WP ] A prompt <newline> here", "[ WP ] Two"])
    spec = data_spec(source="prompt_story", path=str(stories), prompt_path=str(prompts),
                     replace={"<newline>": "\n"}, val_fraction=0.0)
    check_source(spec)
    assert list(iter_documents(spec, "train")) == [Document("Once . \n The end .", "[ WP ] A prompt \n here"),
                                                   Document("Second story .", "[ WP ] Two")]


def test_prompt_story_misaligned_files(tmp_path: Path) -> None:
    stories = write_lines(tmp_path / "stories.txt", ["a", "b", "c"])
    prompts = write_lines(tmp_path / "prompts.txt", ["p", "q"])
    spec = data_spec(source="prompt_story", path=str(stories), prompt_path=str(prompts))
    with pytest.raises(SpecError, match="not aligned") as err:
        docs(spec)
    assert err.value.path == "data.prompt_path"


def test_prompt_story_table_and_checks(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "wp.jsonl", [{"prompt": f"p{i}", "story": f"s{i}"} for i in range(3)])
    spec = data_spec(source="prompt_story", path=str(path), text_field="story", prompt_field="prompt")
    check_source(spec)
    assert docs(spec) == [Document(f"s{i}", f"p{i}") for i in range(3)]
    with pytest.raises(SpecError, match="did you mean 'prompt'") as err:
        check_source(data_spec(source="prompt_story", path=str(path), text_field="story",
                                                    prompt_field="promt"))
    assert err.value.path == "data.prompt_field"
    with pytest.raises(SpecError, match="exactly one of prompt_path") as err:
        check_source(data_spec(source="prompt_story", path=str(path)))
    assert err.value.path == "data.prompt_path"


# ---------------------------------------------------------------------------------------------- shared data


SHARED_SPECS = {
    "tinyshakespeare": dict(source="text", path="tinyshakespeare/input.txt", unit="file", split="tail"),
    "wikitext-2": dict(source="text", files={"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt",
                                             "test": "wikitext-2/test.txt"}, unit="line", limit=300),
    "writingprompts": dict(source="prompt_story", path="writingprompts-automatants/colab_train.txt",
                           prompt_path="writingprompts-automatants/colab_train_prompts.txt",
                           replace={"<newline>": "\n"}, limit=200),
    "tinystories": dict(source="text", path="tinystories/tinystories_10k.txt", unit="separator", limit=300),
    "tinystories-val": dict(source="text", path="tinystories/tinystories_val.txt", unit="line", limit=300),
}


def _rooted(fields: dict, root: Path) -> dict:
    out = dict(fields)
    for key in ("path", "prompt_path"):
        if key in out:
            out[key] = str(root / out[key])
    if "files" in out:
        out["files"] = {k: str(root / v) for k, v in out["files"].items()}
    return out


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SHARED_SPECS))
def test_shared_corpora_load(shared_data: Path, name: str) -> None:
    spec = data_spec(**_rooted(SHARED_SPECS[name], shared_data))
    check_source(spec)
    per_split = {split: list(iter_documents(spec, split)) for split in split_names(spec)}
    assert set(per_split) >= {"train", "validation"}
    assert all(per_split.values())
    if name == "tinyshakespeare":
        train, val = per_split["train"][0].text, per_split["validation"][0].text
        assert len(train) == int(1_115_394 * 0.9) and train.startswith("First Citizen:")
        assert (shared_data / "tinyshakespeare/input.txt").read_text("utf-8") == train + val
    if name == "writingprompts":
        all_docs = per_split["train"] + per_split["validation"]
        assert len(all_docs) == 200 and all(d.prompt and "<newline>" not in d.text for d in all_docs)
    if name == "tinystories":
        assert per_split["train"][0].text.startswith("Once upon a time there was a little boy named Ben.")
        assert not any("<|endoftext|>" in d.text for d in per_split["train"])


def test_a_file_that_is_not_text_is_named_with_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"a" * 70_000 + b"\xff" + b"b" * 10)  # past the 64 KiB head that check_source decodes
    check_source(data_spec(source="text", path=str(path)))
    with pytest.raises(SpecError) as err:
        list(make_source(data_spec(source="text", path=str(path))).documents("train"))
    assert err.value.path == "data.encoding" and "byte 70,000 cannot be decoded" in err.value.message
    path.write_bytes(b"ab\xffcd")
    with pytest.raises(SpecError, match="byte 2 cannot be decoded"):
        check_source(data_spec(source="text", path=str(path)))
    assert [d.text for d in make_source(data_spec(source="text", path=str(path), encoding="latin-1"))
            .documents("train")] == ["ab\xffcd"]
