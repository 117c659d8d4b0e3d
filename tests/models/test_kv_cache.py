"""The transformer's in-place KV cache: branches stay exact, reordering reuses buffers, capacity grows."""

from __future__ import annotations

import torch

from lmbench.models.kv_cache import MIN_CAPACITY, KVState
from lmbench.models.transformer import TransformerLM

from .tiny import VOCAB, make_tiny


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _model() -> TransformerLM:
    model = make_tiny("transformer")
    assert isinstance(model, TransformerLM)
    return model


def _last(model: TransformerLM, ids: torch.Tensor) -> torch.Tensor:
    return model(ids)[:, -1]


@torch.no_grad()
def test_branches_from_one_state_are_independent() -> None:
    """Stepping the same state twice (the second one must not overwrite the first's keys) and then going on
    from both branches gives the full-forward logits for each."""
    model, ids = _model(), torch.randint(1, VOCAB, (2, 6))
    x, y = torch.randint(1, VOCAB, (2, 1)), torch.randint(1, VOCAB, (2, 1))
    _, base = model.step(ids, model.init_state(2, ids.device))
    a_logits, a = model.step(x, base)
    b_logits, b = model.step(y, base)
    assert a.buffers is base.buffers and b.buffers is not base.buffers  # the first appends in place, then a copy
    close(a_logits[:, -1], _last(model, torch.cat([ids, x], 1)))
    close(b_logits[:, -1], _last(model, torch.cat([ids, y], 1)))
    z = torch.randint(1, VOCAB, (2, 1))
    close(model.step(z, a)[0][:, -1], _last(model, torch.cat([ids, x, z], 1)))
    close(model.step(z, b)[0][:, -1], _last(model, torch.cat([ids, y, z], 1)))


@torch.no_grad()
def test_reorder_leaves_the_source_state_valid() -> None:
    model, ids = _model(), torch.randint(1, VOCAB, (3, 5))
    _, state = model.step(ids, model.init_state(3, ids.device))
    index = torch.tensor([2, 2, 0, 1])
    reordered = state.reorder(index)
    x = torch.randint(1, VOCAB, (4, 1))
    close(model.step(x, reordered)[0][:, -1], _last(model, torch.cat([ids[index], x], 1)))
    close(model.step(x[:3], state)[0][:, -1], _last(model, torch.cat([ids, x[:3]], 1)))


@torch.no_grad()
def test_beam_loop_ping_pongs_between_two_buffer_sets() -> None:
    """A loop that reorders and steps, dropping its old state, reuses the same two allocations every step and
    still matches the full forward pass."""
    model = _model()
    seq = torch.randint(1, VOCAB, (4, 4))
    _, state = model.step(seq, model.init_state(4, seq.device))
    generator = torch.Generator().manual_seed(0)
    pointers: set[int] = set()
    for _ in range(10):
        index = torch.randint(0, 4, (4,), generator=generator)
        x = torch.randint(1, VOCAB, (4, 1), generator=generator)
        seq = torch.cat([seq[index], x], 1)
        logits, state = model.step(x, state.reorder(index))
        close(logits[:, -1], _last(model, seq))
        assert state.buffers is not None
        pointers.add(state.buffers.layers[0][0].data_ptr())
    assert len(pointers) == 2 and len(state.pool.sets) == 2


@torch.no_grad()
def test_reuse_moves_only_the_extra_copies_of_a_sequence() -> None:
    """reorder(reuse=True) keeps each first continuation in its parent's buffer row and copies a parent's keys
    and values only for its further continuations, into the rows of dropped sequences; the logits come back in
    sequence order and equal the full forward pass."""
    model = _model()
    seq = torch.randint(1, VOCAB, (4, 5))
    _, state = model.step(seq, model.init_state(4, seq.device))
    assert state.buffers is not None
    buffers, n = state.buffers, state.num_past
    before = [k[:, :, :n].clone() for k, _ in buffers.layers]
    index = torch.tensor([2, 0, 0, 1])  # sequence 3 is dropped, sequence 0 continues twice
    state = state.reorder(index, reuse=True)
    assert state.buffers is buffers and state.rows is not None
    assert state.rows.tolist() == [2, 0, 3, 1]  # the second copy of sequence 0 takes dropped sequence 3's row
    for (k, _), old in zip(buffers.layers, before):
        assert torch.equal(k[:, :, :n], old[[0, 1, 2, 0]])  # only row 3 was written (sequence 0's keys)
    seq = seq[index]
    x = torch.randint(1, VOCAB, (4, 1))
    logits, state = model.step(x, state)
    seq = torch.cat([seq, x], 1)
    close(logits[:, -1], _last(model, seq))
    assert state.buffers is buffers and state.rows is not None  # appended in place, rows carried on


