"""`lmbench slurm`: the sbatch array script parses, maps array indices to cells, and launches the right ranks.

The script is run for real with stand-ins for srun, scontrol and accelerate on PATH: srun runs its command once
per node with SLURM_NODEID set, as Slurm does, and accelerate records the arguments it was given.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmbench.cli import main
from lmbench.errors import SpecError
from lmbench.experiment.grid import load_cells
from lmbench.experiment.slurm import SlurmJob, check_job, sbatch_script

SPEC = """\
name: tiny
model: {family: lstm, params: {d_hidden: 8, num_layers: 1}}
train: {max_steps: 2}
tracking: {backends: [none]}
grid:
  axes:
    model.family: [rnn, lstm]
    seed: [0, 1]
  include: [{model.family: gru, seed: 5}]
"""

RECORD = ('import json, os, sys; print(json.dumps({"node": os.environ["SLURM_NODEID"], '
          '"setup": os.environ.get("FROM_SETUP"), "argv": sys.argv[1:]}))')
FAKES = {
    "scontrol": """\
        #!/bin/bash
        if [ "$1" = show ] && [ "$2" = hostnames ]; then printf 'gpu-a17\\ngpu-b03\\n'; exit 0; fi
        echo "$*" >> "$FAKE_LOG/scontrol.log"
        """,
    "srun": """\
        #!/bin/bash
        while [[ "$1" == --* ]]; do shift; done
        for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node "$@" || exit $?; done
        sleep "${FAKE_SRUN_SLEEP:-0}"
        """,
    "accelerate": f"""\
        #!/bin/bash
        {sys.executable} -c '{RECORD}' "$@" >> "$FAKE_LOG/accelerate.jsonl"
        """,
}


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(SPEC)
    return path


def write_script(tmp_path: Path, spec: Path, *extra: str) -> Path:
    out = tmp_path / "job.sbatch"
    code = main(["slurm", str(spec), *extra, "--results", str(tmp_path / "results"), "--out", str(out)])
    assert code == 0
    return out


def run_task(tmp_path: Path, script: Path, task: int, num_nodes: int, **env: str) -> subprocess.Popen:
    """Run the script as Slurm would run array task `task` on `num_nodes` nodes (fakes on PATH)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(exist_ok=True)
    log.mkdir(exist_ok=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(textwrap.dedent(text))
        (bin_dir / name).chmod(0o755)
    slurm = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "4000", "SLURM_JOB_ID": str(4001 + task),
             "SLURM_NNODES": str(num_nodes), "SLURM_JOB_NODELIST": "gpu-a17,gpu-b03"}
    full_env = {**os.environ, **slurm, **env, "FAKE_LOG": str(log), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.Popen(["bash", str(script)], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def launches(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "log" / "accelerate.jsonl").read_text().splitlines()]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_script_header_parses_and_maps_indices_to_cells(tmp_path: Path, spec_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    script = write_script(tmp_path, spec_path, "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                          "--account", "lab", "--time", "02:00:00", "--max-concurrent", "2")
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK)
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, flags=re.M))
    assert sbatch["array"] == "0-4%2"
    assert (sbatch["nodes"], sbatch["ntasks-per-node"], sbatch["gpus-per-node"]) == ("2", "1", "4")
    assert (sbatch["partition"], sbatch["account"], sbatch["time"]) == ("gpu", "lab", "02:00:00")
    assert "requeue" in sbatch and sbatch["signal"] == "B:USR1@120"
    assert sbatch["output"] == f"{tmp_path}/results/tiny/slurm/%A_%a.out"
    assert (tmp_path / "results" / "tiny" / "slurm").is_dir()  # sbatch does not create it
    _, cells = load_cells(spec_path)
    show_cells = f'eval "$(sed -n "/^CELLS=(/,/^)/p" {script})"; printf "%s\\n" "${{CELLS[@]}}"'
    listed = subprocess.run(["bash", "-c", show_cells], capture_output=True, text=True, check=True).stdout.split()
    assert listed == [c.name for c in cells]
    out = capsys.readouterr().out
    for cell in cells:
        assert re.search(rf"^{cell.index}\s+{cell.id}\s+{re.escape(cell.name)}$", out, flags=re.M)


