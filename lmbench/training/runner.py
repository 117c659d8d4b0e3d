"""The runner: train and evaluate one spec (one grid cell) on Accelerate, from one CPU to many GPUs and nodes.

    summary = run_cell(spec, Path("results/char-lstm/seed=0"), cell_name="seed=0")

`run_cell` seeds everything, prepares the token cache (main process first), builds the model, trains it under
its budgets (max_steps / epochs / max_tokens / max_seconds: the first reached ends training) with periodic
evaluation, best and last checkpoints, optional early stopping, then evaluates every split in full, writes
samples and summary.json. Re-running it on the same folder after a kill resumes from the last checkpoint
(model, optimizer, RNG, data position, carried recurrent state) and ends with the same metrics.

The training loop itself is lmbench/train.py (`Trainer`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmbench.training import checkpoint as ckpt
from lmbench.training.plan import make_train_data
from lmbench.training.evaluate import is_recurrent
from lmbench.training.precision import resolve_mixed_precision
from lmbench.spec import ExperimentSpec, spec_to_yaml
from lmbench.training.trainer import NonFiniteLoss, Trainer

log = logging.getLogger(__name__)


def run_cell(spec: ExperimentSpec, run_dir: Path, *, cell_name: str, group: str | None = None,
             axes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train + evaluate + sample one cell into `run_dir`; returns the summary (also summary.json).

    A non-finite loss ends the run with status "failed" (summary returned, not raised); other errors are
    recorded in summary.json and raised. `axes` (grid axis values) is copied into the summary.
    """
    run_dir = Path(run_dir)
    facts = {"cell": cell_name, "spec_name": spec.name, "group": group, "axes": dict(axes or {})}
    try:
        trainer = build_trainer(spec, run_dir, cell_name)
    except Exception as exc:
        _write_failure(run_dir, facts, exc)
        raise
    return _run(trainer, {**facts, **trainer.facts}, group)


