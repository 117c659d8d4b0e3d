"""Sampling on the GPU: every sampler of SAMPLERS runs on the model's device (ids and lengths stay there), and
greedy and beam search give the ids transformers' `generate` gives on the same device."""

from __future__ import annotations

import pytest
import torch

from lmbench.models.base import LanguageModel
from lmbench.sampling import generate
from lmbench.sampling.kinds import SAMPLERS, sampler_kind
from lmbench.sampling.search import generate_tensors, left_pad
from lmbench.spec import SamplerSpec

from ..sampling.helpers import FAMILIES, tiny_model
from ..sampling.test_search import EOS, PROMPTS, _bench_module, _gpt2_shaped_transformer

pytestmark = pytest.mark.gpu

VOCAB = 40  # tiny_model's default
MAX_NEW = 8
KINDS = {  # one configuration per registered kind, with the processors that keep per-row history on the device
    "greedy": SamplerSpec(kind="greedy", repetition_penalty=1.2),
    "sample": SamplerSpec(kind="sample", temperature=0.8, top_k=10, top_p=0.9, min_p=0.05, repetition_penalty=1.2,
                          no_repeat_ngram_size=2, num_return_sequences=2),
    "beam": SamplerSpec(kind="beam", num_beams=3, num_return_sequences=2, length_penalty=0.8, no_repeat_ngram_size=2),
    "beam_sample": SamplerSpec(kind="beam_sample", num_beams=3, top_k=8, temperature=0.9, num_return_sequences=2),
}


def test_every_sampler_kind_is_covered() -> None:
    assert sorted(KINDS) == sorted(SAMPLERS.names())


@pytest.fixture(scope="module", params=FAMILIES)
def model_on_device(request: pytest.FixtureRequest, gpu_device: torch.device) -> tuple[str, LanguageModel]:
    return request.param, tiny_model(request.param).to(gpu_device)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_sampler_runs_on_the_models_device(model_on_device: tuple[str, LanguageModel], kind: str,
                                                 gpu_device: torch.device) -> None:
    family, model = model_on_device
    s = KINDS[kind]
    tokens, lengths = generate_tensors(model, PROMPTS, s, max_new_tokens=MAX_NEW, eos_id=EOS[family], pad_id=0, seed=3)
    assert tokens.device.type == lengths.device.type == gpu_device.type
    returns = s.num_return_sequences
    assert tokens.shape == (len(PROMPTS), returns, MAX_NEW) and lengths.shape == (len(PROMPTS), returns)
    assert bool(((tokens >= 0) & (tokens < VOCAB)).all()) and bool(((lengths >= 1) & (lengths <= MAX_NEW)).all())
    again, again_lengths = generate_tensors(model, PROMPTS, s, max_new_tokens=MAX_NEW, eos_id=EOS[family], pad_id=0,
                                            seed=3)
    assert torch.equal(tokens, again) and torch.equal(lengths, again_lengths)  # seeded on the device too
    rows = generate(model, PROMPTS, s, max_new_tokens=MAX_NEW, eos_id=EOS[family], pad_id=0, seed=3)
    assert rows == [[seq[:n] for seq, n in zip(t, ln)] for t, ln in zip(tokens.tolist(), lengths.tolist())]
    for hyps in rows:  # nothing after an EOS; beam search returns distinct hypotheses
        assert all(EOS[family] not in h[:-1] for h in hyps)
        if sampler_kind(s).beams and not sampler_kind(s).sampling:
            assert len({tuple(h) for h in hyps}) == len(hyps)


