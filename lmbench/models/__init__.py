"""Model families behind one interface; importing this package registers every family in MODELS.

    model = build_model(spec.model, tokenizer)   # typed params, GloVe matrix from tokenizer.tokens()
"""

from __future__ import annotations

import logging
from typing import Any

from lmbench.models import hf, recurrent, seq2seq, transformer  # noqa: F401  (each module registers its families)
from lmbench.models.base import MODELS, DecodeState, LanguageModel
from lmbench.spec import ModelSpec, typed_params

__all__ = ["MODELS", "DecodeState", "LanguageModel", "build_model", "resolve_config"]

log = logging.getLogger(__name__)


def resolve_config(spec: ModelSpec) -> Any:
    """The family's typed Config for `spec.params` (SpecError under model.params otherwise)."""
    return typed_params(MODELS.get(spec.family).Config, dict(spec.params), "model.params")


def _glove_extras(config: Any, tokenizer: Any, seed: int) -> dict[str, Any]:
    """embedding_matrix and embedding_coverage for a recurrent Config that names pretrained vectors."""
    from lmbench.models.embeddings import build_embedding_matrix, load_vectors

    source = recurrent.vectors_source(config)
    if source is None:
        return {}
    specials = tuple(i for i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id,
                                 getattr(tokenizer, "sep_id", None)) if i is not None)
    matrix, coverage = build_embedding_matrix(tokenizer.tokens(), load_vectors(source),
                                              lowercase=config.embeddings_lowercase, seed=seed,
                                              special_ids=specials, pad_id=tokenizer.pad_id)
    log.info("embeddings %s: %d/%d words found (%.1f%%, %s); %s", source, coverage["found"], coverage["total"],
             100 * coverage["share"], coverage["policy"], coverage["init"])
    return {"embedding_matrix": matrix, "embedding_coverage": coverage}


def build_model(spec: ModelSpec, tokenizer: Any, *, seed: int = 0) -> LanguageModel:
    """The family's model for `spec`, sized to `tokenizer` (vocab_size, pad_id).

    Weights come from torch's global RNG: call `set_seed` first for reproducible initialisation. `seed` only
    seeds the rows of a pretrained-vectors matrix that the vectors do not cover.
    """
    family = MODELS.get(spec.family)
    config = resolve_config(spec)
    extras = _glove_extras(config, tokenizer, seed) if issubclass(family, recurrent.RecurrentLM) else \
        family.extras(config, tokenizer, seed)
    return family(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, **extras)