def test_each_node_launches_its_rank_of_the_task_cell(tmp_path: Path, spec_path: Path) -> None:
    script = write_script(tmp_path, spec_path, "train.lr=0.01", "tracking.project=my project",
                          "--nodes", "2", "--gpus-per-node", "3", "--port", "31000",
                          "--setup", "export FROM_SETUP=yes")
    proc = run_task(tmp_path, script, task=4, num_nodes=2)
    assert proc.wait(timeout=60) == 0, proc.communicate()[0]
    runs = launches(tmp_path)
    assert [(r["node"], r["setup"]) for r in runs] == [("0", "yes"), ("1", "yes")]
    for node, run in enumerate(runs):
        argv = run["argv"]
        assert argv[:2] == ["launch", "--multi_gpu"]
        assert flag(argv, "--machine_rank") == str(node)
        assert (flag(argv, "--num_machines"), flag(argv, "--num_processes")) == ("2", "6")
        assert flag(argv, "--main_process_ip") == "gpu-a17"  # the first node of the allocation, on every node
        assert flag(argv, "--main_process_port") == "31004"  # base port + array index
        tail = argv[argv.index("-m"):]
        assert tail == ["-m", "lmbench", "run", str(spec_path), "train.lr=0.01", "tracking.project=my project",
                        "--cell", "family=gru,seed=5", "--results", str(tmp_path / "results")]


def test_one_gpu_task_launches_a_single_process(tmp_path: Path, spec_path: Path) -> None:
    script = write_script(tmp_path, spec_path, "--nodes", "1", "--gpus-per-node", "1")
    proc = run_task(tmp_path, script, task=0, num_nodes=1)
    assert proc.wait(timeout=60) == 0, proc.communicate()[0]
    (run,) = launches(tmp_path)
    assert "--multi_gpu" not in run["argv"] and flag(run["argv"], "--num_processes") == "1"
    assert flag(run["argv"], "--cell") == "family=rnn,seed=0"


def test_usr1_requeues_the_task(tmp_path: Path, spec_path: Path) -> None:
    script = write_script(tmp_path, spec_path)
    proc = run_task(tmp_path, script, task=2, num_nodes=1, FAKE_SRUN_SLEEP="1.5")
    deadline = time.time() + 30
    while not (tmp_path / "log" / "accelerate.jsonl").exists():  # srun is running
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out  # the batch shell kept waiting for srun after the trap
    assert (tmp_path / "log" / "scontrol.log").read_text().split() == ["requeue", "4003"]
    assert "caught USR1" in out


def test_bad_resources_are_spec_errors(tmp_path: Path, spec_path: Path) -> None:
    assert main(["slurm", str(spec_path), "--nodes", "0", "--out", str(tmp_path / "x.sbatch")]) == 2
    with pytest.raises(SpecError, match="--port"):
        check_job(SlurmJob(spec_path=spec_path, workdir=tmp_path, results=tmp_path, grid_name="g", port=80))


def test_script_directives_and_cell_table_are_pinned(tmp_path: Path, spec_path: Path) -> None:
    """The #SBATCH block and the index -> cell table of a 5-cell grid on 3 nodes, written out by hand."""
    _, cells = load_cells(spec_path)
    job = SlurmJob(spec_path=spec_path, workdir=tmp_path, results=tmp_path / "r", grid_name="tiny", num_nodes=3)
    text = sbatch_script(job, cells)
    assert [line for line in text.splitlines() if line.startswith("#SBATCH")] == [
        "#SBATCH --job-name=lmbench-tiny", "#SBATCH --array=0-4%4", "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1", "#SBATCH --time=24:00:00", "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120", "#SBATCH --open-mode=append",
        f"#SBATCH --output={tmp_path}/r/tiny/slurm/%A_%a.out"]
    table = re.findall(r"^  (\S+)  # (\d+): (\w+)$", text, flags=re.M)
    assert [(name, int(i)) for name, i, _ in table] == [
        ("family=rnn,seed=0", 0), ("family=rnn,seed=1", 1), ("family=lstm,seed=0", 2), ("family=lstm,seed=1", 3),
        ("family=gru,seed=5", 4)]
    assert [cell_id for *_, cell_id in table] == [cell.id for cell in cells]
    assert "NUM_PROCESSES=3  # nodes x GPUs per node" in text and f"SPEC={spec_path}" in text


def test_example_scripts_parse_and_their_grid_loads() -> None:
    here = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
    scripts = sorted(here.glob("*.sbatch"))
    assert scripts
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
    _, cells = load_cells(here / "example_grid.yaml")
    text = (here / "example_grid.sbatch").read_text()
    assert f"--array=0-{len(cells) - 1}%" in text
    assert all(f"  {c.name}  # {c.index}: {c.id}" in text for c in cells), "regenerate example_grid.sbatch"
