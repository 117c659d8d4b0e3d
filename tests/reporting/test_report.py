"""Reports from a results folder built by hand: rows, pivot, ranking, seed aggregation, files, HTML page."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lmbench.reporting import report
from lmbench.errors import SpecError

AXES = ("model.family", "tokenizer.kind", "seed")
# cell -> (family, tokenizer, seed, status, val_bpb, num_params)
CELLS = {
    "family=lstm,kind=char,seed=0": ("lstm", "char", 0, "completed", 2.1034, 52_000),
    "family=lstm,kind=char,seed=1": ("lstm", "char", 1, "completed", 2.1476, 52_000),
    "family=gru,kind=word,seed=0": ("gru", "word", 0, "completed", 1.9512, 1_250_000),
    "family=rnn,kind=char,seed=0": ("rnn", "char", 0, "failed", None, 31_000),
}
RUNNING = "family=gru,kind=char,seed=0"  # started (cell.json, metrics), no summary yet
MISSING = "family=rnn,kind=word,seed=0"  # listed in cells.json, never started


def summary_of(name: str, family: str, kind: str, seed: int, status: str, bpb: float | None, num_params: int) -> dict:
    summary = {"status": status, "cell": name, "spec_name": "demo", "num_params": num_params,
               "num_trainable_params": num_params if family != "gru" else num_params - 50_000,
               "axes": {"model.family": family, "tokenizer.kind": kind, "seed": seed}, "steps": 200,
               "tokens": 409_600, "wall_s": 75.5 + seed, "train_s": 60.2 + seed, "train_tokens_per_s": 5425.2}
    if status == "failed":
        return {**summary, "error": "RuntimeError: CUDA out of memory | tried to allocate 2.00 GiB"}
    loss = bpb * (4.2 if kind == "word" else 1.1) * math.log(2)
    summary.update(val_loss=loss, val_ppl=math.exp(loss), val_bpb=bpb, val_bits_per_char=bpb * 1.01,
                   val_word_ppl=2 ** (bpb * 5.3), test_loss=loss + 0.01, test_ppl=math.exp(loss + 0.01),
                   test_bpb=bpb + 0.01)
    if family == "gru":
        summary.update(untrained_val_loss=9.57, untrained_val_ppl=14_358.0, untrained_val_bpb=7.9)
    return summary


def write_cell(root: Path, name: str, family: str, kind: str, seed: int, status: str, bpb: float | None,
               num_params: int) -> None:
    cell = root / name
    cell.mkdir(parents=True)
    spec = {"name": "demo", "seed": seed, "model": {"family": family, "params": {"d_hidden": 64}},
            "tokenizer": {"kind": kind, "params": {}}, "train": {"max_steps": 200}}
    (cell / "spec.yaml").write_text(yaml.safe_dump(spec))
    (cell / "cell.json").write_text(json.dumps({"cell": name, "axes": {"model.family": family,
                                                                       "tokenizer.kind": kind, "seed": seed}}))
    rows = [{"step": s, "tokens": s * 2048, "wall_s": s * 0.4, "train_loss": 4 - s / 100, "lr": 1e-3,
             "tokens_per_s": 5000.0} for s in range(0, 201, 50)]
    rows += [{"step": s, "tokens": s * 2048, "wall_s": s * 0.4 + 0.1, "val_loss": 3.5 - s / 150 + seed / 50,
              "val_ppl": math.exp(3.5 - s / 150), "val_bpb": 3 - s / 200} for s in (100, 200)]
    (cell / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if status == "running":
        return
    (cell / "summary.json").write_text(json.dumps(summary_of(name, family, kind, seed, status, bpb, num_params)))
    if status == "completed":
        samples = [{"sampler": sampler, "prompt": "Once upon a time", "index": i, "num_new_tokens": 12 + i,
                    "ended_with_eos": i == 0, "tokens_per_s": 900.0,
                    "text": f"there was a {family} that said the same the same the same thing {i} | pipes"}
                   for sampler in ("greedy", "top_k=40") for i in range(2)]
        (cell / "samples.jsonl").write_text("\n".join(json.dumps(r) for r in samples) + "\n")


def make_results(root: Path) -> Path:
    """results/demo with 2 seeds of lstm/char, one gru/word, a failed rnn, a running and a missing cell."""
    root.mkdir(parents=True, exist_ok=True)
    for name, values in CELLS.items():
        write_cell(root, name, *values)
    write_cell(root, RUNNING, "gru", "char", 0, "running", None, 0)
    listing = [{"index": i, "name": n, "axes": {"model.family": n.split(",")[0][7:], "tokenizer.kind":
                                                n.split(",")[1][5:], "seed": 0}}
               for i, n in enumerate([*CELLS, RUNNING, MISSING])]
    (root / "cells.json").write_text(json.dumps({"grid": "demo", "cells": listing}))
    # The runner's model-based sampler metrics for one cell: they win over the text-only ones.
    pd.DataFrame([{"sampler": "greedy", "distinct-2": 0.31, "self ppl": 3.2, "reference_ppl": 5.5},
                  {"sampler": "top_k=40", "distinct-2": 0.72, "self ppl": 9.1, "reference_ppl": 14.0}]).to_csv(
        root / "family=gru,kind=word,seed=0" / "sampler_metrics.csv", index=False)
    return root


def parse_md_table(markdown: str, heading: str) -> pd.DataFrame:
    """The first GitHub table under `## heading` as strings."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]  # noqa: E731
    return pd.DataFrame([split(ln) for ln in lines[2:]], columns=split(lines[0]))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = make_results(tmp_path_factory.mktemp("results") / "demo")
    md_path = report.build_report(root)
    return root, md_path.read_text()


