"""`lmbench run` orchestration: running cells, skipping completed ones, failures, locks, --jobs, resuming.

Orchestration tests use a fake runner (FAKE_RUNNER below, passed as `lmbench run --runner module:function`): it
records every call in a JSON-lines log, can sleep, fail, and notes whether it found a checkpoint (a resume).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from lmbench.cli import main
from lmbench.experiment.grid import load_cells
from lmbench.experiment.locks import CellLock, is_locked
from lmbench.results import read_summary

from .grid_helpers import FAMILY_SEED, write_spec

REPO = Path(__file__).resolve().parents[2]

FAKE_RUNNER = '''
"""Stand-in for lmbench.training.runner.run_cell (tests/experiment/test_launch.py): logs calls, sleeps, fails, resumes.

FAKE_RUNS_LOG: JSON lines of calls; FAKE_SLEEP: seconds per cell; FAKE_FAIL: cell names (|-separated) that
raise; FAKE_DIVERGE: cell names that complete flagged diverged; FAKE_HOLD / FAKE_GATE: that cell waits until
the gate file exists.
"""
import json, os, time
from pathlib import Path


def _write(run_dir, data):
    tmp = run_dir / f".summary.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, run_dir / "summary.json")


def run_cell(spec, run_dir, *, cell_name, group, axes):
    run_dir = Path(run_dir)
    rank = int(os.environ.get("RANK", "0"))
    resumed = (run_dir / "checkpoint").exists()
    world_size = 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # as the real runner: one Accelerator over all ranks
        import torch
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        world_size = int(accelerator.reduce(torch.ones(1), reduction="sum").item())
        accelerator.wait_for_everyone()
    start = time.time()
    if rank == 0:
        with open(os.environ["FAKE_RUNS_LOG"], "a") as f:
            f.write(json.dumps({"cell": cell_name, "pid": os.getpid(), "resumed": resumed}) + "\\n")
        (run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        _write(run_dir, {"status": "running", "cell": cell_name})
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    while cell_name == os.environ.get("FAKE_HOLD") and not os.path.exists(os.environ["FAKE_GATE"]):
        time.sleep(0.02)  # held until the test opens the gate
    with open(os.environ["FAKE_RUNS_LOG"] + ".devices", "a") as f:  # every rank: which GPUs it saw, and when
        f.write(json.dumps({"cell": cell_name, "rank": rank, "world_size": world_size, "start": start,
                            "end": time.time(), "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    if cell_name in os.environ.get("FAKE_FAIL", "").split("|"):
        raise RuntimeError(f"boom in {cell_name}")
    summary = {"status": "completed", "cell": cell_name, "group": group, "resumed": resumed, "runner_axes": axes,
               "world_size": world_size, "seed": spec.seed, "family": spec.model.family,
               "num_threads": spec.train.num_threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "results_dir": spec.tracking.results_dir}
    if cell_name in os.environ.get("FAKE_DIVERGE", "").split("|"):
        summary.update(diverged=True, divergence_reason="final validation loss 13.6 is not below the untrained 9.6")
    if rank == 0:
        _write(run_dir, summary)
    return summary
'''


# ---------------------------------------------------------------------------------------------------------------
# Running: fake runner


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The fake runner module on sys.path (and PYTHONPATH for subprocesses); .runs() lists its calls; every
    `lmbench run` of these tests passes `--runner` FAKE (RUNNER_ARGS)."""
    mods = tmp_path / "fakemods"
    mods.mkdir()
    (mods / "lmbench_fake_runner.py").write_text(FAKE_RUNNER)
    monkeypatch.syspath_prepend(str(mods))
    log = tmp_path / "runs.jsonl"
    log.touch()
    monkeypatch.setenv("FAKE_RUNS_LOG", str(log))
    for var in ("FAKE_FAIL", "FAKE_DIVERGE", "FAKE_SLEEP", "FAKE_HOLD", "RANK", "WORLD_SIZE", "LMBENCH_NUM_THREADS",
                "LMBENCH_LAUNCH_STARTED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mods), str(REPO), os.environ.get("PYTHONPATH", "")]))

    def runs() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    return types.SimpleNamespace(runs=runs, results=tmp_path / "results", root=tmp_path / "results" / "tiny")


RUNNER_ARGS = ("--runner", "lmbench_fake_runner:run_cell")


def run(spec: Path, fake: types.SimpleNamespace, *extra: str) -> int:
    return main(["run", str(spec), "--results", str(fake.results), "--no-report", *RUNNER_ARGS, *extra])


def test_run_completes_every_cell_then_skips_them(tmp_path: Path, fake: types.SimpleNamespace) -> None:
    spec = write_spec(tmp_path, FAMILY_SEED)
    assert run(spec, fake) == 0
    assert sorted(r["cell"] for r in fake.runs()) == sorted(c.name for c in load_cells(spec)[1])
    summary = read_summary(fake.root / "family=lstm,seed=1")
    assert summary is not None
    assert summary["status"] == "completed" and summary["axes"] == {"model.family": "lstm", "seed": 1}
    assert summary["runner_axes"] == {"model.family": "lstm", "seed": 1}  # the runner is told its cell's axes
    assert (summary["group"], summary["family"], summary["seed"]) == ("tiny", "lstm", 1)
    assert summary["results_dir"] == str(fake.results) and summary["cell_index"] == 3
    assert json.loads((fake.root / "cells.json").read_text())["cells"][3]["name"] == "family=lstm,seed=1"
    assert run(spec, fake) == 0
    assert len(fake.runs()) == 4  # nothing ran twice


def test_a_runner_that_cannot_be_imported_is_a_spec_error(tmp_path: Path, fake: types.SimpleNamespace,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, FAMILY_SEED)
    for target, says in (("no_colon", "not of the form module:function"), ("lmbench_nowhere:run", "cannot import"),
                         ("lmbench_fake_runner:missing", "cannot import")):
        assert main(["run", str(spec), "--results", str(fake.results), "--runner", target]) == 2
        assert "--runner: " in (err := capsys.readouterr().err) and says in err, err
    assert fake.runs() == [] and not fake.root.exists()  # refused before anything ran or was written


def test_rerun_resumes_a_killed_cell(tmp_path: Path, fake: types.SimpleNamespace) -> None:
    spec = write_spec(tmp_path, FAMILY_SEED)
    assert run(spec, fake) == 0
    killed = fake.root / "family=rnn,seed=1"  # as a killed run leaves it: status running, a checkpoint
    (killed / "summary.json").write_text(json.dumps({"status": "running"}))
    assert run(spec, fake) == 0
    last = fake.runs()[4:]
    assert last == [{"cell": "family=rnn,seed=1", "pid": os.getpid(), "resumed": True}]


def test_a_failing_cell_is_recorded_and_the_others_run(tmp_path: Path, fake: types.SimpleNamespace,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, FAMILY_SEED)
    monkeypatch.setenv("FAKE_FAIL", "family=rnn,seed=1")
    assert run(spec, fake) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "boom in family=rnn,seed=1" in out
    failed = read_summary(fake.root / "family=rnn,seed=1")
    assert failed is not None
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom in family=rnn,seed=1"
    assert failed["axes"] == {"model.family": "rnn", "seed": 1}
    assert "Traceback" in (fake.root / "family=rnn,seed=1" / "error.log").read_text()
    assert [(read_summary(fake.root / c) or {}).get("status") for c in
            ("family=rnn,seed=0", "family=lstm,seed=0", "family=lstm,seed=1")] == ["completed"] * 3
    monkeypatch.delenv("FAKE_FAIL")
    assert run(spec, fake) == 0  # the next run retries the failed cell only
    assert [r["cell"] for r in fake.runs()[4:]] == ["family=rnn,seed=1"]


def test_the_closing_message_names_diverged_cells(tmp_path: Path, fake: types.SimpleNamespace,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, FAMILY_SEED)
    monkeypatch.setenv("FAKE_DIVERGE", "family=rnn,seed=0")
    assert run(spec, fake) == 0  # a diverged cell completed: the grid did not fail
    out = capsys.readouterr().out
    assert "1 completed cell(s) diverged" in out
    assert "family=rnn,seed=0: diverged: final validation loss 13.6 is not below the untrained 9.6" in out
    assert out.count("diverged:") == 1


def test_cell_option_runs_one_cell_by_index_or_name(tmp_path: Path, fake: types.SimpleNamespace) -> None:
    spec = write_spec(tmp_path, FAMILY_SEED)
    assert run(spec, fake, "--cell", "2") == 0
    assert run(spec, fake, "--cell", "family=rnn,seed=1") == 0
    assert [r["cell"] for r in fake.runs()] == ["family=lstm,seed=0", "family=rnn,seed=1"]
    assert run(spec, fake, "--cell", "2") == 0  # completed: skipped
    assert len(fake.runs()) == 2
    assert run(spec, fake, "--cell", "nope") == 2


def test_spec_errors_stop_before_any_cell_runs(tmp_path: Path, fake: types.SimpleNamespace) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {model.family: [lstm, transformer]}}")
    assert run(spec, fake) == 2
    assert fake.runs() == []


