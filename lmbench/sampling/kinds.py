"""Sampler kinds, registered in SAMPLERS: greedy, sample, beam, beam_sample. The one place that spells them.

Every kind is configured by a `SamplerSpec` (its `Config`: transformers' GenerationConfig names) and checks it
with `check_spec(config, spec)`. What the decoding loops need to know of a kind is declared here: whether it
draws from the distribution (then temperature, top-k, top-p and min-p act), whether it keeps beams, and which
fields name it in tables.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from lmbench.errors import SpecError, range_error, under
from lmbench.registry import Registry
from lmbench.spec import SamplerSpec

SHARED_NAME_FIELDS = ("repetition_penalty", "no_repeat_ngram_size")
WARPER_FIELDS = ("temperature", "top_k", "top_p", "min_p")
BEAM_FIELDS = ("num_beams", "length_penalty", "early_stopping")


class Sampler:
    """One decoding strategy. `check_spec` raises SpecError with paths relative to the sampler (`num_beams`);
    callers put them under their own prefix (`sample.samplers[2]`, `--sampler`) with `errors.under`."""

    Config: ClassVar[type] = SamplerSpec
    sampling: ClassVar[bool] = False  # draws from the distribution: the warpers act
    beams: ClassVar[bool] = False  # keeps num_beams hypotheses per prompt
    name_fields: ClassVar[tuple[str, ...]] = SHARED_NAME_FIELDS  # non-default values of these name it

    @classmethod
    def check_spec(cls, config: SamplerSpec, spec: Any) -> None:
        s = config
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "length_penalty"):
            value = getattr(s, name)
            if value is not None and not math.isfinite(value):
                raise range_error(name, value, "a finite number")
        if s.temperature <= 0 and cls.sampling:
            raise range_error("temperature", s.temperature, "> 0 when sampling")
        if s.top_k is not None and s.top_k < 1:
            raise range_error("top_k", s.top_k, ">= 1 (or null)")
        for name in ("top_p", "min_p"):
            value = getattr(s, name)
            if value is not None and not 0 < value <= 1:
                raise range_error(name, value, "in (0, 1] (or null)")
        if s.repetition_penalty <= 0:
            raise range_error("repetition_penalty", s.repetition_penalty, "> 0")
        if s.no_repeat_ngram_size < 0:
            raise range_error("no_repeat_ngram_size", s.no_repeat_ngram_size, ">= 0")
        if s.num_beams < 1:
            raise range_error("num_beams", s.num_beams, ">= 1")
        if s.num_return_sequences < 1:
            raise range_error("num_return_sequences", s.num_return_sequences, ">= 1")
        if not cls.beams and s.num_beams != 1:
            raise SpecError("num_beams", f"{s.num_beams} beams need kind: beam or beam_sample, not {s.kind!r}")
        if cls.beams and s.num_return_sequences > s.num_beams:
            raise range_error("num_return_sequences", s.num_return_sequences, f"<= num_beams ({s.num_beams})")


SAMPLERS: Registry[type[Sampler]] = Registry("kind")


@SAMPLERS.register("greedy")
class Greedy(Sampler):
    """The most likely token at every step."""


@SAMPLERS.register("sample")
class Multinomial(Sampler):
    """One draw per step from the (temperature, top-k, top-p, min-p) filtered distribution."""

    sampling = True
    name_fields = (*WARPER_FIELDS, *SHARED_NAME_FIELDS)


@SAMPLERS.register("beam")
class BeamSearch(Sampler):
    """The num_beams best hypotheses by summed log-probability (length-penalised when finished)."""

    beams = True
    name_fields = (*BEAM_FIELDS, *SHARED_NAME_FIELDS)


@SAMPLERS.register("beam_sample")
class BeamSample(Sampler):
    """Beam search whose candidates are drawn from the filtered distribution instead of taken greedily."""

    sampling = True
    beams = True
    name_fields = ("num_beams", *WARPER_FIELDS, "length_penalty", "early_stopping", *SHARED_NAME_FIELDS)

    @classmethod
    def check_spec(cls, config: SamplerSpec, spec: Any) -> None:
        if config.num_beams < 2:
            raise range_error("num_beams", config.num_beams, ">= 2 for beam_sample (use kind: sample for one beam)")
        super().check_spec(config, spec)


# Words `lmbench sample --sampler KIND` also takes for a kind (the key=value parameters still set the values).
ALIASES = {"top_k": "sample", "top_p": "sample", "nucleus": "sample", "min_p": "sample", "temperature": "sample",
           "multinomial": "sample", "beam_search": "beam"}


def sampler_kind(config: SamplerSpec) -> type[Sampler]:
    """The registered kind of `config` (SpecError at `kind` with the close match otherwise)."""
    return SAMPLERS.get(config.kind)


def check_sampler(prefix: str, config: SamplerSpec, spec: Any = None) -> None:
    """Check one sampler; SpecError paths under `prefix` (`sample.samplers[0].top_p`, `--sampler.kind`)."""
    with under(prefix):
        sampler_kind(config).check_spec(config, spec)
