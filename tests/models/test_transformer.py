"""transformer specifics: variants (rotary, post-norm, relu), masks, cropping, init, sizes of the seed recipes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmbench.errors import SpecError
from lmbench.models import build_model, resolve_config
from lmbench.models.transformer import Config, TransformerLM, attention_mask_for
from lmbench.spec import DataSpec, ExperimentSpec, ModelSpec, load_spec

from .tiny import PAD, VOCAB, make_tiny

REPO = Path(__file__).resolve().parents[2]
VARIANTS = [
    {"positions": "rotary"},
    {"norm": "post", "activation": "relu"},
    {"bias": False, "tie_embeddings": False, "d_ff": 24},
    {"positions": "rotary", "norm": "post", "activation": "gelu_tanh"},
]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
@torch.no_grad()
def test_variants_decode_like_forward(variant: dict) -> None:
    model, ids = make_tiny("transformer", **variant), torch.randint(1, VOCAB, (2, 7))
    logits, state = model.step(ids[:, :4], model.init_state(2, ids.device))
    chunks = [logits]
    for t in range(4, 7):
        logits, state = model.step(ids[:, t : t + 1], state)
        chunks.append(logits)
    close(torch.cat(chunks, 1), model(ids))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    padded = model(ids.masked_fill(mask == 0, PAD), mask)
    close(padded[0, 2:], model(ids[:1, 2:])[0])


@torch.no_grad()
def test_multi_token_step_after_a_prefix() -> None:
    """A t > 1 step with a non-empty cache needs the offset causal mask, not SDPA's is_causal."""
    model, ids = make_tiny("transformer"), torch.randint(1, VOCAB, (2, 9))
    a, state = model.step(ids[:, :3], model.init_state(2, ids.device))
    b, _ = model.step(ids[:, 3:], state)
    close(torch.cat([a, b], 1), model(ids))


def test_attention_mask_never_leaves_a_row_empty() -> None:
    key_mask = torch.tensor([[False, False, True], [True, True, True]])
    mask = attention_mask_for(key_mask, 3)[:, 0]
    assert mask.any(-1).all()
    assert mask[1].tolist() == torch.ones(3, 3, dtype=torch.bool).tril().tolist()
    assert mask[0].tolist() == [[True, False, False], [False, True, False], [False, False, True]]


@torch.no_grad()
def test_decoding_past_block_size_crops_the_context() -> None:
    model, ids = make_tiny("transformer", block_size=6), torch.randint(1, VOCAB, (2, 9))
    logits, state = model.step(ids[:, :5], model.init_state(2, ids.device))
    for t in range(5, 9):
        logits, state = model.step(ids[:, t : t + 1], state)
        close(logits, model(ids[:, max(0, t + 1 - 6) : t + 1])[:, -1:])
    with pytest.raises(ValueError, match="block_size"):
        model(ids)


def test_gpt2_initialisation() -> None:
    torch.manual_seed(0)
    model = TransformerLM(Config(num_layers=8, d_model=128, num_heads=4), vocab_size=1000, pad_id=0)
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.out.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert block.mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.count_nonzero(block.attn.qkv.bias) == 0 and model.head.weight is model.tok_emb.weight


def test_flops_per_token_formula() -> None:
    model = make_tiny("transformer")
    n = sum(p.numel() for p in model.blocks.parameters()) + sum(p.numel() for p in model.ln_f.parameters())
    assert model.flops_per_token(32) == 6 * (n + 16 * VOCAB) + 12 * 2 * 16 * 32


def _spec(params: dict, block_size: int = 128) -> ExperimentSpec:
    return ExperimentSpec(name="t", data=DataSpec(block_size=block_size), model=ModelSpec("transformer", params))


def test_check_spec() -> None:
    TransformerLM.check_spec(Config(block_size=128), _spec({}))
    with pytest.raises(SpecError) as err:
        TransformerLM.check_spec(Config(block_size=64), _spec({}, block_size=128))
    assert err.value.path == "data.block_size"
    with pytest.raises(SpecError, match="model.params.d_model: 100 is not divisible by num_heads"):
        TransformerLM.check_spec(Config(d_model=100, num_heads=8), _spec({}))
    with pytest.raises(SpecError, match="model.params.positions"):
        TransformerLM.check_spec(Config(positions="alibi"), _spec({}))
    with pytest.raises(SpecError, match="model.params.activation"):
        TransformerLM.check_spec(Config(activation="swish"), _spec({}))
    with pytest.raises(SpecError, match=r"model.params.attention_dropout: 1.5 .*in \[0, 1\)"):
        TransformerLM.check_spec(Config(attention_dropout=1.5), _spec({}))


@pytest.mark.parametrize(("dropout", "attention_dropout", "expected"), [(0.1, None, 0.1), (0.1, 0.0, 0.0),
                                                                         (0.0, 0.2, 0.2)])