def test_report_is_written_at_the_end(tmp_path: Path, fake: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1]}}")
    calls: list[Path] = []
    report = types.ModuleType("lmbench.reporting.report")
    def build_report(root: Path, out_dir: Path | None = None) -> Path:
        calls.append(Path(root))
        return Path(root) / "report.md"

    report.build_report = build_report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lmbench.reporting.report", report)
    assert main(["run", str(spec), "--results", str(fake.results), *RUNNER_ARGS]) == 0
    assert calls == [fake.root]
    assert main(["run", str(spec), "--results", str(fake.results), "--cell", "0", *RUNNER_ARGS]) == 0
    assert len(calls) == 1  # --cell: no report
    monkeypatch.setitem(sys.modules, "lmbench.reporting.report", None)  # not written yet: a warning, exit 0
    assert main(["run", str(spec), "--results", str(fake.results), *RUNNER_ARGS]) == 0
    assert "no report written" in capsys.readouterr().err


def test_a_cell_locked_by_another_launcher_waits_then_is_rechecked(tmp_path: Path, fake: types.SimpleNamespace,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2]}}")
    other = CellLock(fake.root / "seed=0")
    assert other.acquire(blocking=False)  # "another launcher" is running seed=0

    def finish_elsewhere() -> None:
        while len(fake.runs()) < 2:
            time.sleep(0.02)
        (fake.root / "seed=0" / "summary.json").write_text(json.dumps({"status": "completed"}))
        other.release()

    thread = threading.Thread(target=finish_elsewhere)
    thread.start()
    assert run(spec, fake) == 0
    thread.join()
    assert [r["cell"] for r in fake.runs()] == ["seed=1", "seed=2"]
    out = capsys.readouterr().out
    assert "seed=0: locked by another launcher" in out and "seed=0: already completed" in out


