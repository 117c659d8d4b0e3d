"""Whole-spec validation before any work: registry names, each axis's own Config and checks, combinations.

`spec.py` checks what needs no registry (ranges, Literal choices); this module adds what the registries know.
Every axis has the same shape: a registry entry picked by a name, a `Config` resolved from the spec by that
axis's one `resolve_config`, and `check_spec(config, spec)`. Everything here raises SpecError naming the field,
and reads at most the first record of a data file.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmbench.errors import SpecError
from lmbench.spec import ExperimentSpec, check_batch_split

STEP_BUDGETS = ("max_steps", "epochs", "max_tokens")


def validate(spec: ExperimentSpec) -> None:
    """Everything that can be known about `spec` without reading data or building a model."""
    from lmbench.data.sources import check_source
    from lmbench.models import MODELS
    from lmbench.models import resolve_config as model_config
    from lmbench.sampling.kinds import check_sampler
    from lmbench.tokenizers import TOKENIZERS
    from lmbench.tokenizers import resolve_config as tokenizer_config

    check_source(spec.data, spec)
    TOKENIZERS.get(spec.tokenizer.kind).check_spec(tokenizer_config(spec.tokenizer), spec)
    MODELS.get(spec.model.family).check_spec(model_config(spec.model), spec)
    for i, sampler in enumerate(spec.sample.samplers):
        check_sampler(f"sample.samplers[{i}]", sampler, spec)
    check_training(spec)
    ref = spec.sample.reference_run
    if ref is not None and not Path(ref).is_dir() and not ref.startswith("cell:"):
        raise SpecError("sample.reference_run", f"{ref!r} is neither a run directory nor 'cell:<name>' of this grid")


def check_training(spec: ExperimentSpec) -> None:
    """The optimizer and schedule names, a step budget for a decaying schedule, and the batch split over the
    processes of this launch (accelerate launch / torchrun tell every process the world size up front)."""
    from lmbench.training.optim import OPTIMIZERS
    from lmbench.training.schedules import SCHEDULES

    t = spec.train
    OPTIMIZERS.get(t.optimizer)
    if SCHEDULES.get(t.schedule).decays and all(getattr(t, b) is None for b in STEP_BUDGETS):
        raise SpecError("train.schedule", f"{t.schedule!r} decays over the run and needs max_steps, epochs or "
                                          "max_tokens (max_seconds alone gives no step count)")
    check_batch_split(t, int(os.environ.get("WORLD_SIZE", "1") or 1))
