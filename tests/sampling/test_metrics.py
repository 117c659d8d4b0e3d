"""Sampler metrics (pooled n-gram statistics, perplexity of samples) and the text-level `sample_texts`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmbench.sampling import sample_texts, sampler_metrics, sampler_name
from lmbench.sampling.metrics import continuation_nll, distinct_n, repeated_ngram_rate
from lmbench.spec import SampleSpec, SamplerSpec
from lmbench.tokenizers.char import CharConfig, CharTokenizer

from .helpers import FAMILIES, CountingLM, MaskRecorder, UnigramLM, tiny_model

TEXTS = ["the cat sat on the mat.", "a dog ran after the cat!", "once upon a time there was a fox"]


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train(TEXTS, CharConfig())


def test_distinct_n_pools_over_samples() -> None:
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 1) == 4 / 6
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == 3 / 4
    assert math.isnan(distinct_n([[1], [2]], 2))


def test_repeated_ngram_rate_counts_repeats_within_a_sample() -> None:
    assert repeated_ngram_rate([[1, 2, 1, 2, 1, 2]], 2) == 3 / 5  # (1,2),(2,1),(1,2)r,(2,1)r,(1,2)r
    assert repeated_ngram_rate([[1, 2, 3], [1, 2, 3]], 2) == 0.0  # across samples is not a repeat
    assert math.isnan(repeated_ngram_rate([[1, 2, 3]], 4))


@pytest.mark.parametrize("family", FAMILIES)
def test_continuation_nll_matches_a_full_forward(family: str) -> None:
    model = tiny_model(family)
    pairs = [([1, 5, 6], [7, 8, 9, 2]), ([1], [3]), ([1, 4, 4, 4, 4], [5, 6])]
    expected_nll, expected_num = 0.0, 0
    with torch.no_grad():
        for prompt, cont in pairs:
            logp = F.log_softmax(model(torch.tensor([prompt + cont]))[0].float(), -1)
            expected_nll -= sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))
            expected_num += len(cont)
    nll, num = continuation_nll(model, pairs, batch_size=2)
    assert num == expected_num
    assert nll == pytest.approx(expected_nll, rel=1e-4)


def test_sampler_name() -> None:
    assert sampler_name(SamplerSpec()) == "greedy"
    assert sampler_name(SamplerSpec(kind="sample", top_p=0.95)) == "sample(top_p=0.95)"
    assert sampler_name(SamplerSpec(kind="beam", num_beams=5)) == "beam(num_beams=5)"
    assert sampler_name(SamplerSpec(kind="greedy", top_k=40)) == "greedy"  # warpers do nothing without sampling
    assert sampler_name(SamplerSpec(kind="sample", name="nucleus")) == "nucleus"


def test_sample_texts_rows(tokenizer: CharTokenizer) -> None:
    model = tiny_model("transformer", vocab_size=tokenizer.vocab_size)
    samplers = [SamplerSpec(), SamplerSpec(kind="sample", top_k=5), SamplerSpec(kind="beam", num_beams=3,
                                                                             num_return_sequences=2)]
    spec = SampleSpec(prompts=["the cat", "zebra Q"], num_samples=3, max_new_tokens=8, seed=0, samplers=samplers)
    rows = sample_texts(model, tokenizer, spec, "cpu")
    by_sampler = {name: [r for r in rows if r["sampler"] == name] for name in dict.fromkeys(r["sampler"] for r in rows)}
    assert list(by_sampler) == ["greedy", "sample(top_k=5)", "beam(num_beams=3)"]
    assert [len(v) for v in by_sampler.values()] == [2, 6, 4]  # deterministic kinds run once per prompt
    for r in rows:
        assert r["prompt_ids"][0] == tokenizer.bos_id
        assert r["text"] == tokenizer.decode(r["prompt_ids"] + r["new_ids"])
        assert r["num_new_tokens"] == len(r["new_ids"]) <= 8
        assert r["ended_with_eos"] == (r["new_ids"][-1] == tokenizer.eos_id)
        assert r["tokens_per_s"] > 0
    assert {r["index"] for r in by_sampler["sample(top_k=5)"]} == {0, 1, 2}
    again = sample_texts(model, tokenizer, spec, "cpu")
    assert [r["new_ids"] for r in again] == [r["new_ids"] for r in rows]


def _rows(model, tokenizer, samplers, **kw) -> list[dict]:
    spec = SampleSpec(prompts=["the cat", "a dog"], num_samples=4, max_new_tokens=10, samplers=samplers, **kw)
    return sample_texts(model, tokenizer, spec, "cpu")


def test_sampler_metrics_table(tokenizer: CharTokenizer) -> None:
    model = tiny_model("lstm", vocab_size=tokenizer.vocab_size)
    rows = _rows(model, tokenizer, [SamplerSpec(), SamplerSpec(kind="sample", temperature=1.5)])
    table = sampler_metrics(rows, model, tokenizer, reference=model)
    assert list(table["sampler"]) == ["greedy", "sample(temperature=1.5)"]
    for col in ("num_samples", "mean_length", "eos_fraction", "distinct_1", "distinct_2", "distinct_3",
                "rep_4gram", "self_ppl", "reference_ppl", "tokens_per_s", "note"):
        assert col in table.columns
    sample_rows = [r for r in rows if r["sampler"] == "sample(temperature=1.5)"]
    nll, num = continuation_nll(model, [(r["prompt_ids"], r["new_ids"]) for r in sample_rows])
    got = table.set_index("sampler").loc["sample(temperature=1.5)"]
    assert got["self_ppl"] == pytest.approx(math.exp(nll / num), rel=1e-5)
    assert got["reference_ppl"] == pytest.approx(got["self_ppl"], rel=1e-5)
    assert got["num_samples"] == 8
    content = [r["new_ids"][:-1] if r["ended_with_eos"] else r["new_ids"] for r in sample_rows]
    assert got["mean_length"] == pytest.approx(sum(map(len, content)) / 8)
    assert got["distinct_2"] == pytest.approx(distinct_n(content, 2))
    assert 0 <= got["eos_fraction"] <= 1 and got["tokens_per_s"] > 0


def test_reference_with_another_tokenizer_is_nan_with_a_note(tokenizer: CharTokenizer) -> None:
    model = tiny_model("lstm", vocab_size=tokenizer.vocab_size)
    rows = _rows(model, tokenizer, [SamplerSpec()])
    other = CharTokenizer.train(["xyz"], CharConfig())
    table = sampler_metrics(rows, model, tokenizer, reference=(model, other))
    assert math.isnan(table.loc[0, "reference_ppl"]) and "tokenizer" in table.loc[0, "note"]
    same = CharTokenizer.train(TEXTS, CharConfig())
    table = sampler_metrics(rows, model, tokenizer, reference=(model, same))
    assert table.loc[0, "reference_ppl"] == pytest.approx(table.loc[0, "self_ppl"], rel=1e-5)
    table = sampler_metrics(rows, model, tokenizer)
    assert math.isnan(table.loc[0, "reference_ppl"])


def test_tokens_per_s_pools_time() -> None:
    from lmbench.sampling.metrics import _tokens_per_s

    rows = [{"num_new_tokens": 10, "tokens_per_s": 10.0}, {"num_new_tokens": 30, "tokens_per_s": 30.0}]
    assert _tokens_per_s(rows) == pytest.approx(40 / 2)


def test_unknown_words_in_a_prompt_become_unk_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from lmbench.tokenizers.word import WordConfig, WordTokenizer

    tokenizer = WordTokenizer.train(TEXTS, WordConfig(lowercase=True))
    model = tiny_model("lstm", vocab_size=tokenizer.vocab_size)
    spec = SampleSpec(prompts=["We propose a cat"], max_new_tokens=5, samplers=[SamplerSpec(kind="sample")])
    rows = sample_texts(model, tokenizer, spec, "cpu")
    assert tokenizer.unk_id in rows[0]["prompt_ids"] and "propose" in caplog.text
    assert rows[0]["text"].startswith("<unk> <unk> a cat") and rows[0]["num_new_tokens"] >= 1


def test_repeated_ngram_rate_pools_counts_over_samples_with_4_grams_by_default() -> None:
    # (1,2,1,2): 4-grams of [1,2,1,2,1,2,1] are 4, one repeat each after the first two: 2 repeats of 4
    assert repeated_ngram_rate([[1, 2, 1, 2, 1, 2, 1], [5, 6, 7, 8, 9]]) == pytest.approx((2 + 0) / (4 + 2))
    assert repeated_ngram_rate([[1, 1, 1], [2, 2, 2, 2]], 2) == pytest.approx((1 + 2) / (2 + 3))


def test_same_vocabulary_needs_the_same_tokens_not_only_the_same_size() -> None:
    from lmbench.sampling.metrics import same_vocabulary

    a, b = CharTokenizer.train(["abc"], CharConfig()), CharTokenizer.train(["abd"], CharConfig())
    assert a.vocab_size == b.vocab_size and not same_vocabulary(a, b)
    assert same_vocabulary(a, CharTokenizer.train(["cab"], CharConfig())) and same_vocabulary(a, a)


def test_sampler_table_notes_eos_share_and_empty_samples(tokenizer: CharTokenizer) -> None:
    """The notes name the reference's state; EOS share, 4-gram repeats and perplexity by hand; samples with no new
    token have no perplexity (NaN, not an error); no measured time gives no rate."""
    from lmbench.sampling.metrics import _tokens_per_s, reference_scores

    model = tiny_model("lstm", vocab_size=tokenizer.vocab_size)
    p, e = tokenizer.encode("the"), tokenizer.eos_id
    rows = [{"sampler": "s", "prompt_ids": p, "new_ids": [5, 6, 5, 6, 5, 6, e], "ended_with_eos": True,
             "num_new_tokens": 7, "tokens_per_s": 7.0},
            {"sampler": "s", "prompt_ids": p, "new_ids": [7, 7, 7, 7, 7], "ended_with_eos": False,
             "num_new_tokens": 5, "tokens_per_s": 5.0},
            {"sampler": "empty", "prompt_ids": p, "new_ids": [], "ended_with_eos": False, "num_new_tokens": 0,
             "tokens_per_s": 0.0}]
    table = sampler_metrics(rows, model, tokenizer).set_index("sampler")
    assert table.loc["s", "note"] == "no reference model" and table.loc["s", "eos_fraction"] == 0.5
    assert table.loc["s", "rep_4gram"] == pytest.approx((1 + 1) / (3 + 2))  # (5,6,5,6) repeats once; 7777 once
    assert table.loc["s", "mean_length"] == 5.5 and math.isnan(table.loc["empty", "self_ppl"])
    assert math.isnan(table.loc["empty", "tokens_per_s"]) and table.loc["s", "tokens_per_s"] == pytest.approx(6.0)
    nll, num = continuation_nll(model, [(r["prompt_ids"], r["new_ids"]) for r in rows[:2]])
    assert num == 12 and table.loc["s", "self_ppl"] == pytest.approx(math.exp(nll / num), rel=1e-6)
    assert sampler_metrics(rows, model, tokenizer, reference=(model, tokenizer)).loc[0, "note"] == ""
    other = CharTokenizer.train(["xyz"], CharConfig())
    assert sampler_metrics(rows, model, tokenizer, reference=(model, other)).loc[0, "note"] == \
        "reference model has another tokenizer: reference_ppl not comparable"
    scores = reference_scores(rows, tokenizer, (model, tokenizer))
    assert list(scores) == ["s", "empty"] and scores["s"] == (pytest.approx(table.loc["s", "self_ppl"]), "")
    assert math.isnan(scores["empty"][0])
    far = reference_scores(rows, tokenizer, (model, other))
    assert math.isnan(far["s"][0]) and far["s"][1].startswith("reference model has another tokenizer")
    assert math.isnan(_tokens_per_s([{"num_new_tokens": 3, "tokens_per_s": 0.0}]))


def test_sample_texts_row_fields_seeds_and_start_token(tokenizer: CharTokenizer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Every key of a row; a batch of jobs per seed (spec seed + chunk number); the index counts the draws of a
    prompt across repeats and returned sequences; prompts start with BOS unless another start id is given; a
    deterministic sampler asked for several samples says it runs once."""
    import dataclasses

    from lmbench.sampling.search import prompt_start_id

    model = tiny_model("transformer", vocab_size=tokenizer.vocab_size)
    sampler = SamplerSpec(kind="sample", num_return_sequences=2)
    spec = SampleSpec(prompts=["the", "a"], num_samples=3, max_new_tokens=4, seed=7, samplers=[sampler])
    rows = sample_texts(model, tokenizer, spec, "cpu", batch_size=4)
    assert set(rows[0]) == {"sampler", "sampler_params", "prompt", "index", "text", "continuation", "prompt_ids",
                            "new_ids", "num_new_tokens", "ended_with_eos", "tokens_per_s", "seed"}
    assert rows[0]["sampler_params"] == dataclasses.asdict(sampler)
    assert [r["seed"] for r in rows] == [7] * 8 + [8] * 4  # 6 jobs (2 prompts x 3): chunks of 4 and 2
    assert [(r["prompt"], r["index"]) for r in rows if r["prompt"] == "the"] == [("the", i) for i in range(6)]
    for r in rows:
        assert r["continuation"] == tokenizer.decode(r["new_ids"]) and r["prompt_ids"][0] == tokenizer.bos_id
    starting = sample_texts(model, tokenizer, spec, "cpu", start_id=tokenizer.eos_id)
    assert {r["prompt_ids"][0] for r in starting} == {tokenizer.eos_id}
    greedy = SampleSpec(prompts=["the"], num_samples=3, max_new_tokens=2, samplers=[SamplerSpec()])
    with caplog.at_level("INFO", logger="lmbench.sampling.search"):
        assert len(sample_texts(model, tokenizer, greedy, "cpu")) == 1
    assert "greedy is deterministic: one run per prompt instead of 3 samples" in caplog.text
    from lmbench.spec import DataSpec

    assert prompt_start_id(DataSpec(batching="documents"), tokenizer) == tokenizer.bos_id
    assert prompt_start_id(DataSpec(batching="packed"), tokenizer) == tokenizer.eos_id