def test_rows_and_status(built: tuple[Path, str]) -> None:
    root, md = built
    runs = parse_md_table(md, "Runs")
    assert list(runs["cell"]) == [*CELLS, RUNNING, MISSING]  # grid order from cells.json
    status = dict(zip(runs["cell"], runs["status"]))
    assert status == {**{n: v[3] for n, v in CELLS.items()}, RUNNING: "incomplete", MISSING: "missing"}
    assert {"family", "tokenizer", "seed", "params (trainable / total)", "val_loss", "val_ppl", "val_bpb",
            "val_word_ppl", "test_bpb", "tokens", "train time", "wall time", "tokens/s"} <= set(runs.columns)
    gru = runs[runs["cell"] == "family=gru,kind=word,seed=0"].iloc[0]
    assert gru["params (trainable / total)"] == "1.20M / 1.25M" and gru["wall time"] == "1m16s"
    assert gru["train time"] == "1m00s"


def test_numbers_equal_summary(built: tuple[Path, str]) -> None:
    root, md = built
    runs = parse_md_table(md, "Runs").set_index("cell")
    for name in CELLS:
        summary = json.loads((root / name / "summary.json").read_text())
        for col, tol in (("val_loss", 5e-5), ("val_bpb", 5e-5), ("val_ppl", 5e-3), ("val_word_ppl", 5e-3),
                         ("test_bpb", 5e-5)):
            text = runs.loc[name, col]
            if summary.get(col) is None:
                assert text == ""
            else:
                assert float(text.replace(",", "")) == pytest.approx(summary[col], abs=tol), (name, col)


def test_ranking_by_bpb(built: tuple[Path, str]) -> None:
    _, md = built
    ranking = parse_md_table(md, "Ranking by val_bpb")
    assert list(ranking["cell"]) == ["family=gru,kind=word,seed=0", "family=lstm,kind=char,seed=0",
                                     "family=lstm,kind=char,seed=1"]
    assert list(ranking["rank"]) == ["1", "2", "3"]
    assert "not comparable across tokenizers" in md


