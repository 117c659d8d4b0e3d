"""The training loop of one cell (`Trainer`, built by `lmbench.training.runner.build_trainer`): it trains the model under
its budgets (max_steps / epochs / max_tokens / max_seconds: the first reached ends training) with periodic
evaluation, best and last checkpoints, optional early stopping, and resumes from the last checkpoint
(model, optimizer, RNG, data position, carried recurrent state).

Batches: `train.batch_size` is the global batch in sequences, split over processes and accumulation steps.
Each optimizer step consumes global batch `step` of a seeded, per-epoch order (lmbench/data/plan.py). The loss
of a step is the summed NLL of the global batch divided by its number of targets (not a mean of per-process
means).

Recurrent models on packed data carry their detached state from one window of a lane to the next (truncated
BPTT); on documents data every batch starts from a fresh state.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbench.training import checkpoint as ckpt
from lmbench.training.plan import TrainData
from lmbench.training.evaluate import EvalResult, evaluate_split, is_recurrent
from lmbench.training.optim import build_optimizer
from lmbench.training.schedules import DECAYING, lr_at
from lmbench.spec import ExperimentSpec

log = logging.getLogger(__name__)

IGNORE = -100
SPLIT_PREFIX = {"train": "train", "validation": "val", "test": "test"}


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss (or gradient norm); the run stops and is marked failed."""

    def __init__(self, step: int, what: str, value: float) -> None:
        self.step = step
        super().__init__(f"non-finite {what} ({value}) at step {step}; stopped, the last good checkpoint is kept "
                         f"(lower train.lr, set train.grad_clip, or use train.mixed_precision=no)")


# --------------------------------------------------------------------------------------------- model + loss
class TrainModule(nn.Module):
    """What Accelerate prepares: the LanguageModel plus its summed loss, so DDP, autocast and torch.compile see
    one forward, including the carried-state forward of recurrent models. Its state_dict is the model's own
    (no prefix), so checkpoints load straight into a bare LanguageModel."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.recurrent = is_recurrent(model)

    def forward(self, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
                state: Any = None) -> tuple[Tensor, Any]:
        """-> (summed NLL in nats over labels != -100, float32 scalar; the new state or None)."""
        if self.recurrent:
            logits, state = self.model.forward_with_state(input_ids, state, attention_mask)  # (B, T, V)
        else:
            logits, state = self.model(input_ids, attention_mask), None
        nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum")
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


# --------------------------------------------------------------------------------------------- the trainer
@dataclass
class Progress:
    """What a checkpoint's trainer_state.json holds (plus timing of this session)."""

    step: int = 0
    tokens: int = 0
    wall_s: float = 0.0  # all sessions, training + evaluation + checkpoints
    train_s: float = 0.0  # all sessions, optimizer steps only
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stop_reason: str | None = None
    untrained: dict[str, Any] = field(default_factory=dict)
    resumed_from: list[int] = field(default_factory=list)


