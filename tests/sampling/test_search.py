"""Decoding loops: exact parity with transformers' generate, exhaustive/argmax references for every family,
the empirical distribution of seeded sampling, and the cost model (one cached step per new token)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lmbench.models.base import LanguageModel
from lmbench.sampling import generate
from lmbench.sampling.search import left_pad
from lmbench.spec import SamplerSpec

from .. import bench_scripts
from .helpers import (FAMILIES, LEFT_PADDING_AWARE_PENALTY, SORTED_BEAM_SAMPLE, CountingLM, MaskRecorder, UnigramLM,
                      skip_before, tiny_model)

PROMPTS = [[5, 6, 7, 8], [9, 10], [3, 1, 4, 1, 5, 9]]  # different lengths: left padding
EOS = {"hf": 22, "transformer": 5, "lstm": 18}  # ids each tiny model emits within a few tokens


def hf_generate(model: LanguageModel, prompts: list[list[int]], eos: int, max_new: int,
                **kwargs: object) -> list[list[list[int]]]:
    """transformers' own generate on the wrapped GPT2LMHeadModel, cut like ours: new ids up to the first EOS."""
    ids, mask = left_pad(prompts, 0, torch.device("cpu"))
    mask = torch.ones_like(ids) if mask is None else mask
    num_return = int(kwargs.get("num_return_sequences", 1))
    with torch.no_grad():
        out = model.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=eos,
                                   pad_token_id=0, **kwargs)
    rows = [row[: row.index(eos) + 1] if eos in row else row for row in out[:, ids.size(1):].tolist()]
    return [rows[i * num_return : (i + 1) * num_return] for i in range(len(prompts))]


def ours(model: LanguageModel, s: SamplerSpec, eos: int | None, max_new: int, prompts=PROMPTS, seed: int = 0):
    return generate(model, prompts, s, max_new_tokens=max_new, eos_id=eos, pad_id=0, seed=seed)


# ------------------------------------------------------------------------------------- parity with transformers

def test_greedy_matches_transformers(hf_model: LanguageModel) -> None:
    for eos in (22, 18, 28):
        assert ours(hf_model, SamplerSpec(), eos, 16) == hf_generate(hf_model, PROMPTS, eos, 16, do_sample=False)


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping",
                         list(itertools.product([2, 3, 5], [0.5, 1.0, 2.0], [True, False])))
def test_beam_search_matches_transformers(hf_model: LanguageModel, num_beams: int, length_penalty: float,
                                          early_stopping: bool) -> None:
    s = SamplerSpec(kind="beam", num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                    num_return_sequences=num_beams)
    got = ours(hf_model, s, EOS["hf"], 12)
    expected = hf_generate(hf_model, PROMPTS, EOS["hf"], 12, do_sample=False, num_beams=num_beams,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           num_return_sequences=num_beams)
    assert got == expected


def test_beam_search_reaches_eos(hf_model: LanguageModel) -> None:
    """The parity tests above are only meaningful if hypotheses do end with EOS (and others do not)."""
    s = SamplerSpec(kind="beam", num_beams=3, num_return_sequences=3)
    ends = [h[-1] == EOS["hf"] for out in ours(hf_model, s, EOS["hf"], 12) for h in out]
    assert any(ends) and not all(ends)


@pytest.mark.parametrize("early_stopping", ["never", False])
def test_beam_search_never_and_negative_length_penalty(hf_model: LanguageModel, early_stopping: object) -> None:
    for lp in (-0.5, 0.0, 1.5):
        s = SamplerSpec(kind="beam", num_beams=4, length_penalty=lp, num_return_sequences=2,
                        early_stopping=early_stopping)  # type: ignore[arg-type]
        expected = hf_generate(hf_model, PROMPTS, 18, 10, do_sample=False, num_beams=4, length_penalty=lp,
                               early_stopping=early_stopping, num_return_sequences=2)
        assert ours(hf_model, s, 18, 10) == expected


