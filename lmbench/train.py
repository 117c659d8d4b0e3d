"""The runner: train and evaluate one spec (one grid cell) on Accelerate, from one CPU to many GPUs and nodes.

    summary = run_cell(spec, Path("results/char-lstm/seed=0"), cell_name="seed=0")

`run_cell` seeds everything, prepares the token cache (main process first), builds the model, trains it under
its budgets (max_steps / epochs / max_tokens / max_seconds: the first reached ends training) with periodic
evaluation, best and last checkpoints, optional early stopping, then evaluates every split in full, writes
samples and summary.json. Re-running it on the same folder after a kill resumes from the last checkpoint
(model, optimizer, RNG, data position, carried recurrent state) and ends with the same metrics.

Batches: `train.batch_size` is the global batch in sequences, split over processes and accumulation steps.
Each optimizer step consumes global batch `step` of a seeded, per-epoch order (shuffled windows or documents,
length buckets, or StreamSampler lanes for recurrent models on packed data), so the data position is a pure
function of the step, and 1 process or N processes see the same global batches. The loss of a step is the
summed NLL of the global batch divided by its number of targets (not a mean of per-process means).

Recurrent models on packed data carry their detached state from one window of a lane to the next (truncated
BPTT); on documents data every batch starts from a fresh state.
"""

from __future__ import annotations

import json
import logging
import math
import os
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

from lmbench import checkpoint as ckpt
from lmbench.evaluate import EvalResult, evaluate_split, is_recurrent
from lmbench.optim import build_optimizer
from lmbench.schedules import DECAYING, lr_at
from lmbench.spec import ExperimentSpec, spec_to_yaml

log = logging.getLogger(__name__)

IGNORE = -100
MIN_PARAMS_FOR_BF16 = 2_000_000  # below this, autocast overhead outweighs faster matmuls on CPU (measured)
SPLIT_PREFIX = {"train": "train", "validation": "val", "test": "test"}
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss (or gradient norm); the run stops and is marked failed."""

    def __init__(self, step: int, what: str, value: float) -> None:
        self.step = step
        super().__init__(f"non-finite {what} ({value}) at step {step}; stopped, the last good checkpoint is kept "
                         f"(lower train.lr, set train.grad_clip, or use train.mixed_precision=no)")


# --------------------------------------------------------------------------------------------- precision
def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def resolve_mixed_precision(requested: str, num_params: int, device_type: str | None = None) -> tuple[str, str]:
    """(mixed_precision, reason). `auto` is bf16 where it runs fast and pays off, else `no`:

    CUDA with bf16 support; or a CPU with native bf16 dot products (AMX `amx_bf16`, or AVX-512 `avx512_bf16`,
    which oneDNN uses for ~3.5x the fp32 matmul rate on this project's machine) AND a model of at least
    MIN_PARAMS_FOR_BF16 parameters (smaller models are bound by overheads that autocast only adds to).
    """
    if requested != "auto":
        return requested, "requested"
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: CUDA device with bf16"
        return "no", "auto: CUDA device without bf16"
    if device_type != "cpu":
        return "no", f"auto: {device_type} device"
    flags = cpu_flags() & set(FAST_BF16_CPU_FLAGS)
    if not flags:
        return "no", "auto: CPU without amx_bf16/avx512_bf16"
    if num_params < MIN_PARAMS_FOR_BF16:
        return "no", f"auto: {num_params:,} parameters < {MIN_PARAMS_FOR_BF16:,} (bf16 does not pay off)"
    return "bf16", f"auto: CPU with {'/'.join(sorted(flags))} and {num_params:,} parameters"


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


# --------------------------------------------------------------------------------------------- batches
@dataclass
class BatchPlan:
    """Which dataset items form global batch `index` of epoch `epoch`: a pure, seeded function.

    kind: shuffle (a permutation per epoch), stream (StreamSampler lanes, same every epoch) or bucket
    (LengthBucketSampler batches per epoch). Incomplete global batches are dropped.
    """

    kind: str
    num_items: int
    batch_size: int
    seed: int
    lengths: np.ndarray | None = None
    _cache: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        if self.kind == "bucket":
            from lmbench.data.batching import LengthBucketSampler

            return len(LengthBucketSampler(self.lengths, self.batch_size, seed=self.seed, drop_last=True))
        return self.num_items // self.batch_size  # shuffle; stream: lanes of num_items // batch_size windows

    def batch(self, epoch: int, index: int) -> np.ndarray:
        order = self._order(epoch)
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def _order(self, epoch: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.kind == "shuffle":
            order = np.random.default_rng((self.seed, epoch)).permutation(self.num_items)
        elif self.kind == "stream":
            from lmbench.data.batching import StreamSampler

            order = np.fromiter(iter(StreamSampler(self.num_items, self.batch_size)), dtype=np.int64)
        else:
            from lmbench.data.batching import LengthBucketSampler

            sampler = LengthBucketSampler(self.lengths, self.batch_size, shuffle=True, seed=self.seed, drop_last=True)
            sampler.set_epoch(epoch)
            order = np.concatenate([np.asarray(b, dtype=np.int64) for b in sampler] or [np.zeros(0, np.int64)])
        self._cache = (epoch, order)
        return order


@dataclass
class TrainData:
    dataset: Any
    plan: BatchPlan
    collate: Any
    carry: bool  # recurrent model on a packed stream: carry state across steps
    tokens_per_item: float  # mean targets per item (schedule/ETA estimate for max_tokens)


def make_train_data(spec: ExperimentSpec, split: Any, tokenizer: Any, recurrent: bool) -> TrainData:
    from lmbench.data.batching import DocumentDataset, PackedDataset, collate_documents

    d, B = spec.data, spec.train.batch_size
    if d.batching == "packed":
        dataset = PackedDataset(split, d.block_size, tokenizer.eos_id)
        plan = BatchPlan("stream" if recurrent else "shuffle", len(dataset), B, spec.seed)
        collate, per_item = _stack, float(d.block_size)
    else:
        dataset = DocumentDataset(split, d.block_size, tokenizer.bos_id, tokenizer.eos_id)
        lengths = np.asarray(dataset.lengths)
        plan = BatchPlan("bucket" if d.bucket_by_length else "shuffle", len(dataset), B, spec.seed, lengths)
        pad_id = tokenizer.pad_id
        collate = lambda items: collate_documents(items, pad_id)  # noqa: E731
        per_item = float(lengths.mean()) if len(lengths) else 0.0
    if plan.steps_per_epoch < 1:
        from lmbench.errors import SpecError

        raise SpecError("train.batch_size", f"{B} is larger than the {plan.num_items} training "
                                            f"{'windows' if d.batching == 'packed' else 'documents'}")
    return TrainData(dataset, plan, collate, recurrent and d.batching == "packed", per_item)


def _stack(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


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


# --------------------------------------------------------------------------------------------- run_cell
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

    from lmbench import tracking

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
    from lmbench import tracking

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
    from lmbench import tracking

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
    from lmbench import tracking
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
    from lmbench.sampling.cli import load_run

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
