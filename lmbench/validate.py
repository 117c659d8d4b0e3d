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
    check_tracking(spec)
    ref = spec.sample.reference_run
    if ref is not None and not Path(ref).is_dir() and not ref.startswith("cell:"):
        raise SpecError("sample.reference_run", f"{ref!r} is neither a run directory nor 'cell:<name>' of this grid")


def check_tracking(spec: ExperimentSpec) -> None:
    """A tracker backend whose optional package is missing (TensorBoard is the `tensorboard` extra)."""
    import importlib.util

    if "tensorboard" in spec.tracking.backends and importlib.util.find_spec("tensorboard") is None:
        raise SpecError("tracking.backends", "tensorboard is not installed: pip install 'lmbench[tensorboard]' "
                                             "(or drop it from tracking.backends)")


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


def validate_data(spec: ExperimentSpec) -> None:
    """What can only be known from the data: every split non-empty (prepare_data raises), something to
    evaluate, enough training items for one global batch, and a block that fits the held-out text. Builds (or
    opens) the token cache; `lmbench run` calls it before any cell folder exists."""
    from lmbench.data import prepare_data
    from lmbench.models import MODELS
    from lmbench.training.plan import make_train_data

    # The first build of a large corpus is long: show it. Checksums are left to the cell that opens the cache.
    data = prepare_data(spec, progress=True, verify=False)
    present = [name for name in spec.eval.splits if name in data.splits]
    if not present:
        raise SpecError("eval.splits", f"none of {list(spec.eval.splits)} is a split of this data (it has "
                                       f"{', '.join(data.splits)}): no final metrics would be computed")
    make_train_data(spec, data.splits["train"], data.tokenizer, MODELS.get(spec.model.family).carries_state)
    for name in present:
        if name == "train":
            continue
        num_tokens = data.splits[name].stats.num_tokens
        if spec.data.batching == "packed" and spec.data.block_size > num_tokens:
            raise SpecError("data.block_size", f"{spec.data.block_size} is longer than the whole {name} split "
                                               f"({num_tokens:,} tokens): lower it, or hold out more text "
                                               "(data.val_fraction / data.test_fraction)")
