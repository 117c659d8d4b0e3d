"""The matrix-product causal attention of bf16 CPU training: exact in float64, as close as SDPA in bf16, taken only
where it should be, and a model trains to the same losses with it as with SDPA."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lmbench.models import attention, transformer
from lmbench.models.attention import causal_attention, use_matmul_attention

from .tiny import VOCAB, make_tiny


def _qkv(dtype: torch.dtype, shape: tuple[int, ...] = (3, 2, 17, 8), seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype).requires_grad_() for _ in range(3)]


def test_exact_in_float64_forward_and_backward() -> None:
    q, k, v = _qkv(torch.float64)
    assert torch.autograd.gradcheck(causal_attention, (q, k, v))
    torch.testing.assert_close(causal_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_bf16_is_as_close_to_float32_as_sdpa() -> None:
    """Against a float32 reference, the bf16 outputs and gradients err about as much as SDPA's bf16 ones."""
    q, k, v = _qkv(torch.bfloat16, (4, 3, 64, 32))
    grad = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(1)).bfloat16()
    ref_in = [x.detach().float().requires_grad_() for x in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, is_causal=True)
    ref.backward(grad.float())

    def errors(fn: Any) -> list[float]:
        for x in (q, k, v):
            x.grad = None
        out = fn(q, k, v)
        out.backward(grad)
        return [(a.float() - b).abs().max().item() for a, b in
                zip((out, q.grad, k.grad, v.grad), (ref, *(x.grad for x in ref_in)))]

    ours = errors(causal_attention)
    sdpa = errors(lambda *x: F.scaled_dot_product_attention(*x, is_causal=True))
    for mine, theirs in zip(ours, sdpa):
        assert mine <= 3 * theirs + 1e-3, (ours, sdpa)


def test_taken_only_for_bf16_training_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    q = _qkv(torch.bfloat16)[0]
    assert use_matmul_attention(q, 0.0)
    assert not use_matmul_attention(q, 0.1)  # attention dropout: SDPA
    assert not use_matmul_attention(q.detach(), 0.0)  # no gradient (evaluation, decoding): SDPA
    assert not use_matmul_attention(_qkv(torch.float32)[0], 0.0)  # fp32: SDPA
    monkeypatch.setattr(attention, "MAX_SCORES", 3 * 2 * 17 * 17 - 1)
    assert not use_matmul_attention(q, 0.0)  # too many scores to keep: SDPA
    monkeypatch.setattr(attention, "MAX_SCORES", 3 * 2 * 17 * 17)
    assert use_matmul_attention(q, 0.0)
    monkeypatch.setenv("LMBENCH_MATMUL_ATTENTION", "0")
    assert not use_matmul_attention(q, 0.0)


def _losses(steps: int, compile_backend: Any = None) -> list[float]:
    model = make_tiny("transformer", d_model=32, num_heads=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    forward = model if compile_backend is None else torch.compile(model, backend=compile_backend)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        ids = torch.randint(1, VOCAB, (4, 24), generator=generator)
        ids[:, 1::2] = ids[:, ::2]  # something to learn: every other token repeats the one before
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = forward(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_training_losses_match_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same tiny transformer, data and optimizer under bf16 autocast: the loss curve with the matrix-product
    attention stays within bf16 tolerance of SDPA's, and the path was really taken (and only in training)."""
    calls: list[int] = []

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return causal_attention(*args)

    monkeypatch.setattr(transformer, "causal_attention", counted)
    ours = _losses(30)
    assert len(calls) == 30 * 2  # every step, both layers
    monkeypatch.setenv("LMBENCH_MATMUL_ATTENTION", "0")
    sdpa = _losses(30)
    assert len(calls) == 60
    assert ours[-1] < 0.8 * ours[0]  # it learned
    for a, b in zip(ours, sdpa):
        assert abs(a - b) <= 0.03 * b, (ours, sdpa)
    monkeypatch.delenv("LMBENCH_MATMUL_ATTENTION")
    model = make_tiny("transformer", d_model=32, num_heads=2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randint(1, VOCAB, (2, 8)))
    assert len(calls) == 60  # evaluation without gradients keeps SDPA


def test_compiled_training_takes_it_and_matches_eager() -> None:
    """Under torch.compile (AOTAutograd, without inductor's C++ build) the traced forward holds the matrix
    products, not SDPA's flash kernel, and the losses follow the eager ones."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    targets: set[str] = set()

    def forward_compiler(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        targets.update(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    compiled = _losses(8, aot_autograd(fw_compiler=forward_compiler))
    assert any("baddbmm" in t for t in targets) and not any("flash" in t for t in targets), targets
    eager = _losses(8)
    for a, b in zip(compiled, eager):
        assert abs(a - b) <= 0.01 * b, (compiled, eager)