def test_processors_in_greedy_and_beams_match_transformers(hf_model: LanguageModel) -> None:
    for kind, beams in (("greedy", 1), ("beam", 3)):
        s = SamplerSpec(kind=kind, num_beams=beams, repetition_penalty=1.3, no_repeat_ngram_size=2)
        expected = hf_generate(hf_model, PROMPTS, 22, 12, do_sample=False, num_beams=beams,
                               repetition_penalty=1.3, no_repeat_ngram_size=2, early_stopping=True)
        assert ours(hf_model, s, 22, 12) == expected


@pytest.mark.parametrize("params", [
    {"kind": "sample"},
    {"kind": "sample", "temperature": 0.7, "top_k": 10, "top_p": 0.9},
    {"kind": "sample", "min_p": 0.1, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "num_return_sequences": 2},
    {"kind": "beam_sample", "num_beams": 3, "temperature": 0.8, "top_k": 5},
    {"kind": "beam_sample", "num_beams": 4, "top_p": 0.8, "num_return_sequences": 2, "repetition_penalty": 1.2},
])
def test_seeded_sampling_draws_what_transformers_draws(hf_model: LanguageModel, params: dict) -> None:
    """Same seed, same draws: our private generator replays the global CPU generator transformers uses.

    Beam sampling follows transformers >= 5.24, which sorts the drawn candidates by score before taking the
    first num_beams as those allowed to finish; earlier releases kept the draw order. The repetition penalty
    follows >= 5.23, which leaves left padding out of the prompt it penalises."""
    if params["kind"] == "beam_sample":
        skip_before(SORTED_BEAM_SAMPLE, "sorted beam-sample candidates")
    if params.get("repetition_penalty", 1.0) != 1.0:
        skip_before(LEFT_PADDING_AWARE_PENALTY, "a repetition penalty that ignores left padding")
    s = SamplerSpec(**params)
    hf_kwargs = {k: v for k, v in params.items() if k != "kind"}
    for seed in (3, 4):
        got = ours(hf_model, s, 22, 12, seed=seed)
        torch.manual_seed(seed)
        assert got == hf_generate(hf_model, PROMPTS, 22, 12, do_sample=True, early_stopping=True, **hf_kwargs)


# ------------------------------------------------------------------------------------------- every family

def full_forward_greedy(model: LanguageModel, prompt: list[int], eos: int, max_new: int) -> list[int]:
    """The notebooks' loop: recompute the whole prefix with forward() for each new token."""
    ids, new = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new):
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
            ids.append(token)
            new.append(token)
            if token == eos:
                break
    return new


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_full_forward_argmax(family: str) -> None:
    model = tiny_model(family)
    got = ours(model, SamplerSpec(), EOS[family], 15)
    assert got == [[full_forward_greedy(model, p, EOS[family], 15)] for p in PROMPTS]
    assert any(out[0][-1] == EOS[family] for out in got)


def exhaustive_best(model: LanguageModel, prompt: list[int], vocab_size: int, eos: int, max_new: int,
                    length_penalty: float) -> list[tuple[float, list[int]]]:
    """Every continuation (EOS only at its end; max_new tokens at most) scored as beam search scores a
    finished hypothesis: sum of log-probabilities / length ** length_penalty, best first."""
    scored = []
    for length in range(1, max_new + 1):
        for body in itertools.product([t for t in range(vocab_size) if t != eos], repeat=length - 1):
            for last in range(vocab_size):
                if last != eos and length < max_new:
                    continue
                seq = [*body, last]
                with torch.no_grad():
                    logp = F.log_softmax(model(torch.tensor([prompt + seq]))[0].float(), -1)
                total = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(seq))
                scored.append((total / length ** length_penalty, seq))
    return sorted(scored, key=lambda x: -x[0])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_equals_exhaustive_search(family: str, length_penalty: float) -> None:
    """With a beam wide enough to hold every live prefix (3 tokens, EOS = 2, 4 new tokens: 2^3 x 3 = 24
    candidates at the last step) and early_stopping="never", beam search is exact: its 24 hypotheses are the
    24 best of the 31 possible continuations, in order."""
    vocab, eos, max_new, beams = 3, 2, 4, 24
    model = tiny_model(family, vocab_size=vocab, seed=1)
    prompt = [1, 0, 1]
    s = SamplerSpec(kind="beam", num_beams=beams, num_return_sequences=beams, length_penalty=length_penalty,
                    early_stopping="never")  # type: ignore[arg-type]
    got = ours(model, s, eos, max_new, prompts=[prompt])[0]
    expected = exhaustive_best(model, prompt, vocab, eos, max_new, length_penalty)
    scores = [score for score, _ in expected]
    assert min(abs(a - b) for a, b in zip(scores, scores[1:])) > 1e-6  # no ties: the order is well defined
    assert got == [seq for _, seq in expected[:beams]]


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_equals_one_prompt_at_a_time(family: str) -> None:
    model = tiny_model(family)
    # with a repetition penalty and n-gram bans, the left padding must not count as tokens already seen
    for s in (SamplerSpec(), SamplerSpec(kind="beam", num_beams=3, num_return_sequences=2),
              SamplerSpec(repetition_penalty=5.0, no_repeat_ngram_size=2),
              SamplerSpec(kind="beam", num_beams=2, repetition_penalty=5.0)):
        batched = ours(model, s, EOS[family], 10)
        assert batched == [ours(model, s, EOS[family], 10, prompts=[p])[0] for p in PROMPTS]


