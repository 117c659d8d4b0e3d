"""`lmbench run` over the cells of a grid (grid.py turns a spec's `grid:` block into those cells).

`lmbench run` validates every cell before training, skips cells whose summary.json says completed (re-running
resumes a grid; the runner resumes a killed cell from its checkpoint), records a failed cell and goes on, locks
each cell (locks.py) so that launchers sharing a results folder never run one cell twice, and exits 1 when a
cell failed.

A cell runner is any callable `runner(spec, run_dir, *, cell_name, group, axes) -> Summary` (`CellRunner`); the
default trains the cell (`lmbench.training.runner.run_cell`). `run_cells(..., runner=...)` takes another one from
Python, and `lmbench run --runner module:function` from the command line (also passed to `--jobs` workers); the
launcher adds cell, cell_index, cell_id, spec_name and axes to the summary it returns.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmbench.errors import SpecError
from lmbench.experiment.devices import VISIBLE_ENV, DevicePlan, DevicePool, plan_devices
from lmbench.experiment.grid import SINGLE_CELL_NAME, Cell, find_cell, load_cells
from lmbench.experiment.locks import CellLock, is_locked
from lmbench.results import (CELL_FILE, CELLS_FILE, COMPLETED, FAILED, SUMMARY_FILE, Summary, read_json,
                             read_summary, write_json_atomic, write_summary)
from lmbench.spec import ExperimentSpec

THREADS_ENV = "LMBENCH_NUM_THREADS"  # set by `run --jobs` for its workers: torch threads per cell
STARTED_ENV = "LMBENCH_LAUNCH_STARTED"  # set by `run --jobs` for its workers: the parent's start time
LAUNCH_ENV = "LMBENCH_LAUNCH_ID"  # set by `run --jobs` for its workers: which launcher they work for


class CellRunner(Protocol):
    """Trains one cell into `run_dir` and returns its summary (lmbench.training.runner.run_cell)."""

    def __call__(self, spec: ExperimentSpec, run_dir: Path, *, cell_name: str, group: str | None,
                 axes: dict[str, Any]) -> Summary: ...


def default_runner() -> CellRunner:
    """lmbench's own cell runner (imported on use: it brings torch)."""
    from lmbench.training.runner import run_cell

    return run_cell


