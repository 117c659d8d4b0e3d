"""The Hub on machines without network (lmbench/hub.py): cache first, one line fast when it cannot be fetched."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from lmbench import hub
from lmbench.cli import main
from lmbench.errors import SpecError


@pytest.fixture(autouse=True)
def _fresh_reachability() -> Any:
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def recording_loader(fail_local: bool) -> tuple[list[bool], Any]:
    calls: list[bool] = []

    def load(*, local_files_only: bool) -> str:
        calls.append(local_files_only)
        if local_files_only and fail_local:
            raise OSError("not in the cache")
        return "loaded"

    return calls, load


def test_a_cached_object_never_asks_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda: pytest.fail("the network was asked"))
    calls, load = recording_loader(fail_local=False)
    assert hub.from_hub(load, field="f", what="tokenizer", name="gpt2") == "loaded" and calls == [True]


def test_not_cached_and_unreachable_is_one_line_naming_it_and_how_to_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    calls, load = recording_loader(fail_local=True)
    with pytest.raises(SpecError) as err:
        hub.from_hub(load, field="tokenizer.params.name_or_path", what="tokenizer", name="gpt2")
    assert calls == [True] and err.value.path == "tokenizer.params.name_or_path"
    assert "tokenizer 'gpt2' is not in the local Hugging Face cache and the Hub cannot be reached" in err.value.message
    assert "lmbench data SPEC" in err.value.message and "\n" not in str(err.value)


def test_not_cached_but_reachable_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    calls, load = recording_loader(fail_local=True)
    assert hub.from_hub(load, field="f", what="model", name="gpt2") == "loaded" and calls == [True, False]


def test_offline_mode_never_opens_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("a socket was opened"))
    assert hub.hub_reachable() is False


def test_an_unresolvable_host_is_known_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid")  # .invalid never resolves
    started = time.perf_counter()
    assert hub.hub_reachable() is False
    assert time.perf_counter() - started < hub.CONNECT_TIMEOUT_S + 1


SPEC = """\
name: offline
data: {data}
tokenizer: {tokenizer}
model: {{family: lstm, params: {{d_hidden: 8, num_layers: 1}}}}
train: {{max_steps: 1}}
tracking: {{backends: [none]}}
"""


def test_show_prints_the_spec_and_one_line_for_an_uncached_hub_tokenizer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = tmp_path / "c.txt"
    corpus.write_text("one line\nanother line\n" * 20)
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(data=f"{{source: text, path: {corpus}, cache_dir: {tmp_path / 'cache'}}}",
                                tokenizer="{kind: hf, params: {name_or_path: nobody/not-cached-anywhere}}"))
    started = time.perf_counter()
    assert main(["show", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "name: offline" in out
    assert ("model sizes not shown: tokenizer.params.name_or_path: tokenizer 'nobody/not-cached-anywhere' is not "
            "in the local Hugging Face cache and HF_HUB_OFFLINE is set") in out
    assert time.perf_counter() - started < 30


def test_an_uncached_hub_dataset_offline_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(data="{source: hf, path: nobody/no-such-dataset}", tokenizer="{kind: char}"))
    assert main(["data", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmbench: error: data.path: ") and len(err.splitlines()) == 1
    assert "nobody/no-such-dataset" in err
