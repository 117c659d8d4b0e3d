"""Progress bars of evaluation and sampling (lmbench/progress.py): on a terminal, on the main process only."""

from __future__ import annotations

import io
import sys

import pytest

from lmbench.progress import bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "main", "shown"), [(True, True, True), (False, True, False), (True, False, False)])
def test_bar_shows_on_a_terminal_of_the_main_process(monkeypatch: pytest.MonkeyPatch, tty: bool, main: bool,
                                                     shown: bool) -> None:
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with bar(3, "evaluating", "batch", main=main) as progress:
        for _ in range(3):
            progress.update(1)
    assert ("evaluating" in stream.getvalue()) is shown
