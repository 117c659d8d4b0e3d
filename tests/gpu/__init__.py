"""GPU tests (marked gpu): skipped without CUDA; `LMBENCH_GPU_TESTS_DEVICE=cpu` dry-runs them on the CPU.

    python -m pytest -m gpu tests/gpu -q                               # on a CUDA machine
    LMBENCH_GPU_TESTS_DEVICE=cpu python -m pytest -m gpu tests/gpu -q  # the same logic on the CPU
"""
