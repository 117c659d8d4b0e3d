"""Reliability: bad inputs refused up front, damaged files recovered, kills at random points resumed exactly.

Three counts, each measured in real processes, plus the cost of verifying a 1 GB token cache:

1. Bad inputs: every case of tests/test_bad_inputs.py run as `python -m lmbench ...` in its own folder.
   Refused cleanly = exit code 2, exactly one line on stderr that names the field or file, no traceback.
   Wrote files = anything under the case's results folder afterwards.
2. Damaged files: tests/test_damaged_files.py (every file a run writes truncated / zeroed / garbled, then
   resumed or reported), one pytest process; recovered = the case passed.
3. Kills: a training process (tiny LSTM or transformer, 30 steps, checkpoint every 3) SIGKILLed at a random
   step, the same command run again; identical = the final metrics equal an uninterrupted run's, bit for bit.

    python scripts/bench/reliability.py                    # writes results/bench/reliability.{md,json}
    python scripts/bench/reliability.py --kills 4 --no-cache-cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.test_bad_inputs import CASES, Case, make_workspace, materialise  # noqa: E402
from tests.training.test_trainer import FINAL_KEYS, tiny_cfg  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
DRIVER = REPO / "tests" / "training" / "run_cell_driver.py"


# ------------------------------------------------------------------------------------------- bad inputs
def one_bad_input(case: Case, ws: dict[str, str], where: Path) -> dict[str, Any]:
    argv = materialise(case, ws, where)
    done = subprocess.run([sys.executable, "-m", "lmbench", *argv], capture_output=True, text=True, env=ENV,
                          timeout=300, cwd=where)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    results = where / "results"
    written = [str(p.relative_to(results)) for p in results.rglob("*")] if results.is_dir() else []
    clean = (done.returncode == 2 and len(lines) == 1 and lines[0].startswith("lmbench: error: ")
             and case.needle in lines[0] and "Traceback" not in done.stderr)
    return {"case": case.id, "exit": done.returncode, "clean": clean, "wrote": written,
            "stderr": lines[-1] if lines else ""}


def bad_inputs(tmp: Path, jobs: int) -> list[dict[str, Any]]:
    ws = make_workspace(tmp)
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda item: one_bad_input(item[1], ws, tmp / f"case{item[0]:03d}"), enumerate(CASES)))


# ------------------------------------------------------------------------------------------- damaged files
def damaged_files(tmp: Path) -> list[dict[str, Any]]:
    report = tmp / "damaged.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    str(REPO / "tests" / "test_damaged_files.py")], cwd=REPO, env=ENV, capture_output=True,
                   timeout=1800)
    cases = []
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        cases.append({"case": case.get("name"), "recovered": not failed})
    return cases


# ------------------------------------------------------------------------------------------- kills
def kill_once(tmp: Path, family: str, kill_at: int, straight: dict[str, Any] | None) -> dict[str, Any]:
    cfg = tiny_cfg(tmp, family, train={"max_steps": 30, "checkpoint_every": 3, "eval_every": 10},
                   sample={"samplers": []})
    spec = tmp / "spec.json"
    spec.write_text(json.dumps(cfg))
    if straight is None:
        subprocess.run([sys.executable, str(DRIVER), str(spec), str(tmp / "straight")], env=ENV, check=True,
                       capture_output=True, timeout=600)
        straight = json.loads((tmp / "straight" / "summary.json").read_text())
    run_dir = tmp / f"killed-{kill_at}"
    cmd = [sys.executable, str(DRIVER), str(spec), str(run_dir)]
    proc = subprocess.Popen([*cmd, "--step-sleep", "0.05"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the logged step tells where training is
        steps = [json.loads(ln).get("step", 0) for ln in metrics.read_text().splitlines()
                 if ln.endswith("}")] if metrics.exists() else []
        if steps and max(steps) >= kill_at:
            break
        time.sleep(0.01)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd, env=ENV, capture_output=True, timeout=600)
    resumed = json.loads((run_dir / "summary.json").read_text())
    same = all(resumed.get(k) == straight.get(k) for k in FINAL_KEYS)
    return {"family": family, "kill_at_step": kill_at, "killed_mid_run": killed,
            "resumed_from": resumed.get("resumed_from"), "identical": same and resumed.get("status") == "completed"}


def kills(tmp: Path, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, straight = [], {}
    for i in range(count):
        family = ("lstm", "transformer")[i % 2]
        folder = tmp / family
        folder.mkdir(exist_ok=True)
        result = kill_once(folder, family, rng.randint(2, 27), straight.get(family))
        straight.setdefault(family, json.loads((folder / "straight" / "summary.json").read_text()))
        out.append(result)
    return out


# ------------------------------------------------------------------------------------------- cache cost
def cache_cost(tmp: Path, size: int = 1 << 30) -> dict[str, float]:
    """Seconds to checksum a 1 GB token file when it is written, and to verify it by size and by checksum."""
    from lmbench.integrity import check_manifest, manifest_of

    folder = tmp / "cache"
    folder.mkdir()
    with open(folder / "train.tokens.bin", "wb") as f:
        block = os.urandom(1 << 24)
        for _ in range(size // len(block)):
            f.write(block)
    t0 = time.perf_counter()
    manifest = manifest_of(folder, fsync=True)
    t1 = time.perf_counter()
    assert check_manifest(folder, manifest, checksums=False) is None
    t2 = time.perf_counter()
    assert check_manifest(folder, manifest, checksums=True) is None
    t3 = time.perf_counter()
    return {"bytes": size, "write_checksum_s": t1 - t0, "verify_sizes_s": t2 - t1, "verify_checksums_s": t3 - t2}


# ------------------------------------------------------------------------------------------- report
def markdown(result: dict[str, Any], command: str) -> str:
    bad, dmg, kl, cost = result["bad_inputs"], result["damaged_files"], result["kills"], result["cache_cost"]
    clean = sum(r["clean"] for r in bad)
    wrote = [r for r in bad if r["wrote"]]
    lines = [
        "# Reliability: bad inputs, damaged files, kills", "",
        f"Command: `{command}`  ", f"Machine: {result['machine']}; {result['date']}", "",
        "| what | tried | good outcome | count |", "|---|---|---|---|",
        f"| bad inputs (real processes) | {len(bad)} | refused cleanly: exit 2, one line naming the field or "
        f"file, no traceback | {clean} |",
        f"| bad inputs | {len(bad)} | wrote nothing under the results folder | {len(bad) - len(wrote)} |",
        f"| damaged files (truncated / zeroed / garbled, then resumed or reported) | {len(dmg)} | recovered "
        f"(warning naming the file) or one-line error, never a wrong number or less progress | "
        f"{sum(r['recovered'] for r in dmg)} |",
        f"| SIGKILL at a random step, then the same command | {len(kl)} | final metrics identical to an "
        f"uninterrupted run | {sum(r['identical'] for r in kl)} |", "",
    ]
    if cost:
        gb = cost["bytes"] / 2**30
        lines += [f"Token cache integrity at {gb:.0f} GiB: checksum while writing {cost['write_checksum_s']:.2f} s, "
                  f"verify sizes {cost['verify_sizes_s'] * 1e3:.2f} ms, verify xxh3 checksums "
                  f"{cost['verify_checksums_s']:.2f} s (file in the page cache; a cold read adds the disk's "
                  "read time). Sizes are checked at every open, checksums when a cell opens a cache.", ""]
    not_clean = [r for r in bad if not r["clean"] or r["wrote"]]
    lines += ["## Bad inputs not refused cleanly", ""] + (
        [f"- {r['case']}: exit {r['exit']}, wrote {r['wrote'][:3]}, stderr: `{r['stderr'][:200]}`"
         for r in not_clean] or ["None."]) + [""]
    lines += ["## Kills", "", "Killed as soon as metrics.jsonl showed the step (it logs every 2 steps), so the last "
              "checkpoint (every 3 steps) is the step resumed from.", "",
              "| family | kill after step | resumed from | identical |", "|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['kill_at_step']} | {r['resumed_from']} | {r['identical']} |" for r in kl]
    lines += ["", "## Damaged-file cases not recovered", ""]
    lines += [f"- {r['case']}" for r in dmg if not r["recovered"]] or ["None."]
    lines += ["", "## Every bad input", "", "| case | exit | stderr |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['exit']} | `{r['stderr'][:160].replace('|', '/')}` |" for r in bad]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="bad-input processes at once")
    p.add_argument("--no-cache-cost", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "reliability")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in ("bad", "damaged", "kills", "cost"):
            (tmp / name).mkdir()
        started = time.time()
        result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                             f"Python {platform.python_version()}",
                  "date": time.strftime("%Y-%m-%d"),
                  "bad_inputs": bad_inputs(tmp / "bad", args.jobs),
                  "damaged_files": damaged_files(tmp / "damaged"),
                  "kills": kills(tmp / "kills", args.kills, args.seed),
                  "cache_cost": None if args.no_cache_cost else cache_cost(tmp / "cost")}
        result["seconds"] = round(time.time() - started, 1)
    command = "python scripts/bench/reliability.py" + "".join(
        f" {a}" for a in sys.argv[1:] if not a.startswith("--out"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result, command))
    print(args.out.with_suffix(".md").read_text())
    bad_ok = all(r["clean"] and not r["wrote"] for r in result["bad_inputs"])
    return 0 if bad_ok and all(r["recovered"] for r in result["damaged_files"]) and \
        all(r["identical"] for r in result["kills"]) else 1


if __name__ == "__main__":
    sys.exit(main())
