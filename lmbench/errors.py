"""User-facing errors: one readable line, exit code 2, no traceback (see cli.py)."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator
from typing import Any


class SpecError(ValueError):
    """A problem with the experiment spec or its inputs, found before any work starts.

    `path` is the dotted field path (``model.family``); the message names the bad value and what is allowed.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def did_you_mean(value: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'lstm'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choice_error(path: str, value: Any, choices: Iterable[str], what: str = "") -> SpecError:
    """`unknown model.family 'lstn' (did you mean 'lstm'?); choose from: gru, lstm, rnn`."""
    names = sorted(str(c) for c in choices)
    label = what or path
    return SpecError(path, f"unknown {label} {value!r}{did_you_mean(value, names)}; choose from: {', '.join(names)}")


def range_error(path: str, value: Any, allowed: str) -> SpecError:
    """`train.lr = -0.001 is out of range; allowed: > 0`."""
    return SpecError(path, f"{value!r} is out of range; allowed: {allowed}")


@contextlib.contextmanager
def under(prefix: str) -> Iterator[None]:
    """Re-raise a SpecError from the block with its path under `prefix`: `top_p` -> `sample.samplers[0].top_p`
    (for checks that do not know where their part sits in the spec or on the command line)."""
    try:
        yield
    except SpecError as err:
        raise SpecError(f"{prefix}.{err.path}" if err.path else prefix, err.message) from None
