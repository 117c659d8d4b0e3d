"""Model families behind one interface; importing this package registers every family in MODELS."""

from __future__ import annotations

from lmbench.models import hf  # noqa: F401  (registers the family)
from lmbench.models.base import MODELS, DecodeState, LanguageModel

__all__ = ["MODELS", "DecodeState", "LanguageModel"]
