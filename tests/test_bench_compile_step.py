"""scripts/bench/compile_step.py: the compile seconds and the steps after which compiling pays back, by hand."""

from __future__ import annotations

import pytest

from . import bench_scripts


@pytest.fixture(scope="module")
def cs():  # noqa: ANN201
    return bench_scripts.load("compile_step")


def test_compile_seconds_and_payback(cs) -> None:  # noqa: ANN001
    got = cs.payback(compiled_first3_s=31.5, eager=1.0, compiled=0.5)  # 30 s of compiling, 0.5 s saved a step
    assert got == {"eager_s_per_step": 1.0, "compiled_s_per_step": 0.5, "speedup": 2.0, "compile_s": 30.0,
                   "payback_steps": 60.0}
    assert cs.payback(compiled_first3_s=13.0, eager=1.0, compiled=1.0)["payback_steps"] is None  # never