# -------------------------------------------------------------------------------------- sampling distribution

CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}  # 99.9% quantiles


@pytest.mark.parametrize("params", [
    {},
    {"temperature": 0.7},
    {"top_k": 3},
    {"top_p": 0.8, "temperature": 1.5},
    {"min_p": 0.2},
])
def test_sampling_has_the_filtered_distribution(params: dict) -> None:
    """20,000 seeded draws from fixed logits: filtered tokens never appear, the rest pass a chi-square test."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    expected = logits[None].clone()
    if "temperature" in params:
        expected = TemperatureLogitsWarper(params["temperature"])(None, expected)
    if "top_k" in params:
        expected = TopKLogitsWarper(params["top_k"])(None, expected)
    if "top_p" in params:
        expected = TopPLogitsWarper(params["top_p"])(None, expected)
    if "min_p" in params:
        expected = expected.masked_fill(expected.softmax(-1) < params["min_p"] * expected.softmax(-1).max(), -math.inf)
    probs = expected.softmax(-1)[0]
    rows, steps = 4000, 5
    out = generate(UnigramLM(logits), [[1]] * rows, SamplerSpec(kind="sample", **params), max_new_tokens=steps,
                   eos_id=None, pad_id=0, seed=123)
    counts = Counter(t for o in out for t in o[0])
    n = rows * steps
    kept = [t for t in range(len(logits)) if probs[t] > 0]
    assert all(counts[t] == 0 for t in range(len(logits)) if probs[t] == 0)
    chi2 = sum((counts[t] - n * float(probs[t])) ** 2 / (n * float(probs[t])) for t in kept)
    assert chi2 < CHI2_999[len(kept) - 1], (chi2, counts, probs)


def test_seed_reproducible_and_independent_of_global_rng(hf_model: LanguageModel) -> None:
    s = SamplerSpec(kind="sample", temperature=1.5)
    torch.manual_seed(0)
    a = ours(hf_model, s, None, 12, seed=7)
    torch.manual_seed(99)
    b = ours(hf_model, s, None, 12, seed=7)
    assert a == b and a != ours(hf_model, s, None, 12, seed=8)


# ------------------------------------------------------------------------------------------- cost and output

@pytest.mark.parametrize("s", [SamplerSpec(), SamplerSpec(kind="sample", num_return_sequences=3),
                               SamplerSpec(kind="beam", num_beams=4), SamplerSpec(kind="beam_sample", num_beams=2)])
def test_one_cached_step_per_new_token(s: SamplerSpec) -> None:
    """Prefill once on the B prompts, then one (N, 1) step per token: the prefix is never recomputed."""
    model = CountingLM(tiny_model("transformer"))
    ours(model, s, None, 9)
    copies = s.num_beams if s.kind.startswith("beam") else s.num_return_sequences
    assert model.calls == [(3, 6)] + [(3 * copies, 1)] * 8


def test_stops_at_eos_and_max_new_tokens(hf_model: LanguageModel) -> None:
    out = ours(hf_model, SamplerSpec(kind="sample", temperature=2.0), 18, 20, prompts=[[5, 6]] * 16, seed=1)
    lengths = [len(o[0]) for o in out]
    assert max(lengths) <= 20
    for o in out:
        assert 18 not in o[0][:-1]  # nothing after EOS
        assert o[0][-1] == 18 or len(o[0]) == 20
    assert any(o[0][-1] == 18 for o in out) and any(len(o[0]) == 20 for o in out)
    model = CountingLM(hf_model)  # all rows ended: no more steps
    ours(model, SamplerSpec(), 35, 30, prompts=[[5, 6, 7, 8]])
    assert len(model.calls) == 1  # greedy emits 35 first


def test_output_shape_and_order() -> None:
    model = tiny_model("lstm")
    out = ours(model, SamplerSpec(kind="beam", num_beams=5, num_return_sequences=3), None, 6)
    assert [len(o) for o in out] == [3, 3, 3] and all(len(h) == 6 for o in out for h in o)
    out = ours(model, SamplerSpec(kind="sample", num_return_sequences=4), None, 6)
    assert [len(o) for o in out] == [4, 4, 4]


def test_invalid_inputs() -> None:
    model = tiny_model("lstm")
    with pytest.raises(ValueError, match="at least one token"):
        ours(model, SamplerSpec(), None, 5, prompts=[[1], []])
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours(model, SamplerSpec(), None, 0)


def test_training_mode_is_restored() -> None:
    model = tiny_model("transformer").train()
    ours(model, SamplerSpec(), None, 3)
    assert model.training


# ------------------------------------------------------------- lmbench transformer vs transformers, same weights

def _bench_module():
    """scripts/bench/generation.py, which holds the weight copy lmbench transformer -> GPT2LMHeadModel."""
    return bench_scripts.load("generation")


def _gpt2_shaped_transformer() -> LanguageModel:
    from lmbench.models.transformer import Config, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(Config(num_layers=2, num_heads=2, d_model=32, block_size=64, activation="gelu_tanh"), 40, 0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


def test_lmbench_transformer_generates_what_gpt2_generates_with_the_same_weights() -> None:
    lm = _gpt2_shaped_transformer()
    hf = _bench_module().gpt2_from_transformer(lm)
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), hf(ids), atol=1e-4, rtol=1e-4)
    eos = 5
    assert ours(lm, SamplerSpec(), eos, 12) == hf_generate(hf, PROMPTS, eos, 12, do_sample=False)
    for beams, lp, es in ((2, 1.0, True), (3, 0.5, False), (5, 2.0, True)):
        s = SamplerSpec(kind="beam", num_beams=beams, length_penalty=lp, early_stopping=es, num_return_sequences=beams)
        assert ours(lm, s, eos, 10) == hf_generate(hf, PROMPTS, eos, 10, do_sample=False, num_beams=beams,
                                                   length_penalty=lp, early_stopping=es, num_return_sequences=beams)


def test_the_cpu_fast_paths_draw_what_transformers_draws_on_a_large_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    """d_model 256 and 4,096 tokens: lmbench's decode runs oneDNN-packed linears and finds the nucleus among
    candidates, transformers runs plain F.linear and a full sort; the same seed draws the same ids, greedy and
    beam ids are the same."""
    from lmbench.models.transformer import Config, TransformerLM
    from lmbench.sampling import packed

    torch.manual_seed(0)
    lm = TransformerLM(Config(num_layers=2, num_heads=4, d_model=256, block_size=64, activation="gelu_tanh"), 4096, 0)
    with torch.no_grad():
        lm.tok_emb.weight.normal_(0.0, 0.15)  # peaked next-token distributions: the nucleus is a few hundred ids
    lm = lm.eval()
    hf = _bench_module().gpt2_from_transformer(lm)
    with torch.inference_mode(), packed.packed_linears(lm, 3) as count:
        assert count == 7 or not packed.available()
    from lmbench.sampling import filters

    found = []
    candidates = filters.top_p_candidates
    monkeypatch.setattr(filters, "top_p_candidates",
                        lambda *a: found.append(candidates(*a) is not None) or candidates(*a))
    from lmbench.sampling import draws

    race = draws._race
    monkeypatch.setattr(draws, "_race", lambda *a: found.append(True) or race(*a))
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12], [1, 2, 3, 4]]
    for seed in (3, 4):
        got = ours(lm, SamplerSpec(kind="sample", top_p=0.9), None, 16, prompts=prompts, seed=seed)
        torch.manual_seed(seed)
        assert got == hf_generate(hf, prompts, -1, 16, do_sample=True, top_p=0.9, top_k=0)
    assert len(found) == 64 and all(found)  # every step's nucleus came from the candidates, and its draw
    assert ours(lm, SamplerSpec(), None, 16, prompts=prompts) == hf_generate(hf, prompts, -1, 16, do_sample=False)
    beam = SamplerSpec(kind="beam", num_beams=5)
    assert ours(lm, beam, None, 12, prompts=prompts) == hf_generate(hf, prompts, -1, 12, do_sample=False, num_beams=5,
                                                                     early_stopping=True)


def test_prefill_asks_for_the_last_logits_only() -> None:
    class Keeps(CountingLM):
        def step(self, input_ids, state, attention_mask=None, logits_to_keep=0):
            self.calls.append((tuple(input_ids.shape), logits_to_keep))
            logits, state = self.inner.step(input_ids, state, attention_mask)  # all positions
            return (logits[:, -logits_to_keep:] if logits_to_keep else logits), state

    model = Keeps(tiny_model("lstm"))
    plain = ours(tiny_model("lstm"), SamplerSpec(kind="beam", num_beams=2), None, 3)
    assert ours(model, SamplerSpec(kind="beam", num_beams=2), None, 3) == plain
    assert [keep for _, keep in model.calls] == [1, 0, 0]


# ------------------------------------------------------------------------------------- host syncs (GPU path)

@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_merging_every_step_changes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                        early_stopping: object) -> None:
    """On CUDA the finished set takes every step's candidates (no `ended.any()` sync): the same hypotheses."""
    import lmbench.sampling.search as search

    model = tiny_model("transformer")
    for kind in ("beam", "beam_sample"):
        s = SamplerSpec(kind=kind, num_beams=3, num_return_sequences=3, early_stopping=early_stopping)
        skipping = ours(model, s, EOS["transformer"], 12)
        monkeypatch.setattr(search, "merge_unconditionally", lambda ended: True)
        merging = ours(model, s, EOS["transformer"], 12)
        monkeypatch.undo()
        assert merging == skipping
        assert any(h[-1] == EOS["transformer"] for out in skipping for h in out)  # hypotheses did end


