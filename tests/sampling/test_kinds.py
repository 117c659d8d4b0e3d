"""Sampler kinds: what each declares (sampling, beams, name fields) and every check of a sampler's settings, at
its boundaries, with the field it names."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lmbench.errors import SpecError
from lmbench.sampling.kinds import (ALIASES, SAMPLERS, BeamSample, BeamSearch, Greedy, Multinomial, check_sampler,
                                    sampler_kind)
from lmbench.spec import SamplerSpec


def test_kinds_declare_what_the_loops_need() -> None:
    assert SAMPLERS.names() == ["beam", "beam_sample", "greedy", "sample"]
    assert [(k.sampling, k.beams) for k in (Greedy, Multinomial, BeamSearch, BeamSample)] == [
        (False, False), (True, False), (False, True), (True, True)]
    assert Greedy.name_fields == ("repetition_penalty", "no_repeat_ngram_size")
    assert Multinomial.name_fields == ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                       "no_repeat_ngram_size")
    assert BeamSearch.name_fields == ("num_beams", "length_penalty", "early_stopping", "repetition_penalty",
                                      "no_repeat_ngram_size")
    assert BeamSample.name_fields[:5] == ("num_beams", "temperature", "top_k", "top_p", "min_p")
    assert sampler_kind(SamplerSpec(kind="beam")) is BeamSearch
    assert {ALIASES[a] for a in ("top_k", "top_p", "nucleus", "min_p", "temperature", "multinomial")} == {"sample"}
    assert ALIASES["beam_search"] == "beam"


def ok(**fields: Any) -> None:
    check_sampler("s", SamplerSpec(**fields))


def refused(field: str, words: str, **fields: Any) -> None:
    """check_sampler refuses `fields` naming `field`; an out-of-range value is shown as given, then what is allowed
    (`words`, exactly)."""
    config = SamplerSpec(**fields)
    with pytest.raises(SpecError) as err:
        check_sampler("s", config)
    assert err.value.path == f"s.{field}" and words in err.value.message, (err.value.path, err.value.message)
    if "out of range" in err.value.message:
        assert err.value.message == f"{getattr(config, field)!r} is out of range; allowed: {words}"


@pytest.mark.parametrize("name", ["temperature", "top_p", "min_p", "repetition_penalty", "length_penalty"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused(name: str, value: float) -> None:
    refused(name, "a finite number", kind="sample", **{name: value})


def test_boundaries_of_each_setting() -> None:
    ok(kind="greedy", temperature=0.0)  # temperature only matters when sampling
    refused("temperature", "> 0 when sampling", kind="sample", temperature=0.0)
    refused("temperature", "> 0 when sampling", kind="beam_sample", num_beams=2, temperature=-1.0)
    ok(kind="sample", temperature=1e-6, top_k=1, top_p=1.0, min_p=1.0)
    refused("top_k", ">= 1 (or null)", kind="sample", top_k=0)
    for name in ("top_p", "min_p"):
        refused(name, "in (0, 1] (or null)", kind="sample", **{name: 0.0})
        refused(name, "in (0, 1] (or null)", kind="sample", **{name: 1.0001})
        ok(kind="sample", **{name: 1e-9})
    ok(kind="greedy", repetition_penalty=1e-6, no_repeat_ngram_size=0)
    refused("repetition_penalty", "> 0", kind="greedy", repetition_penalty=0.0)
    refused("no_repeat_ngram_size", ">= 0", kind="greedy", no_repeat_ngram_size=-1)
    ok(kind="beam", num_beams=1)
    refused("num_beams", ">= 1", kind="beam", num_beams=0)
    refused("num_return_sequences", ">= 1", kind="sample", num_return_sequences=0)
    ok(kind="sample", num_return_sequences=3)  # several draws without beams
    refused("num_beams", "3 beams need kind: beam or beam_sample, not 'greedy'", kind="greedy", num_beams=3)
    refused("num_beams", "not 'sample'", kind="sample", num_beams=2)
    ok(kind="beam", num_beams=3, num_return_sequences=3)
    refused("num_return_sequences", "<= num_beams (3)", kind="beam", num_beams=3, num_return_sequences=4)
    refused("num_return_sequences", "<= num_beams (2)", kind="beam_sample", num_beams=2, num_return_sequences=3)
    ok(kind="beam_sample", num_beams=2)
    refused("num_beams", ">= 2 for beam_sample (use kind: sample for one beam)", kind="beam_sample", num_beams=1)
    refused("top_k", ">= 1 (or null)", kind="beam_sample", num_beams=2, top_k=0)  # the shared checks run for beam_sample too
    refused("kind", "did you mean 'sample'", kind="sampel")
