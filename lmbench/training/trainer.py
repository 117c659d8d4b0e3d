"""The training loop of one cell. `Trainer.run()` owns everything between a built model and a trained one: it
resumes from the last checkpoint (model, optimizer, RNG, data position, carried recurrent state), evaluates the
untrained model when asked, trains under the budgets (max_steps / epochs / max_tokens / max_seconds: the first
reached ends training) with periodic evaluation, best and last checkpoints and optional early stopping,
evaluates the final weights on validation, and returns a `TrainOutcome`. The runner (runner.py) builds the
Trainer and reads only that outcome.

Batches: `train.batch_size` is the global batch in sequences, split over processes and accumulation steps.
Each optimizer step consumes global batch `step` of a seeded, per-epoch order (plan.py). The loss of a step is
the summed NLL of the global batch divided by its number of targets (not a mean of per-process means).

Recurrent models on packed data carry their detached state from one window of a lane to the next (truncated
BPTT); on documents data every batch starts from a fresh state.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbench.data.batching import IGNORE_INDEX
from lmbench.models.base import LanguageModel
from lmbench.results import DamagedFile, StopReason
from lmbench.spec import ExperimentSpec
from lmbench.training import checkpoint as ckpt
from lmbench.training.evaluate import EvalResult, Evaluator, flatten_results
from lmbench.training.fused_loss import linear_cross_entropy
from lmbench.training.optim import build_optimizer
from lmbench.training.plan import TrainData
from lmbench.training.schedules import lr_at
from lmbench.training.tracking import MetricsLog

log = logging.getLogger(__name__)



class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss (or gradient norm); the run stops and is marked failed."""

    def __init__(self, step: int, what: str, value: float, checkpoint: Path | None) -> None:
        self.step = step
        kept = f"the last good checkpoint ({checkpoint.name}/) is kept" if checkpoint else "no checkpoint was written"
        super().__init__(f"non-finite {what} ({value}) at step {step}; stopped, {kept} "
                         f"(lower train.lr, set train.grad_clip, or use train.mixed_precision=no)")


# --------------------------------------------------------------------------------------------- model + loss
FUSED_LOSS_MIN_VOCAB = 4096  # vocabularies from this size get the fused projection + loss


class TrainModule(nn.Module):
    """What Accelerate prepares: the LanguageModel plus its summed loss, so DDP, autocast and torch.compile see
    one forward, including the carried-state forward of recurrent models. Its state_dict is the model's own
    (no prefix), so checkpoints load straight into a bare LanguageModel."""

    def __init__(self, model: LanguageModel, fused_loss: bool = True) -> None:
        super().__init__()
        self.model = model
        self.recurrent = model.carries_state
        # a large vocabulary's projection and loss in cache-sized chunks (lmbench.training.fused_loss); a small
        # one (characters) gains nothing from it
        head = model.output_layer() if fused_loss and self.recurrent else None
        self.fused = head is not None and head.out_features >= FUSED_LOSS_MIN_VOCAB

    def forward(self, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
                state: Any = None) -> tuple[Tensor, Any]:
        """-> (summed NLL in nats over labels != -100, float32 scalar; the new state or None)."""
        if self.fused:
            features, state = self.model.features_with_state(input_ids, state, attention_mask)  # (B, T, d)
            head = self.model.output_layer()
            return linear_cross_entropy(features.flatten(0, 1), head.weight, head.bias, labels.flatten()), state
        if self.recurrent:
            logits, state = self.model.forward_with_state(input_ids, state, attention_mask)  # (B, T, V)
        else:
            logits, state = self.model(input_ids, attention_mask), None
        nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                              reduction="sum")
        return nll, state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True,  # type: ignore[override]
                        assign: bool = False) -> Any:
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)


def detach_state(state: Any) -> Any:
    """Cut a carried state from the autograd graph (truncated BPTT)."""
    if state is None:
        return None
    if hasattr(state, "detach"):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


# --------------------------------------------------------------------------------------------- budgets
def total_steps(spec: ExperimentSpec, steps_per_epoch: int, tokens_per_step: float) -> int | None:
    """Optimizer steps the step-countable budgets allow (the smallest); None with only max_seconds."""
    t = spec.train
    candidates = []
    if t.max_steps is not None:
        candidates.append(t.max_steps)
    if t.epochs is not None:
        candidates.append(max(1, math.ceil(t.epochs * steps_per_epoch - 1e-9)))
    if t.max_tokens is not None and tokens_per_step > 0:
        candidates.append(max(1, math.ceil(t.max_tokens / tokens_per_step)))
    return min(candidates) if candidates else None


