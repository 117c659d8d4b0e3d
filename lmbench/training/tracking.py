"""Experiment tracking through Accelerate's tracker API (W&B, TensorBoard), env.json, and secret scrubbing.

The runner calls, in order::

    accelerator = Accelerator(**accelerator_kwargs(spec, run_dir), ...)
    start(accelerator, spec, run_dir, cell_name, group)       # every process; trackers start on the main one
    log = MetricsLog(run_dir / "metrics.jsonl", accelerator)   # log.append({...}): metrics.jsonl + trackers
    log_samples(accelerator, rows)                             # samples.jsonl rows -> wandb.Table
    write_env_json(run_dir, spec, accelerator, {"data": ..., "tokenizer": ...})
    finish(accelerator, summary)                               # every process, last: calls end_training()

W&B needs no account: without an API key (and without WANDB_MODE=online) the run is written offline to
`run_dir/wandb/offline-run-*` and can be uploaded later with `wandb sync run_dir/wandb/offline-run-*`.
Nothing this module writes (W&B config and summary, env.json) holds the value of an environment variable
whose name contains KEY, TOKEN, SECRET or PASSWORD.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lmbench.results import read_rows, write_json_atomic
from lmbench.spec import ExperimentSpec, spec_to_dict

PACKAGES = ("torch", "accelerate", "transformers", "datasets", "tokenizers", "sentencepiece", "wandb", "pandas",
            "numpy", "omegaconf", "lmbench")
SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
ENV_PREFIXES = ("ACCELERATE_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "SLURM_", "WANDB_", "HF_", "TORCH", "LMBENCH_",
                "TOKENIZERS_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_")
REDACTED = "<redacted>"
CPU_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx2", "fma", "f16c")
_SECRET_KEY = re.compile(r"(^|[^a-z])(api_?key|key|token|secret|password|passwd|credentials?)($|[^a-z])", re.I)


# ---------------------------------------------------------------------------------------------- secrets
def secret_env_values(min_len: int = 8) -> list[str]:
    """Values of environment variables whose name contains KEY/TOKEN/SECRET/PASSWORD (long enough to be secrets)."""
    names = [n for n in os.environ if any(p in n.upper() for p in SECRET_NAME_PARTS)]
    return sorted({os.environ[n] for n in names if len(os.environ[n]) >= min_len}, key=len, reverse=True)


def scrub(obj: Any, secrets: Sequence[str] | None = None) -> Any:
    """A copy of `obj` (dicts, lists, strings) with secrets removed.

    String values under keys such as ``api_key``/``hf_token`` become "<redacted>", and every occurrence of a
    secret environment value inside any string is replaced as well (e.g. a token pasted into a URL).
    """
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {k: REDACTED if isinstance(v, str) and v and _SECRET_KEY.search(str(k)) else scrub(v, secrets)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
    return obj


def safe_environ() -> dict[str, str]:
    """Environment variables that explain a run (threads, devices, cluster, W&B mode), secrets redacted."""
    out = {}
    for name in sorted(os.environ):
        if name.startswith(ENV_PREFIXES):
            secret = any(p in name.upper() for p in SECRET_NAME_PARTS)
            out[name] = REDACTED if secret else os.environ[name]
    return scrub(out)


# ---------------------------------------------------------------------------------------------- trackers
def wandb_mode(spec: ExperimentSpec) -> str:
    """online | offline | disabled.

    WANDB_MODE=disabled always wins (tests set it). `auto`: online when WANDB_MODE=online or WANDB_API_KEY is set,
    offline otherwise (no account needed; upload later with `wandb sync`).
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "dryrun"):
        return "disabled"
    if spec.tracking.wandb_mode != "auto":
        return spec.tracking.wandb_mode
    if env in ("online", "offline"):
        return env
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def backends(spec: ExperimentSpec) -> list[str]:
    """Active tracker names: spec.tracking.backends minus `none`, minus wandb when its mode is disabled."""
    names = [b for b in dict.fromkeys(spec.tracking.backends) if b != "none"]
    if "wandb" in names and wandb_mode(spec) == "disabled":
        names.remove("wandb")
    return names


