"""lmbench.training.fused_loss: the chunked projection + cross-entropy equals the autograd path, value and
gradients, in float32 and under bf16 autocast; the trainer uses it for large vocabularies only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbench.training import fused_loss
from lmbench.training.fused_loss import linear_cross_entropy


def reference(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
              ) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, ignore_index=-100, reduction="sum")


def grads(fn, hidden, weight, bias, labels, scale: float = 3.0):  # noqa: ANN001, ANN201
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight) + (() if bias is None else (bias,))]
    loss = fn(leaves[0], leaves[1], leaves[2] if bias is not None else None, labels)
    (loss * scale).backward()
    return loss.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("chunk_bytes", [8 << 20, 4 * 300 * 7])  # one chunk; chunks of 7 rows (and a short last one)
def test_equals_cross_entropy_of_the_projection(with_bias: bool, autocast: bool, chunk_bytes: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_loss, "CHUNK_BYTES", chunk_bytes)
    g = torch.Generator().manual_seed(0)
    n, d, vocab = 50, 16, 300
    hidden, weight = torch.randn(n, d, generator=g), torch.randn(vocab, d, generator=g) * 0.3
    bias = torch.randn(vocab, generator=g) if with_bias else None
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[[3, 17, 49]] = -100  # not scored
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got, got_grads = grads(linear_cross_entropy, hidden, weight, bias, labels)
        expected, expected_grads = grads(reference, hidden, weight, bias, labels)
    tol = {"atol": 2e-2, "rtol": 2e-2} if autocast else {"atol": 1e-4, "rtol": 1e-5}
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, **tol)
    for a, b in zip(got_grads, expected_grads):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def test_ignored_rows_with_non_finite_logits_are_not_scored() -> None:
    hidden = torch.tensor([[1.0, 0.0], [float("nan"), 0.0]], requires_grad=True)
    weight = torch.eye(2, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, None, torch.tensor([0, -100]))
    loss.backward()
    assert torch.isfinite(loss) and torch.allclose(loss, F.cross_entropy(torch.tensor([[1.0, 0.0]]), torch.tensor([0]),
                                                                         reduction="sum"))
    assert torch.equal(hidden.grad[1], torch.zeros(2))  # (the weight's gradient takes 0 x NaN, as autograd's does)


@pytest.mark.parametrize("vocab, fused, tied", [(5000, True, False), (5000, True, True), (100, False, False)])
def test_the_trainer_fuses_a_large_vocabulary_only(vocab: int, fused: bool, tied: bool) -> None:
    """TrainModule over an LSTM (its head tied to the embedding too, through a hidden->embed projection): the
    fused path gives the autograd path's loss, state and gradients."""
    from lmbench.models.recurrent import Config, LSTMLM
    from lmbench.training.trainer import TrainModule

    torch.manual_seed(0)
    model = LSTMLM(Config(d_embed=8, d_hidden=12, num_layers=2, tie_weights=tied), vocab, pad_id=0)
    ids, labels = torch.randint(0, vocab, (3, 5)), torch.randint(0, vocab, (3, 5))
    labels[0, :2] = -100
    results = []
    for use in (True, False):
        module = TrainModule(model, fused_loss=use)
        assert module.fused == (use and fused)
        model.zero_grad()
        nll, state = module(ids, labels)
        nll.backward()
        results.append((nll.detach(), state.hx()[0].detach(), [p.grad.clone() for p in model.parameters()]))
    (a, sa, ga), (b, sb, gb) = results
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sa, sb)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_a_frozen_weight_gets_no_gradient_and_the_rest_are_unchanged() -> None:
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    bias, labels = torch.randn(9, generator=g), torch.tensor([1, 8, -100, 0, 3, 3])
    h1, b1 = hidden.clone().requires_grad_(), bias.clone().requires_grad_()
    linear_cross_entropy(h1, weight, b1, labels).backward()
    h2, b2 = hidden.clone().requires_grad_(), bias.clone().requires_grad_()
    reference(h2, weight, b2, labels).backward()
    assert weight.grad is None
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(b1.grad, b2.grad)


def test_rows_are_projected_in_chunks_of_chunk_bytes_of_float32_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """50 rows over 300 ids with room for 7 rows of float32 logits: 8 projections, 7 rows each, the last 1."""
    import types

    shapes = []

    def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        shapes.append(h.size(0))
        return F.linear(h, w, b)

    monkeypatch.setattr(fused_loss, "CHUNK_BYTES", 4 * 300 * 7 + 4 * 299)  # not quite 8 rows
    monkeypatch.setattr(fused_loss, "F", types.SimpleNamespace(linear=linear))
    linear_cross_entropy(torch.randn(50, 4), torch.randn(300, 4), None, torch.zeros(50, dtype=torch.long))
    assert shapes == [7] * 7 + [1]