def hf_generate_on(model: LanguageModel, device: torch.device, eos: int, max_new: int,
                   **kwargs: object) -> list[list[list[int]]]:
    """transformers' generate on the wrapped GPT2LMHeadModel with the inputs on `device`, cut like ours (new ids
    up to the first EOS); tests/sampling/test_search.py's hf_generate, on a device."""
    ids, mask = left_pad(PROMPTS, 0, device)
    mask = torch.ones_like(ids) if mask is None else mask
    num_return = int(kwargs.get("num_return_sequences", 1))
    with torch.no_grad():
        out = model.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=eos,
                                   pad_token_id=0, **kwargs)
    assert out.device.type == device.type
    rows = [row[: row.index(eos) + 1] if eos in row else row for row in out[:, ids.size(1):].tolist()]
    return [rows[i * num_return : (i + 1) * num_return] for i in range(len(PROMPTS))]


def ours(model: LanguageModel, s: SamplerSpec, eos: int, max_new: int) -> list[list[list[int]]]:
    return generate(model, PROMPTS, s, max_new_tokens=max_new, eos_id=eos, pad_id=0)


BEAMS = [(2, 1.0, True), (3, 0.5, False), (5, 2.0, True), (4, -0.5, "never")]


def assert_beam_parity(model: LanguageModel, hf: LanguageModel, device: torch.device, eos: int, max_new: int) -> None:
    """Beam search of `model` (several widths, length penalties, stopping rules) gives the ids of `hf`'s generate;
    some hypotheses end with EOS and others do not, so the comparison covers both ways a hypothesis ends."""
    ended = []
    for beams, lp, es in BEAMS:
        s = SamplerSpec(kind="beam", num_beams=beams, length_penalty=lp, early_stopping=es,  # type: ignore[arg-type]
                        num_return_sequences=beams)
        got = ours(model, s, eos, max_new)
        assert got == hf_generate_on(hf, device, eos, max_new, do_sample=False, num_beams=beams, length_penalty=lp,
                                     early_stopping=es, num_return_sequences=beams), (beams, lp, es)
        ended += [h[-1] == eos for out in got for h in out]
    assert any(ended) and not all(ended)


def test_greedy_and_beam_search_match_transformers_generate_on_the_device(gpu_device: torch.device) -> None:
    """The hf family (a GPT2LMHeadModel) on the device: our cached loops against its own generate, in fp32."""
    model = tiny_model("hf").to(gpu_device)
    for eos in (22, 18, 28):
        assert ours(model, SamplerSpec(), eos, 16) == hf_generate_on(model, gpu_device, eos, 16, do_sample=False)
    assert_beam_parity(model, model, gpu_device, EOS["hf"], 12)
    for kind, beams in (("greedy", 1), ("beam", 3)):  # with the processors, as tests/sampling checks them
        s = SamplerSpec(kind=kind, num_beams=beams, repetition_penalty=1.3, no_repeat_ngram_size=2)
        assert ours(model, s, 22, 12) == hf_generate_on(model, gpu_device, 22, 12, do_sample=False, num_beams=beams,
                                                        repetition_penalty=1.3, no_repeat_ngram_size=2,
                                                        early_stopping=True), kind


def test_lmbench_transformer_matches_gpt2_generate_on_the_device(gpu_device: torch.device) -> None:
    """lmbench's own transformer (its KV cache and SDPA path) against GPT2LMHeadModel.generate with the same
    weights, both on the device. In float64: the two implementations round differently, and in float32 a
    near-tie between two candidates could flip on a kernel's last bit; float64 keeps the comparison about the
    decoding, not the rounding."""
    lm = _gpt2_shaped_transformer()
    hf = _bench_module().gpt2_from_transformer(lm)
    lm, hf = lm.to(gpu_device, torch.float64), hf.to(gpu_device, torch.float64)
    ids = torch.randint(0, VOCAB, (2, 9), device=gpu_device)
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), hf(ids), atol=1e-9, rtol=1e-9)
    eos = 32  # ends some hypotheses of these weights, not all
    assert ours(lm, SamplerSpec(), eos, 12) == hf_generate_on(hf, gpu_device, eos, 12, do_sample=False)
    assert_beam_parity(lm, hf, gpu_device, eos, 10)