def accelerator_kwargs(spec: ExperimentSpec, run_dir: Path) -> dict[str, Any]:
    """`Accelerator(**accelerator_kwargs(spec, run_dir))`: `log_with` and `project_dir`.

    TensorBoard is passed as a tracker instance so that its event files land in `run_dir/tensorboard`.
    """
    from accelerate.tracking import TensorBoardTracker

    log_with: list[Any] = []
    for name in backends(spec):
        log_with.append(TensorBoardTracker("tensorboard", str(run_dir)) if name == "tensorboard" else name)
    return {"log_with": log_with or None, "project_dir": str(run_dir)}


def run_config(spec: ExperimentSpec, cell_name: str, group: str | None) -> dict[str, Any]:
    """The resolved spec as a nested dict, plus the cell and group, secrets scrubbed (the W&B config)."""
    config = spec_to_dict(spec)
    config["lmbench"] = {"cell": cell_name, "group": group}
    return scrub(config)


WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(spec: ExperimentSpec, run_dir: Path) -> str:
    """The W&B run id of a cell: the one its run folder recorded when it first started (run_dir/wandb_run_id),
    else its cell id (grid.cell_id: the resolved spec's hash) and a hash of the run folder. A resumed cell (also
    with a longer budget), a Slurm requeue or a rerun of the grid continues the same W&B run (offline runs sync
    into one); the same cell in another results folder (a before/after comparison) is another run."""
    import hashlib

    from lmbench.experiment.grid import cell_id

    recorded = Path(run_dir) / WANDB_ID_FILE
    if recorded.is_file():
        text = recorded.read_text().strip()
        if text:
            return text
    where = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]
    return f"{cell_id(spec)}-{where}"


def start(accelerator: Any, spec: ExperimentSpec, run_dir: Path, cell_name: str, group: str | None = None) -> None:
    """Start the trackers (call on every process; they start on the main process only).

    W&B: project = spec.tracking.project or spec.name, group = spec.tracking.group or `group` (the grid name) or
    spec.name, run name = the cell, run id = wandb_run_id (resumed, not restarted: resume="allow"), config = the
    resolved spec (nested), files under `run_dir/wandb`.
    TensorBoard takes the same config flattened to scalars (it rejects lists and dicts).
    """
    run_dir = Path(run_dir)
    config = run_config(spec, cell_name, group)
    init_kwargs: dict[str, Any] = {}
    if "wandb" in backends(spec):
        init_kwargs["wandb"] = {
            "name": cell_name, "group": spec.tracking.group or group or spec.name, "dir": str(run_dir),
            "mode": wandb_mode(spec), "config": config, "reinit": "finish_previous",
            "id": wandb_run_id(spec, run_dir), "resume": "allow",
            "tags": [spec.model.family, f"tokenizer:{spec.tokenizer.kind}"],
        }
        if accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / WANDB_ID_FILE).write_text(init_kwargs["wandb"]["id"] + "\n")
    accelerator.init_trackers(spec.tracking.project or spec.name, config=None, init_kwargs=init_kwargs)
    for tracker in accelerator.trackers:
        if tracker.name != "wandb":
            tracker.store_init_configuration(flat_scalars(config))


def flat_scalars(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys, lists as JSON text: {"model": {"d": 8}, "betas": [0.9, 0.99]} -> {"model.d": 8, "betas": "[0.9, 0.99]"}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_scalars(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = "None" if value is None else value
        else:
            out[name] = json.dumps(value, default=str)
    return out


class MetricsLog:
    """metrics.jsonl of a run plus the trackers: one row per logged step (training window, evaluation, final).

    Every process may call `append`; only the main one writes. A resumed run drops the rows logged after its
    checkpoint (`truncate`), which it is about to log again; a run that starts over drops them all (`clear`).
    """

    def __init__(self, path: Path, accelerator: Any) -> None:
        self.path, self.accelerator = Path(path), accelerator

    def append(self, row: dict[str, Any]) -> None:
        """Append `row` (flushed at once) and send its numbers to the trackers at step `row["step"]`."""
        if not self.accelerator.is_main_process:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
        self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    def truncate(self, step: int) -> None:
        """Drop the rows logged after `step`, and the final row of an earlier end, which the run logs again
        (main process). A torn last line (a kill in the middle of a write) is dropped with a warning; an
        unreadable line anywhere else is damage this run cannot repair: DamagedFile names the file and line."""
        if not self.accelerator.is_main_process or not self.path.exists():
            return
        keep = [ln for ln, row in read_rows(self.path) if row.get("step", 0) <= step and not row.get("final")]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
        tmp.replace(self.path)

    def clear(self) -> None:
        """Remove every row (a run killed before its first checkpoint starts over)."""
        if self.accelerator.is_main_process and self.path.exists():
            self.path.unlink()


def _tracker(accelerator: Any, name: str) -> Any | None:
    return next((t for t in accelerator.trackers if t.name == name), None)


def log_samples(accelerator: Any, rows: Sequence[Mapping[str, Any]], key: str = "samples") -> None:
    """Log samples.jsonl rows as a `wandb.Table` (and a markdown table in TensorBoard). Main process only."""
    if not accelerator.is_main_process or not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    data = [[_cell_value(row.get(c)) for c in columns] for row in scrub(list(rows))]
    wb = _tracker(accelerator, "wandb")
    if wb is not None:
        import wandb

        wb.run.log({key: wandb.Table(columns=columns, data=data)})
    tb = _tracker(accelerator, "tensorboard")
    if tb is not None:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in r) + " |" for r in data]
        tb.writer.add_text(key, "\n".join(lines))