def expected_total_steps(step: int, step_budget: int | None, max_seconds: float | None, wall_s: float) -> int | None:
    """The step count training will end at, for the progress bar's total and ETA: the step budget, or sooner
    when `max_seconds` binds first (extrapolated from the wall time per step so far, evaluations included)."""
    if max_seconds is None or step == 0 or wall_s <= 0:
        return step_budget
    by_time = step + math.ceil(max(0.0, max_seconds - wall_s) * step / wall_s)
    return by_time if step_budget is None else min(step_budget, by_time)


# --------------------------------------------------------------------------------------------- the trainer
@dataclass
class Progress:
    """What a checkpoint's trainer_state.json holds: the run's position and record over all its sessions."""

    step: int = 0
    tokens: int = 0
    wall_s: float = 0.0  # all sessions, training + evaluation + checkpoints
    train_s: float = 0.0  # all sessions, optimizer steps only
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stop_reason: StopReason | None = None  # set when early stopping ended training (budgets are not stored)
    first_train_loss: float | None = None  # logged training losses (window means): divergence checks
    last_train_loss: float | None = None
    min_train_loss: float | None = None
    untrained: dict[str, Any] = field(default_factory=dict)  # untrained_val_loss, ... (eval.untrained)
    resumed_from: list[int] = field(default_factory=list)  # the step each later session started from


