"""Shared corpora for the tokenizer tests: small, varied (unicode, newlines, punctuation, odd whitespace)."""

from __future__ import annotations

import pytest

VARIED_TEXTS = [
    "Hello, world! It's (really) fine.",
    "Line one.\nLine two.\n\nA new paragraph after a blank line.\n",
    "  leading spaces, double  spaces and trailing ones  ",
    "Tabs\tand\ttabs; colons: semicolons; \"quotes\" and 'single quotes'.",
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, Ελληνικά, русский текст — “curly quotes” … ok?!",
    "Numbers 3.14, 1,000 and 12:30 -- e.g. U.S. prices ($5) [maybe] {braces} 50% off.",
    "Emoji 🙂 and symbols ©®™ ± ∑ ∞ → ←.",
]

CORPUS = [
    "Once upon a time there was a little fox. The fox liked to run in the forest.\n"
    "One day, the fox met a bear. \"Hello, bear!\" said the fox. The bear said: 'Hi!'\n\n"
    "They became friends (good friends) and played all day.",
    "The quick brown fox jumps over the lazy dog; the dog doesn't mind. It's 3.14 times lazier.",
] * 20 + VARIED_TEXTS * 3


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """Training documents: repeated stories plus every varied text (a fresh list per test would also do)."""
    return list(CORPUS)


@pytest.fixture(scope="session")
def varied_texts() -> list[str]:
    """Texts for round trips; each is made of characters that occur in `corpus`."""
    return list(VARIED_TEXTS)