def build_trainer(spec: ExperimentSpec, run_dir: Path, cell_name: str, *, tracking_kwargs: bool = True) -> Trainer:
    """Seed, prepare the data (main process first), build the model, choose the precision, create the
    Accelerator and the Trainer (prepared model + optimizer). Nothing is trained or written yet."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lmbench.training import tracking

    _reset_accelerate()
    _quiet_accelerate()
    state = partial_state()
    if spec.train.num_threads:
        torch.set_num_threads(spec.train.num_threads)
    if state.is_main_process:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    set_seed(spec.seed)
    data = _prepare(spec, state)
    set_seed(spec.seed)  # same initial weights whether or not the cache had to be built
    model = _build_model(spec, data)
    precision, reason = resolve_mixed_precision(spec.train.mixed_precision, model.num_params(), state.device.type)
    kwargs = tracking.accelerator_kwargs(spec, Path(run_dir)) if tracking_kwargs else {}
    accelerator = Accelerator(cpu=force_cpu(), mixed_precision=precision,
                              gradient_accumulation_steps=spec.train.grad_accum_steps, **kwargs)
    train_data = make_train_data(spec, data.splits["train"], data.tokenizer, is_recurrent(model))
    trainer = Trainer(spec, Path(run_dir), accelerator, model, data, train_data, cell_name)
    trainer.facts = {"num_params": model.num_params(), "num_trainable_params": model.num_params(trainable_only=True),
                     "mixed_precision": precision, "mixed_precision_reason": reason,
                     "world_size": accelerator.num_processes, "grad_accum_steps": spec.train.grad_accum_steps,
                     "per_process_batch_size": trainer.micro}
    return trainer


def launched_world_size() -> int:
    """WORLD_SIZE set by accelerate launch / torchrun (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def force_cpu() -> bool:
    """True for a multi-process launch on a machine without CUDA: accelerate only starts its gloo (MULTI_CPU)
    process group when asked for the CPU (`accelerate launch --multi_gpu` / torchrun alone give 1-process
    states there), so every PartialState/Accelerator of the runner passes cpu=force_cpu()."""
    return launched_world_size() > 1 and not torch.cuda.is_available()


def partial_state() -> Any:
    """accelerate's PartialState for this launch (gloo process group on a CPU-only multi-process launch)."""
    from accelerate import PartialState

    return PartialState(cpu=force_cpu())


def _reset_accelerate() -> None:
    """Reset accelerate's singletons where a previous user left them unusable for this cell:

    - AcceleratorState always, so each cell chooses its own mixed precision in one process (grids);
    - PartialState too when a finished cell's end_training destroyed the process group, or when something
      initialised it as one process inside a multi-process launch (PartialState() without cpu=True on CPU).
    """
    from accelerate.state import AcceleratorState, GradientState, PartialState

    reset_partial = False
    if PartialState._shared_state != {}:
        state = PartialState()
        lost_group = state.num_processes > 1 and not torch.distributed.is_initialized()
        reset_partial = lost_group or state.num_processes != launched_world_size()
    AcceleratorState._reset_state(reset_partial_state=reset_partial)
    GradientState._reset_state()


class _TiedWeightsNotice(logging.Filter):
    """Drop accelerate's per-checkpoint warning about tied weights stored once (safetensors); loading restores them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


def _quiet_accelerate() -> None:
    logger = logging.getLogger("accelerate.utils.other")
    if not any(isinstance(f, _TiedWeightsNotice) for f in logger.filters):
        logger.addFilter(_TiedWeightsNotice())


def _prepare(spec: ExperimentSpec, state: Any) -> Any:
    from lmbench.data import prepare_data

    # The main process builds the cache; the others then load it. A node's local main may build its own copy
    # when the cache folder is not shared between nodes (prepare_data locks, so concurrent builds are safe).
    with state.main_process_first():
        return prepare_data(spec, progress=state.is_main_process, load_only=not state.is_local_main_process)


def _build_model(spec: ExperimentSpec, data: Any) -> nn.Module:
    from lmbench.models import build_model

    return build_model(spec.model, data.tokenizer, seed=spec.seed)


def _run(trainer: Trainer, facts: dict[str, Any], group: str | None) -> dict[str, Any]:
    from lmbench.training import tracking

    spec, run_dir, acc = trainer.spec, trainer.run_dir, trainer.acc
    summary: dict[str, Any] = {"status": "running", **facts}
    try:
        _write_run_files(trainer, facts)
        tracking.start(acc, spec, run_dir, facts["cell"], group)
        if not trainer.resume() and spec.eval.untrained:
            trainer.progress.untrained = trainer.flatten(trainer.evaluate(list(spec.eval.splits)), "untrained_")
            trainer.log_row({"step": 0, "tokens": 0, "wall_s": trainer.wall_s(), **trainer.progress.untrained})
        if trainer.main:
            ckpt.write_json_atomic(run_dir / "summary.json", summary)
        trainer.train()
        summary = _final_summary(trainer, facts)
        summary["num_samples"] = _write_samples(trainer)
    except NonFiniteLoss as exc:
        log.error("%s: %s", facts["cell"], exc)
        summary = {**_partial_summary(trainer, facts), "status": "failed", "error": str(exc), "failed_step": exc.step}
    except Exception as exc:
        if trainer.main:
            ckpt.write_json_atomic(run_dir / "summary.json", {**_partial_summary(trainer, facts), "status": "failed",
                                                              "error": f"{type(exc).__name__}: {exc}"})
        raise
    if trainer.main:
        ckpt.write_json_atomic(run_dir / "summary.json", summary)
    tracking.finish(acc, summary)
    return summary


def _write_run_files(trainer: Trainer, facts: dict[str, Any]) -> None:
    from lmbench.training import tracking

    spec, run_dir, acc, data = trainer.spec, trainer.run_dir, trainer.acc, trainer.data
    if acc.is_main_process:
        (run_dir / "spec.yaml").write_text(spec_to_yaml(spec), encoding="utf-8")
        data.tokenizer.save(run_dir / "tokenizer")
    tracking.write_env_json(run_dir, spec, acc, {"data": data.fingerprint, "mixed_precision": facts["mixed_precision"],
                                                 "mixed_precision_reason": facts["mixed_precision_reason"]})


def _partial_summary(trainer: Trainer, facts: dict[str, Any]) -> dict[str, Any]:
    p = trainer.progress
    train_tokens_per_s = p.tokens / p.train_s if p.train_s > 0 else None
    flops = trainer.model.flops_per_token(trainer.spec.data.block_size)
    return {**facts, "steps": p.step, "tokens": p.tokens, "epochs": p.step / trainer.steps_per_epoch,
            "wall_s": trainer.wall_s(), "train_s": p.train_s, "train_tokens_per_s": train_tokens_per_s,
            "flops_per_token": flops,
            "train_flops_per_s": None if train_tokens_per_s is None else flops * train_tokens_per_s,
            "best_val_loss": p.best_val_loss, "best_step": p.best_step, "stop_reason": trainer.end_reason,
            "resumed_from": p.resumed_from, **p.untrained}


def _final_summary(trainer: Trainer, facts: dict[str, Any]) -> dict[str, Any]:
    p = trainer.progress
    names = list(trainer.spec.eval.splits)
    done = trainer.last_eval[1] if trainer.last_eval[0] == p.step else {}  # a periodic eval of these weights
    results = {**{n: r for n, r in done.items() if n in names}, **trainer.evaluate([n for n in names if n not in done])}
    results = {n: results[n] for n in names if n in results}
    if "validation" in results:
        trainer.update_best(results["validation"])  # the last weights may beat every periodic evaluation
    metrics = trainer.flatten(results)
    trainer.log_row({"step": p.step, "tokens": p.tokens, "wall_s": trainer.wall_s(), "final": True, **metrics})
    return {**_partial_summary(trainer, facts), "status": "completed", **metrics}


def _write_samples(trainer: Trainer) -> int:
    """samples.jsonl from every sampler of spec.sample, and sampler_metrics.csv comparing the samplers
    (diversity, repetition, length, EOS share, perplexity under this model and under the reference run)."""
    from lmbench.training import tracking
    from lmbench.sampling import prompt_start_id, sample_texts, sampler_metrics

    spec, acc = trainer.spec, trainer.acc
    rows: list[dict[str, Any]] = []
    if acc.is_main_process and spec.sample.samplers and spec.sample.prompts:
        model, tokenizer = acc.unwrap_model(trainer.module).model, trainer.data.tokenizer
        with acc.autocast():
            rows = sample_texts(model, tokenizer, spec.sample, acc.device,
                                start_id=prompt_start_id(spec.data, tokenizer))
        with open(trainer.run_dir / "samples.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, default=str) + "\n" for row in rows)
        tracking.log_samples(acc, rows)
        frame = sampler_metrics(rows, model, tokenizer, _reference(trainer), device=acc.device)
        frame.to_csv(trainer.run_dir / "sampler_metrics.csv", index=False)
    acc.wait_for_everyone()
    return len(rows)


def _reference(trainer: Trainer) -> tuple[nn.Module, Any] | None:
    """The (model, tokenizer) of spec.sample.reference_run: a run directory or `cell:<name>` of this grid.

    A reference cell that has not finished yet (grid order) gives no reference, with a warning."""
    from lmbench.sample import load_run

    ref = trainer.spec.sample.reference_run
    if ref is None:
        return None
    run_dir = trainer.run_dir.parent / ref[5:] if ref.startswith("cell:") else Path(ref)
    if run_dir.resolve() == trainer.run_dir.resolve():
        return None
    summary = run_dir / "summary.json"
    if not summary.is_file() or json.loads(summary.read_text()).get("status") != "completed":
        log.warning("reference run %s is not completed: no reference perplexity for these samples", run_dir)
        return None
    model, tokenizer, _ = load_run(run_dir, trainer.acc.device)
    return model, tokenizer


def _write_failure(run_dir: Path, facts: dict[str, Any], exc: Exception) -> None:
    if partial_state().is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_json_atomic(run_dir / "summary.json", {**facts, "status": "failed",
                                                          "error": f"{type(exc).__name__}: {exc}"})
