"""The device's practical peaks, measured in the suite's own run: bf16 and fp32 (TF32 off) matmul FLOP/s and the
memory copy bandwidth; with the environment (GPU, driver, CUDA, library versions). The MFU figures of
gpu_train.py divide by the bf16 figure measured here.

    python scripts/bench/gpu_peaks.py --out /tmp/work/peaks.json            # 8192^3 matmuls, 4 GiB copies
    python scripts/bench/gpu_peaks.py --out /tmp/work/peaks.json --smoke    # CPU, small sizes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Results, copy_bytes_per_s, environment, matmul_flops_per_s, pick_device, say, tf32  # noqa: E402


def measure_peaks(device: torch.device, smoke: bool) -> dict[str, float]:
    n = 512 if smoke else 8192
    copy_bytes = (32 << 20) if smoke else (4 << 30)
    peaks = {"matmul_n": n, "copy_bytes": copy_bytes}
    peaks["bf16_flops"] = matmul_flops_per_s(torch.bfloat16, n, device)
    with tf32(False):
        peaks["fp32_flops"] = matmul_flops_per_s(torch.float32, n, device, reps=3 if smoke else 5)
    if device.type == "cuda":
        with tf32(True):
            peaks["tf32_flops"] = matmul_flops_per_s(torch.float32, n, device, reps=5)
    peaks["copy_bytes_per_s"] = copy_bytes_per_s(copy_bytes, device)
    return peaks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--smoke", action="store_true", help="small sizes (CPU)")
    args = p.parse_args(argv)
    device = pick_device()
    results = Results(args.out, section="peaks", device=str(device), env=environment())
    peaks = measure_peaks(device, args.smoke)
    results.set(peaks=peaks, complete=True)
    say(f"peaks on {device}: bf16 {peaks['bf16_flops'] / 1e12:.1f} TFLOP/s, fp32 {peaks['fp32_flops'] / 1e12:.2f} "
        f"TFLOP/s, copy {peaks['copy_bytes_per_s'] / 1e9:.0f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