def test_pivot_family_by_tokenizer(built: tuple[Path, str]) -> None:
    _, md = built
    table = parse_md_table(md, "Pivot: family × tokenizer → val_bpb").set_index("family \u2193 / tokenizer \u2192")
    assert float(table.loc["lstm", "char"]) == pytest.approx((2.1034 + 2.1476) / 2, abs=5e-5)
    assert float(table.loc["gru", "word"]) == pytest.approx(1.9512, abs=5e-5)
    assert table.loc["gru", "char"] == "" and "rnn" not in table.index  # no completed cell there


def test_seeds_mean_std(built: tuple[Path, str]) -> None:
    _, md = built
    seeds = parse_md_table(md, "Seeds aggregated")
    lstm = seeds[(seeds["family"] == "lstm") & (seeds["tokenizer"] == "char")].iloc[0]
    values = pd.Series([2.1034, 2.1476])
    assert lstm["n"] == "2"
    assert lstm["val_bpb"] == f"{values.mean():.4f} ± {values.std():.4f}"
    assert seeds[seeds["family"] == "gru"].iloc[0]["n"] == "1"


def test_untrained_samplers_samples_failures(built: tuple[Path, str]) -> None:
    _, md = built
    untrained = parse_md_table(md, "Untrained vs trained")
    assert list(untrained["cell"]) == ["family=gru,kind=word,seed=0"]
    assert untrained.iloc[0]["untrained_val_ppl"] == "14,358.00"
    overview = parse_md_table(md, "Samplers").set_index("sampler")
    assert overview.loc["greedy", "cells"] == "3"
    samplers = parse_md_table(md, "Samplers per cell").set_index(["cell", "sampler"])
    gru = samplers.loc[("family=gru,kind=word,seed=0", "greedy")]
    assert gru["distinct_2"] == "0.3100" and gru["reference_ppl"] == "5.50"  # from sampler_metrics.csv
    lstm = samplers.loc[("family=lstm,kind=char,seed=0", "greedy")]
    assert lstm["num_samples"] == "2" and lstm["eos_fraction"] == "0.5000" and float(lstm["rep_4gram"]) > 0
    assert "### family=lstm,kind=char,seed=1" in md and "> there was a lstm" in md
    failures = parse_md_table(md, "Cells not completed").set_index("cell")
    assert failures.loc["family=rnn,kind=char,seed=0", "error"].startswith("RuntimeError: CUDA out of memory | tried")


def test_files_written(built: tuple[Path, str]) -> None:
    root, md = built
    for name in ("report.md", "report.html", "runs.csv", "runs.parquet", "samplers.csv", "plot_val_loss.png",
                 "plot_bpb_vs_params.png", "plot_samplers.png"):
        assert (root / name).is_file(), name
    csv, parquet = pd.read_csv(root / "runs.csv"), pd.read_parquet(root / "runs.parquet")
    assert len(csv) == len(parquet) == 6 and list(csv["cell"]) == list(parquet["cell"])
    completed = parquet.set_index("cell").loc["family=lstm,kind=char,seed=1"]
    assert completed["val_bpb"] == 2.1476 and completed["model.family"] == "lstm"
    assert str(root) not in md and "![plot_val_loss](plot_val_loss.png)" in md  # relative links only