# ------------------------------------------------------------------- sampler names, sample_texts' settings

def test_sampler_name_always_names_num_beams_and_lists_every_changed_parameter() -> None:
    assert sampler_name(SamplerSpec(kind="beam")) == "beam(num_beams=1)"  # even at its default
    assert sampler_name(SamplerSpec(kind="sample", temperature=0.7, top_k=5)) == "sample(temperature=0.7, top_k=5)"


def _never_eos(tokenizer: CharTokenizer, best: int = 4) -> torch.Tensor:
    """Unigram logits: token `best` most likely, EOS impossible (every continuation runs to max_new_tokens)."""
    logits = torch.linspace(0.0, 1.0, tokenizer.vocab_size)
    logits[best] = 2.0
    logits[tokenizer.eos_id] = -math.inf
    return logits


def test_sample_texts_stops_at_the_tokenizers_eos(tokenizer: CharTokenizer) -> None:
    logits = torch.zeros(tokenizer.vocab_size)
    logits[tokenizer.eos_id] = 5.0  # EOS always the most likely token
    spec = SampleSpec(prompts=["the"], max_new_tokens=6, samplers=[SamplerSpec()])
    (row,) = sample_texts(UnigramLM(logits), tokenizer, spec, "cpu")
    assert row["new_ids"] == [tokenizer.eos_id] and row["num_new_tokens"] == 1 and row["ended_with_eos"]


