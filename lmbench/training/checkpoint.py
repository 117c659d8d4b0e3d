"""Checkpoints: Accelerate state for resuming, safetensors weights for inference, written atomically and checked.

Layout of `run_dir/checkpoint/` (the last good checkpoint; `checkpoint.prev/` is the one before it):

    model.safetensors          weights (Accelerate's save_state; also what inference loads)
    optimizer.bin, random_states_<rank>.pkl, [scaler.pt]    Accelerate state (loaded with weights_only=True)
    carry_<rank>.safetensors   recurrent state carried between stream windows (truncated BPTT), if any
    trainer_state.json         step, tokens, data position, ..., and `files`: the size and xxh3 checksum of every
                               file above (lmbench.integrity); written last, so its presence marks completion
    best/model.safetensors     weights of the best validation loss so far, best/best.json says when

A checkpoint is written to `checkpoint.tmp/`, every file fsynced and checksummed, completed (trainer_state.json
last), then swapped in with two renames (checkpoint -> checkpoint.prev, checkpoint.tmp -> checkpoint); the
checkpoint before the previous one is deleted only then. A kill at any moment leaves a complete checkpoint.
Before resuming, a checkpoint is verified against its manifest; a damaged one (truncated, zeroed or garbled
file) is named in a warning and the previous one is used instead (`usable_checkpoints`). `best/` is carried
into each new checkpoint by hard links (no copy) and replaced through its own tmp folder + rename.

Nothing here unpickles arbitrary objects: weights are safetensors, and Accelerate loads its optimizer/RNG
files with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from lmbench.errors import SpecError
from lmbench.integrity import check_manifest, fsync_dir, manifest_of
from lmbench.models.base import LanguageModel
from lmbench.results import write_json_atomic
from lmbench.spec import ExperimentSpec, load_spec
from lmbench.tokenizers.base import Tokenizer

CHECKPOINT = "checkpoint"
TRAINER_STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
BEST = "best"
BEST_INFO = "best.json"


PREV, TMP = f"{CHECKPOINT}.prev", f"{CHECKPOINT}.tmp"


def is_complete(directory: Path) -> bool:
    return (Path(directory) / TRAINER_STATE).is_file()


def recover(run_dir: Path) -> None:
    """Repair an interrupted save (main process only; synchronise before the others read): a finished
    `checkpoint.tmp/` whose swap was cut short becomes `checkpoint/`; an unfinished one is removed."""
    final, tmp, older = Path(run_dir) / CHECKPOINT, Path(run_dir) / TMP, Path(run_dir) / f"{CHECKPOINT}.older"
    if older.exists() and (is_complete(final) or is_complete(Path(run_dir) / PREV)):
        shutil.rmtree(older)  # a swap was cut short after the newer checkpoints were in place
    if not tmp.exists():
        return
    if not is_complete(final) and is_complete(tmp) and verify_checkpoint(tmp) is None:
        if final.exists():  # only a best/ folder (saved before the first checkpoint) can be left here
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(Path(run_dir))
    else:
        shutil.rmtree(tmp)


def checkpoint_dir(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of `run_dir` (not verified; read-only callers)."""
    for name in (CHECKPOINT, PREV):
        if is_complete(Path(run_dir) / name):
            return Path(run_dir) / name
    return None


def verify_checkpoint(directory: Path) -> str | None:
    """None when `directory` is a complete, undamaged checkpoint; else what is wrong, naming the file.
    Checkpoints written before manifests existed are checked for their trainer_state.json only."""
    directory = Path(directory)
    try:
        state = read_trainer_state(directory)
    except FileNotFoundError:
        return f"{directory / TRAINER_STATE} is missing (the checkpoint was never finished)"
    except (OSError, ValueError) as exc:
        return f"{directory / TRAINER_STATE} is unreadable ({type(exc).__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return f"{directory / TRAINER_STATE} has no step"
    if "digest" in state and state["digest"] != _state_digest(state):
        return f"{directory / TRAINER_STATE} does not match its checksum (its bytes were changed after it was written)"
    return check_manifest(directory, state["files"]) if "files" in state else None


def _state_digest(state: dict[str, Any]) -> str:
    """xxh3-128 of the trainer state's canonical JSON without its `digest` key: a trainer_state.json that still
    parses after a change (a step number, a manifest entry) is caught as damaged, not trusted."""
    import xxhash

    body = {k: v for k, v in state.items() if k != "digest"}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True, default=str).encode("utf-8"))


def usable_checkpoints(run_dir: Path) -> tuple[list[Path], list[str]]:
    """(checkpoints that verify, newest first; what is wrong with each one that does not)."""
    good, damaged = [], []
    for name in (CHECKPOINT, PREV):
        directory = Path(run_dir) / name
        if not directory.exists() or (name == CHECKPOINT and not any(p.name != BEST for p in directory.iterdir())):
            continue  # absent, or only the best/ weights saved before the first checkpoint
        problem = verify_checkpoint(directory)
        (damaged.append(problem) if problem else good.append(directory))
    return good, damaged


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / TRAINER_STATE).read_text(encoding="utf-8"))


