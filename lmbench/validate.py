"""Whole-spec validation before any work: registry names, per-family/kind params, data inputs, combinations.

`spec.py` checks what needs no registry; this module adds what the registries know. Everything here raises
SpecError naming the field, and reads at most the first record of a data file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmbench.errors import SpecError
from lmbench.spec import ExperimentSpec, check_batch_split, typed_params


def model_config(spec: ExperimentSpec) -> Any:
    from lmbench.models import MODELS

    return typed_params(MODELS.get(spec.model.family).Config, spec.model.params, "model.params")


def tokenizer_config(spec: ExperimentSpec) -> Any:
    from lmbench.tokenizers import TOKENIZERS

    return typed_params(TOKENIZERS.get(spec.tokenizer.kind).Config, spec.tokenizer.params, "tokenizer.params")


def validate(spec: ExperimentSpec) -> None:
    """Everything that can be known about `spec` without reading data or building a model."""
    from lmbench.data.sources import SOURCES
    from lmbench.models import MODELS
    from lmbench.tokenizers import TOKENIZERS

    SOURCES.get(spec.data.source).check(spec.data)
    tok_cfg = tokenizer_config(spec)
    TOKENIZERS.get(spec.tokenizer.kind).check_spec(tok_cfg, spec)
    model_cfg = model_config(spec)
    MODELS.get(spec.model.family).check_spec(model_cfg, spec)
    # under accelerate launch / torchrun every process knows the world size before anything runs
    check_batch_split(spec.train, int(os.environ.get("WORLD_SIZE", "1") or 1))
    ref = spec.sample.reference_run
    if ref is not None and not Path(ref).is_dir() and not ref.startswith("cell:"):
        raise SpecError("sample.reference_run", f"{ref!r} is neither a run directory nor 'cell:<name>' of this grid")
