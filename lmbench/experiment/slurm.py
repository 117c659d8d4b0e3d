"""`lmbench slurm GRID.yaml --nodes N --gpus-per-node G`: an sbatch array script with one task per grid cell.

Each array task runs one cell on N nodes x G GPUs: `srun` starts one task per node, and each of those runs
`accelerate launch --multi_gpu --num_machines N --machine_rank $SLURM_NODEID ... -m lmbench run GRID --cell NAME`
(the rendezvous host is the first node of the allocation, the port is `--port` + the array index so that tasks
sharing a head node do not clash). The cell list is baked into the script (array index -> cell name), so a task
always runs the cell it was generated for; regenerate the script after editing the grid.

Preemption and time limits: the job is `--requeue`-able and gets SIGUSR1 120 s before its time limit; the batch
shell traps it and requeues itself (`scontrol requeue`), and the requeued task calls the same `lmbench run
--cell`, which skips a completed cell and otherwise lets the runner resume from the cell's last checkpoint.
Make `train.checkpoint_every` short enough to lose little work.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbench.errors import SpecError, range_error
from lmbench.experiment.grid import Cell, format_cells, load_cells

REQUEUE_SIGNAL_S = 120  # seconds before the time limit at which Slurm sends USR1 to the batch shell


@dataclass(frozen=True)
class SlurmJob:
    """What the script needs besides the cells; paths are absolute (the job starts in another directory)."""

    spec_path: Path
    workdir: Path  # the job cd's here, so relative paths in the spec (data, cache) mean what they meant here
    results: Path  # results root; the cells write to results/<grid name>/<cell name>
    grid_name: str
    overrides: list[str] = field(default_factory=list)
    num_nodes: int = 1
    gpus_per_node: int = 1
    partition: str | None = None
    time: str = "24:00:00"
    account: str | None = None
    max_concurrent: int = 4
    port: int = 29500
    cpus_per_task: int | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run first (module load, source venv, ...)

    @property
    def log_dir(self) -> Path:
        return self.results / self.grid_name / "slurm"

    @property
    def num_processes(self) -> int:
        return self.num_nodes * self.gpus_per_node


def check_job(job: SlurmJob) -> None:
    for name, value in (("--nodes", job.num_nodes), ("--gpus-per-node", job.gpus_per_node),
                        ("--max-concurrent", job.max_concurrent)):
        if value < 1:
            raise range_error(name, value, ">= 1")
    if job.cpus_per_task is not None and job.cpus_per_task < 1:
        raise range_error("--cpus-per-task", job.cpus_per_task, ">= 1")
    if not 1024 <= job.port <= 55535:
        raise range_error("--port", job.port, "in [1024, 55535] (array tasks add up to 9999)")


def _sbatch_header(job: SlurmJob, num_cells: int) -> list[str]:
    lines = [
        f"--job-name=lmbench-{job.grid_name}",
        f"--array=0-{num_cells - 1}%{job.max_concurrent}",
        f"--nodes={job.num_nodes}",
        "--ntasks-per-node=1",  # one `accelerate launch` per node; it starts gpus_per_node processes
        f"--gpus-per-node={job.gpus_per_node}",
        *([f"--cpus-per-task={job.cpus_per_task}"] if job.cpus_per_task else []),
        f"--time={job.time}",
        *([f"--partition={job.partition}"] if job.partition else []),
        *([f"--account={job.account}"] if job.account else []),
        "--requeue",
        f"--signal=B:USR1@{REQUEUE_SIGNAL_S}",
        "--open-mode=append",  # a requeued task appends to its log instead of truncating it
        f"--output={job.log_dir}/%A_%a.out",
    ]
    return [f"#SBATCH {line}" for line in lines]


def _launch_command(job: SlurmJob) -> str:
    """The per-node command, inside single quotes: $SLURM_NODEID etc. expand in each node's own srun task."""
    args = ["accelerate launch"]
    if job.num_processes > 1:
        args += ['--multi_gpu --num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID"',
                 '--main_process_ip "$LMBENCH_HEAD_NODE" --main_process_port "$LMBENCH_PORT"']
    args += ['--num_processes "$LMBENCH_NUM_PROCESSES" --dynamo_backend no',
             '-m lmbench run "$LMBENCH_SPEC" "$@" --cell "$LMBENCH_CELL" --results "$LMBENCH_RESULTS"']
    return "exec " + " \\\n    ".join(args)