def test_attention_dropout_defaults_to_dropout(monkeypatch: pytest.MonkeyPatch, dropout: float,
                                               attention_dropout: float | None, expected: float) -> None:
    """What SDPA receives in training (CPU's fused flash kernel only runs with dropout_p == 0); 0 in eval."""
    seen: list[float] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: object, dropout_p: float = 0.0, **kwargs: object) -> torch.Tensor:
        seen.append(dropout_p)
        return sdpa(*args, dropout_p=dropout_p, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = make_tiny("transformer", dropout=dropout, attention_dropout=attention_dropout).train()
    model(torch.randint(1, VOCAB, (2, 8)))
    model.eval()(torch.randint(1, VOCAB, (2, 8)))
    assert seen == [expected] * 2 + [0.0] * 2  # two layers, training then evaluation
    assert model.blocks[0].attn.resid_drop.p == dropout


class Vocab:
    def __init__(self, vocab_size: int, pad_id: int) -> None:
        self.vocab_size, self.pad_id = vocab_size, pad_id


# SEEDS.md 1 (TinyStories, GPT-2 vocabulary, <= 30M parameters), 3 (char GPT on Tiny Shakespeare), 4 (WritingPrompts)
TINYSTORIES = {"num_layers": 4, "num_heads": 8, "d_model": 256, "block_size": 512}
SHAKESPEARE = {"num_layers": 4, "num_heads": 4, "d_model": 64, "block_size": 32, "dropout": 0.0,
               "activation": "relu", "norm": "post"}
WRITINGPROMPTS = {"num_layers": 5, "num_heads": 8, "d_model": 256, "block_size": 1500}


def _build(params: dict, vocab_size: int, pad_id: int = 0) -> TransformerLM:
    model = build_model(ModelSpec("transformer", params), Vocab(vocab_size, pad_id))
    assert isinstance(model, TransformerLM)
    return model


def test_tinystories_transformer_fits_30m_parameters() -> None:
    model = _build(TINYSTORIES, 50257, pad_id=50256)
    assert model.num_params() <= 30_000_000
    recipes = sorted((REPO / "experiments").glob("tinystories*.yaml"))
    for path in recipes:  # the shipped recipe too, once it exists
        spec = load_spec(path)
        if spec.model.family == "transformer":
            cfg = resolve_config(spec.model)
            TransformerLM.check_spec(cfg, spec)
            with torch.device("meta"):
                assert TransformerLM(cfg, 50257, 50256).num_params() <= 30_000_000, path.name


def test_seed_notebook_configurations_are_expressible() -> None:
    shakespeare = _build(SHAKESPEARE, 65)
    block = shakespeare.blocks[0]
    assert not block.pre_norm and isinstance(block.mlp.act, torch.nn.ReLU)
    assert block.mlp.fc.out_features == 256 and shakespeare.pos_emb.num_embeddings == 32
    untied = _build({**SHAKESPEARE, "tie_embeddings": False}, 65)
    assert untied.num_params() == 210_432  # the notebook's 209,729 + q/k/v biases (768) - head bias (65)
    with torch.device("meta"):
        wp = TransformerLM(resolve_config(ModelSpec("transformer", WRITINGPROMPTS)), 2500, 0)
    TransformerLM.check_spec(wp.config, _spec(WRITINGPROMPTS, block_size=1500))
    assert wp.config.block_size == 1500 and len(wp.blocks) == 5


def test_step_logits_to_keep_returns_the_last_positions() -> None:
    torch.manual_seed(0)
    model = _build({"num_layers": 2, "num_heads": 2, "d_model": 16, "block_size": 16}, 11).eval()
    ids = torch.randint(0, 11, (2, 6))
    full, _ = model.step(ids, model.init_state(2, ids.device))
    last, state = model.step(ids, model.init_state(2, ids.device), logits_to_keep=1)
    assert last.shape == (2, 1, 11)
    torch.testing.assert_close(last, full[:, -1:])
    nxt, _ = model.step(ids[:, :1], state)  # the cache is complete although only one position was projected
    torch.testing.assert_close(nxt[:, -1], model(torch.cat([ids, ids[:, :1]], 1))[:, -1])


@pytest.mark.gpu
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cuda_training_attention_takes_the_flash_kernel_and_padded_the_efficient_one(positions: str) -> None:
    """SDPA silently falls back to its slow math kernel when a condition fails (fp32 q/k, a mask tensor, odd
    head sizes): pinned to one kernel, it raises instead."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    cfg = Config(num_layers=2, num_heads=4, d_model=128, block_size=64, positions=positions, dropout=0.1)
    model = TransformerLM(cfg, vocab_size=97, pad_id=0).cuda().train()
    ids = torch.randint(1, 97, (4, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        model(ids).float().sum().backward()  # training batch: causal flag, no mask
    left_padded = torch.ones_like(ids)
    left_padded[0, :5] = 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), \
            sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        assert torch.isfinite(model.eval()(ids, left_padded)).all()
