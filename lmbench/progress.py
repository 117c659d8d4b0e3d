"""Progress bars for the long parts besides training (whose bar lives in the trainer): evaluation passes and
sampling. On a terminal only (tqdm's `disable=None`), on the main process only, gone when done (`leave=False`),
so logs and captured output stay clean."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any


def bar(total: int | None, desc: str, unit: str, *, main: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None if main else True, mininterval=1.0,
                dynamic_ncols=True, file=sys.stderr)


@contextlib.contextmanager
def quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` (and its children) silent below ERROR inside the block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
