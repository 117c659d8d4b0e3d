"""Fixtures for the sampling tests."""

from __future__ import annotations

import pytest

from lmbench.models.base import LanguageModel

from .helpers import tiny_model


@pytest.fixture(scope="module")
def hf_model() -> LanguageModel:
    return tiny_model("hf")
