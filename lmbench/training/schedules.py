"""Learning-rate schedules as pure functions of the optimizer step (no state to checkpoint).

`lr_at(step, ...)` is the learning rate used for the update that *produces* step `step + 1`, i.e. `step` counts the
optimizer updates already done (0 for the first update). Warm-up is linear from lr/warmup_steps up to lr, so the
first update never uses lr = 0:

    constant          lr
    warmup_constant   lr * min(1, (step + 1) / warmup_steps)                      (WritingPrompts notebook)
    cosine            warm-up, then min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2
    linear            warm-up, then lr - (lr - min_lr) * progress
    inverse_sqrt      warm-up, then lr * sqrt(warmup_steps / (step + 1))          (fairseq; warmup 0 = 1 step)

where `progress` = (step - warmup_steps) / (total_steps - warmup_steps) clipped to [0, 1] and
min_lr = lr * min_lr_ratio. Each is a `Schedule` in the SCHEDULES registry (`train.schedule` names one); the
decaying ones need the run's length in steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lmbench.registry import Registry

# (step, warmup_steps, total_steps, min_lr_ratio) -> multiplier of the peak learning rate
Factor = Callable[[int, int, int, float], float]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate shape. `decays`: it ends at min_lr_ratio, so it needs the run's total number of steps."""

    factor: Factor
    decays: bool = False


SCHEDULES: Registry[Schedule] = Registry("train.schedule")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up multiplier in (0, 1]: (step + 1) / warmup_steps during warm-up, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def decay_progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """Fraction of the decay phase done after warm-up, clipped to [0, 1]."""
    span = total_steps - warmup_steps
    if span <= 0:
        return 1.0 if step >= warmup_steps else 0.0
    return min(1.0, max(0.0, (step - warmup_steps) / span))


@dataclass(frozen=True)
class _Decay:
    """Warm-up, then min_lr_ratio + (1 - min_lr_ratio) * shape(progress). (A callable object rather than a closure
    built at import: its body runs at call time, where mutation testing can reach it.)"""

    shape: Callable[[float], float]

    def __call__(self, step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
        if step < warmup_steps:
            return warmup_factor(step, warmup_steps)
        return min_lr_ratio + (1.0 - min_lr_ratio) * self.shape(decay_progress(step, warmup_steps, total_steps))


def _inverse_sqrt(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    return math.sqrt(max(warmup_steps, 1) / (step + 1))


SCHEDULES.register("constant")(Schedule(lambda step, warmup, total, floor: 1.0))
SCHEDULES.register("warmup_constant")(Schedule(lambda step, warmup, total, floor: warmup_factor(step, warmup)))
SCHEDULES.register("cosine")(Schedule(_Decay(lambda p: 0.5 * (1.0 + math.cos(math.pi * p))), decays=True))
SCHEDULES.register("linear")(Schedule(_Decay(lambda p: 1.0 - p), decays=True))
SCHEDULES.register("inverse_sqrt")(Schedule(_inverse_sqrt))


def lr_factor(
    schedule: str, step: int, *, warmup_steps: int = 0, total_steps: int | None = None, min_lr_ratio: float = 0.0
) -> float:
    """Multiplier of the peak learning rate for the update at `step` (0-based count of updates done)."""
    entry = SCHEDULES.get(schedule)
    if entry.decays and total_steps is None:
        raise ValueError(f"schedule {schedule!r} needs total_steps")
    return entry.factor(step, warmup_steps, total_steps or 0, min_lr_ratio)


def lr_at(
    schedule: str,
    step: int,
    lr: float,
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning rate for the update at `step`; see the module docstring for the formulas."""
    factor = lr_factor(schedule, step, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
    return lr * factor