# ---------------------------------------------------------------------------------------------------------------
# Several processes


def launcher(spec: Path, fake: types.SimpleNamespace, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lmbench", "run", str(spec), "--results", str(fake.results), "--no-report",
           *RUNNER_ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.integration
def test_two_launchers_share_a_grid_without_running_a_cell_twice(tmp_path: Path, fake: types.SimpleNamespace,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2, 3, 4, 5]}}")
    gate = tmp_path / "gate"
    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    monkeypatch.setenv("FAKE_FAIL", "seed=4")
    monkeypatch.setenv("FAKE_HOLD", "seed=0")  # the first launcher holds seed=0 until the second is working
    monkeypatch.setenv("FAKE_GATE", str(gate))
    first = launcher(spec, fake)
    wait_for(lambda: len(fake.runs()) >= 1)
    second = launcher(spec, fake)
    wait_for(lambda: len(fake.runs()) >= 2)
    gate.touch()
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    cells = [r["cell"] for r in fake.runs()]
    assert sorted(cells) == [f"seed={i}" for i in range(6)], outputs  # every cell exactly once
    assert len({r["pid"] for r in fake.runs()}) == 2, outputs  # both did work
    assert [p.returncode for p in (first, second)] == [1, 1], outputs  # both report the failed cell
    statuses = [(read_summary(fake.root / f"seed={i}") or {}).get("status") for i in range(6)]
    assert statuses == ["completed"] * 4 + ["failed", "completed"]
    assert_each_says_what_it_ran(outputs, fake)


