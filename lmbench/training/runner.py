"""The runner: train, evaluate and sample one spec (one grid cell) on Accelerate, from one CPU to many GPUs and nodes.

    summary = run_cell(spec, Path("results/char-lstm/seed=0"), cell_name="seed=0", group=None, axes={})

`run_cell` seeds everything, prepares the token cache (main process first), builds the model, picks the
precision and builds the Accelerator and the Trainer (`build_cell`); the Trainer trains to a budget with
periodic evaluation and checkpoints and hands back a `TrainOutcome`; the runner then evaluates every split of
`eval.splits` in full (reusing the Trainer's validation of the final weights), writes samples, and records the
cell in summary.json (lmbench.results). Re-running it on the same folder after a kill resumes from the last
checkpoint and ends with the same metrics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmbench.models.base import LanguageModel
from lmbench.results import COMPLETED, FAILED, RUNNING, Summary, read_summary, write_summary
from lmbench.spec import ExperimentSpec, spec_to_yaml
from lmbench.training import tracking
from lmbench.training.evaluate import EvalResult, Evaluator, flatten_results
from lmbench.training.plan import make_train_data
from lmbench.training.precision import launcher_precision, resolve_mixed_precision
from lmbench.training.processes import force_cpu, partial_state, quiet_accelerate, reset_accelerate
from lmbench.training.trainer import Progress, Trainer, TrainOutcome

log = logging.getLogger(__name__)


@dataclass
class CellParts:
    """Everything one cell is made of once built; nothing is trained or written yet."""

    spec: ExperimentSpec
    run_dir: Path
    accelerator: Any
    model: LanguageModel  # the bare model (the Trainer trains a prepared wrapper of this same module)
    data: Any  # PreparedData: tokenizer, token splits, fingerprint
    evaluator: Evaluator
    metrics: tracking.MetricsLog
    trainer: Trainer
    facts: dict[str, Any]  # run facts for the summary: sizes, precision and why, processes, batch split


def run_cell(spec: ExperimentSpec, run_dir: Path, *, cell_name: str, group: str | None = None,
             axes: dict[str, Any] | None = None) -> Summary:
    """Train + evaluate + sample one cell into `run_dir`; returns the summary (also summary.json).

    A non-finite loss ends the run with status "failed" (summary returned, not raised); other errors are
    recorded in summary.json and raised. `axes` (grid axis values) is copied into the summary.
    """
    run_dir = Path(run_dir)
    facts: dict[str, Any] = {"cell": cell_name, "spec_name": spec.name, "group": group, "axes": dict(axes or {})}
    try:
        parts = build_cell(spec, run_dir, cell_name)
    except Exception as exc:
        if partial_state().is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_summary(run_dir, Summary(**facts, status=FAILED, error=f"{type(exc).__name__}: {exc}"))
        raise
    return _run(parts, {**facts, **parts.facts}, group)


def build_cell(spec: ExperimentSpec, run_dir: Path, cell_name: str, *, with_trackers: bool = True) -> CellParts:
    """Seed, prepare the data (main process first), build the model, choose the precision, create the
    Accelerator, the evaluator and the Trainer (prepared model + optimizer). Nothing is trained or written."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lmbench.data import prepare_data
    from lmbench.models import build_model

    reset_accelerate()
    quiet_accelerate()
    state = partial_state()
    if spec.train.num_threads:
        torch.set_num_threads(spec.train.num_threads)
    if state.is_main_process:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    set_seed(spec.seed)
    # The main process builds the cache; the others then load it. A node's local main may build its own copy
    # when the cache folder is not shared between nodes (prepare_data locks, so concurrent builds are safe).
    with state.main_process_first():
        data = prepare_data(spec, progress=state.is_main_process, load_only=not state.is_local_main_process)
    set_seed(spec.seed)  # same initial weights whether or not the cache had to be built
    model = build_model(spec.model, data.tokenizer, seed=spec.seed)
    precision, reason = resolve_mixed_precision(spec.train.mixed_precision, model.num_params(), state.device.type,
                                                launcher=launcher_precision(), family=spec.model.family)
    if "overrides the launcher" in reason and state.is_main_process:
        log.warning("%s: %s", cell_name, reason)
    kwargs = tracking.accelerator_kwargs(spec, Path(run_dir)) if with_trackers else {}
    accelerator = Accelerator(cpu=force_cpu(), mixed_precision=precision,
                              gradient_accumulation_steps=spec.train.grad_accum_steps, **kwargs)
    train_data = make_train_data(spec, data.splits["train"], data.tokenizer, model.carries_state)
    evaluator = Evaluator(data.splits, data.tokenizer, spec, accelerator)
    metrics = tracking.MetricsLog(Path(run_dir) / "metrics.jsonl", accelerator)
    trainer = Trainer(spec, Path(run_dir), accelerator, model, train_data, evaluator, metrics, cell_name)
    facts = {"num_params": model.num_params(), "num_trainable_params": model.num_params(trainable_only=True),
             "mixed_precision": precision, "mixed_precision_reason": reason,
             "world_size": accelerator.num_processes, "grad_accum_steps": spec.train.grad_accum_steps,
             "per_process_batch_size": trainer.micro}
    return CellParts(spec, Path(run_dir), accelerator, model, data, evaluator, metrics, trainer, facts)