def test_decoding_asks_whether_the_mask_is_dense_once_not_per_token() -> None:
    """`bool(mask.all())` is a host sync on CUDA: the transformer's state carries the answer between steps."""
    model = tiny_model("transformer")
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = (ids != 0).long()
    _, padded = model.step(ids, model.init_state(2, ids.device), attention_mask=mask)
    _, dense = model.step(ids[1:], model.init_state(1, ids.device))
    assert (padded.dense, dense.dense) == (False, True)
    step_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    logits, after = model.step(torch.tensor([[3], [4]]), padded, attention_mask=step_mask)
    assert after.dense is False  # known from the state: no device query
    unknown = dataclasses.replace(padded, dense=None)
    torch.testing.assert_close(model.step(torch.tensor([[3], [4]]), unknown, attention_mask=step_mask)[0], logits)
    logits, after = model.step(torch.tensor([[3]]), dense)
    assert after.dense is True
    torch.testing.assert_close(model.step(torch.tensor([[3]]), dataclasses.replace(dense, dense=None))[0], logits)


@pytest.mark.parametrize("s", [SamplerSpec(repetition_penalty=3.0), SamplerSpec(no_repeat_ngram_size=1),
                               SamplerSpec(kind="beam", num_beams=2, repetition_penalty=3.0)])