def assert_each_says_what_it_ran(outputs: list[str], fake: types.SimpleNamespace) -> None:
    """Each launcher's last line counts only what it ran, and names it: together they name every cell once."""
    everything = {f"seed={i}" for i in range(6)}
    said = []
    for out in outputs:
        last = [ln for ln in out.splitlines() if "6 cells:" in ln][-1]
        ran = last.split("ran here: ")[1] if "ran here: " in last else None
        said.append(everything if ran is None else set() if ran == "none" else set(ran.split(", ")))
    assert said[0] | said[1] == everything and not said[0] & said[1], outputs


@pytest.mark.integration
def test_two_launchers_with_jobs_say_which_cells_they_ran(tmp_path: Path, fake: types.SimpleNamespace,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2, 3, 4, 5]}}")
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    first = launcher(spec, fake, "--jobs", "2")
    wait_for(lambda: len(fake.runs()) >= 1)
    second = launcher(spec, fake, "--jobs", "2")
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert sorted(r["cell"] for r in fake.runs()) == [f"seed={i}" for i in range(6)], outputs
    assert_each_says_what_it_ran(outputs, fake)


@pytest.mark.integration
def test_a_killed_launcher_leaves_no_lock_and_its_cell_resumes(tmp_path: Path, fake: types.SimpleNamespace,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2]}}")
    monkeypatch.setenv("FAKE_SLEEP", "30")
    proc = launcher(spec, fake)
    wait_for(lambda: len(fake.runs()) >= 1)
    assert is_locked(fake.root / "seed=0")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not is_locked(fake.root / "seed=0")  # the kernel dropped the dead launcher's lock
    monkeypatch.setenv("FAKE_SLEEP", "0")
    again = launcher(spec, fake)
    assert again.wait(timeout=120) == 0, again.communicate()[0]
    runs = fake.runs()
    assert [(r["cell"], r["resumed"]) for r in runs] == [("seed=0", False), ("seed=0", True), ("seed=1", False),
                                                          ("seed=2", False)]


@pytest.mark.integration
def test_jobs_run_cells_in_workers_dividing_threads(tmp_path: Path, fake: types.SimpleNamespace) -> None:
    from lmbench.experiment.launch import cpu_count

    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1]}}")
    assert run(spec, fake, "--jobs", "2") == 0
    threads = max(1, cpu_count() // 2)
    for seed in (0, 1):
        summary = read_summary(fake.root / f"seed={seed}")
        assert summary is not None and summary["status"] == "completed"
        assert (summary["num_threads"], summary["omp_num_threads"]) == (threads, str(threads))
        assert (fake.root / f"seed={seed}" / "run.log").exists()
    assert len({r["pid"] for r in fake.runs()}) == 2 and os.getpid() not in {r["pid"] for r in fake.runs()}


GROUP_RUNNER = '''
"""A --runner that starts a one-process gloo group and never destroys it (GROUP_FAIL: then raises)."""
import os
import torch.distributed as dist


def run_cell(spec, run_dir, *, cell_name, group, axes):
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    if os.environ.get("GROUP_FAIL"):
        raise RuntimeError("boom")
    return {"status": "completed", "cell": cell_name}
'''


@pytest.mark.parametrize("fails", [False, True])
def test_a_process_group_left_by_the_runner_is_destroyed_before_exit(tmp_path: Path, fake: types.SimpleNamespace,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      fails: bool) -> None:
    """A gloo group alive at interpreter exit aborts its process now and then: lmbench run releases it."""
    import torch.distributed as dist

    (tmp_path / "fakemods" / "lmbench_group_runner.py").write_text(GROUP_RUNNER)
    if fails:
        monkeypatch.setenv("GROUP_FAIL", "1")
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1]}}")
    code = main(["run", str(spec), "--results", str(fake.results), "--no-report", "--runner",
                 "lmbench_group_runner:run_cell"])
    try:
        assert code == (1 if fails else 0)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.integration
