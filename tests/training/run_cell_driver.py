"""Run one cell from a JSON spec in a fresh process (subprocess and `accelerate launch` tests).

    python tests/training/run_cell_driver.py SPEC_JSON RUN_DIR [--expect-world N] [--step-sleep S]

Asserts the world size it expects (accelerate's `--cpu --num_processes 2` silently starts one process), and
with --step-sleep slows every optimizer step so a test can kill the process mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lmbench.training.runner import run_cell  # noqa: E402
from lmbench.training.trainer import Trainer  # noqa: E402
from lmbench.spec import to_spec  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec_json")
    parser.add_argument("run_dir")
    parser.add_argument("--expect-world", type=int, default=None)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.step_sleep:
        real_step = Trainer.train_step

        def slow_step(self: Trainer, step: int) -> tuple[float, int, float | None]:
            time.sleep(args.step_sleep)
            return real_step(self, step)

        Trainer.train_step = slow_step  # type: ignore[method-assign]
    spec = to_spec(json.loads(Path(args.spec_json).read_text()))
    summary = run_cell(spec, Path(args.run_dir), cell_name=Path(args.run_dir).name)
    if args.expect_world is not None:
        assert summary["world_size"] == args.expect_world, f"expected {args.expect_world} processes: {summary}"
    print("WORLD", summary["world_size"], "STATUS", summary["status"], flush=True)
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
