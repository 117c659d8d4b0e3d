"""Report figures: drawn from tidy frames, PNGs a person can open, nothing drawn from nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from lmbench.reporting import plots


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_validation_curves(tmp_path: Path) -> None:
    curves = pd.DataFrame({"cell": ["a", "a", "b", "b"], "step": [0, 10, 0, 10], "wall_s": [0.0, 5.0, 0.0, 7.0],
                           "val_loss": [4.0, 2.0, 4.1, 2.5]})
    path = plots.plot_val_curves(curves, tmp_path / "curves.png")
    assert path is not None and _png_size(path)[0] > 1000  # two panels side by side
    assert plots.plot_val_curves(curves.iloc[0:0], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_bpb_against_size_needs_sizes_and_metric(tmp_path: Path) -> None:
    points = pd.DataFrame({"label": ["lstm", "gru"], "num_params": [1e5, 3e5], "val_bpb": [2.1, 1.9],
                           "val_bpb_std": [0.05, float("nan")], "family": ["lstm", "gru"]})
    assert plots.plot_bpb_vs_params(points, tmp_path / "bpb.png") is not None
    assert plots.plot_bpb_vs_params(points.drop(columns="num_params"), tmp_path / "x.png") is None
    assert plots.plot_bpb_vs_params(points.assign(val_bpb=float("nan")), tmp_path / "y.png") is None


def test_sampler_tradeoff_only_with_a_coherence_column(tmp_path: Path) -> None:
    samplers = pd.DataFrame({"cell": ["a", "a"], "sampler": ["greedy", "sample"], "distinct_2": [0.2, 0.8],
                             "self_ppl": [3.0, 40.0]})
    assert plots.plot_sampler_tradeoff(samplers, tmp_path / "s.png", "self_ppl") is not None
    assert plots.plot_sampler_tradeoff(samplers, tmp_path / "t.png", None) is None