def build_trainer(spec: ExperimentSpec, run_dir: Path, cell_name: str) -> Trainer:
    """The Trainer of `spec` without trackers (benchmarks drive its `train_step` directly)."""
    return build_cell(spec, run_dir, cell_name, with_trackers=False).trainer


def _run(parts: CellParts, facts: dict[str, Any], group: str | None) -> Summary:
    spec, run_dir, acc = parts.spec, parts.run_dir, parts.accelerator
    main = acc.is_main_process
    summary = Summary(status=RUNNING, **facts)
    try:
        _write_run_files(parts, facts)
        tracking.start(acc, spec, run_dir, facts["cell"], group)
        if main:
            write_summary(run_dir, summary)
        outcome = parts.trainer.run()
        if outcome.error is not None:
            summary = Summary(**_record(parts, outcome.progress, None, facts), status=FAILED,
                              error=str(outcome.error), failed_step=outcome.error.step)
        else:
            results = _final_results(parts, outcome)
            metrics = {**flatten_results(results), **_unit_records(parts, results)}
            summary = Summary(**_record(parts, outcome.progress, outcome.stop_reason, facts), status=COMPLETED,
                              **metrics)  # type: ignore[typeddict-item]  (the flat metric keys)
            summary.update(_divergence(parts, outcome, metrics))
            summary["num_samples"] = _write_samples(parts)
    except Exception as exc:
        if main:
            write_summary(run_dir, Summary(**_record(parts, parts.trainer.progress, None, facts), status=FAILED,
                                           error=f"{type(exc).__name__}: {exc}"))
        raise
    if main:
        write_summary(run_dir, summary)
        if summary["status"] == COMPLETED:
            _score_earlier_cells(parts)
    tracking.finish(acc, summary)
    return summary


def _write_run_files(parts: CellParts, facts: dict[str, Any]) -> None:
    spec, run_dir, acc, data = parts.spec, parts.run_dir, parts.accelerator, parts.data
    if acc.is_main_process:
        (run_dir / "spec.yaml").write_text(spec_to_yaml(spec), encoding="utf-8")
        data.tokenizer.save(run_dir / "tokenizer")
    tracking.write_env_json(run_dir, spec, acc, {"data": data.fingerprint, "mixed_precision": facts["mixed_precision"],
                                                 "mixed_precision_reason": facts["mixed_precision_reason"]})


def _record(parts: CellParts, p: Progress, stop_reason: str | None, facts: dict[str, Any]) -> dict[str, Any]:
    """The summary's facts and progress fields (everything but status, metrics and errors)."""
    train_tokens_per_s = p.tokens / p.train_s if p.train_s > 0 else None
    flops = parts.model.flops_per_token(parts.spec.data.block_size)
    return {**facts, "steps": p.step, "tokens": p.tokens, "epochs": p.step / parts.trainer.steps_per_epoch,
            "wall_s": parts.trainer.wall_s(), "train_s": p.train_s, "train_tokens_per_s": train_tokens_per_s,
            "flops_per_token": flops,
            "train_flops_per_s": None if train_tokens_per_s is None else flops * train_tokens_per_s,
            "best_val_loss": p.best_val_loss, "best_step": p.best_step, "stop_reason": stop_reason,
            "resumed_from": p.resumed_from, "first_train_loss": p.first_train_loss,
            "last_train_loss": p.last_train_loss, "min_train_loss": p.min_train_loss, **p.untrained}


def _divergence(parts: CellParts, outcome: TrainOutcome, metrics: dict[str, Any]) -> dict[str, Any]:
    """{diverged, divergence_reason} of a completed run (lmbench.training.divergence), with a warning."""
    from lmbench.training.divergence import divergence_reason

    p = outcome.progress
    reason = divergence_reason(final_val_loss=metrics.get("val_loss"),
                               untrained_val_loss=p.untrained.get("untrained_val_loss"),
                               vocab_size=parts.data.tokenizer.vocab_size, first_train_loss=p.first_train_loss,
                               last_train_loss=p.last_train_loss, min_train_loss=p.min_train_loss,
                               factor=parts.spec.train.divergence_factor, stopped=outcome.stop_reason == "diverged")
    if reason is not None and parts.accelerator.is_main_process:
        log.warning("%s diverged: %s (listed apart in reports, not ranked)", parts.run_dir.name, reason)
    return {"diverged": reason is not None, "divergence_reason": reason}


def _final_results(parts: CellParts, outcome: TrainOutcome) -> dict[str, EvalResult]:
    """Every split of eval.splits scored with the final weights (validation from the Trainer); the final row of
    metrics.jsonl."""
    names = list(parts.spec.eval.splits)
    rest = parts.evaluator.evaluate(parts.model, [n for n in names if n not in outcome.validation])
    scored = {**outcome.validation, **rest}
    results = {n: scored[n] for n in names if n in scored}  # in eval.splits order
    p = outcome.progress
    parts.metrics.append({"step": p.step, "tokens": p.tokens, "wall_s": parts.trainer.wall_s(), "final": True,
                          **flatten_results(results)})
    return results


