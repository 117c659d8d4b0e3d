"""AdamW parameter groups: decay only weight matrices; frozen parameters left out; tied ones once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmbench.errors import SpecError
from lmbench.training.optim import build_optimizer, no_decay_names, param_groups


def transformer() -> nn.Module:
    from lmbench.models.transformer import Config, TransformerLM

    return TransformerLM(Config(num_layers=2, num_heads=2, d_model=8, block_size=8), vocab_size=11, pad_id=0)


def lstm(**kw: object) -> nn.Module:
    from lmbench.models.recurrent import Config, LSTMLM

    return LSTMLM(Config(d_embed=4, d_hidden=6, num_layers=1, **kw), vocab_size=11, pad_id=0)


def names_of(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_transformer_groups() -> None:
    model = transformer()
    groups = {g["name"]: g for g in param_groups(model, 0.1)}
    decay, rest = names_of(model, groups["decay"]), names_of(model, groups["no_decay"])
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert decay and all(n.endswith(".weight") and "ln" not in n for n in decay)
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.weight"} <= rest  # embeddings (tied head), norms
    assert all(n.endswith("bias") for n in rest if "blocks" in n and "ln" not in n)
    assert "blocks.0.attn.qkv.weight" in decay and "blocks.0.mlp.fc.weight" in decay
    counted = sum(p.numel() for g in groups.values() for p in g["params"])
    assert counted == model.num_params()  # the tied head counted once


def test_recurrent_groups_and_frozen_embedding() -> None:
    model = lstm()
    model.embed.weight.requires_grad_(False)
    groups = {g["name"]: g for g in param_groups(model, 0.01)}
    decay, rest = names_of(model, groups["decay"]), names_of(model, groups["no_decay"])
    assert "embed.weight" not in decay | rest  # frozen: not optimised at all
    assert {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"} <= decay
    assert {"rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.bias"} <= rest


def test_no_decay_names_sees_norms_by_class_name() -> None:
    class RMSNormish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4, 4))  # 2-D on purpose: exempt because it is a norm

    model = nn.Sequential(nn.Linear(4, 4), RMSNormish())
    assert no_decay_names(model) == {"0.bias", "1.weight"}


@pytest.mark.parametrize("name,cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_build_optimizer(name: str, cls: type) -> None:
    model = transformer()
    opt = build_optimizer(model, name=name, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert isinstance(opt, cls)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["fused"] is True  # one fused CPU kernel
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == ([0.0, 0.1] if name == "adamw" else [0.0, 0.0])  # Adam: no decay at all
    loss = model(torch.randint(0, 11, (2, 5))).sum()
    loss.backward()
    opt.step()  # runs


def test_unknown_optimizer() -> None:
    with pytest.raises(SpecError, match="unknown train.optimizer 'sgd'; choose from: adam, adamw") as err:
        build_optimizer(transformer(), name="sgd", lr=1e-3)
    assert err.value.path == "train.optimizer"


def test_optimizer_settings_reach_torch() -> None:
    model = transformer()
    opt = build_optimizer(model, name="adamw", lr=2e-3, weight_decay=0.05, eps=1e-6)
    assert (opt.defaults["lr"], opt.defaults["eps"], opt.defaults["betas"]) == (2e-3, 1e-6, (0.9, 0.999))
    plain = build_optimizer(model, name="adamw", lr=1e-3)
    assert plain.defaults["eps"] == 1e-8 and {g["weight_decay"] for g in plain.param_groups} == {0.0}
    assert build_optimizer(model, name="adamw", lr=1e-3, fused=False).defaults["fused"] is False
    frozen = lstm()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="the model has no trainable parameters"):
        build_optimizer(frozen, name="adam", lr=1e-3)


def test_fused_only_for_float_tensors_on_cpu_or_cuda() -> None:
    from lmbench.training.optim import _fused_ok

    assert _fused_ok([nn.Parameter(torch.zeros(2, dtype=dtype)) for dtype in
                      (torch.float32, torch.float16, torch.bfloat16, torch.float64)])
    assert not _fused_ok([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, device="meta"))])
    assert not _fused_ok([nn.Parameter(torch.zeros(2, dtype=torch.complex64))])


def test_no_decay_names_by_name_hint_and_at_the_top_level() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3, 3))  # a top-level matrix: decays
            self.bias = nn.Parameter(torch.zeros(3))
            self.wte = nn.Linear(3, 3, bias=False)  # GPT-2's names for embedding tables, even as Linear
            self.wpe = nn.Linear(3, 3, bias=False)
            self.position_table = nn.Parameter(torch.zeros(5, 3))
            self.bag = nn.EmbeddingBag(4, 3)
            self.proj = nn.Linear(3, 3)

    assert no_decay_names(Model()) == {"bias", "wte.weight", "wpe.weight", "position_table", "bag.weight",
                                       "proj.bias"}


def test_a_tied_parameter_never_decays_when_its_later_name_is_exempt() -> None:
    """named_parameters() lists a tied tensor under its first name only: here a projection's, which would decay;
    its second name is an embedding's, which must not."""
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 4, bias=False)
            self.table = nn.Embedding(4, 3)
            self.table.weight = self.proj.weight

    model = Model()
    groups = param_groups(model, 0.1)
    assert [(g["name"], g["params"]) for g in groups] == [("no_decay", [model.proj.weight])]


def test_a_matrix_named_bias_does_not_decay() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_bias = nn.Parameter(torch.zeros(3, 3))  # e.g. a learned relative-position bias table
            self.proj = nn.Linear(3, 3, bias=False)

    assert no_decay_names(Model()) == {"attn_bias"}
