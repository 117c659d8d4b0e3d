"""The `hf_seq2seq` family: tiny T5 and BART built offline from configs, against transformers itself."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lmbench.data.batching import IGNORE_INDEX, DocumentDataset, collate_documents
from lmbench.data.cache import SplitStats, TokenSplit
from lmbench.errors import SpecError
from lmbench.models.seq2seq import Config, HFSeq2SeqLM
from lmbench.sampling.search import generate
from lmbench.spec import SamplerSpec, to_spec

import numpy as np

PAD, BOS, EOS, SEP, VOCAB = 0, 1, 2, 3, 40
CONFIGS: dict[str, dict[str, Any]] = {
    "t5": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
           "relative_attention_num_buckets": 8, "dropout_rate": 0.0},
    "bart": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64,
             "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0},
}


def tiny(model_type: str, seed: int = 0) -> HFSeq2SeqLM:
    torch.manual_seed(seed)
    config = Config(from_config=True, model_type=model_type, config=dict(CONFIGS[model_type]))
    return HFSeq2SeqLM(config, VOCAB, PAD, eos_id=EOS, sep_id=SEP).eval()


def pairs(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(prompt, story) ids, of different lengths, none of them special."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(4, VOCAB, int(rng.integers(1, 7))).tolist(), rng.integers(4, VOCAB, int(rng.integers(1, 9))).tolist())
            for _ in range(5)]


def rows(data: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """The batch lmbench trains on: documents batching of prompt_story data (prompt + <sep> masked)."""
    docs = [p + [SEP] + s for p, s in data]
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    split = TokenSplit(np.array([t for d in docs for t in d], dtype=np.uint16), offsets,
                       np.array([len(p) + 1 for p, _ in data], dtype=np.int64), SplitStats(len(docs), 0, 0, 0, 0))
    dataset = DocumentDataset(split, 64, BOS, EOS, PAD)
    return collate_documents([dataset[i] for i in range(len(docs))], PAD)


def transformers_inputs(data: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """What DataCollatorForSeq2Seq makes: sources (prompt + EOS) and labels (story + EOS) padded apart, -100."""
    sources = [p + [EOS] for p, _ in data]
    labels = [s + [EOS] for _, s in data]
    width, depth = max(map(len, sources)), max(map(len, labels))
    return {"input_ids": torch.tensor([x + [PAD] * (width - len(x)) for x in sources]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in sources]),
            "labels": torch.tensor([y + [IGNORE_INDEX] * (depth - len(y)) for y in labels])}


@pytest.mark.parametrize("model_type", ["t5", "bart"])
@torch.no_grad()
def test_loss_equals_transformers_on_a_padded_batch(model_type: str) -> None:
    """Sum of target NLL / targets over lmbench's rows (the loss the trainer computes) equals transformers'
    `model(input_ids, attention_mask, labels).loss` on the same pairs padded the seq2seq way; sums are exact."""
    model, data = tiny(model_type), pairs()
    batch = rows(data)
    logits = model(batch["input_ids"], batch["attention_mask"])
    nll = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    targets = int((batch["labels"] != IGNORE_INDEX).sum())
    expected = model.model(**transformers_inputs(data))
    assert targets == sum(len(s) + 1 for _, s in data)  # every story token and its EOS, never the prompt
    torch.testing.assert_close(nll / targets, expected.loss, atol=1e-5, rtol=1e-5)
    # without the mask (evaluation's right-padded rows): the same logits at every scored position
    scored = batch["labels"] != IGNORE_INDEX
    torch.testing.assert_close(model(batch["input_ids"])[scored], logits[scored])


@pytest.mark.parametrize("model_type", ["t5", "bart"])
@pytest.mark.parametrize("sampler", [SamplerSpec(kind="greedy"),
                                     SamplerSpec(kind="beam", num_beams=3, num_return_sequences=2)])
@torch.no_grad()
def test_greedy_and_beam_ids_equal_generate(model_type: str, sampler: SamplerSpec) -> None:
    """Prompts ``BOS + prompt + <sep>`` of different lengths (left-padded together): the ids equal
    `model.generate(sources)` (the encoder once, a decoder cache), EOS included, nothing after it."""
    model, data = tiny(model_type, seed=1), pairs(seed=2)
    prompts = [[BOS] + p + [SEP] for p, _ in data]
    got = generate(model, prompts, sampler, max_new_tokens=12, eos_id=EOS, pad_id=PAD)
    inputs = transformers_inputs(data)
    out = model.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                               max_new_tokens=12, do_sample=False, num_beams=sampler.num_beams,
                               num_return_sequences=sampler.num_return_sequences, length_penalty=1.0,
                               early_stopping=True, pad_token_id=PAD, eos_token_id=EOS)
    r = sampler.num_return_sequences
    for b, hypotheses in enumerate(got):
        for i, ids in enumerate(hypotheses):
            row = out[b * r + i, 1:].tolist()  # after decoder_start
            expected = row[: row.index(EOS) + 1] if EOS in row else row
            assert ids == expected, (b, i)


@pytest.mark.parametrize("model_type", ["t5", "bart"])
@pytest.mark.parametrize("params", [{}, {"temperature": 0.7, "top_k": 10, "top_p": 0.9}, {"min_p": 0.1}])
@torch.no_grad()
def test_seeded_sampling_draws_what_generate_draws(model_type: str, params: dict[str, Any]) -> None:
    """Same seed, same draws as `generate(do_sample=True)` after torch.manual_seed (lmbench's private generator
    replays the global one). Repetition penalties are left out: lmbench's see the prompt too, transformers'
    only the decoder's tokens."""
    model, data = tiny(model_type, seed=3), pairs(seed=4)
    prompts = [[BOS] + p + [SEP] for p, _ in data]
    inputs = transformers_inputs(data)
    for seed in (3, 4):
        got = generate(model, prompts, SamplerSpec(kind="sample", **params), max_new_tokens=10, eos_id=EOS,
                       pad_id=PAD, seed=seed)
        torch.manual_seed(seed)
        out = model.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   max_new_tokens=10, do_sample=True, pad_token_id=PAD, eos_token_id=EOS,
                                   **{"top_k": None, **params})  # generate's default top_k is 50
        for b, (ids,) in enumerate(got):
            row = out[b, 1:].tolist()
            assert ids == (row[: row.index(EOS) + 1] if EOS in row else row), (seed, b)


