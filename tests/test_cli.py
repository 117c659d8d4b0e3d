"""The command line: every command is declared and reachable, overrides after flags, one-line errors."""

from __future__ import annotations

import importlib

import pytest

from lmbench.cli import HANDLERS, build_parser, main


def test_every_command_has_a_handler_that_exists() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(HANDLERS)
    for module, function in HANDLERS.values():
        assert callable(getattr(importlib.import_module(module), function))


def test_overrides_may_follow_flags(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run(args) -> int:
        seen.update(vars(args))
        return 0

    monkeypatch.setattr("lmbench.experiment.launch.cmd_run", fake_run)
    assert main(["run", "spec.yaml", "train.lr=1e-3", "--cell", "2", "seed=4", "--jobs", "3"]) == 0
    assert seen["overrides"] == ["train.lr=1e-3", "seed=4"] and (seen["cell"], seen["jobs"]) == ("2", 3)


def test_unknown_arguments_and_spec_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "spec.yaml", "--cell", "2", "--bogus"])
    assert info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmbench: error: ") and "not found" in err and err.count("\n") == 1