def test_left_padding_is_never_a_seen_token(s: SamplerSpec) -> None:
    """A model that always prefers every token id in order (0 best): with left padding in the batch, no id, 0 and 1
    included, counts as already generated, so the batch decodes what each prompt decodes alone."""
    model = UnigramLM(torch.linspace(3.0, 0.0, 12))
    prompts = [[7, 8, 9, 10, 11], [9]]
    batched = generate(model, prompts, s, max_new_tokens=3, eos_id=11, pad_id=0)
    alone = [generate(model, [p], s, max_new_tokens=3, eos_id=11, pad_id=0)[0] for p in prompts]
    assert batched == alone and alone[1][0][0] == 0


def test_beam_search_stops_once_no_running_beam_can_improve() -> None:
    """EOS is every step's best token: each beam's hypotheses end at once, so beam search stops after one step
    unless early_stopping is "never" (then it runs to max_new_tokens, as transformers does with a positive
    length penalty)."""
    logits = torch.linspace(0.0, 3.0, 12)  # id 11 (EOS) best
    calls = []
    for s in (SamplerSpec(kind="beam", num_beams=2), SamplerSpec(kind="beam", num_beams=2, early_stopping=False),
              SamplerSpec(kind="beam", num_beams=3, early_stopping="never")):
        model = CountingLM(UnigramLM(logits))
        out = generate(model, [[1, 2], [3]], s, max_new_tokens=8, eos_id=11, pad_id=0)
        assert out == [[[11]], [[11]]]
        calls.append(len(model.calls))
    assert calls == [2, 2, 8]