@pytest.mark.slow
def test_one_cell_under_accelerate_launch_with_two_processes(tmp_path: Path, fake: types.SimpleNamespace) -> None:
    """What a Slurm array task runs: every rank runs the same cell; only rank 0 locks and decides."""
    spec = write_spec(tmp_path, FAMILY_SEED)
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--machine_rank", "0", "--main_process_port", str(29500 + os.getpid() % 1000), "--dynamo_backend", "no",
           "-m", "lmbench", "run", str(spec), "--cell", "1", "--results", str(fake.results), *RUNNER_ARGS]
    for _ in range(2):  # the second launch finds the cell completed: all ranks skip it together
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
    summary = read_summary(fake.root / "family=rnn,seed=1")
    assert summary is not None and (summary["status"], summary["world_size"]) == ("completed", 2)
    assert [r["cell"] for r in fake.runs()] == ["family=rnn,seed=1"]  # rank 0 logs; ran once
    assert "already completed" in done.stdout


E2E_SPEC = """\
name: tiny
data: {block_size: 16, limit: 200, cache_dir: CACHE}
model: {family: lstm, params: {d_hidden: 8, num_layers: 1}}
train: {max_steps: 3, batch_size: 4, eval_every: 3, lr: 1.0e-2}
eval: {batch_size: 4, untrained: true}
sample: {max_new_tokens: 5, prompts: ["The "]}
tracking: {backends: [none]}
grid: {axes: {model.family: [rnn, gru]}}
"""


@pytest.fixture
def e2e_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """E2E_SPEC written under tmp_path, for the real cell runner (no --runner stand-in)."""
    spec = tmp_path / "e2e.yaml"
    spec.write_text(E2E_SPEC.replace("CACHE", str(tmp_path / "cache")))
    return spec