@torch.no_grad()
def test_beam_loop_with_reuse_matches_the_full_forward_in_one_buffer_set() -> None:
    """A beam-search-like loop with reuse (random parents, duplicates and drops, left padding in the prompt),
    then a reorder without reuse and a branch: the logits equal the full forward pass throughout."""
    model = _model()
    seq = torch.randint(1, VOCAB, (4, 4))
    mask = torch.ones(4, 4, dtype=torch.long)
    mask[1, :2] = 0  # a left-padded prompt
    _, state = model.step(seq, model.init_state(4, seq.device), attention_mask=mask)
    generator = torch.Generator().manual_seed(0)
    sets = set()
    for _ in range(8):
        index = torch.randint(0, 4, (4,), generator=generator)
        x = torch.randint(1, VOCAB, (4, 1), generator=generator)
        seq, mask = torch.cat([seq[index], x], 1), torch.cat([mask[index], torch.ones(4, 1, dtype=torch.long)], 1)
        logits, state = model.step(x, state.reorder(index, reuse=True), attention_mask=mask)
        close(logits[:, -1], model(seq, mask)[:, -1])
        sets.add(id(state.buffers))
    assert len(sets) == 1 and len(state.pool.sets) == 1  # no second buffer set
    index = torch.tensor([3, 3, 1, 0])  # without reuse: gathered through the rows into another set
    kept = state
    x = torch.randint(1, VOCAB, (4, 1), generator=generator)
    plus = torch.ones(4, 1, dtype=torch.long)
    logits, other = model.step(x, state.reorder(index), attention_mask=torch.cat([mask[index], plus], 1))
    close(logits[:, -1], model(torch.cat([seq[index], x], 1), torch.cat([mask[index], plus], 1))[:, -1])
    assert other.rows is None and other.buffers is not kept.buffers
    _, child = model.step(x, kept, attention_mask=torch.cat([mask, plus], 1))  # appends into kept's buffers
    refused = kept.reorder(index, reuse=True)  # another state reads them: copied elsewhere, not rearranged
    assert refused.buffers is not kept.buffers and refused.rows is None
    logits, _ = model.step(x, refused, attention_mask=torch.cat([mask[index], plus], 1))
    close(logits[:, -1], model(torch.cat([seq[index], x], 1), torch.cat([mask[index], plus], 1))[:, -1])
    y, two = torch.randint(1, VOCAB, (4, 1), generator=generator), torch.ones(4, 2, dtype=torch.long)
    close(model.step(y, child, attention_mask=torch.cat([mask, two], 1))[0][:, -1],
          model(torch.cat([seq, x, y], 1), torch.cat([mask, two], 1))[:, -1])


@torch.no_grad()
def test_capacity_doubles_up_to_block_size() -> None:
    model = _model()  # block_size 32
    ids = torch.randint(1, VOCAB, (1, 3))
    _, state = model.step(ids, model.init_state(1, ids.device))
    assert state.buffers is not None and state.buffers.capacity == min(MIN_CAPACITY, model.config.block_size)
    first = state.buffers
    for _ in range(model.config.block_size - 3):
        _, state = model.step(torch.randint(1, VOCAB, (1, 1)), state)
    assert state.buffers is first and state.num_past == model.config.block_size
    _, cropped = model.step(torch.randint(1, VOCAB, (1, 1)), state)  # past block_size: no cache, cropped window
    assert cropped.buffers is None and cropped.num_past == model.config.block_size


@torch.no_grad()
def test_growth_copies_the_prefix() -> None:
    model = make_tiny("transformer", block_size=96)
    assert isinstance(model, TransformerLM)
    ids = torch.randint(1, VOCAB, (2, MIN_CAPACITY))
    _, state = model.step(ids, model.init_state(2, ids.device))
    assert state.buffers is not None and state.buffers.capacity == MIN_CAPACITY
    x = torch.randint(1, VOCAB, (2, 1))
    logits, grown = model.step(x, state)
    assert grown.buffers is not None and grown.buffers.capacity == 2 * MIN_CAPACITY
    close(logits[:, -1], _last(model, torch.cat([ids, x], 1)))
    assert isinstance(grown, KVState) and grown.num_past == MIN_CAPACITY + 1


@torch.no_grad()
def test_an_announced_length_is_allocated_once_and_never_grown(monkeypatch) -> None:
    """generate() announces prompt + new tokens: one buffer set of exactly that capacity (a second for the beams'
    batch expansion), where the same loop without the announcement grows 32 -> 64 -> 96 and copies its cache
    each time."""
    from lmbench.models.kv_cache import KVPool
    from lmbench.sampling import generate
    from lmbench.spec import SamplerSpec

    model = make_tiny("transformer", block_size=96)
    capacities: list[int] = []
    acquire = KVPool.acquire
    monkeypatch.setattr(KVPool, "acquire", lambda self, like, layers, rows, capacity:
                        capacities.append(capacity) or acquire(self, like, layers, rows, capacity))
    prompt = [[1, 2, 3, 4, 5]]
    greedy = generate(model, prompt, SamplerSpec(), max_new_tokens=75, eos_id=None, pad_id=0)
    assert capacities == [80]
    capacities.clear()
    generate(model, prompt, SamplerSpec(kind="beam", num_beams=3), max_new_tokens=75, eos_id=None, pad_id=0)
    assert capacities == [80, 80]
    capacities.clear()
    ids, state = torch.tensor(prompt), model.init_state(1, torch.device("cpu"))
    for _ in range(75):
        logits, state = model.step(ids, state)
        ids = logits[:, -1:].argmax(-1)
    assert capacities == [MIN_CAPACITY, 2 * MIN_CAPACITY, 96]  # doubling, capped at block_size
    assert state.ids[0, 5:].tolist() + [int(ids)] == greedy[0][0]  # the same tokens either way
