"""Corpus-level metrics: sums equal hand computations; sliding windows equal token-by-token scoring."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbench.data.cache import SplitStats, TokenSplit
from lmbench.training.evaluate import (EvalResult, build_items, document_arrays, evaluate_split, row_spans, stream_arrays,
                              window_spans)

BOS, EOS, PAD = 1, 2, 0
V = 7


def make_split(docs: list[list[int]], prompt_lens: list[int] | None = None, *, num_bytes: int = 100,
               num_chars: int = 90, num_words: int = 20) -> TokenSplit:
    lengths = [len(d) for d in docs]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.asarray([t for d in docs for t in d], dtype=np.uint16)
    stats = SplitStats(len(docs), int(offsets[-1]), num_bytes, num_chars, num_words)
    return TokenSplit(tokens, offsets, None if prompt_lens is None else np.asarray(prompt_lens, np.int64), stats)


class BigramLM(nn.Module):
    """Logits depend only on the current token: a fixed table (V, V); receptive field 1."""

    carries_state = False  # scored like a transformer (windows), as LanguageModel declares it

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(V, V, generator=g))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.table[input_ids]  # (B, T, V)


class WindowLM(nn.Module):
    """Causal model whose logits at t depend on tokens t-k+1..t (a causal convolution): receptive field k."""

    carries_state = False

    def __init__(self, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.k = k
        self.emb = nn.Parameter(torch.randn(V, 5, generator=g))
        self.conv = nn.Parameter(torch.randn(V, 5, k, generator=g) * 0.5)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x = self.emb[input_ids].transpose(1, 2)  # (B, 5, T)
        x = F.pad(x, (self.k - 1, 0))
        return F.conv1d(x, self.conv).transpose(1, 2)  # (B, T, V)


@torch.no_grad()
def hand_nll(model: nn.Module, inputs: list[int], targets: list[int], context: int) -> tuple[float, int]:
    """Score every target from its own forward over the last `context` inputs (token by token)."""
    nll, count = 0.0, 0
    for t, y in enumerate(targets):
        if y == -100:
            continue
        ctx = torch.tensor([inputs[max(0, t - context + 1):t + 1]])
        logp = torch.log_softmax(model(ctx)[0, -1].double(), -1)
        nll -= float(logp[y])
        count += 1
    return nll, count


DOCS = [[3, 4, 5, 6, 3, 3], [4, 4], [5, 6, 3, 4, 5, 6, 6, 5, 4, 3, 3]]


def test_eval_result_formulas() -> None:
    r = EvalResult(nll_nats=12.0, num_tokens=10, num_bytes=8, num_chars=6, num_words=3)
    assert r.loss == pytest.approx(1.2)
    assert r.ppl == pytest.approx(math.exp(1.2))  # exp, never 2 ** loss
    assert r.bpb == pytest.approx(12.0 / (math.log(2) * 8))
    assert r.bits_per_char == pytest.approx(12.0 / (math.log(2) * 6))
    assert r.word_ppl == pytest.approx(math.exp(4.0))
    m = r.metrics("val")
    assert m["val_loss"] == r.loss and m["val_tokens"] == 10 and m["val_nll_nats"] == 12.0
    assert math.isnan(EvalResult(0.0, 0).loss)


@pytest.mark.parametrize("n,block,stride", [(1, 4, 2), (10, 4, 2), (11, 4, 3), (8, 8, 4), (30, 8, 1), (9, 8, 8)])
def test_window_spans_tile_targets_once(n: int, block: int, stride: int) -> None:
    spans = window_spans(n, block, stride)
    scored = [t for _, end, start in spans for t in range(start, end)]
    assert scored == list(range(n))
    for begin, end, start in spans:
        assert end - begin <= block and begin <= start
        assert start - begin >= min(block - stride, start)  # context of the first scored target


def test_row_spans_cover() -> None:
    assert row_spans(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert row_spans(2, 5) == [(0, 1), (1, 2)]


def test_stream_arrays_masks_prompts() -> None:
    split = make_split([[3, 9, 4], [5, 9, 6, 6]], prompt_lens=[2, 2])  # "3 <sep>=9" and "5 <sep>" prompts
    inputs, targets = stream_arrays(split, EOS)
    assert inputs.tolist() == [3, 9, 4, EOS, 5, 9, 6, 6]
    # targets: 9 (prompt) 4, EOS, 5 (prompt), 9 (prompt), 6, 6, EOS
    assert targets.tolist() == [-100, 4, EOS, -100, -100, 6, 6, EOS]
    x, y = document_arrays(split, 1, BOS, EOS)
    assert x.tolist() == [BOS, 5, 9, 6, 6] and y.tolist() == [-100, -100, 6, 6, EOS]


def test_metric_sums_equal_hand_computation_packed() -> None:
    model, split = BigramLM(), make_split(DOCS)
    result = evaluate_split(model, split, mode="packed", block_size=4, stride=2, batch_size=3, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    stream = [t for d in DOCS for t in d + [EOS]]
    nll, count = hand_nll(model, stream[:-1], stream[1:], context=1)
    assert result.num_tokens == count == len(stream) - 1
    assert result.nll_nats == pytest.approx(nll, rel=1e-6)
    assert (result.num_bytes, result.num_chars, result.num_words) == (100, 90, 20)
    assert result.bpb == pytest.approx(nll / (math.log(2) * 100), rel=1e-6)


def test_metric_sums_equal_hand_computation_documents_with_prompt() -> None:
    model, split = BigramLM(seed=1), make_split(DOCS, prompt_lens=[2, 0, 3])
    result = evaluate_split(model, split, mode="documents", block_size=4, stride=3, batch_size=2, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    nll, count = 0.0, 0
    for i in range(len(DOCS)):
        x, y = document_arrays(split, i, BOS, EOS)
        doc_nll, doc_count = hand_nll(model, x.tolist(), y.tolist(), context=1)
        nll, count = nll + doc_nll, count + doc_count
    assert count == sum(len(d) + 1 for d in DOCS) - 5
    assert result.num_tokens == count
    assert result.nll_nats == pytest.approx(nll, rel=1e-6)


@pytest.mark.parametrize("mode", ["packed", "documents"])
@pytest.mark.parametrize("block,stride", [(6, 2), (6, 4), (5, 1)])
def test_sliding_window_equals_token_by_token(mode: str, block: int, stride: int) -> None:
    """With receptive field k <= block - stride + 1, every scored target sees its full field: the sliding
    window equals scoring each token from its own forward."""
    k = block - stride + 1
    model = WindowLM(k=k)
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode=mode, block_size=block, stride=stride, batch_size=2, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    if mode == "packed":
        seqs = [stream_arrays(split, EOS)]
    else:
        seqs = [document_arrays(split, i, BOS, EOS) for i in range(len(DOCS))]
    nll = count = 0
    for x, y in seqs:
        n, c = hand_nll(model, x.tolist(), y.tolist(), context=k)
        nll, count = nll + n, count + c
    assert result.num_tokens == count
    assert result.nll_nats == pytest.approx(nll, rel=1e-6)


def tiny_transformer(block: int) -> nn.Module:
    from lmbench.models.transformer import Config, TransformerLM

    torch.manual_seed(0)
    return TransformerLM(Config(num_layers=1, num_heads=2, d_model=8, block_size=block), vocab_size=V, pad_id=PAD)


def test_transformer_stride_one_equals_token_by_token_with_block_context() -> None:
    block = 5
    model = tiny_transformer(block).eval()
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode="packed", block_size=block, stride=1, batch_size=4, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    x, y = stream_arrays(split, EOS)
    with torch.no_grad():
        nll, count = hand_nll(model, x.tolist(), y.tolist(), context=block)
    assert result.num_tokens == count
    assert result.nll_nats == pytest.approx(nll, rel=1e-5)


@torch.no_grad()
def documents_nll(model: nn.Module, split: TokenSplit) -> float:
    """Summed NLL of every document of `split`, each scored by one plain forward over BOS + document."""
    nll = 0.0
    for i in range(len(DOCS)):
        x, y = document_arrays(split, i, BOS, EOS)
        logits = model(torch.from_numpy(x)[None])
        nll += float(F.cross_entropy(logits[0].double(), torch.from_numpy(y), reduction="sum"))
    return nll


def test_transformer_short_documents_one_forward() -> None:
    """Documents shorter than the block: one window each, equal to a plain forward over BOS + doc."""
    model = tiny_transformer(16).eval()
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode="documents", block_size=16, batch_size=3, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    assert result.nll_nats == pytest.approx(documents_nll(model, split), rel=1e-5)


def tiny_lstm() -> nn.Module:
    from lmbench.models.recurrent import Config, LSTMLM

    torch.manual_seed(0)
    return LSTMLM(Config(d_embed=6, d_hidden=8, num_layers=2), vocab_size=V, pad_id=PAD)


def test_recurrent_carries_state_over_whole_stream() -> None:
    """One row (batch_size=1): chunks of block_size with carried state equal one forward over the stream."""
    model = tiny_lstm().eval()
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode="packed", block_size=4, batch_size=1, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    x, y = stream_arrays(split, EOS)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None])
    expected = float(F.cross_entropy(logits[0].double(), torch.from_numpy(y), reduction="sum"))
    assert result.num_tokens == len(y)
    assert result.nll_nats == pytest.approx(expected, rel=1e-5)


def test_recurrent_documents_whole_document_state() -> None:
    model = tiny_lstm().eval()
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode="documents", block_size=3, batch_size=2, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    assert result.nll_nats == pytest.approx(documents_nll(model, split), rel=1e-5)


def test_recurrent_stream_rows_score_every_target_once() -> None:
    model = tiny_lstm()
    split = make_split(DOCS)
    items = build_items(split, mode="packed", recurrent=True, block_size=4, stride=2, num_rows=3, bos_id=BOS,
                        eos_id=EOS)
    assert sum(int((items[i]["labels"] != -100).sum()) for i in range(len(items))) == sum(len(d) + 1 for d in DOCS) - 1
    result = evaluate_split(model, split, mode="packed", block_size=4, batch_size=3, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    assert result.num_tokens == sum(len(d) + 1 for d in DOCS) - 1
    assert model.training  # the previous mode is restored


def test_eval_is_independent_of_batch_size() -> None:
    model = tiny_transformer(6)
    split = make_split(DOCS)
    a, b = (evaluate_split(model, split, mode="documents", block_size=6, stride=3, batch_size=bs, bos_id=BOS,
                           eos_id=EOS, pad_id=PAD) for bs in (1, 5))
    assert a.num_tokens == b.num_tokens and a.nll_nats == pytest.approx(b.nll_nats, rel=1e-6)


def test_unk_share_is_per_token_and_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 of the validation split's 8 tokens are <unk> (id 3): share 3/8 over tokens, not over its 2 documents;
    counted on the first evaluation only; None for a tokenizer whose <unk> is another special id."""
    from types import SimpleNamespace

    from lmbench.spec import to_spec
    from lmbench.training.evaluate import Evaluator

    spec = to_spec({"name": "u", "model": {"family": "lstm"}, "train": {"max_steps": 1},
                    "data": {"block_size": 4}, "eval": {"batch_size": 2}})
    split = make_split([[3, 4, 3, 5], [6, 3, 4, 5]])
    word_like = SimpleNamespace(bos_id=BOS, eos_id=EOS, pad_id=PAD, unk_id=3)
    evaluator = Evaluator({"validation": split}, word_like, spec)
    counted = []
    real = np.count_nonzero
    monkeypatch.setattr(np, "count_nonzero", lambda a: counted.append(1) or real(a))
    model = BigramLM()
    first = evaluator.evaluate(model, ["validation"])["validation"]
    again = evaluator.evaluate(model, ["validation"])["validation"]
    assert first.unk_rate == again.unk_rate == pytest.approx(3 / 8) and len(counted) == 1
    lossless = SimpleNamespace(bos_id=BOS, eos_id=EOS, pad_id=PAD, unk_id=PAD)
    assert Evaluator({"validation": split}, lossless, spec).evaluate(model, ["validation"])["validation"].unk_rate is None