def test_html_single_file_with_embedded_images(built: tuple[Path, str]) -> None:
    root, _ = built
    page = (root / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing external
    assert "<table>" in page and 'class="status-failed"' in page


def test_report_from_copied_folder_and_cli(tmp_path: Path, built: tuple[Path, str]) -> None:
    root, _ = built
    copy = tmp_path / "elsewhere" / "demo"
    shutil.copytree(root, copy)
    out = tmp_path / "out"
    args = argparse.Namespace(results_dir=str(copy), wandb=None, out=str(out))
    assert report.cmd_report(args) == 0
    assert (out / "report.html").is_file() and "family=gru,kind=word,seed=0" in (out / "report.md").read_text()


def test_edge_cases(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="holds no cell folders"):  # an empty report would look like a result
        report.build_report(empty)
    assert list(empty.iterdir()) == []
    single = tmp_path / "single" / "main"  # a one-cell spec, failed before writing anything but its summary
    single.mkdir(parents=True)
    (single / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    assert "boom" in report.build_report(single.parent).read_text()
    with pytest.raises(SpecError, match="results_dir"):
        report.build_report(tmp_path / "nope")


REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, tmp_path: Path, height: int = 2000) -> np.ndarray:
    """Headless Chromium's rendering of `html` as pixels (height x 1280 x channels)."""
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", f"--window-size=1280,{height}",
           html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    return imread(shot)


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_example_report_renders_its_interval_and_compute_sections(tmp_path: Path) -> None:
    """results/example rebuilt here: the ranking with intervals and paired differences, the compute-matched
    plot and table are in the page, and the page renders (not blank) in a browser."""
    root = tmp_path / "example"
    shutil.copytree(REPO / "results" / "example", root, ignore=shutil.ignore_patterns("report.*", "plot_*", "runs.*",
                                                                                        "samplers.csv"))
    report.build_report(root)
    html = (root / "report.html").read_text()
    for needle in ("Δ to best (95% CI)", " ± 0.0", "Compute-matched", "Pareto frontier", "Seeds aggregated"):
        assert needle in html, needle
    assert html.count('src="data:image/png;base64,') >= 4  # curves, size, compute, samplers
    pixels = screenshot(root / "report.html", tmp_path, height=3000)
    assert pixels.shape[:2] == (3000, 1280) and pixels[..., :3].std() > 0.05


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(built: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = built
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           (root / "report.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page: text, tables and plots


def test_a_non_finite_metric_is_never_ranked(tmp_path: Path) -> None:
    """lr = 1e4 without clipping can finish with val_ppl = inf: such a cell is listed apart, never ranked or
    averaged with the others."""
    root = tmp_path / "demo"
    write_cell(root, "family=lstm,kind=char,seed=0", "lstm", "char", 0, "completed", 1.2, 1000)
    write_cell(root, "family=rnn,kind=char,seed=0", "rnn", "char", 0, "completed", float("inf"), 1000)
    md = report.build_report(root).read_text()
    ranking = md.split("## Ranking by val_bpb")[1].split("\n## ")[0]
    assert "family=lstm" in ranking and "family=rnn" not in ranking
    apart = md.split("## Completed but not ranked")[1].split("\n## ")[0]
    assert "family=rnn,kind=char,seed=0" in apart and "inf" in apart


def test_a_diverged_cell_is_listed_apart_with_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    write_cell(root, "family=lstm,kind=char,seed=0", "lstm", "char", 0, "completed", 1.2, 1000)
    write_cell(root, "family=rnn,kind=char,seed=0", "rnn", "char", 0, "completed", 1.1, 1000)
    path = root / "family=rnn,kind=char,seed=0" / "summary.json"
    reason = "final validation loss 13.6 is not below the untrained model's 9.6"
    path.write_text(json.dumps({**json.loads(path.read_text()), "diverged": True, "divergence_reason": reason}))
    md = report.build_report(root).read_text()
    ranking = md.split("## Ranking by val_bpb")[1].split("\n## ")[0]
    assert "family=lstm" in ranking and "family=rnn" not in ranking  # its lower bpb does not make it a result
    apart = md.split("## Diverged or did not learn")[1].split("\n## ")[0]
    assert "family=rnn,kind=char,seed=0" in apart and reason in apart


def write_units(root: Path, name: str, nll_per_byte: np.ndarray, num_bytes: np.ndarray) -> None:
    """units_validation.parquet for a cell, and the summary's val_bpb / interval made consistent with it."""
    from lmbench.stats import LN2, unit_intervals

    nll = nll_per_byte * num_bytes * LN2
    frame = pd.DataFrame({"doc": np.arange(len(nll)), "chunk": 0, "nll_nats": nll, "tokens": num_bytes // 4,
                          "bytes": num_bytes, "chars": num_bytes, "words": num_bytes // 5})
    frame.to_parquet(root / name / "units_validation.parquet", index=False)
    bpb = unit_intervals(nll, frame["tokens"], num_bytes, frame["words"], resamples=500)["bpb"]
    path = root / name / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "val_bpb": bpb.estimate, "val_bpb_low": bpb.low,
                                "val_bpb_high": bpb.high}))


def test_ranking_shows_intervals_paired_differences_and_ties(tmp_path: Path) -> None:
    """Three cells scored on the same 150 documents: `best`, `same` (best + document noise: a tie) and `worse`
    (best + 0.05 bits per byte on every document: a real difference), plus a three-seed group with its t interval."""
    rng = np.random.default_rng(0)
    root = tmp_path / "demo"
    num_bytes = rng.integers(50, 3000, size=150)
    base = rng.gamma(8.0, 1.2 / 8.0, size=150)
    cells = {"family=lstm,kind=char,seed=0": base, "family=gru,kind=char,seed=0": base + rng.normal(0, 0.01, 150),
             "family=rnn,kind=char,seed=0": base + 0.05}
    for name, per_byte in cells.items():
        write_cell(root, name, name.split(",")[0][7:], "char", 0, "completed", 1.0, 1000)
        write_units(root, name, per_byte, num_bytes)
    md = report.build_report(root).read_text()
    ranking = md.split("## Ranking by val_bpb")[1].split("\n## ")[0]
    assert "paired bootstrap" in ranking and "Δ to best (95% CI)" in ranking
    rows = {cells[2]: cells for ln in ranking.splitlines() if ln.startswith("|") and "family=" in ln
            for cells in [[c.strip() for c in ln.split("|")]]}
    best = rows["family=lstm,kind=char,seed=0"]
    assert any(" ± " in c for c in best) and "best" in best and "tie" not in best
    assert "tie" in rows["family=gru,kind=char,seed=0"]
    worse = rows["family=rnn,kind=char,seed=0"]
    assert any(c.startswith("+0.05") for c in worse) and "tie" not in worse


def test_three_seeds_get_a_t_interval(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    for seed, bpb in enumerate((1.20, 1.25, 1.22)):
        write_cell(root, f"family=lstm,kind=char,seed={seed}", "lstm", "char", seed, "completed", bpb, 1000)
    write_cell(root, "family=gru,kind=char,seed=0", "gru", "char", 0, "completed", 1.3, 1000)
    md = report.build_report(root).read_text()
    seeds = md.split("## Seeds aggregated")[1].split("\n## ")[0]
    # mean 1.22333, sd 0.025166, t(0.975, 2) = 4.30265: 1.22333 ± 0.06252
    assert "[1.1608, 1.2858]" in seeds


def write_sized_cell(root: Path, d_hidden: int, num_params: int, bpb: float, flops_per_token: float) -> str:
    """A completed cell of a grid over model.params.d_hidden, with FLOP counts and an evaluation curve."""
    name = f"d_hidden={d_hidden}"
    cell = root / name
    cell.mkdir(parents=True)
    spec = {"name": "sizes", "seed": 0, "model": {"family": "lstm", "params": {"d_hidden": d_hidden}},
            "tokenizer": {"kind": "char", "params": {}}, "train": {"max_steps": 100}}
    (cell / "spec.yaml").write_text(yaml.safe_dump(spec))
    rows = [{"step": s, "tokens": s * 1000, "wall_s": s * 0.01 * d_hidden, "val_bpb": bpb + 2.0 / s}
            for s in (25, 50, 100)]
    (cell / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = {"status": "completed", "cell": name, "axes": {"model.params.d_hidden": d_hidden}, "steps": 100,
               "tokens": 100_000, "wall_s": d_hidden * 1.0, "num_params": num_params, "val_bpb": bpb,
               "val_loss": bpb * 0.7, "flops_per_token": flops_per_token}
    (cell / "summary.json").write_text(json.dumps(summary))
    return name


def test_compute_matched_view_and_scaling_fit_with_a_known_exponent(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    sizes = [16, 32, 64, 128, 256]
    for d in sizes:
        n = 400 * d * d
        write_sized_cell(root, d, n, 1.0 + 30.0 * n ** -0.25, 6.0 * n)
    md = report.build_report(root).read_text()
    compute = md.split("## Compute-matched")[1].split("\n## ")[0]
    assert "Pareto frontier" in compute and "plot_bpb_vs_compute" in compute
    assert (root / "plot_bpb_vs_compute.png").stat().st_size > 10_000
    # within the smallest budget (d_hidden=16's whole run), d_hidden=32's first evaluation (25% of its tokens,
    # 6.14e10 FLOPs as well) is already better: 1 + 30 / 409600^0.25 + 2/25 = 2.2659 < 2.6763; the largest
    # budget goes to the largest model
    table = [ln for ln in compute.splitlines() if ln.startswith("| ") and "d_hidden=" in ln]
    assert "d_hidden=32" in table[0] and "2.2659" in table[0] and "d_hidden=256" in table[-1]
    scaling = md.split("## Scaling")[1].split("\n## ")[0]
    params_row = next(ln for ln in scaling.splitlines() if "| params " in ln)
    alpha = float(re.search(r"\| (0\.\d+) \[", params_row).group(1))
    assert alpha == pytest.approx(0.25, abs=0.02)
    # one size up: 400 * 256^2 * (256/128)^2 = 1.05e+08 parameters, where 1 + 30 / (1.048576e8)^0.25 = 1.2965
    assert "| 1.05e+08 " in params_row and re.search(r"\| 1\.29[5-7]\d ", params_row)
    assert (root / "plot_scaling_params.png").is_file()


def test_pareto_mask_keeps_the_points_nothing_beats_on_both_axes() -> None:
    from lmbench.reporting.plots import pareto_mask

    x = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([5.0, 4.0, 4.5, 4.0, 2.0, 3.0])
    # (2, 4.5) loses to (2, 4); (3, 4) ties (2, 4) on y at more cost; (5, 3) loses to (4, 2)
    assert pareto_mask(x, y).tolist() == [True, True, False, False, True, False]


def test_scaling_fit_is_refused_below_four_sizes(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    for d in (16, 32, 64):
        write_sized_cell(root, d, 400 * d * d, 1.0 + 30.0 * (400 * d * d) ** -0.25, 2400.0 * d * d)
    scaling = report.build_report(root).read_text().split("## Scaling")[1].split("\n## ")[0]
    assert "Not fitted: all cells against params: 3 different value(s)" in scaling
    assert "at least 4" in scaling


def test_compare_builds_one_report_over_two_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmbench.cli import main

    before, after = tmp_path / "before" / "demo", tmp_path / "after" / "demo"
    write_cell(before, "family=lstm,kind=char,seed=0", "lstm", "char", 0, "completed", 1.30, 1000)
    write_cell(after, "family=lstm,kind=char,seed=0", "lstm", "char", 0, "completed", 1.20, 1000)
    out = tmp_path / "cmp"
    assert main(["compare", str(before), str(after), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    ranking = md.split("## Ranking by val_bpb")[1].split("\n## ")[0]
    first, second = [ln for ln in ranking.splitlines() if "family=lstm" in ln]
    assert "after/demo/family=lstm" in first and "before/demo/family=lstm" in second  # same names: parent shown
    assert "results" in md and (out / "report.html").is_file()
    assert main(["compare", str(before)]) == 2
