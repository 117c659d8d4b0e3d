"""scripts/bench/generation.py: the limit of a decoding step, the goal of a cell (2x the faster transformers setup,
or 85% of the limit where 2x is above it), the benchmark's model (peaked distributions), and one tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from . import bench_scripts


@pytest.fixture(scope="module")
def gen():  # noqa: ANN201
    return bench_scripts.load("generation")


def cell(ours: float, hf: float, static: float, limit: float) -> dict:
    row = lambda v: {"tokens_per_s": v, "limit_tokens_per_s": limit}  # noqa: E731
    return {"lmbench": row(ours), "transformers": row(hf), "transformers-static": row(static)}


def test_the_goal_is_2x_the_faster_transformers_setup(gen) -> None:  # noqa: ANN001
    v = gen.verdict(cell(210.0, 100.0, 105.0, 1000.0))
    assert v["baseline_tokens_per_s"] == 105.0 and v["speedup"] == pytest.approx(2.0) and v["goal"] == ">= 2x"
    assert v["met"] is True
    assert gen.verdict(cell(200.0, 100.0, 101.0, 1000.0))["met"] is False


def test_where_2x_is_above_the_limit_the_goal_is_85_percent_of_it(gen) -> None:  # noqa: ANN001
    v = gen.verdict(cell(90.0, 60.0, 50.0, 100.0))  # 2 x 60 > 100
    assert v["goal"] == ">= 85% of the limit" and v["share_of_limit"] == pytest.approx(0.9) and v["met"] is True
    assert gen.verdict(cell(84.0, 60.0, 50.0, 100.0))["met"] is False


def test_a_step_reads_every_weight_once_and_the_cache(gen) -> None:  # noqa: ANN001
    args = gen.parse_args(["--num-layers", "2", "--d-model", "32", "--num-heads", "2", "--vocab-size", "100",
                           "--new-tokens", "8", "--prompt-len", "4"])
    lm, _ = gen.build_models(gen.shapes_from(args)[0], args)
    peaks = {"read_bytes_per_s": 1e9, "matmul_flops_per_s": 1e18}
    limit = gen.step_limit(lm, rows=3, context=10, elsize=4, peaks=peaks)
    weights = lm.num_params() - lm.pos_emb.weight.numel()  # the tied table counted once, positions only indexed
    assert limit["bytes_per_step"] == 4 * (weights + 2 * 2 * 3 * 10 * 32)
    assert limit["bound"] == "memory" and limit["limit_s_per_step"] == limit["bytes_per_step"] / 1e9
    compute = gen.step_limit(lm, rows=3, context=10, elsize=4, peaks={"read_bytes_per_s": 1e18,
                                                                      "matmul_flops_per_s": 1e9})
    assert compute["bound"] == "compute" and compute["flops_per_step"] == pytest.approx(3 * lm.flops_per_token(10) / 3)


def test_the_benchmark_model_has_peaked_distributions_not_its_own_input(gen) -> None:  # noqa: ANN001
    args = gen.parse_args(["--num-layers", "2", "--d-model", "64", "--num-heads", "2", "--vocab-size", "4096"])
    lm, _ = gen.build_models(gen.shapes_from(args)[0], args)
    ids = torch.randint(1, 4096, (4, 12), generator=torch.Generator().manual_seed(0))
    d = gen.distribution(lm, ids)
    assert 1.0 < d["entropy_nats"] < 7.0 and 1 < d["nucleus_tokens"] < 1000  # uniform: 8.3 nats, ~3,400 tokens
    with torch.inference_mode():
        picked = lm(ids).argmax(-1)
    assert (picked == ids).float().mean() < 0.1  # the tied head does not just repeat the input token
    flat = gen.distribution(gen.build_models(gen.shapes_from(args)[0], gen.parse_args(
        ["--num-layers", "2", "--d-model", "64", "--num-heads", "2", "--vocab-size", "4096", "--logit-std", "0"]))[0],
        ids)
    assert flat["entropy_nats"] > 8.0


def test_a_tiny_run_writes_its_tables(gen, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "g"
    gen.main(["--num-layers", "2", "--d-model", "32", "--num-heads", "2", "--vocab-size", "64", "--new-tokens", "4",
              "--repeats", "1", "--batch-sizes", "2", "--impls", "lmbench", "transformers", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    (shape,) = report["shapes"]
    assert {(r["strategy"], r["impl"]) for r in shape["results"]} == {
        (s, i) for s in ("greedy", "top_p", "beam5") for i in ("lmbench", "transformers")}
    assert shape["same_outputs"] == {"greedy": True, "top_p": True, "beam5": True}
    assert all(g["equal"] for g in shape["greedy_full_length"] + shape["beam_full_length"])
    assert [g["batch"] for g in shape["beam_full_length"]] == [2]
    md = out.with_suffix(".md").read_text()
    assert "Beam 5 (the best hypothesis) over the whole length: batch 2: equal." in md
    assert "| greedy | 2 |" in md and "read bandwidth" in md and "Goals met:" in md


def test_agreement_counts_positions_rows_and_the_first_difference(gen) -> None:  # noqa: ANN001
    full = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [1, 1, 1, 1]])
    half = torch.tensor([[1, 2, 3, 4], [5, 0, 7, 0], [1, 1, 1, 9]])
    got = gen.agreement(full, half)
    assert got == pytest.approx({"token_agreement": 9 / 12, "rows_identical": 1 / 3,
                                 "mean_first_difference": (4 + 1 + 3) / 3, "new_tokens": 4})
