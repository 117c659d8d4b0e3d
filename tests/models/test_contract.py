"""The contract every registered family keeps (float32, tiny models): decoding, causality, padding, beams, seeds."""

from __future__ import annotations

import pytest
import torch

from lmbench.models import MODELS

from .tiny import PAD, VOCAB, make_tiny

# Causal families; hf_seq2seq's rows must hold <sep> (source | target), so it has its own contract against
# transformers in test_seq2seq.py.
FAMILIES = [name for name in MODELS.names() if not MODELS.get(name).whole_sequences]
ATOL = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=1e-5)


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """Ids without the pad id, so that only the mask marks pads."""
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shape(family: str) -> None:
    model = make_tiny(family)
    assert model(random_ids(2, 5)).shape == (2, 5, VOCAB)
    assert model.num_params() >= model.num_params(trainable_only=True) > 0
    assert model.flops_per_token(5) > 0 and isinstance(model.describe(), dict)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_step_matches_forward(family: str) -> None:
    model, ids = make_tiny(family), random_ids(2, 7)
    logits, state = model.step(ids[:, :3], model.init_state(2, ids.device))  # prefill
    chunks = [logits]
    for t in range(3, ids.size(1)):
        logits, state = model.step(ids[:, t : t + 1], state)
        chunks.append(logits)
    close(torch.cat(chunks, dim=1), model(ids))


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_step_keeps_only_the_last_logits_when_asked(family: str) -> None:
    model, ids = make_tiny(family), random_ids(2, 6)
    full, _ = model.step(ids, model.init_state(2, ids.device))
    last, state = model.step(ids, model.init_state(2, ids.device), logits_to_keep=2)
    assert last.shape == (2, 2, VOCAB)
    close(last, full[:, -2:])
    nxt, _ = model.step(ids[:, :1], state)  # the state is complete although only two positions were projected
    close(nxt[:, -1], model(torch.cat([ids, ids[:, :1]], 1))[:, -1])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_forward_with_state_only_where_state_carries(family: str) -> None:
    """Families that carry state continue a sequence across windows exactly; the others say they cannot."""
    model, ids = make_tiny(family), random_ids(2, 8)
    if not model.carries_state:
        with pytest.raises(NotImplementedError):
            model.forward_with_state(ids, None)
        return
    first, state = model.forward_with_state(ids[:, :5], None)
    second, _ = model.forward_with_state(ids[:, 5:], state)
    close(torch.cat([first, second], dim=1), model(ids))


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_causal(family: str) -> None:
    model, ids = make_tiny(family), random_ids(2, 8)
    changed = ids.clone()
    changed[:, 5:] = random_ids(2, 3, seed=7)
    close(model(changed)[:, :5], model(ids)[:, :5])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_right_padding_keeps_real_logits(family: str) -> None:
    model, ids = make_tiny(family), random_ids(3, 8)
    lengths = [8, 5, 2]
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    padded = ids.masked_fill(mask == 0, PAD)
    logits = model(padded, mask)
    for row, n in enumerate(lengths):
        close(logits[row, :n], model(ids[row : row + 1, :n])[0])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_left_padded_prompts_decode_like_unpadded(family: str) -> None:
    model, ids = make_tiny(family), random_ids(3, 6)
    lengths = [6, 4, 1]
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, 6 - n :] = 1
    prompts = ids.masked_fill(mask == 0, PAD)
    nxt = random_ids(3, 2, seed=3)
    logits, state = model.step(prompts, model.init_state(3, ids.device), attention_mask=mask)
    mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], dim=1)
    step1, state = model.step(nxt[:, :1], state, attention_mask=mask)
    mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], dim=1)
    step2, _ = model.step(nxt[:, 1:], state, attention_mask=mask)
    for row, n in enumerate(lengths):
        full = torch.cat([ids[row, 6 - n :], nxt[row]]).unsqueeze(0)
        expected = model(full)[0]
        close(logits[row, 6 - n :], expected[:n])
        close(torch.cat([step1[row], step2[row]]), expected[n:])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_step_without_mask_after_left_padded_prefill(family: str) -> None:
    """Samplers may pass the mask once (prefill) and then none: new tokens count as real."""
    model, ids = make_tiny(family), random_ids(2, 5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    _, state = model.step(ids.masked_fill(mask == 0, PAD), model.init_state(2, ids.device), attention_mask=mask)
    nxt = random_ids(2, 1, seed=5)
    logits, _ = model.step(nxt, state)
    close(logits[0], model(torch.cat([ids[0, 2:], nxt[0]]).unsqueeze(0))[0, -1:])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_reorder_equals_reordered_batch(family: str) -> None:
    model, ids = make_tiny(family), random_ids(3, 6)
    index = torch.tensor([2, 0, 0, 1])  # pick and duplicate rows, as beam search does
    _, state = model.step(ids[:, :4], model.init_state(3, ids.device))
    state = state.reorder(index)
    logits, state = model.step(ids[index, 4:5], state)
    logits2, _ = model.step(ids[index, 5:6], state)
    expected = model(ids[index])
    close(logits, expected[:, 4:5])
    close(logits2, expected[:, 5:6])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_old_state_stays_valid(family: str) -> None:
    model, ids = make_tiny(family), random_ids(2, 5)
    _, state = model.step(ids[:, :4], model.init_state(2, ids.device))
    first, _ = model.step(ids[:, 4:], state)
    state.reorder(torch.tensor([1, 0]))
    again, _ = model.step(ids[:, 4:], state)
    close(again, first)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights(family: str) -> None:
    a, b, c = make_tiny(family, seed=3), make_tiny(family, seed=3), make_tiny(family, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_flow_with_padding(family: str) -> None:
    model = make_tiny(family).train()
    ids, mask = random_ids(2, 6), torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    logits = model(ids.masked_fill(mask == 0, PAD), mask)
    assert torch.isfinite(logits).all()
    logits[mask.bool()].sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_left_padded_forward_keeps_real_logits(family: str) -> None:
    model, ids = make_tiny(family), random_ids(2, 6)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    logits = model(ids.masked_fill(mask == 0, PAD), mask)
    assert torch.isfinite(logits).all()
    close(logits[0, 3:], model(ids[:1, 3:])[0])
    close(logits[1], model(ids[1:])[0])