def import_runner(target: str) -> CellRunner:
    """The runner named `module:function` (`lmbench run --runner`), for custom runners and tests."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SpecError("--runner", f"{target!r} is not of the form module:function")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError("--runner", f"cannot import {target!r}: {exc}") from None


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask under Slurm/taskset, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _Ranks:
    """The process's place under `accelerate launch` (RANK / WORLD_SIZE), and rank 0's decisions shared with all.

    Only rank 0 takes cell locks and reads summaries; it posts each verdict in the launcher's (torchrun agent's)
    key-value store, so every rank runs the same cells and the non-main ranks never touch a lock (no deadlock
    with `--cell` under several processes). The store is not a process group: the runner's Accelerator sets up
    its own as usual. Without an agent store (another launcher), every rank reads the summary itself.
    """

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._store: Any = None
        self._num_decisions = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _agent_store(self) -> Any:
        if self._store is None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            from datetime import timedelta

            from torch.distributed import PrefixStore, TCPStore

            client = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(days=30))  # rank 0 may wait hours for another launcher's lock
            run = f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
            self._store = PrefixStore(f"lmbench/{run}/", client)
        return self._store

    def decide(self, on_main: Callable[[], str], on_others: Callable[[], str]) -> str:
        """`on_main()` on rank 0, the same answer on every rank (`on_others()` where no store can share it)."""
        if self.world_size == 1:
            return on_main()
        store, key = self._agent_store(), f"verdict/{self._num_decisions}"
        self._num_decisions += 1
        if store is None:
            return on_main() if self.main else on_others()
        if self.main:
            try:
                verdict = on_main()
            except Exception as exc:  # tell the other ranks before raising, or they wait forever
                store.set(key, f"error:{exc}")
                raise
            store.set(key, verdict)
            return verdict
        verdict = store.get(key).decode()
        if verdict.startswith("error:"):
            raise RuntimeError(f"rank 0 failed to decide on a cell: {verdict[6:]}")
        return verdict


@dataclass
class _Launch:
    """What every cell of one `lmbench run` shares."""

    root: Path  # <results>/<grid name>
    results: Path  # <results>
    group: str | None
    runner: CellRunner | None  # None in the parent of --jobs workers (they run the cells)
    runner_target: str | None  # --runner module:function, passed on to workers
    ranks: _Ranks
    started: float  # failures recorded after this were made by a concurrent launcher: not retried
    num_threads: int | None  # torch threads per cell (set by --jobs), None = spec's own
    launch_id: str  # host:pid:start of this launcher (its --jobs workers share it), written into cell.json

    def run_dir(self, cell: Cell) -> Path:
        return self.root / cell.name


def _say(ctx: _Launch, cell: Cell | None, message: str) -> None:
    if ctx.ranks.main:
        where = f"[{cell.index}] {cell.name}: " if cell else ""
        print(f"lmbench: {where}{message}", flush=True)


def _verdict(run_dir: Path, started: float) -> str | None:
    """'done' / 'failed-elsewhere' when the cell needs no run by us, None when it must run."""
    summary = read_summary(run_dir)
    status = (summary or {}).get("status")
    if status == COMPLETED:
        return "done"
    if status == FAILED and (run_dir / SUMMARY_FILE).stat().st_mtime >= started:
        return "failed-elsewhere"  # a concurrent launcher ran it in our lifetime: running it again = twice
    return None


def _attempt(cell: Cell, ctx: _Launch, blocking: bool) -> str:
    """Lock, check and run one cell -> completed | failed | done | failed-elsewhere | locked."""
    run_dir = ctx.run_dir(cell)
    lock = CellLock(run_dir)

    def decide() -> str:
        if not lock.acquire(blocking=blocking):
            return "locked"
        verdict = _verdict(run_dir, ctx.started)
        if verdict:
            lock.release()
        return verdict or "run"

    verdict = ctx.ranks.decide(decide, lambda: _verdict(run_dir, ctx.started) or "run")
    if verdict != "run":
        return verdict
    try:
        return _run_locked(cell, run_dir, ctx)
    finally:
        lock.release()


def _runtime_spec(spec: ExperimentSpec, ctx: _Launch) -> ExperimentSpec:
    tracking = dataclasses.replace(spec.tracking, results_dir=str(ctx.results))
    train = spec.train
    if ctx.num_threads is not None:
        train = dataclasses.replace(train, num_threads=min(train.num_threads or ctx.num_threads, ctx.num_threads))
    return dataclasses.replace(spec, tracking=tracking, train=train)


def _cell_facts(cell: Cell) -> dict[str, Any]:
    return {"cell": cell.name, "cell_index": cell.index, "cell_id": cell.id, "spec_name": cell.spec.name,
            "axes": cell.axes}


def _run_locked(cell: Cell, run_dir: Path, ctx: _Launch) -> str:
    """Call the runner on a cell this launcher holds; record a failure instead of raising it."""
    assert ctx.runner is not None
    if ctx.ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / CELL_FILE, {**_cell_facts(cell), "launch": ctx.launch_id})
        _say(ctx, cell, "running" + (" (resuming from checkpoint)" if (run_dir / "checkpoint").exists() else ""))
    start = time.time()
    try:
        summary = ctx.runner(_runtime_spec(cell.spec, ctx), run_dir, cell_name=cell.name, group=ctx.group,
                             axes=cell.axes)
    except Exception as exc:  # KeyboardInterrupt/SystemExit pass: an interrupted cell resumes next time
        _record_failure(cell, run_dir, ctx, exc, time.time() - start)
        return FAILED
    status = _finish_summary(cell, run_dir, ctx, summary, time.time() - start)
    _say(ctx, cell, f"{status} in {time.time() - start:.1f} s")
    return status


def _finish_summary(cell: Cell, run_dir: Path, ctx: _Launch, summary: Any, wall_s: float) -> str:
    """Add the cell facts (axes, id, index) the runner does not know to summary.json; return its status."""
    on_disk = read_summary(run_dir)
    data: dict[str, Any] = dict(on_disk) if on_disk is not None else \
        (dict(summary) if isinstance(summary, dict) else {})
    data.setdefault("status", COMPLETED)
    data.setdefault("wall_s", wall_s)
    missing = {k: v for k, v in _cell_facts(cell).items() if data.get(k) in (None, {}) and v not in (None, {})}
    if ctx.ranks.main and (missing or on_disk is None):
        write_summary(run_dir, Summary(**{**data, **missing}))  # type: ignore[typeddict-item]
    return FAILED if data["status"] == FAILED else COMPLETED


def _record_failure(cell: Cell, run_dir: Path, ctx: _Launch, exc: Exception, wall_s: float) -> None:
    error = f"{type(exc).__name__}: {exc}"
    log = run_dir / ("error.log" if ctx.ranks.main else f"error.rank{ctx.ranks.rank}.log")
    run_dir.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} rank {ctx.ranks.rank}\n")
        f.write(traceback.format_exc())
    if ctx.ranks.main:
        summary = {**(read_summary(run_dir) or {}), **_cell_facts(cell),
                   "status": FAILED, "error": error, "wall_s": wall_s}
        write_summary(run_dir, Summary(**summary))  # type: ignore[typeddict-item]
        _say(ctx, cell, f"FAILED: {error} (traceback: {log})")


MESSAGES = {
    "done": "already completed, skipped",
    "failed-elsewhere": "failed in another launcher during this run; not retried (see its summary.json)",
}


def _run_serial(cells: Sequence[Cell], ctx: _Launch, wait_first: bool = False) -> dict[str, str]:
    """Run cells one after another; cells locked by another launcher are waited for at the end, then re-checked
    (completed there -> skipped; its launcher died -> run here, resuming its checkpoint)."""
    outcomes: dict[str, str] = {}
    deferred: list[Cell] = []
    for cell in cells:
        outcome = _attempt(cell, ctx, blocking=wait_first)
        if outcome == "locked":
            holder = CellLock(ctx.run_dir(cell)).holder()
            _say(ctx, cell, f"locked by another launcher ({holder}); re-checked at the end")
            deferred.append(cell)
            continue
        outcomes[cell.name] = outcome
        if outcome in MESSAGES:
            _say(ctx, cell, MESSAGES[outcome])
    for cell in deferred:
        _say(ctx, cell, "waiting for the other launcher")
        outcomes[cell.name] = _attempt(cell, ctx, blocking=True)
        if outcomes[cell.name] in MESSAGES:
            _say(ctx, cell, MESSAGES[outcomes[cell.name]])
    return outcomes


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port of one multi-GPU cell (cells running at once on
    one machine must not share one)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def worker_command(cell: Cell, args: Any, ctx: _Launch, num_processes: int = 1) -> list[str]:
    """`lmbench run SPEC ... --cell NAME` for one worker; over `num_processes` GPUs it runs under
    `accelerate launch --multi_gpu` (one DDP process per device the worker sees)."""
    lmbench = ["-m", "lmbench", "run", str(args.spec), *(args.overrides or []), "--cell", cell.name,
               "--results", str(ctx.results), "--no-report",
               *(["--runner", ctx.runner_target] if ctx.runner_target else [])]
    if num_processes == 1:
        return [sys.executable, *lmbench]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(num_processes), "--num_machines", "1", "--machine_rank", "0", "--main_process_port",
            str(free_port()), "--dynamo_backend", "no", *lmbench]


def _spawn(cell: Cell, args: Any, ctx: _Launch, env: dict[str, str],
           devices: tuple[str, ...] | None = None) -> subprocess.Popen:
    """Run one cell in a worker process (output to run_dir/run.log), on `devices` alone when given."""
    if devices is not None:
        env = {**env, VISIBLE_ENV: ",".join(devices)}
    cmd = worker_command(cell, args, ctx, num_processes=len(devices) if devices else 1)
    run_dir = ctx.run_dir(cell)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "run.log").open("a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    where = f" on GPU {','.join(devices)}" if devices is not None else ""
    _say(ctx, cell, f"started in worker pid {proc.pid}{where} (log: {run_dir / 'run.log'})")
    return proc


def _reap(cell: Cell, proc: subprocess.Popen, ctx: _Launch) -> str:
    run_dir = ctx.run_dir(cell)
    summary = read_summary(run_dir) or {}
    if proc.returncode == 0:
        ran_here = (read_json(run_dir / CELL_FILE) or {}).get("launch") == ctx.launch_id
        _say(ctx, cell, f"{summary.get('status', COMPLETED)}" + ("" if ran_here else " (by another launcher)"))
        return COMPLETED if ran_here else "done"
    if summary.get("status") != FAILED:  # the worker died before recording anything
        lock = CellLock(run_dir)
        if lock.acquire(blocking=False):
            try:
                facts = {**summary, **_cell_facts(cell), "status": FAILED,
                         "error": f"worker exited with code {proc.returncode}"}
                write_summary(run_dir, Summary(**facts))  # type: ignore[typeddict-item]
            finally:
                lock.release()
    _say(ctx, cell, f"FAILED (exit code {proc.returncode}; log: {run_dir / 'run.log'})")
    return FAILED


def _run_parallel(cells: Sequence[Cell], ctx: _Launch, args: Any, plan: DevicePlan) -> dict[str, str]:
    """Run up to `plan.jobs` cells at once, each in a worker process with cpu_count // jobs torch threads and,
    on GPUs, `plan.per_cell` devices of its own (a cell starts only when that many are free)."""
    num_jobs = min(plan.jobs, len(cells))
    pool = DevicePool(plan.devices, plan.per_cell) if plan.assigns else None
    threads = str(max(1, cpu_count() // num_jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, THREADS_ENV: threads,
           STARTED_ENV: repr(ctx.started), LAUNCH_ENV: ctx.launch_id}
    outcomes: dict[str, str] = {}
    queue, deferred, final = deque(cells), [], False
    running: dict[str, tuple[subprocess.Popen, Cell]] = {}
    try:
        while queue or running or deferred:
            if not queue and not running:  # second pass: workers wait for the other launchers' locks
                queue, deferred, final = deque(deferred), [], True
            while queue and len(running) < num_jobs:
                cell = queue.popleft()
                verdict = _verdict(ctx.run_dir(cell), ctx.started) if ctx.run_dir(cell).exists() else None
                if verdict:
                    outcomes[cell.name] = verdict
                    _say(ctx, cell, MESSAGES[verdict])
                elif not final and is_locked(ctx.run_dir(cell)):
                    _say(ctx, cell, "locked by another launcher; re-checked at the end")
                    deferred.append(cell)
                else:
                    devices = pool.take(cell.name) if pool is not None else None
                    if pool is not None and devices is None:  # cannot happen: jobs <= len(devices) // per_cell
                        raise RuntimeError(f"no free device for {cell.name}: {pool.busy}")
                    running[cell.name] = (_spawn(cell, args, ctx, env, devices), cell)
            for name, (proc, cell) in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    if pool is not None:
                        pool.give_back(name)
                    outcomes[name] = _reap(cell, proc, ctx)
            time.sleep(0.05 if running else 0)
    finally:
        for proc, _ in running.values():  # interrupted: stop our workers (their cells resume next time)
            proc.terminate()
        for proc, _ in running.values():
            proc.wait()
    return outcomes


def _write_report(root: Path) -> None:
    try:
        from lmbench.reporting.report import build_report
    except ModuleNotFoundError as exc:
        if exc.name != "lmbench.reporting.report":
            raise
        print("lmbench: warning: lmbench.reporting.report is not available; no report written", file=sys.stderr)
        return
    try:
        print(f"lmbench: report: {build_report(root)}")
    except Exception as exc:  # a broken report must not hide finished cells; `lmbench report` can redo it
        print(f"lmbench: warning: report failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _print_outcomes(ctx: _Launch, cells: Sequence[Cell], outcomes: dict[str, str]) -> list[Cell]:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    failed = [c for c in cells if outcomes.get(c.name) in (FAILED, "failed-elsewhere")]
    labels = {COMPLETED: "completed here", "done": "skipped (completed before or by another launcher)",
              FAILED: "failed", "failed-elsewhere": "failed elsewhere"}
    ran = [c.name for c in cells if outcomes.get(c.name) in (COMPLETED, FAILED)]
    line = f"{len(cells)} cells: " + ", ".join(f"{n} {labels.get(k, k)}" for k, n in counts.items())
    if len(ran) < len(cells):
        line += f"; ran here: {', '.join(ran) if ran else 'none'}"
    _say(ctx, None, line)
    for cell in failed:
        _say(ctx, cell, f"failed: {(read_summary(ctx.run_dir(cell)) or {}).get('error', '?')}")
    diverged = [(c, s) for c in cells if outcomes.get(c.name) in (COMPLETED, "done")
                and (s := read_summary(ctx.run_dir(c)) or {}).get("diverged")]
    if diverged:
        _say(ctx, None, f"{len(diverged)} completed cell(s) diverged or did not learn (listed apart in the report, "
                        "not ranked):")
        for cell, summary in diverged:
            _say(ctx, cell, f"diverged: {summary.get('divergence_reason', '?')}")
    return failed


def _check_jobs(args: Any, ranks: _Ranks) -> DevicePlan:
    """The launch plan from --jobs, --devices and --gpus-per-cell (devices.py), checked before anything runs.
    Under --cell or accelerate launch the process runs one cell on what it was given: no plan of its own."""
    jobs, devices, per_cell = (getattr(args, name, None) for name in ("jobs", "devices", "gpus_per_cell"))
    if jobs is not None and int(jobs) < 1:
        raise SpecError("--jobs", f"{jobs} is out of range; allowed: >= 1")
    single = "--cell runs one cell" if getattr(args, "cell", None) is not None else \
        "under accelerate launch each rank runs the same cell" if ranks.world_size > 1 else None
    if single:
        if jobs is not None and int(jobs) > 1:
            raise SpecError("--jobs", f"{jobs} jobs run several cells at once; {single} (drop one of them)")
        for flag, value in (("--devices", devices), ("--gpus-per-cell", per_cell)):
            if value is not None:
                raise SpecError(flag, f"assigns GPUs to the cells of a grid; {single} on the devices in "
                                      f"{VISIBLE_ENV} (drop one of them)")
        return DevicePlan([], 1, 1)
    return plan_devices(None if jobs is None else int(jobs), devices, per_cell)


def _results_root(path: str | Path) -> Path:
    """The results folder: a folder, or a path where one can be made (not a file, not under a file)."""
    results = Path(path)
    for parent in (results, *results.parents):
        if parent.exists() and not parent.is_dir():
            raise SpecError("--results", f"{results} is not a folder ({parent} is a file)")
    return results


def _check_data(cells: Sequence[Cell]) -> None:
    """The checks that need the data (empty splits, splits to evaluate, a block or batch larger than the
    data), once per distinct data and tokenizer, before any cell folder exists (this builds the token cache)."""
    from lmbench.validate import validate_data

    seen: set[str] = set()
    for cell in cells:
        key = json.dumps([dataclasses.asdict(cell.spec.data), dataclasses.asdict(cell.spec.tokenizer),
                          cell.spec.model.family, dataclasses.asdict(cell.spec.eval), cell.spec.train.batch_size],
                         sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            try:
                validate_data(cell.spec)
            except SpecError as err:
                raise SpecError(err.path, f"{err.message} [cell {cell.index} {cell.name!r}]") from None


def cmd_run(args: Any) -> int:
    """`lmbench run SPEC [key=value ...] [--cell NAME|INDEX] [--jobs N] [--results DIR] [--no-report]
    [--runner module:function]`."""
    target = getattr(args, "runner", None)
    return run_cells(args, runner=import_runner(target) if target else None, runner_target=target)


def release_process_group() -> None:
    """Destroy the default torch.distributed process group if a runner left one (a failed cell, or a --runner
    that never calls end_training). A gloo group still alive at interpreter exit aborts its process now and then
    ("terminate called without an active exception"), failing a launch whose cells all completed."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group (and no torch import to find that out)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_cells(args: Any, runner: CellRunner | None = None, runner_target: str | None = None) -> int:
    """Run the cells `args` names (the parsed `lmbench run` arguments) with `runner` (default: lmbench's own);
    returns the exit code. `runner_target` is the runner's module:function for --jobs workers."""
    started = float(os.environ.get(STARTED_ENV) or time.time())
    ranks = _Ranks()
    plan = _check_jobs(args, ranks)
    overrides = list(args.overrides or [])
    grid_name, cells = load_cells(args.spec, overrides)
    is_grid = len(cells) > 1 or cells[0].name != SINGLE_CELL_NAME
    results = _results_root(args.results or cells[0].spec.tracking.results_dir)
    selected = [find_cell(cells, str(args.cell))] if args.cell is not None else list(cells)
    if ranks.main and runner_target is None:  # lmbench's own runner: the data must make sense for each cell
        _check_data(selected)
    # Workers whenever cells run at once, or need devices of their own (an explicit --devices, or several GPUs
    # per cell); a lone GPU with no flags is used in this process.
    explicit = getattr(args, "devices", None) is not None or plan.per_cell > 1
    parallel = args.cell is None and ranks.world_size == 1 and \
        ((plan.jobs > 1 and len(cells) > 1) or (plan.assigns and explicit))
    ctx = _Launch(root=results / grid_name, results=results,
                  group=cells[0].spec.tracking.group or (grid_name if is_grid else None),
                  runner=None if parallel else (runner or default_runner()), runner_target=runner_target,
                  ranks=ranks,
                  started=started,
                  num_threads=int(os.environ[THREADS_ENV]) if os.environ.get(THREADS_ENV) else None,
                  launch_id=os.environ.get(LAUNCH_ENV) or f"{socket.gethostname()}:{os.getpid()}:{started!r}")
    if ranks.main:
        ctx.root.mkdir(parents=True, exist_ok=True)
        listing = [{"index": c.index, "name": c.name, "id": c.id, "axes": c.axes} for c in cells]
        write_json_atomic(ctx.root / CELLS_FILE, {"grid": grid_name, "cells": listing})
    if args.cell is None:
        _say(ctx, None, f"{grid_name}: {len(cells)} cell(s) -> {ctx.root}")
        if parallel and plan.assigns:
            _say(ctx, None, f"devices {','.join(plan.devices)}: {plan.per_cell} per cell, "
                            f"{min(plan.jobs, len(cells))} cell(s) at once")
        for note in plan.notes:
            _say(ctx, None, f"note: {note}")
    cells = selected
    try:
        if parallel:
            outcomes = _run_parallel(cells, ctx, args, plan)
        else:
            outcomes = _run_serial(cells, ctx, wait_first=args.cell is not None)
    finally:
        release_process_group()
    failed = _print_outcomes(ctx, cells, outcomes) if args.cell is None else \
        [c for c in cells if outcomes[c.name] in (FAILED, "failed-elsewhere")]
    if ranks.main and args.cell is None and not args.no_report:
        _write_report(ctx.root)
    return 1 if failed else 0
