"""The command line: every command is declared and reachable, overrides after flags, one-line errors."""

from __future__ import annotations

import importlib
from pathlib import Path

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


LOGGING_SPEC = """\
name: talk
data: {{source: text, path: {corpus}, unit: line, block_size: 16, cache_dir: {cache}}}
tokenizer: {{kind: char}}
model: {{family: lstm, params: {{d_hidden: 8, num_layers: 1}}}}
train: {{max_steps: 2, batch_size: 4, eval_every: null}}
eval: {{batch_size: 4}}
sample: {{samplers: [{{kind: greedy}}], num_samples: 2, max_new_tokens: 3, prompts: ["line"]}}
tracking: {{backends: [none]}}
"""


def test_info_messages_by_default_warnings_only_with_q(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """lmbench's INFO messages reach stderr by default; -q keeps warnings only; -v works after the command."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i} of the corpus\n" for i in range(80)))
    spec = tmp_path / "talk.yaml"
    spec.write_text(LOGGING_SPEC.format(corpus=corpus, cache=tmp_path / "cache"))
    said = "lmbench: INFO: greedy is deterministic: one run per prompt instead of 2 samples"
    for i, (flags, shown) in enumerate([((), True), (("-q",), False), (("-v",), True)]):
        # -v/-q before the command for the first two, after it for the last
        argv = [*flags, "run", str(spec), "--results", str(tmp_path / f"r{i}"), "--no-report"]
        if flags == ("-v",):
            argv = argv[1:] + ["-v"]
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert (said in err) is shown, err[-2000:]
        assert ("INFO" in err) is shown


def test_other_ranks_say_only_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from lmbench.cli import configure_logging

    monkeypatch.setenv("RANK", "1")
    configure_logging(0)
    log = logging.getLogger("lmbench.somewhere")
    log.warning("a warning every rank would repeat")
    log.error("an error of rank 1")
    err = capsys.readouterr().err
    assert "a warning" not in err and "lmbench: ERROR: an error of rank 1" in err
    monkeypatch.setenv("RANK", "0")
    log.warning("said once")
    assert "lmbench: WARNING: said once" in capsys.readouterr().err