class Trainer:
    """One cell's training loop; built by `run_cell`."""

    def __init__(self, spec: ExperimentSpec, run_dir: Path, accelerator: Any, model: nn.Module, data: Any,
                 train_data: TrainData, cell_name: str) -> None:
        self.spec, self.run_dir, self.acc, self.model, self.data = spec, run_dir, accelerator, model, data
        self.train_data, self.cell_name = train_data, cell_name
        t = spec.train
        self.world, self.accum = accelerator.num_processes, t.grad_accum_steps
        if t.batch_size % (self.world * self.accum):
            from lmbench.errors import SpecError

            raise SpecError("train.batch_size", f"{t.batch_size} is not divisible by processes x grad_accum_steps "
                                                f"({self.world} x {self.accum})")
        self.micro = t.batch_size // (self.world * self.accum)
        optimizer = build_optimizer(model, name=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, betas=tuple(t.betas))
        module = TrainModule(model)
        if t.compile:
            module.compile()
        self.module, self.optimizer = accelerator.prepare(module, optimizer)
        self.steps_per_epoch = train_data.plan.steps_per_epoch
        self.tokens_per_step = t.batch_size * train_data.tokens_per_item
        self.total_steps = total_steps(spec, self.steps_per_epoch, self.tokens_per_step)
        if t.schedule in DECAYING and self.total_steps is None:
            from lmbench.errors import SpecError

            raise SpecError("train.schedule", f"{t.schedule!r} decays over the run and needs max_steps, epochs or "
                                              "max_tokens (max_seconds alone gives no step count)")
        self.progress = Progress()
        self.carry: list[Any] = [None] * self.accum
        self.metrics_path = run_dir / "metrics.jsonl"
        self.session_start = time.perf_counter()
        self.wall_offset = 0.0
        self.time_up = False  # the main process saw max_seconds pass (agreed on by all processes)
        self.facts: dict[str, Any] = {}  # run facts for the summary (set by build_trainer)
        self.end_reason: str | None = None
        self.last_eval: tuple[int, dict[str, EvalResult]] = (-1, {})  # (step, results) of the last evaluation

    # ----- bookkeeping
    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    def wall_s(self) -> float:
        return self.wall_offset + time.perf_counter() - self.session_start

    def log_row(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl (flushed) and to the trackers; main process only."""
        if not self.main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
        self.acc.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    def lr(self, step: int) -> float:
        t = self.spec.train
        return lr_at(t.schedule, step, t.lr, warmup_steps=t.warmup_steps, total_steps=self.total_steps,
                     min_lr_ratio=t.min_lr_ratio)

    # ----- resume
    def resume(self) -> bool:
        """Load the last complete checkpoint if there is one; True when resumed."""
        if self.main:
            ckpt.recover(self.run_dir)  # repairs an interrupted swap; the others wait, then read
        self.acc.wait_for_everyone()
        found = ckpt.checkpoint_dir(self.run_dir)
        if found is None:
            if self.main and self.metrics_path.exists():
                self.metrics_path.unlink()  # a run killed before its first checkpoint starts over
            return False
        state, carry = ckpt.load_checkpoint(self.acc, found)
        p = Progress(**{k: v for k, v in state.items() if k in Progress.__dataclass_fields__})
        p.resumed_from = [*p.resumed_from, p.step]
        self.progress, self.wall_offset = p, p.wall_s
        if self.train_data.carry and carry and state.get("world_size") == self.world:
            self.carry = self._carry_from_tensors(carry)
        if self.main:
            self._truncate_metrics(p.step)
        log.info("resumed %s from step %d", self.run_dir, p.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics.jsonl rows logged after the checkpoint (they will be logged again)."""
        if not self.metrics_path.exists():
            return
        keep = [ln for ln in self.metrics_path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
        tmp.replace(self.metrics_path)

    def _carry_tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for slot, state in enumerate(self.carry):
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

    def save(self) -> None:
        p = self.progress
        p.wall_s = self.wall_s()
        state = {**p.__dict__, "epoch": p.step / self.steps_per_epoch, "world_size": self.world,
                 "data_position": list(divmod(p.step, self.steps_per_epoch)), "cell": self.cell_name}
        carry = self._carry_tensors() if self.train_data.carry else None
        ckpt.save_checkpoint(self.acc, self.run_dir, state, carry)

    # ----- one optimizer step
    def global_items(self, step: int) -> list[dict[str, Tensor]]:
        epoch, index = divmod(step, self.steps_per_epoch)
        indices = self.train_data.plan.batch(epoch, index)
        return [self.train_data.dataset[int(i)] for i in indices]

    def micro_batches(self, items: list[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
        """This process's micro-batches: slot a * world + rank of the global batch, a = 0..accum-1."""
        for a in range(self.accum):
            slot = a * self.world + self.acc.process_index
            batch = self.train_data.collate(items[slot * self.micro:(slot + 1) * self.micro])
            yield {k: v.to(self.acc.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, step: int) -> tuple[float, int, float | None]:
        """Run the update that produces step `step + 1` -> (mean loss of the global batch, its targets, grad norm)."""
        items = self.global_items(step)
        if self.train_data.carry and step % self.steps_per_epoch == 0:
            self.carry = [None] * self.accum  # a new pass over the stream starts from a fresh state
        num_targets = int(sum(int((item["labels"] != IGNORE).sum()) for item in items))
        scale = self.world * self.accum / max(num_targets, 1)  # backward divides by accum, DDP averages over world
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        local_nll = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        for a, batch in enumerate(self.micro_batches(items)):
            with self.acc.accumulate(self.module):
                state = self.carry[a] if self.train_data.carry else None
                nll, state = self.module(batch["input_ids"], batch["labels"], batch.get("attention_mask"), state)
                if self.train_data.carry:
                    self.carry[a] = detach_state(state)
                self.acc.backward(nll * scale)
                local_nll += nll.detach().double()
        stop_flag = float(self.main and self.out_of_time())
        stats = self.acc.reduce(torch.stack([local_nll, local_nll.new_tensor(stop_flag)]), reduction="sum")
        loss = float(stats[0]) / max(num_targets, 1)
        if not math.isfinite(loss):
            raise NonFiniteLoss(step + 1, "loss", loss)
        grad_norm = self.clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.time_up = bool(stats[1] > 0)
        return loss, num_targets, grad_norm

    def clip(self) -> float | None:
        clip = self.spec.train.grad_clip
        if clip is None:
            return None
        norm = float(self.acc.clip_grad_norm_(self.module.parameters(), clip))
        if not math.isfinite(norm) and self.acc.mixed_precision != "fp16":  # fp16: the scaler skips the step
            raise NonFiniteLoss(self.progress.step + 1, "gradient norm", norm)
        return norm

    def out_of_time(self) -> bool:
        limit = self.spec.train.max_seconds
        return limit is not None and self.wall_s() >= limit

    # ----- evaluation
    def evaluate(self, split_names: list[str]) -> dict[str, EvalResult]:
        """Full passes over the named splits that exist (all processes take part)."""
        d, e, tok = self.spec.data, self.spec.eval, self.data.tokenizer
        model = self.acc.unwrap_model(self.module).model
        results = {}
        for name in split_names:
            split = self.data.splits.get(name)
            if split is None or split.stats.num_tokens == 0:
                continue
            results[name] = evaluate_split(
                model, split, mode=d.batching, block_size=d.block_size, stride=e.stride, batch_size=e.batch_size,
                bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id, accelerator=self.acc,
                autocast=self.acc.autocast)
            if tok.unk_id not in (tok.eos_id, tok.pad_id, tok.bos_id):
                # <unk> targets are cheap to predict but stand for whole words: bits per byte flatters such
                # models, so the share is reported beside the metrics (see runs.py)
                unk = int(np.count_nonzero(np.asarray(split.tokens) == tok.unk_id))
                results[name] = replace(results[name], unk_rate=unk / max(1, split.stats.num_tokens))
        return results

    @staticmethod
    def flatten(results: dict[str, EvalResult], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, result in results.items():
            out.update(result.metrics(prefix + SPLIT_PREFIX.get(name, name)))
        return out

    def periodic_eval(self) -> None:
        """Evaluate validation, log it, keep the best weights, count evaluations without improvement."""
        results = self.evaluate(["validation"])
        if "validation" not in results:
            return
        p = self.progress
        self.last_eval = (p.step, results)
        self.log_row({"step": p.step, "tokens": p.tokens, "wall_s": self.wall_s(), **self.flatten(results)})
        if self.update_best(results["validation"]):
            p.evals_since_best = 0
        else:
            p.evals_since_best += 1
        patience = self.spec.train.early_stopping_patience
        if patience is not None and p.evals_since_best >= patience:
            p.stop_reason = f"early stopping: no validation improvement in {patience} evaluations"

    def update_best(self, val: EvalResult) -> bool:
        """Keep `checkpoint/best/` when `val` beats the best validation loss so far; True if it did."""
        p = self.progress
        if p.best_val_loss is not None and not val.loss < p.best_val_loss:
            return False
        p.best_val_loss, p.best_step = val.loss, p.step
        if self.main:
            ckpt.save_best(self.acc.unwrap_model(self.module).model, self.run_dir,
                           {"step": p.step, "tokens": p.tokens, "val_loss": val.loss, "val_bpb": val.bpb})
        self.acc.wait_for_everyone()
        return True

    # ----- the loop
    def budget_reason(self) -> str | None:
        t, p = self.spec.train, self.progress
        if p.stop_reason:
            return p.stop_reason
        if t.max_steps is not None and p.step >= t.max_steps:
            return "max_steps"
        if t.epochs is not None and p.step >= t.epochs * self.steps_per_epoch - 1e-9:
            return "epochs"
        if t.max_tokens is not None and p.tokens >= t.max_tokens:
            return "max_tokens"
        if self.time_up:
            return "max_seconds"
        return None

    def train(self) -> None:
        """Steps until a budget is reached; periodic eval/checkpoints; a final checkpoint."""
        t, p = self.spec.train, self.progress
        bar = self._bar()
        window = {"nll": 0.0, "targets": 0, "seconds": 0.0, "steps": 0}
        last_saved = p.step
        while (reason := self.budget_reason()) is None:
            started = time.perf_counter()
            loss, targets, grad_norm = self.train_step(p.step)
            seconds = time.perf_counter() - started
            p.step, p.tokens, p.train_s = p.step + 1, p.tokens + targets, p.train_s + seconds
            for key, value in (("nll", loss * targets), ("targets", targets), ("seconds", seconds), ("steps", 1)):
                window[key] += value
            bar.update(1)
            if p.step % t.log_every == 0:
                self._log_train(window, grad_norm, bar)
                window = dict.fromkeys(window, 0)
            if t.eval_every and p.step % t.eval_every == 0:
                self.periodic_eval()
            every = t.checkpoint_every or t.eval_every
            if every and p.step % every == 0 and self.budget_reason() is None:
                self.save()
                last_saved = p.step
        bar.close()
        self.end_reason = reason
        if p.step != last_saved or not ckpt.checkpoint_dir(self.run_dir):
            self.save()

    def _bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.progress.step, desc=self.cell_name, unit="step",
                    disable=not self.main, dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def _log_train(self, window: dict[str, float], grad_norm: float | None, bar: Any) -> None:
        p = self.progress
        loss = window["nll"] / max(window["targets"], 1)
        tokens_per_s = window["targets"] / max(window["seconds"], 1e-9)
        row = {"step": p.step, "tokens": p.tokens, "wall_s": self.wall_s(), "train_loss": loss,
               "lr": self.lr(p.step - 1), "tokens_per_s": tokens_per_s, "epoch": p.step / self.steps_per_epoch}
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        self.log_row(row)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