def save_checkpoint(accelerator: Any, run_dir: Path, trainer_state: dict[str, Any],
                    carry: dict[str, Tensor] | None = None) -> Path:
    """Write a complete checkpoint of the prepared model/optimizer plus `trainer_state` and swap it in.

    Every process must call this (Accelerate's save_state synchronises them and each writes its RNG state);
    `carry` is this process's carried recurrent state (flat name -> tensor).
    """
    run_dir = Path(run_dir)
    final, prev, tmp = run_dir / CHECKPOINT, run_dir / PREV, run_dir / TMP
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if carry:
        save_file({k: v.detach().cpu().contiguous() for k, v in carry.items()},
                  str(tmp / f"carry_{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _link_tree(final / BEST, tmp / BEST)
        files = manifest_of(tmp, exclude=(BEST,), fsync=True)
        state = json.loads(json.dumps({**trainer_state, "files": files}, default=str))  # as it will read back
        write_json_atomic(tmp / TRAINER_STATE, {**state, "digest": _state_digest(state)}, sort_keys=True)
        fsync_dir(tmp)
        _swap(run_dir, final, prev, tmp)
    accelerator.wait_for_everyone()
    return final


def _swap(run_dir: Path, final: Path, prev: Path, tmp: Path) -> None:
    """checkpoint -> checkpoint.prev, checkpoint.tmp -> checkpoint; the one before is deleted only after."""
    if is_complete(final):
        older = run_dir / f"{CHECKPOINT}.older"
        if prev.exists():
            os.replace(prev, older)
        os.replace(final, prev)
        os.replace(tmp, final)
        fsync_dir(run_dir)
        if older.exists():
            shutil.rmtree(older)
    else:  # no checkpoint yet (at most a best/ folder, already linked into tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(run_dir)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy where links fail) every file of `src` into `dst`; nothing when `src` is missing."""
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file():
            try:
                os.link(path, dst / path.name)
            except OSError:
                shutil.copy2(path, dst / path.name)


def load_checkpoint(accelerator: Any, directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Restore model, optimizer, scaler and RNG states (weights_only loading) -> (trainer_state, carry).

    `carry` is this process's saved recurrent state, {} when none was saved.
    """
    directory = Path(directory)
    accelerator.load_state(str(directory))
    carry_path = directory / f"carry_{accelerator.process_index}.safetensors"
    carry = load_file(str(carry_path)) if carry_path.is_file() else {}
    state = read_trainer_state(directory)
    state.pop("digest", None)  # checked by verify_checkpoint; not part of the trainer's state
    return state, carry


def save_best(model: nn.Module, run_dir: Path, info: dict[str, Any]) -> Path:
    """Replace `checkpoint/best/` with the weights of `model` (main process only) and `info` (step, val loss)."""
    parent = Path(run_dir) / CHECKPOINT
    parent.mkdir(parents=True, exist_ok=True)
    final, tmp = parent / BEST, parent / f"{BEST}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(model, tmp / WEIGHTS)
    write_json_atomic(tmp / BEST_INFO, info, sort_keys=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def save_weights(model: nn.Module, path: Path) -> None:
    """safetensors weights of `model` (shared/tied tensors stored once)."""
    save_model(model, str(path), metadata={"format": "pt"})


def load_weights(model: nn.Module, path: Path, *, strict: bool = True) -> nn.Module:
    """Load safetensors weights into `model` in place (tied tensors restored); returns `model`.

    `path` may be a weights file, a checkpoint folder or a run folder (then `checkpoint/model.safetensors`).
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS if (path / WEIGHTS).is_file() else path / CHECKPOINT / WEIGHTS
    missing, unexpected = load_model(model, str(path), strict=False)
    if strict and (missing or unexpected):
        raise RuntimeError(f"{path}: missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}")
    return model


def state_to_tensors(state: Any, prefix: str = "") -> dict[str, Tensor]:
    """Flatten a carried state (Tensor, tuple/list of them, or a dataclass of them) to name -> tensor."""
    import dataclasses

    if state is None:
        return {}
    if isinstance(state, Tensor):
        return {prefix or "_": state}
    if dataclasses.is_dataclass(state):
        items = [(f.name, getattr(state, f.name)) for f in dataclasses.fields(state)]
    elif isinstance(state, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(state)]
    else:
        raise TypeError(f"cannot serialise a carried state of type {type(state).__name__}")
    out: dict[str, Tensor] = {}
    for name, value in items:
        out.update(state_to_tensors(value, f"{prefix}.{name}" if prefix else name))
    return out


def tensors_to_state(template: Any, tensors: dict[str, Tensor], prefix: str = "") -> Any:
    """Rebuild a state shaped like `template` from `state_to_tensors` output (missing tensors -> None)."""
    import dataclasses

    if template is None or isinstance(template, Tensor):
        return tensors.get(prefix or "_")
    if dataclasses.is_dataclass(template):
        values = {f.name: tensors_to_state(getattr(template, f.name), tensors,
                                           f"{prefix}.{f.name}" if prefix else f.name)
                  for f in dataclasses.fields(template)}
        return type(template)(**values)
    if isinstance(template, (tuple, list)):
        values = [tensors_to_state(v, tensors, f"{prefix}.{i}" if prefix else str(i)) for i, v in enumerate(template)]
        return type(template)(values)
    raise TypeError(f"cannot rebuild a carried state of type {type(template).__name__}")


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[LanguageModel, Tokenizer, ExperimentSpec]:
    """The trained model (eval mode, on `device`), tokenizer and spec of a run directory: its spec.yaml,
    tokenizer/ and checkpoint/model.safetensors (weights are read only from safetensors)."""
    from lmbench.models import build_model
    from lmbench.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    weights = Path(CHECKPOINT) / WEIGHTS
    for needed in ("spec.yaml", "tokenizer", str(weights)):
        if not (run_dir / needed).exists():
            raise SpecError("run_dir", f"{run_dir} has no {needed} (is it a run directory with a checkpoint?)")
    spec = load_spec(run_dir / "spec.yaml")
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    model = build_model(spec.model, tokenizer)
    load_weights(model, run_dir / weights)
    return model.to(device).eval(), tokenizer, spec