def test_sample_texts_draws_with_the_seed_of_each_batch(tokenizer: CharTokenizer) -> None:
    """A fixed distribution, one prompt, two samples in batches of one: the first batch draws its 5 tokens from
    a torch.Generator seeded with the spec's seed (7), the second with 7 + 1, one multinomial draw per token."""
    logits = torch.linspace(-1.0, 1.0, tokenizer.vocab_size)
    logits[tokenizer.eos_id] = -math.inf
    spec = SampleSpec(prompts=["the"], num_samples=2, max_new_tokens=5, seed=7, samplers=[SamplerSpec(kind="sample")])
    rows = sample_texts(UnigramLM(logits), tokenizer, spec, "cpu", batch_size=1)
    probs = logits.softmax(-1)[None]

    def draws(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return [int(torch.multinomial(probs, 1, generator=g)) for _ in range(5)]

    assert [r["new_ids"] for r in rows] == [draws(7), draws(8)] and [r["seed"] for r in rows] == [7, 8]
    assert draws(0) not in (draws(7), draws(8))  # the seed matters for these draws


def test_sample_texts_runs_64_jobs_per_batch_by_default(tokenizer: CharTokenizer) -> None:
    spec = SampleSpec(prompts=["the"], num_samples=65, max_new_tokens=1, seed=3, samplers=[SamplerSpec(kind="sample")])
    rows = sample_texts(UnigramLM(_never_eos(tokenizer)), tokenizer, spec, "cpu")
    assert [r["seed"] for r in rows] == [3] * 64 + [4]  # jobs 1-64 are the first batch, job 65 the second


def test_sample_texts_rate_is_new_tokens_over_the_batch_wall_time(tokenizer: CharTokenizer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted clock: the first batch (3 new tokens) takes 0.25 s, the second no measurable time, which
    counts as 1e-9 s (a rate, not a division by zero)."""
    import types

    import lmbench.sampling.search as search

    ticks = iter([10.0, 10.25, 20.0, 20.0])
    monkeypatch.setattr(search, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    spec = SampleSpec(prompts=["the", "a"], max_new_tokens=3, samplers=[SamplerSpec()])
    rows = sample_texts(UnigramLM(_never_eos(tokenizer)), tokenizer, spec, "cpu", batch_size=1)
    assert [r["new_ids"] for r in rows] == [[4, 4, 4]] * 2
    assert [r["tokens_per_s"] for r in rows] == [3 / 0.25, 3 / 1e-9]


@pytest.mark.parametrize("sampler, num_samples, said", [(SamplerSpec(), 2, True), (SamplerSpec(), 1, False),
                                                        (SamplerSpec(kind="sample"), 3, False)])
def test_only_a_deterministic_sampler_asked_for_several_samples_says_it_runs_once(
        tokenizer: CharTokenizer, caplog: pytest.LogCaptureFixture, sampler: SamplerSpec, num_samples: int,
        said: bool) -> None:
    spec = SampleSpec(prompts=["the"], num_samples=num_samples, max_new_tokens=1, samplers=[sampler])
    with caplog.at_level("INFO", logger="lmbench.sampling.search"):
        sample_texts(UnigramLM(_never_eos(tokenizer)), tokenizer, spec, "cpu")
    assert ("is deterministic" in caplog.text) == said


# ------------------------------------------------------------------- scoring: batches, masks, vocabularies

def test_continuation_nll_scores_16_pairs_per_step_by_default() -> None:
    """17 identical pairs: one step on 16 rows, one on the last; the NLL is 17 times the pair's own, read from a
    full forward pass."""
    inner = tiny_model("lstm")
    model = CountingLM(inner)
    nll, num = continuation_nll(model, [([1, 2], [3])] * 17, "cpu")
    assert [rows for rows, _ in model.calls] == [16, 1]
    with torch.no_grad():
        one = -float(F.log_softmax(inner(torch.tensor([[1, 2, 3]]))[0, 1].float(), -1)[3])
    assert num == 17 and nll == pytest.approx(17 * one, rel=1e-5)


def test_continuation_nll_gives_the_model_the_mask_of_its_right_padding() -> None:
    """Rows [1 2 3 | 4 5] and [1 | 6], right-padded to 5: the model is told which positions are padding (a 0/1
    long mask, as transformers' attention_mask). Uniform over 8 ids: each of the 3 scored tokens costs log 8."""
    model = MaskRecorder(torch.zeros(8))
    nll, num = continuation_nll(model, [([1, 2, 3], [4, 5]), ([1], [6])], "cpu")
    (mask,) = model.masks
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]] and mask.dtype == torch.long
    assert num == 3 and nll == pytest.approx(3 * math.log(8))


def test_metrics_score_in_batches_of_the_given_size_for_the_model_and_the_reference(
        tokenizer: CharTokenizer) -> None:
    """batch_size reaches every scoring pass (the sampler's model, the reference model, reference_scores);
    16 rows per step by default. A reference given as a bare model shares the tokenizer: no note."""
    from lmbench.sampling.metrics import reference_scores

    base = tiny_model("lstm", vocab_size=tokenizer.vocab_size)
    row = {"sampler": "s", "prompt_ids": [1, 5], "new_ids": [6, 7], "ended_with_eos": False, "num_new_tokens": 2,
           "tokens_per_s": 1.0}
    for rows, kwargs, steps in (([row] * 3, {"batch_size": 2}, [2, 1]), ([row] * 17, {}, [16, 1])):
        model, ref = CountingLM(base), CountingLM(base)
        table = sampler_metrics(rows, model, tokenizer, reference=ref, **kwargs)
        assert [r for r, _ in model.calls] == steps and [r for r, _ in ref.calls] == steps
        assert table.loc[0, "note"] == ""
        ref = CountingLM(base)
        reference_scores(rows, tokenizer, ref, **kwargs)
        assert [r for r, _ in ref.calls] == steps


def test_tokenizers_of_different_kinds_never_share_a_vocabulary() -> None:
    """A char tokenizer of "ab" and a word tokenizer of "a b" list the same tokens, but a char is not a word."""
    from lmbench.sampling.metrics import same_vocabulary
    from lmbench.tokenizers.word import WordConfig, WordTokenizer

    chars, words = CharTokenizer.train(["ab"], CharConfig()), WordTokenizer.train(["a b"], WordConfig())
    assert chars.tokens() == words.tokens() and not same_vocabulary(chars, words)