@dataclass(frozen=True)
class TrainOutcome:
    """What `Trainer.run()` hands back: the final progress, why training ended (None when it failed), the
    validation results of the final weights ({} when validation is not evaluated), and the failure if any."""

    progress: Progress
    stop_reason: StopReason | None
    validation: dict[str, EvalResult]
    error: NonFiniteLoss | None = None


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """A collated CPU batch on `device`. For CUDA the tensors are pinned first, so the copies are asynchronous
    (non_blocking) and overlap the previous step's kernels; on CPU nothing is pinned or copied."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class Trainer:
    """One cell's training: built by the runner from prepared parts, run once with `run()`."""

    def __init__(self, spec: ExperimentSpec, run_dir: Path, accelerator: Any, model: LanguageModel,
                 train_data: TrainData, evaluator: Evaluator, metrics: MetricsLog, cell_name: str) -> None:
        self.spec, self.run_dir, self.acc, self.model = spec, run_dir, accelerator, model
        self.train_data, self.evaluator, self.metrics, self.cell_name = train_data, evaluator, metrics, cell_name
        t = spec.train
        self.world, self.accum = accelerator.num_processes, t.grad_accum_steps
        self.micro = train_data.micro_batch_size(self.world, self.accum)
        optimizer = build_optimizer(model, name=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, betas=tuple(t.betas))
        module = TrainModule(model, fused_loss=not t.compile)
        if t.compile:
            module.compile()
        self.module, self.optimizer = accelerator.prepare(module, optimizer)
        self.steps_per_epoch = train_data.plan.steps_per_epoch
        self.tokens_per_step = t.batch_size * train_data.tokens_per_item
        self.total_steps = total_steps(spec, self.steps_per_epoch, self.tokens_per_step)
        self._progress = Progress()
        self._carry: list[Any] = [None] * self.accum
        self._session_start = time.perf_counter()
        self._time_up = False  # the main process saw max_seconds pass (agreed on by all processes)
        self._last_eval: tuple[int, dict[str, EvalResult]] = (-1, {})  # (step, results) of the last evaluation
        self._unsaved = False  # progress or best weights changed since the last checkpoint
        self._ready: tuple[int, int, list[dict[str, Tensor]]] | None = None  # prefetched (step, targets, batches)

    # ----- what the runner may read
    @property
    def progress(self) -> Progress:
        """A copy of the progress so far (for the record of a run that stops with an exception)."""
        return dataclasses.replace(self._progress, untrained=dict(self._progress.untrained),
                                   resumed_from=list(self._progress.resumed_from))

    def wall_s(self) -> float:
        """Wall-clock seconds of the run so far, every session included."""
        return self._progress.wall_s + time.perf_counter() - self._session_start

    def run(self) -> TrainOutcome:
        """Resume or start, train to a budget, keep the best and last checkpoints; see the module docstring.

        A non-finite loss ends the run with `outcome.error` set (the last good checkpoint stays); any other
        exception propagates, and a rerun resumes from the last checkpoint."""
        if not self._resume() and self.spec.eval.untrained:
            self._evaluate_untrained()
        try:
            reason = self._train()
        except NonFiniteLoss as exc:
            log.error("%s: %s", self.cell_name, exc)
            return TrainOutcome(self.progress, None, {}, exc)
        validation = self._final_validation()
        if reason != "diverged":  # the last checkpoint stays the last good weights
            self._save_if_new()
        return TrainOutcome(self.progress, reason, validation)

    # ----- resume and checkpoints
    def _resume(self) -> bool:
        """Load the newest checkpoint that verifies (a damaged one is named in a warning and the previous one
        used); True when resumed. No checkpoint at all: a fresh start. Only damaged ones: DamagedFile."""
        if self.acc.is_main_process:
            ckpt.recover(self.run_dir)  # repairs an interrupted swap; the others wait, then read
        self.acc.wait_for_everyone()
        good, damaged = ckpt.usable_checkpoints(self.run_dir)
        for problem in damaged:
            log.warning("%s: damaged checkpoint: %s%s", self.cell_name, problem,
                        "; resuming from the previous checkpoint" if good else "")
        if not good and damaged:
            raise DamagedFile(f"no usable checkpoint in {self.run_dir}: {'; '.join(damaged)} (delete "
                              f"{self.run_dir / ckpt.CHECKPOINT}* to start this cell over)")
        if not good:
            self.metrics.clear()  # a run killed before its first checkpoint starts over
            return False
        state, carry = ckpt.load_checkpoint(self.acc, good[0])
        p = Progress(**{k: v for k, v in state.items() if k in Progress.__dataclass_fields__})
        p.resumed_from = [*p.resumed_from, p.step]
        self._progress, self._session_start = p, time.perf_counter()
        if self.train_data.carry and carry and state.get("world_size") == self.world:
            self._carry = self._carry_from_tensors(carry)
        self.metrics.truncate(p.step)  # rows logged after the checkpoint will be logged again
        log.info("%s: resumed from step %d (%s)", self.cell_name, p.step, self.run_dir)
        return True

    def _carry_tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for slot, state in enumerate(self._carry):
            out.update({f"{slot}.{k}": v for k, v in ckpt.state_to_tensors(state).items()})
        return out

    def _carry_from_tensors(self, tensors: dict[str, Tensor]) -> list[Any]:
        template = self.model.init_state(self.micro, self.acc.device)
        carry: list[Any] = []
        for slot in range(self.accum):
            mine = {k.partition(".")[2]: v.to(self.acc.device) for k, v in tensors.items()
                    if k.partition(".")[0] == str(slot)}
            carry.append(ckpt.tensors_to_state(template, mine) if mine else None)
        return carry

    def _save(self) -> None:
        p = self._progress
        p.wall_s = self.wall_s()
        self._session_start = time.perf_counter()
        state = {**dataclasses.asdict(p), "epoch": p.step / self.steps_per_epoch, "world_size": self.world,
                 "data_position": list(divmod(p.step, self.steps_per_epoch)), "cell": self.cell_name}
        carry = self._carry_tensors() if self.train_data.carry else None
        ckpt.save_checkpoint(self.acc, self.run_dir, state, carry)
        self._unsaved = False

    def _save_if_new(self) -> None:
        """The final checkpoint, unless the last one already holds these weights and this record."""
        if self._unsaved or ckpt.checkpoint_dir(self.run_dir) is None:
            self._save()

    # ----- one optimizer step
    def global_indices(self, step: int) -> np.ndarray:
        """The dataset items of update `step`'s global batch (every process's), from the seeded plan."""
        return self.train_data.plan.batch(*divmod(step, self.steps_per_epoch))

    def global_batch(self, step: int) -> dict[str, Tensor]:
        """Update `step`'s whole global batch, collated on the host (for tests and benchmarks)."""
        return self.train_data.batch(self.global_indices(step))

    def micro_batches(self, indices: np.ndarray) -> Iterator[dict[str, Tensor]]:
        """This process's micro-batches of a global batch: slot a * world + rank, a = 0..accum-1 (only these are
        built)."""
        for a in range(self.accum):
            slot = a * self.world + self.acc.process_index
            yield to_device(self.train_data.batch(indices[slot * self.micro:(slot + 1) * self.micro]), self.acc.device)

    def _batches(self, step: int) -> tuple[int, list[dict[str, Tensor]]]:
        """(targets in the global batch, this process's micro-batches on the device) for update `step`: the
        ones `_prefetch` made while the previous update ran, else made now."""
        ready, self._ready = self._ready, None
        if ready is not None and ready[0] == step:
            return ready[1], ready[2]
        indices = self.global_indices(step)
        return self.train_data.num_targets(indices), list(self.micro_batches(indices))

    def _prefetch(self, step: int) -> None:
        """Collate, pin and start copying update `step`'s batches now: on a GPU this host work overlaps the
        kernels of the update just queued instead of leaving the device idle. (Batches come from a seeded plan,
        not from a random stream, so making them early changes nothing.)"""
        if self.acc.device.type == "cuda":
            self._ready = (step, *self._batches(step))

    def train_step(self, step: int) -> tuple[float, int, float | None]:
        """Run the update that produces step `step + 1` -> (mean loss of the global batch, its targets, grad norm).

        One host sync per update, after the optimizer step is queued: loss, stop flag and gradient norm come
        back together. A non-finite loss or norm is still caught at that update (the run ends at once, and the
        last checkpoint, written before it, is what a rerun resumes)."""
        num_targets, batches = self._batches(step)
        if self.train_data.carry and step % self.steps_per_epoch == 0:
            self._carry = [None] * self.accum  # a new pass over the stream starts from a fresh state
        scale = self.world * self.accum / max(num_targets, 1)  # backward divides by accum, DDP averages over world
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        local_nll = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        for a, batch in enumerate(batches):
            with self.acc.accumulate(self.module):
                state = self._carry[a] if self.train_data.carry else None
                nll, state = self.module(batch["input_ids"], batch["labels"], batch.get("attention_mask"), state)
                if self.train_data.carry:
                    self._carry[a] = detach_state(state)
                self.acc.backward(nll * scale)
                local_nll += nll.detach().double()
        stop_flag = float(self.acc.is_main_process and self._out_of_time())
        stats = self.acc.reduce(torch.stack([local_nll, local_nll.new_tensor(stop_flag)]), reduction="sum")
        norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._prefetch(step + 1)
        total_nll, stop, grad_norm = torch.cat([stats, stats.new_full((1,), math.nan) if norm is None
                                                else norm.detach().reshape(1).to(stats)]).tolist()
        loss = total_nll / max(num_targets, 1)
        if not math.isfinite(loss):
            raise NonFiniteLoss(step + 1, "loss", loss, ckpt.checkpoint_dir(self.run_dir))
        # fp16: a non-finite norm is an overflow; the loss scaler skipped that update and lowers its scale
        if norm is not None and not math.isfinite(grad_norm) and self.acc.mixed_precision != "fp16":
            raise NonFiniteLoss(step + 1, "gradient norm", grad_norm, ckpt.checkpoint_dir(self.run_dir))
        self._time_up = stop > 0
        return loss, num_targets, None if norm is None else grad_norm

    def lr(self, step: int) -> float:
        """The learning rate of the update at `step` (0-based count of updates done)."""
        t = self.spec.train
        return lr_at(t.schedule, step, t.lr, warmup_steps=t.warmup_steps, total_steps=self.total_steps,
                     min_lr_ratio=t.min_lr_ratio)

    def _clip(self) -> Tensor | None:
        """Clip the gradients to train.grad_clip; their total norm before clipping (on the device), or None."""
        clip = self.spec.train.grad_clip
        if clip is None:
            return None
        return torch.as_tensor(self.acc.clip_grad_norm_(self.module.parameters(), clip))

    def _out_of_time(self) -> bool:
        limit = self.spec.train.max_seconds
        return limit is not None and self.wall_s() >= limit

    # ----- evaluation
    def _evaluate(self, names: list[str]) -> dict[str, EvalResult]:
        return self.evaluator.evaluate(self.acc.unwrap_model(self.module).model, names)

    def _evaluate_untrained(self) -> None:
        """The freshly initialised model on every evaluated split, logged at step 0 (untrained vs trained)."""
        p = self._progress
        p.untrained = flatten_results(self._evaluate(list(self.spec.eval.splits)), "untrained_")
        self.metrics.append({"step": 0, "tokens": 0, "wall_s": self.wall_s(), **p.untrained})

    def _periodic_eval(self) -> None:
        """Evaluate validation, log it, keep the best weights, count evaluations without improvement."""
        results = self._evaluate(["validation"])
        if "validation" not in results:
            return
        p = self._progress
        self._last_eval = (p.step, results)
        self.metrics.append({"step": p.step, "tokens": p.tokens, "wall_s": self.wall_s(), **flatten_results(results)})
        if self._update_best(results["validation"]):
            p.evals_since_best = 0
        else:
            p.evals_since_best += 1
        patience = self.spec.train.early_stopping_patience
        if patience is not None and p.evals_since_best >= patience:
            p.stop_reason = "early_stopping"
            log.info("%s: early stopping, no validation improvement in %d evaluations", self.cell_name, patience)

    def _final_validation(self) -> dict[str, EvalResult]:
        """Validation results of the final weights (reusing a periodic evaluation at this step); the final weights
        may beat every periodic evaluation, so the best checkpoint follows. {} when validation is not evaluated."""
        if "validation" not in self.spec.eval.splits:
            return {}
        step, results = self._last_eval
        if step != self._progress.step:
            results = self._evaluate(["validation"])
        if "validation" in results:
            self._update_best(results["validation"])
        return {k: v for k, v in results.items() if k == "validation"}

    def _update_best(self, val: EvalResult) -> bool:
        """Keep `checkpoint/best/` when `val` beats the best validation loss so far; True if it did."""
        p = self._progress
        if p.best_val_loss is not None and not val.loss < p.best_val_loss:
            return False
        p.best_val_loss, p.best_step = val.loss, p.step
        self._unsaved = True
        if self.acc.is_main_process:
            ckpt.save_best(self.acc.unwrap_model(self.module).model, self.run_dir,
                           {"step": p.step, "tokens": p.tokens, "val_loss": val.loss, "val_bpb": val.bpb})
        self.acc.wait_for_everyone()
        return True

    # ----- the loop
    def _stop_reason(self) -> StopReason | None:
        """Why training ends now, or None to go on."""
        t, p = self.spec.train, self._progress
        if p.stop_reason:
            return p.stop_reason
        if t.max_steps is not None and p.step >= t.max_steps:
            return "max_steps"
        if t.epochs is not None and p.step >= t.epochs * self.steps_per_epoch - 1e-9:
            return "epochs"
        if t.max_tokens is not None and p.tokens >= t.max_tokens:
            return "max_tokens"
        if self._time_up:
            return "max_seconds"
        return None

    def _train(self) -> StopReason:
        """Steps until a budget is reached, with periodic evaluations and checkpoints."""
        t, p = self.spec.train, self._progress
        with self._bar() as bar:  # closed however training ends (a failure, an interrupt)
            window = {"nll": 0.0, "targets": 0, "seconds": 0.0}  # since the last logged row
            while (reason := self._stop_reason()) is None:
                started = time.perf_counter()
                loss, targets, grad_norm = self.train_step(p.step)
                seconds = time.perf_counter() - started
                p.step, p.tokens, p.train_s = p.step + 1, p.tokens + targets, p.train_s + seconds
                self._unsaved = True
                for key, value in (("nll", loss * targets), ("targets", targets), ("seconds", seconds)):
                    window[key] += value
                total = expected_total_steps(p.step, self.total_steps, t.max_seconds, self.wall_s())
                if total != bar.total:
                    bar.total = total  # the ETA follows whichever budget binds (a time budget, often)
                bar.update(1)
                if p.step % t.log_every == 0:
                    self._log_train(window, grad_norm, bar)
                    window = dict.fromkeys(window, 0)
                if t.eval_every and p.step % t.eval_every == 0:
                    self._periodic_eval()
                every = t.checkpoint_every or t.eval_every
                if every and p.step % every == 0 and self._stop_reason() is None:
                    self._save()
        return reason

    def _bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self._progress.step, desc=self.cell_name, unit="step",
                    disable=not self.acc.is_main_process, dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def _log_train(self, window: dict[str, float], grad_norm: float | None, bar: Any) -> None:
        p = self._progress
        loss = window["nll"] / max(window["targets"], 1)
        tokens_per_s = window["targets"] / max(window["seconds"], 1e-9)
        row = {"step": p.step, "tokens": p.tokens, "wall_s": self.wall_s(), "train_loss": loss,
               "lr": self.lr(p.step - 1), "tokens_per_s": tokens_per_s, "epoch": p.step / self.steps_per_epoch}
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        self.metrics.append(row)
        p.first_train_loss = loss if p.first_train_loss is None else p.first_train_loss
        p.min_train_loss = loss if p.min_train_loss is None else min(p.min_train_loss, loss)
        p.last_train_loss = loss
        limit = self.spec.train.stop_on_divergence
        if limit is not None and loss > limit * p.min_train_loss:
            p.stop_reason = "diverged"
            log.warning("%s: training loss %.4g at step %d is over %g x its lowest (%.4g): stopping "
                        "(train.stop_on_divergence); the last checkpoint keeps the weights from before",
                        self.cell_name, loss, p.step, limit, p.min_train_loss)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