# ------------------------------------------------------------------------------------------- per-unit records
def with_units(split: TokenSplit, chunks: dict[int, list[int]] | None = None) -> TokenSplit:
    """`split` with a unit table: one unit per document, or the given token counts per chunk for some documents.
    Bytes/chars/words per unit are made up (10, 9, 2 per unit): only their bookkeeping is under test here."""
    rows = []
    for doc, n in enumerate(split.doc_lengths().tolist()):
        for k, tokens in enumerate((chunks or {}).get(doc, [n])):
            rows.append((doc, k, tokens, 10, 9, 2))
    split.units = np.asarray(rows, dtype=np.int64)
    return split


@pytest.mark.parametrize("mode", ["packed", "documents"])
@pytest.mark.parametrize("family", ["window", "lstm"])
def test_unit_sums_equal_the_totals(mode: str, family: str) -> None:
    model = WindowLM() if family == "window" else tiny_lstm().eval()
    split = with_units(make_split(DOCS, prompt_lens=[2, 0, 3] if mode == "documents" else None), {2: [5, 6]})
    result = evaluate_split(model, split, mode=mode, block_size=4, stride=2, batch_size=2, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    units = result.units
    assert units is not None and len(units.nll_nats) == 4
    assert int(units.num_targets.sum()) == result.num_tokens
    assert units.nll_nats.sum() == pytest.approx(result.nll_nats, rel=1e-12)
    frame = units.frame()
    assert frame[["doc", "chunk"]].values.tolist() == [[0, 0], [1, 0], [2, 0], [2, 1]]
    assert frame["bytes"].sum() == 40 and (frame["nll_nats"] > 0).all()


def test_packed_units_hold_their_targets_and_eos_goes_to_the_last_chunk() -> None:
    """Bigram model (receptive field 1): each unit's NLL is the hand-scored NLL of the targets in it. In the
    stream, target j is stream[j + 1]; the EOS after a document belongs to that document's last unit."""
    model = BigramLM(seed=2)
    split = with_units(make_split(DOCS), {2: [4, 7]})
    result = evaluate_split(model, split, mode="packed", block_size=4, stride=2, batch_size=3, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    stream = [t for d in DOCS for t in d + [EOS]]
    # unit of each stream position: doc 0 (6 tokens + EOS) -> 0, doc 1 (2 + EOS) -> 1, doc 2: 4 -> 2, 7 + EOS -> 3
    owner = [0] * 7 + [1] * 3 + [2] * 4 + [3] * 8
    expected = np.zeros(4)
    for j in range(len(stream) - 1):
        expected[owner[j + 1]] += hand_nll(model, [stream[j]], [stream[j + 1]], context=1)[0]
    assert result.units.num_targets.tolist() == [6, 3, 4, 8]  # doc 0's first token is no target of the stream
    np.testing.assert_allclose(result.units.nll_nats, expected, rtol=1e-6)


def test_document_units_equal_each_document_scored_alone() -> None:
    """documents mode, one unit per document: unit i's NLL is what evaluating document i on its own gives."""
    model = tiny_transformer(4)
    split = with_units(make_split(DOCS, prompt_lens=[2, 0, 3]))
    result = evaluate_split(model, split, mode="documents", block_size=4, stride=2, batch_size=2, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    for i, doc in enumerate(DOCS):
        alone = evaluate_split(model, make_split([doc], prompt_lens=[[2, 0, 3][i]]), mode="documents", block_size=4,
                               stride=2, batch_size=1, bos_id=BOS, eos_id=EOS, pad_id=PAD)
        assert result.units.num_targets[i] == alone.num_tokens == len(doc) + 1 - [2, 0, 3][i]
        assert result.units.nll_nats[i] == pytest.approx(alone.nll_nats, rel=1e-6)


def test_no_units_without_a_unit_table() -> None:
    result = evaluate_split(BigramLM(), make_split(DOCS), mode="packed", block_size=4, batch_size=2, bos_id=BOS,
                            eos_id=EOS, pad_id=PAD)
    assert result.units is None


@pytest.mark.parametrize("mode", ["packed", "documents"])
def test_default_stride_is_half_a_block_on_a_text_longer_than_the_block(mode: str) -> None:
    """No stride given (the spec's default, eval.stride: null): windows overlap by half a block, so every target
    of a text 6x the block sees at least block / 2 + 1 tokens of context. A model whose receptive field is exactly
    that scores the same as token-by-token; non-overlapping windows (stride = block) would cut its context."""
    block = 8
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, V, 47).tolist(), rng.integers(3, V, 5).tolist()]
    split = make_split(docs)
    model = WindowLM(k=block // 2 + 1)
    seqs = ([stream_arrays(split, EOS)] if mode == "packed"
            else [document_arrays(split, i, BOS, EOS) for i in range(len(docs))])
    nll = count = 0
    for x, y in seqs:
        n, c = hand_nll(model, x.tolist(), y.tolist(), context=block // 2 + 1)
        nll, count = nll + n, count + c
    kw = dict(mode=mode, block_size=block, batch_size=3, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    result = evaluate_split(model, split, **kw)
    assert result.num_tokens == count == 47 + 5 + (1 if mode == "packed" else 2)
    assert result.nll_nats == pytest.approx(nll, rel=1e-6)
    cut = evaluate_split(model, split, stride=block, **kw)
    assert cut.num_tokens == count and abs(cut.nll_nats - nll) > 1e-3


# ------------------------------------------------------------------------- the Evaluator and result records
def test_evaluator_scores_the_named_splits_with_the_specs_settings() -> None:
    """Splits in the asked order, missing or empty ones left out, each scored as evaluate_split scores it with the
    spec's batching, block, stride and batch size; a split of one <unk> token has a share of 1."""
    from types import SimpleNamespace

    from lmbench.spec import to_spec
    from lmbench.training.evaluate import Evaluator

    spec = to_spec({"name": "u", "model": {"family": "lstm"}, "train": {"max_steps": 1},
                    "data": {"block_size": 5, "batching": "documents"}, "eval": {"batch_size": 2, "stride": 3}})
    splits = {"validation": make_split(DOCS), "test": make_split([[3]]), "train": make_split([[], []])}
    tok = SimpleNamespace(bos_id=BOS, eos_id=EOS, pad_id=PAD, unk_id=3)
    model = WindowLM(k=4)
    results = Evaluator(splits, tok, spec).evaluate(model, ["test", "missing", "train", "validation"])
    assert list(results) == ["test", "validation"]
    direct = evaluate_split(model, splits["validation"], mode="documents", block_size=5, stride=3, batch_size=2,
                            bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert results["validation"].nll_nats == pytest.approx(direct.nll_nats, rel=1e-12)
    assert results["validation"].num_tokens == direct.num_tokens
    for other in (None, 4):  # the default (half the block, 2) and another stride score differently here
        other_stride = evaluate_split(model, splits["validation"], mode="documents", block_size=5, stride=other,
                                      batch_size=2, bos_id=BOS, eos_id=EOS, pad_id=PAD)
        assert abs(other_stride.nll_nats - direct.nll_nats) > 1e-6  # the stride matters here, so it was passed
    assert results["test"].unk_rate == 1.0 and results["test"].num_tokens == 2  # the token and EOS


def test_flatten_results_names_and_prefixes_every_split() -> None:
    from lmbench.training.evaluate import flatten_results

    r = EvalResult(nll_nats=6.0, num_tokens=3, num_bytes=4, num_chars=4, num_words=2)
    flat = flatten_results({"validation": r, "test": r, "train": r, "extra": r}, prefix="untrained_")
    assert flat["untrained_val_loss"] == 2.0 and flat["untrained_test_tokens"] == 3
    assert flat["untrained_train_bpb"] == pytest.approx(6.0 / (4 * math.log(2)))
    assert flat["untrained_extra_loss"] == 2.0 and "untrained_val_unk_rate" not in flat
    assert flatten_results({"validation": EvalResult(1.0, 1, unk_rate=0.25)})["val_unk_rate"] == 0.25


def test_span_helpers_at_their_edges() -> None:
    assert row_spans(0, 3) == [] and row_spans(2, 5) == [(0, 1), (1, 2)]
    assert window_spans(8, 4, 4) == [(0, 4, 0), (4, 8, 4)]
    with pytest.raises(ValueError, match=r"stride must be in \(0, block_size=4\], got 0"):
        window_spans(8, 4, 0)
    with pytest.raises(ValueError, match=r"stride must be in \(0, block_size=4\], got 5"):
        window_spans(8, 4, 5)
    long_doc = make_split([list(range(3, 3 + 30))])
    default = build_items(long_doc, mode="documents", recurrent=False, block_size=8, stride=4, num_rows=2,
                          bos_id=BOS, eos_id=EOS)  # not whole sequences unless asked
    whole = build_items(long_doc, mode="documents", recurrent=False, block_size=8, stride=4, num_rows=2,
                        bos_id=BOS, eos_id=EOS, whole=True)
    assert len(whole) == 1 and len(default) > 1


def test_unit_frame_columns_and_types() -> None:
    split = with_units(make_split(DOCS), {2: [5, 6]})
    split.units[:, 4] = [9, 8, 7, 6]  # chars
    split.units[:, 5] = [1, 2, 3, 4]  # words
    result = evaluate_split(BigramLM(), split, mode="packed", block_size=4, batch_size=2, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    frame = result.units.frame()
    assert list(frame.columns) == ["doc", "chunk", "nll_nats", "tokens", "bytes", "chars", "words"]
    assert frame["chars"].tolist() == [9, 8, 7, 6] and frame["words"].tolist() == [1, 2, 3, 4]
    assert frame["tokens"].dtype == np.int64 and frame["tokens"].tolist() == result.units.num_targets.tolist()


def test_recurrent_packed_rows_start_from_a_fresh_state() -> None:
    """A recurrent model on a packed stream with 3 rows: the stream is cut into 3 contiguous rows (row_spans),
    each scored by one forward from a fresh state; not one row over the whole stream."""
    model = tiny_lstm().eval()
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode="packed", block_size=4, batch_size=3, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    x, y = stream_arrays(split, EOS)
    expected = 0.0
    with torch.no_grad():
        for a, b in row_spans(len(y), 3):
            logits = model(torch.from_numpy(x[a:b])[None])
            expected += float(F.cross_entropy(logits[0].double(), torch.from_numpy(y[a:b]), reduction="sum"))
    assert result.num_tokens == len(y) and result.nll_nats == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------- items, padding and batches
def test_document_items_are_their_windows_longest_first() -> None:
    """Documents of 6, 2 and 11 tokens are sequences of 7, 3 and 12 inputs (BOS + doc); windows of 4 with stride 2
    cut them as written out here, and the items come longest first (equal lengths in document order), which keeps
    padding to the few short items at the end."""
    items = build_items(make_split(DOCS), mode="documents", recurrent=False, block_size=4, stride=2, num_rows=2,
                        bos_id=BOS, eos_id=EOS)
    doc0 = [(0, 0, 4, 0), (0, 2, 6, 4), (0, 3, 7, 6)]
    doc2 = [(2, 0, 4, 0), (2, 2, 6, 4), (2, 4, 8, 6), (2, 6, 10, 8), (2, 8, 12, 10)]
    assert items.spans == doc0 + doc2 + [(1, 0, 3, 0)]
    first = items[1]  # (0, 2, 6, 4): inputs 2..5 of BOS 3 4 5 6 3 3; targets before position 4 already scored
    assert first["input_ids"].tolist() == [4, 5, 6, 3] and first["labels"].tolist() == [-100, -100, 3, 3]
    with pytest.raises(ValueError, match="unknown eval mode 'pairs'"):
        build_items(make_split(DOCS), mode="pairs", recurrent=False, block_size=4, stride=2, num_rows=2, bos_id=BOS,
                    eos_id=EOS)


def test_each_sequence_is_built_once_when_its_items_are_read_in_order() -> None:
    from lmbench.training.evaluate import SpanItems

    built: list[int] = []

    def get(seq_id: int) -> tuple[np.ndarray, np.ndarray, None]:
        built.append(seq_id)
        return np.arange(10) + 10 * seq_id, np.arange(1, 11) + 10 * seq_id, None

    items = SpanItems([(0, 0, 4, 0), (0, 4, 8, 4), (1, 0, 4, 0), (1, 4, 8, 4)], get)
    assert [items[i]["input_ids"].tolist() for i in range(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13],
                                                                   [14, 15, 16, 17]]
    assert built == [0, 1]


def test_pad_items_pads_right_with_pad_ignore_and_no_unit() -> None:
    from lmbench.training.evaluate import pad_items

    short = {"input_ids": torch.tensor([5]), "labels": torch.tensor([6]), "units": torch.tensor([0])}
    long = {"input_ids": torch.tensor([3, 4, 5]), "labels": torch.tensor([-100, 5, 6]), "units": torch.tensor([-1, 1, 1])}
    batch = pad_items([long, short], pad_id=9)
    assert batch["input_ids"].tolist() == [[3, 4, 5], [5, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [6, -100, -100]]
    assert batch["units"].tolist() == [[-1, 1, 1], [0, -1, -1]]
    assert all(t.dtype == torch.int64 for t in batch.values())
    plain = pad_items([{k: v for k, v in item.items() if k != "units"} for item in (long, short)], pad_id=9)
    assert sorted(plain) == ["input_ids", "labels"]  # no units key at all without unit ids


def test_masked_targets_carry_no_unit() -> None:
    """A prompt target (label -100) has unit -1 in its item, whatever unit its token has."""
    split = with_units(make_split([[3, 4, 5], [6, 6]], prompt_lens=[2, 0]), {})
    items = build_items(split, mode="documents", recurrent=False, block_size=8, stride=4, num_rows=2, bos_id=BOS,
                        eos_id=EOS)
    first = next(items[i] for i in range(len(items)) if items.spans[i][0] == 0)
    assert first["labels"].tolist() == [-100, -100, 5, EOS]
    assert first["units"].tolist()[:2] == [-1, -1] and min(first["units"].tolist()[2:]) >= 0


def test_a_split_needs_no_prompt_lengths_or_units() -> None:
    """Any object with tokens, doc_offsets, doc() and stats is scored; prompt_lens and units are optional."""
    from types import SimpleNamespace

    full = make_split(DOCS)
    bare = SimpleNamespace(tokens=full.tokens, doc_offsets=full.doc_offsets, doc=full.doc, stats=full.stats)
    for mode in ("packed", "documents"):
        result = evaluate_split(BigramLM(), bare, mode=mode, block_size=4, batch_size=2, bos_id=BOS, eos_id=EOS,
                                pad_id=PAD)
        assert result.num_tokens == sum(map(len, DOCS)) + (len(DOCS) - 1 if mode == "packed" else len(DOCS))
        assert result.units is None


def test_each_process_takes_its_share_of_every_global_batch() -> None:
    """Two processes, 2 items each per batch: process 0 takes items 0-1 of the 4-item global batch and process 1
    items 2-3; the last global batch (item 4) is filled from the start (items 0, 1, 2) so that every process runs
    the same number of batches (gather_for_metrics drops the repeats)."""
    from types import SimpleNamespace

    from lmbench.training.evaluate import _batches

    split = make_split([[3], [3, 4], [3, 4, 5], [3, 4, 5, 6], [3, 4, 5, 6, 3]])
    items = build_items(split, mode="documents", recurrent=True, block_size=8, stride=4, num_rows=2, bos_id=BOS,
                        eos_id=EOS)  # one item per document, longest first: BOS + doc 4, 3, 2, 1, 0
    rows = [[1, 3, 4, 5, 6, 3], [1, 3, 4, 5, 6], [1, 3, 4, 5], [1, 3, 4], [1, 3]]

    def padded(*indices: int) -> list[list[int]]:
        width = max(len(rows[i]) for i in indices)
        return [rows[i] + [PAD] * (width - len(rows[i])) for i in indices]

    def ids(process: int) -> list[list[list[int]]]:
        acc = SimpleNamespace(device=torch.device("cpu"), num_processes=2, process_index=process)
        return [batch["input_ids"].tolist() for batch in _batches(items, 2, PAD, acc)]

    assert ids(0) == [padded(0, 1), padded(4, 0)]
    assert ids(1) == [padded(2, 3), padded(1, 2)]
    alone = [batch["input_ids"].tolist() for batch in _batches(items, 2, PAD, None)]
    assert alone == [padded(0, 1), padded(2, 3), padded(4)]


def test_the_evaluator_runs_under_the_accelerator_it_was_given() -> None:
    """The accelerator's autocast wraps every batch's forward and its gather sums the processes' rows."""
    from types import SimpleNamespace

    from lmbench.spec import to_spec
    from lmbench.training.evaluate import Evaluator

    calls = {"autocast": 0, "gather": 0}

    def autocast() -> contextlib.AbstractContextManager[None]:
        calls["autocast"] += 1
        return contextlib.nullcontext()

    def gather(tensor: Tensor) -> Tensor:
        calls["gather"] += 1
        return tensor

    acc = SimpleNamespace(device=torch.device("cpu"), num_processes=1, process_index=0, is_main_process=True,
                          autocast=autocast, gather_for_metrics=gather)
    spec = to_spec({"name": "a", "model": {"family": "lstm"}, "train": {"max_steps": 1},
                    "data": {"block_size": 4, "batching": "packed"}, "eval": {"batch_size": 3}})
    tok = SimpleNamespace(bos_id=BOS, eos_id=EOS, pad_id=PAD, unk_id=PAD)
    model = tiny_lstm().eval()
    result = Evaluator({"validation": make_split(DOCS)}, tok, spec, acc).evaluate(model, ["validation"])["validation"]
    assert calls == {"autocast": 1, "gather": 1}  # 3 rows: one batch of 3
    expected = evaluate_split(model, make_split(DOCS), mode="packed", block_size=4, batch_size=3, bos_id=BOS,
                              eos_id=EOS, pad_id=PAD)  # a recurrent stream is cut into batch_size rows
    assert result.nll_nats == pytest.approx(expected.nll_nats, rel=1e-12)
    one_row = evaluate_split(model, make_split(DOCS), mode="packed", block_size=4, batch_size=16, bos_id=BOS,
                             eos_id=EOS, pad_id=PAD)
    assert abs(one_row.nll_nats - expected.nll_nats) > 1e-6  # the spec's batch size reached evaluate_split


def test_recurrent_rows_start_from_the_models_initial_state() -> None:
    """Each row starts from `model.init_state`, whatever it holds (here 0.5 everywhere, not zeros)."""
    from lmbench.models.recurrent import RecurrentState

    class HalfStart(type(tiny_lstm())):  # type: ignore[misc]
        def init_state(self, batch_size: int, device: torch.device, max_length: int | None = None) -> RecurrentState:
            h = torch.full((self.config.num_layers, batch_size, self.config.d_hidden), 0.5, device=device)
            return RecurrentState(h, torch.full_like(h, 0.5))

    torch.manual_seed(0)
    model = HalfStart(tiny_lstm().config, vocab_size=V, pad_id=PAD).eval()
    split = make_split(DOCS)
    result = evaluate_split(model, split, mode="packed", block_size=64, batch_size=1, bos_id=BOS, eos_id=EOS,
                            pad_id=PAD)
    x, y = stream_arrays(split, EOS)
    with torch.no_grad():
        logits, _ = model.forward_with_state(torch.from_numpy(x)[None], model.init_state(1, torch.device("cpu")))
        from_zeros = model(torch.from_numpy(x)[None])
    expected = float(F.cross_entropy(logits[0].double(), torch.from_numpy(y), reduction="sum"))
    assert result.nll_nats == pytest.approx(expected, rel=1e-6)
    assert abs(float(F.cross_entropy(from_zeros[0].double(), torch.from_numpy(y), reduction="sum")) - expected) > 1e-3