def _cell_value(value: Any) -> Any:
    """wandb.Table cells: scalars as they are, lists/dicts as JSON text (one column type per column)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


def finish(accelerator: Any, summary: Mapping[str, Any]) -> None:
    """Write `summary` (summary.json) to the W&B run summary, then `accelerator.end_training()`.

    Call on every process: end_training also tears down the process group when there is one.
    """
    if accelerator.is_main_process:
        clean = scrub({k: v for k, v in summary.items() if v is not None})
        wb = _tracker(accelerator, "wandb")
        if wb is not None:
            wb.run.summary.update(clean)
        tb = _tracker(accelerator, "tensorboard")
        if tb is not None:
            tb.writer.add_text("summary", "```\n" + json.dumps(clean, indent=2, default=str) + "\n```")
    accelerator.end_training()


# ---------------------------------------------------------------------------------------------- env.json
def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(folder: Path) -> dict[str, Any] | None:
    """{"commit", "dirty", "root"} of the git work tree holding `folder`, or None (no git, not a repo)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": commit, "dirty": dirty, "root": git("rev-parse", "--show-toplevel")}
    except (OSError, subprocess.SubprocessError):
        return None


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo (Linux), or None."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.split(":")[0].strip() == field), None)
    return line.partition(":")[2].strip() if line else None


def cpu_flags(names: Sequence[str] = CPU_FLAGS) -> dict[str, bool]:
    """Which CPU features of interest (AMX, AVX-512 BF16, ...) /proc/cpuinfo lists; {} where it is unreadable."""
    flags = _cpuinfo("flags")
    return {name: name in flags.split() for name in names} if flags is not None else {}


def device_info(accelerator: Any) -> dict[str, Any]:
    import torch

    device = accelerator.device
    info: dict[str, Any] = {"type": device.type, "num_processes": accelerator.num_processes,
                            "mixed_precision": str(accelerator.mixed_precision),
                            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["name"] = _cpuinfo("model name") or platform.processor() or platform.machine()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def write_env_json(run_dir: Path, spec: ExperimentSpec, accelerator: Any, fingerprints: Mapping[str, Any],
                   spec_path: Path | None = None) -> Path:
    """Write run_dir/env.json (main process only): versions, git commit, device, precision, fingerprints.

    The git commit is that of the folder holding `spec_path` (the experiment file), or of the current
    directory when it is not given; absent when that folder is not in a git repository.
    """
    path = Path(run_dir) / "env.json"
    if not accelerator.is_main_process:
        return path
    folder = Path(spec_path).resolve().parent if spec_path else Path.cwd()
    env = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec_name": spec.name,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_info(folder),  # the experiment's folder
        "lmbench_git": git_info(Path(__file__).resolve().parent),  # the code that ran it (editable installs)
        "device": device_info(accelerator),
        "precision": str(accelerator.mixed_precision),
        "num_processes": accelerator.num_processes,
        "fingerprints": dict(fingerprints),
        "cpu_flags": cpu_flags(),
        "environment": safe_environ(),
        "wandb_mode": wandb_mode(spec) if "wandb" in spec.tracking.backends else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, scrub(env))
    return path