# ------------------------------------------------------------------------- masks, stopping rules, n-gram bans

@pytest.mark.parametrize("s, copies", [(SamplerSpec(), 1), (SamplerSpec(kind="sample", num_return_sequences=2), 2),
                                       (SamplerSpec(kind="beam", num_beams=2), 2)])
def test_every_step_is_given_the_mask_of_everything_consumed(s: SamplerSpec, copies: int) -> None:
    """The step contract: a given mask covers the past and the new ids. Left-padded prompts [5, 6, 7] and [4]:
    the prefill sees [1 1 1] and [0 0 1], each later step one more column of ones, rows repeated per copy (beams
    or returned sequences, a prompt's copies side by side); prompts of one length need no mask at all."""
    model = MaskRecorder(torch.linspace(0.0, 1.0, 8))
    generate(model, [[5, 6, 7], [4]], s, max_new_tokens=3, eos_id=None, pad_id=0)
    prompt = [[1, 1, 1], [0, 0, 1]]
    expected = [prompt] + [[row + [1] * t for row in prompt for _ in range(copies)] for t in (1, 2)]
    assert [m.tolist() for m in model.masks] == expected
    assert all(m.dtype == torch.long for m in model.masks)
    model = MaskRecorder(torch.linspace(0.0, 1.0, 8))
    generate(model, [[5, 6], [7, 4]], s, max_new_tokens=3, eos_id=None, pad_id=0)
    assert model.masks == [None, None, None]


def test_beam_search_with_early_stopping_stops_once_num_beams_have_finished() -> None:
    """Unigram log-probs a > e > b (A = 3, EOS = 4, B = 1), two beams, length penalty 1. Step 1 finishes [EOS]
    (score e), step 2 finishes [A, EOS] ((a + e) / 2): two finished. early_stopping=True stops there, one step
    after the prefill, though the running [A, A] (mean a) could still do better. early_stopping=False goes on
    (a running mean of a always beats a finished ((L - 1) a + e) / L) to max_new_tokens, where [A, A, A, A]
    (a) and [A, A, A, EOS] ((3a + e) / 4) are best."""
    logits = torch.tensor([-1.0, 0.0, -1.0, 2.0, 1.0, -1.0])
    for early_stopping, num_calls, best in ((True, 2, [[3, 4], [4]]), (False, 4, [[3, 3, 3, 3], [3, 3, 3, 4]])):
        model = CountingLM(UnigramLM(logits))
        s = SamplerSpec(kind="beam", num_beams=2, num_return_sequences=2, early_stopping=early_stopping)
        assert generate(model, [[1]], s, max_new_tokens=4, eos_id=4, pad_id=0) == [best]
        assert len(model.calls) == num_calls


def test_beam_search_stops_when_the_best_running_beam_can_only_tie() -> None:
    """A (3) and EOS (4) have the same log-prob a; no length penalty. Step 1 finishes [EOS] (a), step 2 [A, EOS]
    (2a), and the best running beam [A, A] scores 2a too: a tie is no improvement (transformers compares
    with >), so beam search stops after one step past the prefill."""
    logits = torch.tensor([-1.0, 0.0, -1.0, 2.0, 2.0, -1.0])
    model = CountingLM(UnigramLM(logits))
    s = SamplerSpec(kind="beam", num_beams=2, num_return_sequences=2, length_penalty=0.0, early_stopping=False)
    assert generate(model, [[1]], s, max_new_tokens=4, eos_id=4, pad_id=0) == [[[4], [3, 4]]]
    assert len(model.calls) == 2