@pytest.mark.integration
@pytest.mark.slow
def test_real_runner_end_to_end(tmp_path: Path, e2e_spec: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", str(e2e_spec), "--results", str(results), "--no-report"]) == 0
    from lmbench.data.cache import prepare_data
    from lmbench.experiment.grid import load_cells

    stats = prepare_data(load_cells(e2e_spec)[1][0].spec, progress=False).splits["validation"].stats
    for family in ("rnn", "gru"):
        summary = read_summary(results / "tiny" / f"family={family}")
        assert summary is not None and summary["status"] == "completed", summary
        assert summary["axes"] == {"model.family": family}
        # every validation token and the EOS after each document, less the first input: scored once
        assert summary["val_tokens"] == stats.num_tokens + stats.num_docs - 1
        assert summary["val_loss"] == pytest.approx(summary["val_nll_nats"] / summary["val_tokens"])
        assert summary["val_bpb"] == pytest.approx(summary["val_nll_nats"] / (math.log(2) * stats.num_bytes))
        assert summary["val_loss"] < summary["untrained_val_loss"]  # three updates at lr 1e-2 already help
    assert main(["run", str(e2e_spec), "--results", str(results)]) == 0  # resumes: both skipped, report written
    assert (results / "tiny" / "report.md").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_real_runner_one_cell_under_accelerate_launch(tmp_path: Path, e2e_spec: Path) -> None:
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(30500 + os.getpid() % 1000), "--dynamo_backend", "no",
           "-m", "lmbench", "run", str(e2e_spec), "--cell", "family=gru", "--results", str(tmp_path / "results")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = read_summary(tmp_path / "results" / "tiny" / "family=gru")
    assert summary is not None and (summary["status"], summary["world_size"]) == ("completed", 2), summary


# ---------------------------------------------------------------------------------------------------------------
# Devices: each running cell gets GPUs of its own (driven on CPU through an explicit --devices list)


def device_runs(fake: types.SimpleNamespace) -> list[dict]:
    log = Path(os.environ["FAKE_RUNS_LOG"] + ".devices")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def assert_never_shared(runs: list[dict]) -> None:
    """No device is held by two cells at overlapping times."""
    spans = [(d, r["start"], r["end"], r["cell"]) for r in runs for d in r["devices"].split(",")]
    for d, start, end, cell in spans:
        for d2, start2, end2, cell2 in spans:
            if d == d2 and cell != cell2:
                assert end <= start2 or end2 <= start, f"device {d} shared by {cell} and {cell2}"


@pytest.fixture
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher sees no GPU (as on CI), whatever machine runs the tests: --devices alone gives them."""
    import lmbench.experiment.devices as devices

    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.integration
def test_more_cells_than_devices_each_gets_one_of_its_own_and_a_failure_frees_it(
        tmp_path: Path, fake: types.SimpleNamespace, no_gpus: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2, 3, 4]}}")
    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    monkeypatch.setenv("FAKE_FAIL", "seed=1")
    assert run(spec, fake, "--devices", "0,1,2") == 1  # --jobs defaults to one per device
    out = capsys.readouterr().out
    assert "devices 0,1,2: 1 per cell, 3 cell(s) at once" in out
    runs = device_runs(fake)
    assert sorted(r["cell"] for r in runs) == [f"seed={i}" for i in range(5)]
    assert all(r["devices"] in ("0", "1", "2") for r in runs)
    assert_never_shared(runs)
    assert len({r["devices"] for r in runs}) == 3  # all three were used
    first = {r["cell"]: r for r in runs}
    later = [r for r in runs if r["cell"] in ("seed=3", "seed=4")]  # these waited for a device to come back
    assert all(r["start"] >= min(first[f"seed={i}"]["end"] for i in range(3)) - 0.05 for r in later)
    statuses = {s: (read_summary(fake.root / f"seed={s}") or {}).get("status") for s in range(5)}
    assert statuses == {0: "completed", 1: "failed", 2: "completed", 3: "completed", 4: "completed"}


@pytest.mark.integration
def test_jobs_above_the_devices_are_lowered(tmp_path: Path, fake: types.SimpleNamespace, no_gpus: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2]}}")
    assert run(spec, fake, "--devices", "3", "--jobs", "3") == 0
    assert "--jobs 3 lowered to 1" in capsys.readouterr().out
    runs = device_runs(fake)
    assert [r["devices"] for r in runs] == ["3", "3", "3"]
    assert_never_shared(runs)


@pytest.mark.integration
@pytest.mark.slow
def test_cells_over_two_gpus_each_run_two_ddp_processes_on_their_pair(tmp_path: Path, fake: types.SimpleNamespace,
                                                                       no_gpus: None) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1, 2]}}")
    assert run(spec, fake, "--devices", "0,1,2,3", "--gpus-per-cell", "2") == 0
    runs = device_runs(fake)
    assert sorted((r["cell"], r["rank"]) for r in runs) == [(f"seed={s}", k) for s in range(3) for k in (0, 1)]
    assert all(r["world_size"] == 2 and r["devices"] in ("0,1", "2,3") for r in runs)
    for s in range(3):  # both ranks of a cell saw the same pair
        assert len({r["devices"] for r in runs if r["cell"] == f"seed={s}"}) == 1
    assert_never_shared([r for r in runs if r["rank"] == 0])
    for s in range(3):
        summary = read_summary(fake.root / f"seed={s}")
        assert summary is not None and (summary["status"], summary["world_size"]) == ("completed", 2)


@pytest.mark.parametrize(("extra", "says"), [
    (("--cell", "0", "--devices", "0"), "--devices: assigns GPUs to the cells of a grid; --cell runs one cell"),
    (("--cell", "0", "--gpus-per-cell", "2"), "--gpus-per-cell: assigns GPUs"),
    (("--gpus-per-cell", "2",), "--gpus-per-cell: no GPU is visible here"),
    (("--devices", "0,0"), "--devices: 0 listed twice"),
    (("--devices", "0", "--gpus-per-cell", "2"), "--gpus-per-cell: 2 is more than the 1 device(s) given"),
])
def test_device_flags_are_checked_before_anything_runs(tmp_path: Path, fake: types.SimpleNamespace, no_gpus: None,
                                                       capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
                                                       says: str) -> None:
    spec = write_spec(tmp_path, "grid: {axes: {seed: [0, 1]}}")
    assert run(spec, fake, *extra) == 2
    assert says in capsys.readouterr().err
    assert not fake.results.exists() and fake.runs() == []
