"""Fixtures for the data tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmbench.spec import ExperimentSpec

from .helpers import experiment


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., ExperimentSpec]:
    """make_spec(tokenizer=None, **data fields) with the cache under tmp_path/cache."""

    def make(tokenizer: dict[str, Any] | None = None, **data: Any) -> ExperimentSpec:
        return experiment({"cache_dir": str(tmp_path / "cache"), **data}, tokenizer)

    return make