def test_beam_search_bans_ngrams_the_prompt_already_holds() -> None:
    """no_repeat_ngram_size=2 after the prompt [3, 3]: the bigram (3, 3) is taken, so no beam may start with 3
    (the best token); 1 then 3 and 1 then 1 are the two best sequences left (logit sums 5 and 4)."""
    logits = torch.tensor([-1.0, 2.0, 0.0, 3.0, -1.0, -1.0])
    s = SamplerSpec(kind="beam", num_beams=2, num_return_sequences=2, no_repeat_ngram_size=2)
    assert generate(UnigramLM(logits), [[3, 3]], s, max_new_tokens=2, eos_id=None, pad_id=0) == [[[1, 3], [1, 1]]]


def test_finished_set_takes_every_step_on_accelerators_only() -> None:
    from lmbench.sampling.search import merge_unconditionally

    assert merge_unconditionally(torch.zeros(2, 4, dtype=torch.bool)) is False
    assert merge_unconditionally(torch.zeros(2, 4, dtype=torch.bool, device="meta")) is True


def test_the_default_seed_is_0() -> None:
    """Without a seed, generate and generate_tensors draw as a torch.Generator seeded with 0 does: one
    multinomial draw per token from the fixed distribution."""
    from lmbench.sampling.search import generate_tensors

    logits = torch.linspace(-1.0, 1.0, 12)
    g = torch.Generator().manual_seed(0)
    expected = [int(torch.multinomial(logits.softmax(-1)[None], 1, generator=g)) for _ in range(6)]
    s = SamplerSpec(kind="sample")
    assert generate(UnigramLM(logits), [[1]], s, max_new_tokens=6, eos_id=None, pad_id=0) == [[expected]]
    tokens, _ = generate_tensors(UnigramLM(logits), [[1]], s, max_new_tokens=6, eos_id=None, pad_id=0)
    assert tokens.tolist() == [[expected]]


def test_a_beam_kind_with_one_beam_decodes_greedily() -> None:
    """EOS (11) is the most likely token, so greedy decoding ends at once. A one-beam search with
    early_stopping="never" and length penalty 2 would go on to longer hypotheses ([A, A, A, EOS] scores
    (3a + e) / 4**2, above [EOS]'s e). With num_beams=1 the beam kinds are greedy, as in transformers."""
    logits = torch.tensor([0.0] * 10 + [1.5, 2.0])  # A = 10, EOS = 11
    s = SamplerSpec(kind="beam", num_beams=1, length_penalty=2.0, early_stopping="never")  # type: ignore[arg-type]
    assert generate(UnigramLM(logits), [[1]], s, max_new_tokens=4, eos_id=11, pad_id=0) == [[[11]]]


@pytest.mark.parametrize("dtype, outer, expected", [("bf16", False, torch.bfloat16), ("fp32", True, None),
                                                    ("auto", True, torch.bfloat16), ("auto", False, None)])
def test_sample_dtype_sets_the_decoding_precision(monkeypatch: pytest.MonkeyPatch, dtype: str, outer: bool,
                                                  expected: torch.dtype | None) -> None:
    """bf16 decodes under autocast, fp32 without it even inside the runner's autocast, auto as the caller does."""
    from lmbench.sampling import search
    from lmbench.spec import SampleSpec
    from lmbench.tokenizers.char import CharConfig, CharTokenizer

    seen = []

    def recording_generate(model, prompt_ids, sampler, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return [[[1]] for _ in prompt_ids]

    monkeypatch.setattr(search, "generate", recording_generate)
    tokenizer = CharTokenizer.train(["abc"], CharConfig())
    spec = SampleSpec(prompts=["ab"], dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer):
        rows = search.sample_texts(tiny_model("transformer"), tokenizer, spec, "cpu")
    assert len(rows) == 1 and seen == [expected]