@torch.no_grad()
def test_prompt_text_after_sep_is_the_decoder_prefix() -> None:
    """``prompt <sep> a b``: the first step's logits are the decoder's after decoder_start, a, b."""
    model = tiny("t5")
    prompt, prefix = [5, 6, 7], [8, 9]
    logits, _ = model.step(torch.tensor([[BOS, *prompt, SEP, *prefix]]), model.init_state(1, torch.device("cpu")),
                           logits_to_keep=1)
    expected = model.model(input_ids=torch.tensor([[*prompt, EOS]]),
                           decoder_input_ids=torch.tensor([[model.start_id, *prefix]])).logits[:, -1:]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_a_row_without_sep_is_an_error() -> None:
    with pytest.raises(ValueError, match="without <sep>"):
        tiny("t5")(torch.tensor([[BOS, 5, 6, 7]]))


def spec(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "s2s", "data": {"source": "prompt_story", "path": "s.txt", "prompt_path": "p.txt",
                                "batching": "documents"},
        "tokenizer": {"kind": "char", "params": {"specials": ["<sep>"]}},
        "model": {"family": "hf_seq2seq", "params": {"from_config": True, "model_type": "t5"}},
        "sample": {"prompts": ["a question <sep>"]}, "train": {"max_steps": 1}}
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


@pytest.mark.parametrize("changes, field", [
    ({"data.batching": "packed"}, "data.batching"),
    ({"sample.prompts": ["no separator here"]}, "sample.prompts[0]"),
])
def test_spec_errors_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        HFSeq2SeqLM.check_spec(Config(from_config=True, model_type="t5"), to_spec(spec(**changes)))
    assert err.value.path == field
    with pytest.raises(SpecError) as err:
        bad = spec()
        bad["data"] = {"source": "builtin"}
        HFSeq2SeqLM.check_spec(Config(from_config=True, model_type="t5"), to_spec(bad))
    assert err.value.path == "data.source"


def test_trains_evaluates_samples_and_resumes_through_the_runner(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A tiny T5 cell on prompt/story pairs through `run_cell`: the loss goes down, validation scores every story
    token plus its EOS (never a prompt token) and the story bytes, every sampler writes rows, and a longer budget
    resumes from the checkpoint."""
    import json
    import math

    from lmbench.data.cache import prepare_data
    from lmbench.training.runner import run_cell

    from ..gpu.helpers import cell_cfg
    from ..training.test_trainer import rows as metric_rows

    cfg = cell_cfg(tmp_path, "hf_seq2seq", train={"max_steps": 8, "lr": 1e-2, "checkpoint_every": 4, "log_every": 1})
    summary = run_cell(to_spec(cfg), tmp_path / "run", cell_name="run")
    assert summary["status"] == "completed"
    data = prepare_data(to_spec(cfg), progress=False)
    split = data.splits["validation"]
    expected = int((split.doc_lengths() + 1 - split.prompt_lens).sum())  # story tokens + EOS per document
    assert summary["val_tokens"] == expected
    assert summary["val_bpb"] == pytest.approx(summary["val_nll_nats"] / (math.log(2) * split.stats.num_bytes))
    losses = [r["train_loss"] for r in metric_rows(tmp_path / "run") if "train_loss" in r]
    assert losses[-1] < losses[0]
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {s["sampler"] for s in samples} >= {"greedy"} and len({s["sampler"] for s in samples}) == 4
    cfg["train"]["max_steps"] = 10
    again = run_cell(to_spec(cfg), tmp_path / "run", cell_name="run")
    assert again["status"] == "completed" and again["steps"] == 10
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert 8 in state["resumed_from"]
