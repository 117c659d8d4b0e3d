"""The benchmark scripts (scripts/bench/*.py) as modules, for the tests that pin their figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"


def load(name: str) -> ModuleType:
    """scripts/bench/<name>.py, imported once as `bench_<name>` (registered first: its dataclasses look their
    module up)."""
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
