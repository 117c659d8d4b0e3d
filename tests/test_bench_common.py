"""scripts/bench/common.py: the matmul peak probe stays short where a dtype is slow (bf16 on an AVX2-only CPU)."""

from __future__ import annotations

import pytest
import torch

from . import bench_scripts

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def common():  # noqa: ANN201
    return bench_scripts.load("common")


def probe_at(gflops: float):  # noqa: ANN201
    """A timed_s that reports a 256^3 product at `gflops` GFLOP/s."""
    return lambda fn, device: 2 * 256**3 / (gflops * 1e9)


@pytest.mark.parametrize(("gflops", "expected"), [(1.4, 512), (10.0, 1024), (200.0, 2048), (0.001, 256)])
def test_the_size_halves_until_one_product_takes_a_second(common, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                          gflops: float, expected: int) -> None:
    monkeypatch.setattr(common, "timed_s", probe_at(gflops))
    n = common.matmul_size(torch.bfloat16, 2048, CPU)
    assert n == expected
    assert 2 * n**3 / (gflops * 1e9) <= 1.0 or n == 256  # never below the probe


def test_off_the_cpu_and_at_small_sizes_the_size_is_kept(common, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(common, "timed_s", probe_at(0.001))
    assert common.matmul_size(torch.bfloat16, 8192, torch.device("cuda")) == 8192
    assert common.matmul_size(torch.bfloat16, 256, CPU) == 256


def test_train_throughput_measures_and_reports_the_shrunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    tt = bench_scripts.load("train_throughput")
    monkeypatch.setattr(tt, "matmul_size", lambda dtype, n, device: 64 if n == 2048 else n)
    sizes = []
    monkeypatch.setattr(tt, "matmul_flops_per_s", lambda dtype, n, device, reps: sizes.append((n, reps)) or 7.0)
    assert tt.matmul_peak(torch.bfloat16) == (7.0, 64)
    assert sizes == [(64, 5)]  # timed at 64^3, not 2048^3


def test_generation_times_the_peak_at_the_shrunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = bench_scripts.load("generation")
    monkeypatch.setattr(gen.common, "matmul_size", lambda dtype, n, device: 64 if n == 2048 else n)
    monkeypatch.setattr(gen.common, "read_bytes_per_s", lambda num_bytes, device: 1.0)
    monkeypatch.setattr(gen.common, "copy_bytes_per_s", lambda num_bytes, device: 1.0)
    sizes = []
    monkeypatch.setattr(gen.common, "matmul_flops_per_s", lambda dtype, n, device, reps: sizes.append(n) or 7.0)
    monkeypatch.setattr(gen, "onednn_flops_per_s", lambda dtype: 0.0)
    peaks = gen.machine_peaks(CPU, torch.bfloat16)
    assert sizes == [64] and peaks["matmul_flops_per_s"] == 7.0


def test_the_onednn_probe_skips_a_dtype_lmbench_does_not_pack_here(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = bench_scripts.load("generation")
    monkeypatch.setattr(gen, "packed_supports", lambda dtype: dtype != torch.bfloat16)
    assert gen.onednn_flops_per_s(torch.bfloat16) == 0.0
    assert gen.onednn_flops_per_s(torch.float32, rows=4, n=256, reps=1) > 0.0