def sbatch_script(job: SlurmJob, cells: Sequence[Cell]) -> str:
    """The text of the sbatch array script (bash)."""
    q = shlex.quote
    cell_lines = [f"  {q(c.name)}  # {c.index}: {c.id}" for c in cells]
    return "\n".join([
        "#!/bin/bash",
        f"# lmbench grid {job.grid_name!r}: {len(cells)} cells, one array task each, {job.num_nodes} node(s) x "
        f"{job.gpus_per_node} GPU(s) per cell.",
        "# Written by `lmbench slurm`; submit with `sbatch THIS_FILE`. Logs: the --output path below.",
        *_sbatch_header(job, len(cells)),
        "",
        "# Array index -> cell (regenerate this script after editing the grid).",
        "CELLS=(", *cell_lines, ")",
        f"SPEC={q(str(job.spec_path))}",
        f"OVERRIDES=({' '.join(q(o) for o in job.overrides)})",
        f"RESULTS={q(str(job.results))}",
        f"NUM_PROCESSES={job.num_processes}  # nodes x GPUs per node",
        f"BASE_PORT={job.port}",
        "",
        "set -uo pipefail",
        f"cd {q(str(job.workdir))} || exit 1",
        *job.setup,
        "",
        'export LMBENCH_CELL="${CELLS[$SLURM_ARRAY_TASK_ID]}" LMBENCH_SPEC="$SPEC" LMBENCH_RESULTS="$RESULTS"',
        'export LMBENCH_NUM_PROCESSES="$NUM_PROCESSES"',
        'export LMBENCH_HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        "# One port per array task, so two tasks whose head is the same node do not clash.",
        'export LMBENCH_PORT=$(( BASE_PORT + SLURM_ARRAY_TASK_ID % 10000 ))',
        'echo "lmbench: task $SLURM_ARRAY_TASK_ID -> cell $LMBENCH_CELL on $SLURM_JOB_NODELIST" \\',
        '     "(head $LMBENCH_HEAD_NODE:$LMBENCH_PORT, restart ${SLURM_RESTART_COUNT:-0})"',
        "",
        "# USR1 (sent before the time limit) or preemption: requeue; the runner resumes from the last checkpoint.",
        "requeue() {",
        '  echo "lmbench: caught USR1, requeueing job $SLURM_JOB_ID (array task $SLURM_ARRAY_TASK_ID)"',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "}",
        "trap requeue USR1",
        "",
        "# srun starts one task per node; the single quotes defer $SLURM_NODEID to each node's own task.",
        f"srun --kill-on-bad-exit=1 bash -c {q(_launch_command(job))} \\",
        '  lmbench ${OVERRIDES[@]+"${OVERRIDES[@]}"} &',
        "SRUN_PID=$!",
        "# bash runs a trap only between commands: waiting on a background srun lets USR1 through at once.",
        "while true; do",
        '  wait "$SRUN_PID"; status=$?',
        '  kill -0 "$SRUN_PID" 2>/dev/null || break  # still alive: the wait was cut short by a signal',
        "done",
        'exit "$status"',
        "",
    ])


def job_from_args(args: Any, grid_name: str, default_results: str) -> SlurmJob:
    results = Path(getattr(args, "results", None) or default_results).resolve()
    return SlurmJob(
        spec_path=Path(args.spec).resolve(), workdir=Path.cwd(), results=results, grid_name=grid_name,
        overrides=list(args.overrides or []), num_nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        partition=args.partition, time=args.time, account=args.account, max_concurrent=args.max_concurrent,
        port=args.port, cpus_per_task=getattr(args, "cpus_per_task", None),
        setup=list(getattr(args, "setup", None) or []))


def cmd_slurm(args: Any) -> int:
    """Validate every cell, write the sbatch script, print the index -> cell mapping and how to submit."""
    grid_name, cells = load_cells(args.spec, list(args.overrides or []))
    job = job_from_args(args, grid_name, cells[0].spec.tracking.results_dir)
    check_job(job)
    out = Path(args.out) if args.out else job.log_dir.parent / "slurm.sbatch"
    if out.is_dir():
        raise SpecError("--out", f"{out} is a folder; give a file path")
    out.parent.mkdir(parents=True, exist_ok=True)
    job.log_dir.mkdir(parents=True, exist_ok=True)  # sbatch does not create the --output folder
    out.write_text(sbatch_script(job, cells))
    out.chmod(0o755)
    print(f"array index -> cell ({len(cells)} cells, {job.num_nodes} node(s) x {job.gpus_per_node} GPU(s) each):")
    print(format_cells(cells))
    print(f"wrote {out}\nsubmit: sbatch {shlex.quote(str(out))}    logs: {job.log_dir}/<job>_<index>.out")
    return 0