def _unit_records(parts: CellParts, results: dict[str, EvalResult]) -> dict[str, Any]:
    """Per split with evaluation units: `units_<split>.parquet` (one row per document or chunk: NLL, tokens,
    bytes, chars, words; sums = the split's totals) and 95% bootstrap intervals over units for the summary:
    `<split>_<metric>_low/_high` for bpb, ppl and word_ppl, and `<split>_units`."""
    from lmbench.stats import unit_intervals
    from lmbench.training.evaluate import SPLIT_PREFIX

    out: dict[str, Any] = {}
    for name, result in results.items():
        if result.units is None:
            continue
        frame = result.units.frame()
        if parts.accelerator.is_main_process:
            frame.to_parquet(parts.run_dir / f"units_{name}.parquet", index=False)
        prefix = SPLIT_PREFIX.get(name, name)
        out[f"{prefix}_units"] = len(frame)
        intervals = unit_intervals(frame["nll_nats"].to_numpy(), frame["tokens"].to_numpy(),
                                   frame["bytes"].to_numpy(), frame["words"].to_numpy())
        for metric, interval in intervals.items():
            out[f"{prefix}_{metric}_low"], out[f"{prefix}_{metric}_high"] = interval.low, interval.high
    return out


def _write_samples(parts: CellParts) -> int:
    """samples.jsonl from every sampler of spec.sample, and sampler_metrics.csv comparing the samplers
    (diversity, repetition, length, EOS share, perplexity under this model and under the reference run)."""
    from lmbench.sampling import prompt_start_id, sample_texts, sampler_metrics

    spec, acc, model, tokenizer = parts.spec, parts.accelerator, parts.model, parts.data.tokenizer
    rows: list[dict[str, Any]] = []
    if acc.is_main_process and spec.sample.samplers and spec.sample.prompts:
        with acc.autocast():
            rows = sample_texts(model, tokenizer, spec.sample, acc.device,
                                start_id=prompt_start_id(spec.data, tokenizer))
        with open(parts.run_dir / "samples.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, default=str) + "\n" for row in rows)
        tracking.log_samples(acc, rows)
        frame = sampler_metrics(rows, model, tokenizer, _reference(parts), device=acc.device)
        frame.to_csv(parts.run_dir / "sampler_metrics.csv", index=False)
    acc.wait_for_everyone()
    return len(rows)


def _score_earlier_cells(parts: CellParts) -> None:
    """Cells of this grid that name this one as `sample.reference_run` and completed before it get their
    reference_ppl now (sampler_metrics.csv), so the sampler table does not depend on the order cells ran in.
    (A cell finishing at the same moment as its reference, in another launcher, may still miss it.)"""
    import pandas as pd
    import yaml

    from lmbench.results import write_text_atomic
    from lmbench.sampling.metrics import reference_scores
    from lmbench.tokenizers import load_tokenizer

    me = f"cell:{parts.run_dir.name}"
    for cell in sorted(p for p in parts.run_dir.parent.iterdir() if p.is_dir() and p != parts.run_dir):
        table_path, samples_path = cell / "sampler_metrics.csv", cell / "samples.jsonl"
        if not (table_path.is_file() and samples_path.is_file() and (cell / "spec.yaml").is_file()):
            continue
        spec = yaml.safe_load((cell / "spec.yaml").read_text(encoding="utf-8")) or {}
        if (spec.get("sample") or {}).get("reference_run") != me or \
                (read_summary(cell) or {}).get("status") != COMPLETED:
            continue
        table = pd.read_csv(table_path)
        if "reference_ppl" in table and table["reference_ppl"].notna().all():
            continue
        rows = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        with parts.accelerator.autocast():
            scores = reference_scores(rows, load_tokenizer(cell / "tokenizer"),
                                      (parts.model, parts.data.tokenizer), device=parts.accelerator.device)
        values = [scores.get(s, (float("nan"), "")) for s in table["sampler"]]
        table["reference_ppl"], table["note"] = [v[0] for v in values], [v[1] for v in values]
        write_text_atomic(table_path, table.to_csv(index=False))
        log.info("%s: scored the samples of %s, which finished before its reference", parts.run_dir.name, cell.name)


def _reference(parts: CellParts) -> tuple[LanguageModel, Any] | None:
    """The (model, tokenizer) of spec.sample.reference_run: a run directory or `cell:<name>` of this grid.

    A reference cell that has not finished yet (grid order) gives no reference, with a warning."""
    from lmbench.training.checkpoint import load_run

    ref = parts.spec.sample.reference_run
    if ref is None:
        return None
    run_dir = parts.run_dir.parent / ref[5:] if ref.startswith("cell:") else Path(ref)
    if run_dir.resolve() == parts.run_dir.resolve():
        return None
    if (read_summary(run_dir) or {}).get("status") != COMPLETED:
        log.warning("reference run %s is not completed: no reference perplexity for these samples", run_dir)
        return None
    model, tokenizer, _ = load_run(run_dir, parts.accelerator.device)
    return model, tokenizer
