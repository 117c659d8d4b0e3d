"""oneDNN-packed linears while decoding: the same numbers as F.linear, the plain layers back afterwards, and the
same ids from generate packed or not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmbench.models.transformer import Config, TransformerLM
from lmbench.sampling import generate, packed
from lmbench.sampling.packed import MIN_PACKED_ELEMENTS, packed_linears
from lmbench.spec import SamplerSpec

pytestmark = pytest.mark.skipif(not packed.available(), reason="this torch has no oneDNN packed linear")

BIG = (MIN_PACKED_ELEMENTS // 128, 128)  # (out, in): just at the threshold


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(BIG[1], BIG[0])
        self.small = nn.Linear(BIG[0], 8)
        self.tied = nn.Linear(BIG[1], BIG[0], bias=False)
        self.tied.weight = self.big.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.small(self.big(x)) + self.small(self.tied(x))


def test_packed_layers_compute_what_the_plain_ones_compute() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, 5, BIG[1])
    with torch.inference_mode():
        plain = net(x)
        with packed_linears(net, 3) as count:
            assert count == 2  # big and tied; small is below the threshold
            assert "forward" in vars(net.big) and "forward" not in vars(net.small)
            got = net(x)
            one_row = net(x[:1, :1])  # any number of rows, whatever the hint
            vector = net.big(x[0, 0])  # a 1-d input: the plain layer
        torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one_row, plain[:1, :1], atol=1e-5, rtol=1e-5)
        assert torch.equal(vector, F.linear(x[0, 0], net.big.weight, net.big.bias))
    assert not any("forward" in vars(m) for m in net.modules())  # the plain layers are back


def test_tied_weights_are_reordered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = []
    reorder = packed.reorder
    monkeypatch.setattr(packed, "reorder", lambda weight, rows: shapes.append(weight.shape) or reorder(weight, rows))
    with torch.inference_mode(), packed_linears(Net(), 1) as count:
        pass
    assert count == 2 and shapes == [torch.Size(BIG)]


def test_packed_layers_step_aside_where_they_would_change_the_result() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, BIG[1])
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = net.big(x)
        with packed_linears(net, 2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                under_autocast = net.big(x)
        assert under_autocast.dtype == torch.bfloat16
        assert torch.equal(under_autocast, plain)
        with packed_linears(net.double(), 2) as count:  # float64 is not packed
            assert count == 0


def test_under_autocast_the_weights_are_packed_as_autocast_casts_them() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, BIG[1])
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = net(x)
            with packed_linears(net, 3) as count:
                got = net(x)
                assert count == (2 if packed.supports(torch.bfloat16) else 0)
            with packed_linears(net, 3), torch.autocast("cpu", enabled=False):
                unpacked_inside = net.big(x)  # autocast off inside the block: the plain fp32 layer
        assert got.dtype == plain.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), plain.float(), atol=2e-2, rtol=2e-2)
        assert torch.equal(unpacked_inside, F.linear(x, net.big.weight, net.big.bias))
        with torch.autocast("cpu", dtype=torch.float16), packed_linears(net, 3) as count:
            assert count == 0  # fp16 is not packed


def test_a_dtype_this_cpu_cannot_reorder_is_not_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN's bf16 reorder raises on an AVX2-only CPU: there the bf16 layers stay plain and compute as before."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, BIG[1])
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = net(x)
            with packed_linears(net, 3) as count:
                assert count == 0 and not any("forward" in vars(m) for m in net.modules())
                assert torch.equal(net(x), plain)
        with packed_linears(net.bfloat16(), 3) as count:  # bf16 weights, no autocast
            assert count == 0
        with packed_linears(net.float(), 3) as count:  # fp32 is packed on any CPU
            assert count == 2


def test_a_mismatched_input_dtype_runs_the_plain_layer() -> None:
    net = Net().eval()
    x = torch.randn(2, BIG[1]).bfloat16()
    with torch.inference_mode(), packed_linears(net, 2):
        with pytest.raises(RuntimeError):  # what F.linear says about fp32 weights and a bf16 input
            net.big(x)


def test_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_PACKED_LINEAR", "0")
    with torch.inference_mode(), packed_linears(Net(), 1) as count:
        assert count == 0


def test_the_plain_layers_come_back_after_an_error() -> None:
    net = Net()
    with pytest.raises(KeyError), torch.inference_mode(), packed_linears(net, 1):
        raise KeyError("boom")
    assert not any("forward" in vars(m) for m in net.modules())


@pytest.mark.parametrize("sampler", [SamplerSpec(), SamplerSpec(kind="beam", num_beams=3, num_return_sequences=2),
                                     SamplerSpec(kind="sample", top_p=0.9)])
def test_generate_gives_the_same_ids_packed_or_not(monkeypatch: pytest.MonkeyPatch, sampler: SamplerSpec) -> None:
    """A GPT-2 shaped transformer whose every linear layer is packed (d_model 256: qkv, fc, proj and the 4,096-token
    head; the 256 x 256 output projection is below the threshold)."""
    torch.manual_seed(0)
    model = TransformerLM(Config(num_layers=2, num_heads=4, d_model=256, block_size=64), 4096, 0).eval()
    with torch.no_grad():
        model.tok_emb.weight.normal_(0.0, 0.15)  # peaked next-token distributions, as a trained model's
    with torch.inference_mode(), packed_linears(model, 1) as count:
        assert count == 7  # 2 x (qkv, fc, proj) + head
    prompts = [[5, 6, 7, 8], [9, 10]]
    fast = generate(model, prompts, sampler, max_new_tokens=20, eos_id=None, pad_id=0, seed=1)
    monkeypatch.setenv("LMBENCH_PACKED_LINEAR", "0")
    plain = generate(model, prompts, sampler, max_new_tokens=20, eos_id=None, pad_id=0, seed=1)
    assert fast == plain


def test_packing_changes_numbers_only_by_rounding() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(384, 1536)
    x = torch.randn(1, 384)
    with torch.inference_mode():
        plain = F.linear(x, layer.weight, layer.bias)
        with packed_linears(layer, 1):
            got = layer(x)
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
    assert got.dtype == plain.dtype and got.shape == plain.shape
