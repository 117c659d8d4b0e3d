"""The runner: what one cell writes (results folder, summary, samples), failures before training, reference runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmbench.results import read_summary
from lmbench.spec import to_spec
from lmbench.training import checkpoint as ckpt

from .test_trainer import rows, run, tiny_cfg


def test_run_cell_writes_the_results_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "results" / "runner-test" / "cell0"
    summary = run(tiny_cfg(tmp_path, eval={"untrained": True}), run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 6 and summary["tokens"] == 6 * 4 * 16
    for key in ("num_params", "num_trainable_params", "val_loss", "val_ppl", "val_bpb", "val_bits_per_char",
                "val_word_ppl", "test_loss", "untrained_val_loss", "untrained_test_bpb", "train_tokens_per_s",
                "wall_s", "cell", "spec_name", "axes", "mixed_precision", "best_val_loss"):
        assert key in summary, key
    assert summary["mixed_precision"] == "no"  # auto: a tiny model
    assert summary["val_ppl"] == pytest.approx(np.exp(summary["val_loss"]))
    assert summary["untrained_val_loss"] > summary["val_loss"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    for name in ("spec.yaml", "metrics.jsonl", "samples.jsonl", "env.json", "tokenizer", "checkpoint/model.safetensors",
                 "checkpoint/trainer_state.json", "checkpoint/best/model.safetensors"):
        assert (run_dir / name).exists(), name
    logged = rows(run_dir)
    train_rows = [r for r in logged if "train_loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert {"step", "tokens", "wall_s", "train_loss", "lr", "tokens_per_s"} <= set(train_rows[0])
    assert [r["step"] for r in logged if "val_loss" in r and not r.get("final")] == [3, 6]
    assert logged[0]["step"] == 0 and "untrained_val_loss" in logged[0]
    final = logged[-1]  # the final evaluation: where the run ended, with the summary's numbers
    assert final["final"] is True and (final["step"], final["tokens"]) == (6, summary["tokens"])
    assert 0 < final["wall_s"] <= summary["wall_s"] and final["val_loss"] == summary["val_loss"]
    samples = [json.loads(ln) for ln in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 1 and samples[0]["prompt"] == "the"
    # the inference weights load into a bare model built from the saved tokenizer
    from lmbench.models import build_model
    from lmbench.tokenizers import load_tokenizer

    model = ckpt.load_weights(build_model(to_spec(tiny_cfg(tmp_path)).model, load_tokenizer(run_dir / "tokenizer")),
                              run_dir)
    assert model.head.weight is model.tok_emb.weight


def test_per_unit_records_add_up_to_the_summary_and_give_intervals(tmp_path: Path) -> None:
    """units_<split>.parquet: one row per document of each held-out split; its sums are the summary's totals
    (NLL, tokens) and the split's text (bytes); the bootstrap interval brackets the metric."""
    from lmbench.data import prepare_data

    cfg = tiny_cfg(tmp_path, eval={"splits": ["validation", "test"]})
    summary = run(cfg, tmp_path / "cell")
    split = prepare_data(to_spec(cfg), progress=False).splits["validation"]
    for name, prefix in (("validation", "val"), ("test", "test")):
        units = pd.read_parquet(tmp_path / "cell" / f"units_{name}.parquet")
        assert list(units.columns) == ["doc", "chunk", "nll_nats", "tokens", "bytes", "chars", "words"]
        assert summary[f"{prefix}_units"] == len(units) and units["doc"].tolist() == list(range(len(units)))
        assert units["nll_nats"].sum() == pytest.approx(summary[f"{prefix}_nll_nats"], rel=1e-12)
        assert int(units["tokens"].sum()) == summary[f"{prefix}_tokens"]
        for metric in ("bpb", "ppl", "word_ppl"):
            assert summary[f"{prefix}_{metric}_low"] < summary[f"{prefix}_{metric}"] < summary[f"{prefix}_{metric}_high"]
    units = pd.read_parquet(tmp_path / "cell" / "units_validation.parquet")
    s = split.stats
    assert units[["bytes", "chars", "words"]].sum().tolist() == [s.num_bytes, s.num_chars, s.num_words]


def test_a_cell_that_cannot_be_built_records_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no such weights")

    monkeypatch.setattr("lmbench.models.build_model", broken)
    run_dir = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="no such weights"):
        run(tiny_cfg(tmp_path), run_dir)
    summary = read_summary(run_dir)
    assert summary is not None and summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: no such weights" and summary["cell"] == "broken"
    monkeypatch.setattr("lmbench.training.runner.reset_accelerate", broken)  # fails before the folder exists
    with pytest.raises(RuntimeError):
        run(tiny_cfg(tmp_path), tmp_path / "grid" / "early")
    assert read_summary(tmp_path / "grid" / "early")["status"] == "failed"  # the record made the folders


def test_samples_are_scored_by_the_reference_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """sample.reference_run: a completed run's model scores every sample (the coherence proxy of the report);
    a reference that has not completed gives no reference perplexity, with a warning."""
    sample = {"prompts": ["the"], "max_new_tokens": 6, "samplers": [{"kind": "greedy"}, {"kind": "sample"}]}
    reference = tmp_path / "grid" / "ref"
    run(tiny_cfg(tmp_path, sample=sample), reference)
    scored = run(tiny_cfg(tmp_path, sample={**sample, "reference_run": "cell:ref"}), tmp_path / "grid" / "other")
    table = pd.read_csv(tmp_path / "grid" / "other" / "sampler_metrics.csv")
    assert scored["num_samples"] == 2 and list(table["sampler"]) == ["greedy", "sample"]
    assert (table["reference_ppl"] > 1).all() and (table["self_ppl"] > 1).all()
    (reference / "summary.json").write_text(json.dumps({"status": "running"}))
    run(tiny_cfg(tmp_path, sample={**sample, "reference_run": "cell:ref"}), tmp_path / "grid" / "third")
    assert table_has_no_reference(tmp_path / "grid" / "third" / "sampler_metrics.csv")
    assert "is not completed" in caplog.text


def test_cells_that_ran_before_their_reference_are_scored_when_it_completes(tmp_path: Path) -> None:
    """Grid order must not matter: `other` runs first (its reference does not exist yet: no reference_ppl), then
    `ref` completes and scores other's samples; `again`, the same spec run after `ref`, gets the same values."""
    sample = {"prompts": ["the"], "max_new_tokens": 6, "samplers": [{"kind": "greedy"}, {"kind": "sample"}],
              "reference_run": "cell:ref"}
    run(tiny_cfg(tmp_path, sample=sample), tmp_path / "grid" / "other")
    assert table_has_no_reference(tmp_path / "grid" / "other" / "sampler_metrics.csv")
    # siblings that do not qualify, sorted before `other`: a file, a bare folder, a cell naming another reference,
    # a cell whose samples are missing, and one that is not completed; none stops the scan
    (tmp_path / "grid" / "a-file.txt").write_text("x")
    (tmp_path / "grid" / "b-empty").mkdir()
    for name, change in (("c-elsewhere", "reference"), ("d-nosamples", "samples"), ("e-running", "status")):
        shutil.copytree(tmp_path / "grid" / "other", tmp_path / "grid" / name)
        if change == "reference":
            spec_file = tmp_path / "grid" / name / "spec.yaml"
            spec_file.write_text(spec_file.read_text().replace("cell:ref", "cell:nobody"))
        elif change == "samples":
            (tmp_path / "grid" / name / "samples.jsonl").unlink()
        else:
            (tmp_path / "grid" / name / "summary.json").write_text(json.dumps({"status": "running"}))
    run(tiny_cfg(tmp_path, sample={**sample, "reference_run": None}), tmp_path / "grid" / "ref")
    for name in ("c-elsewhere", "d-nosamples", "e-running"):
        assert table_has_no_reference(tmp_path / "grid" / name / "sampler_metrics.csv"), name
    rescored = pd.read_csv(tmp_path / "grid" / "other" / "sampler_metrics.csv")
    assert (rescored["reference_ppl"] > 1).all()
    run(tiny_cfg(tmp_path, sample=sample), tmp_path / "grid" / "again")
    in_order = pd.read_csv(tmp_path / "grid" / "again" / "sampler_metrics.csv")
    np.testing.assert_allclose(rescored["reference_ppl"], in_order["reference_ppl"], rtol=1e-6)
    assert rescored.drop(columns=["reference_ppl", "note", "tokens_per_s"]).equals(
        in_order.drop(columns=["reference_ppl", "note", "tokens_per_s"]))


def table_has_no_reference(path: Path) -> bool:
    table = pd.read_csv(path)
    return "reference_ppl" not in table or bool(table["reference_ppl"].isna().all())


def test_the_summary_records_the_cell_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fact and progress field of summary.json against its source: the cell's name, group and axes, the
    model's parameter count and FLOPs, the batch split, steps/tokens/epochs and rates, the logged losses, the
    run files (spec.yaml reads back, env.json names the data and precision)."""
    import torch

    from lmbench.data import prepare_data
    from lmbench.models import build_model
    from lmbench.spec import load_spec
    from lmbench.tokenizers import load_tokenizer
    from lmbench.training.runner import build_trainer, run_cell

    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.append(n))
    threads: list[int] = []
    cfg = tiny_cfg(tmp_path, train={"grad_accum_steps": 2, "num_threads": 1, "max_steps": 6},
                   eval={"untrained": True})
    cfg["tracking"]["project"] = "prøjekt ü"  # non-ASCII text in spec.yaml
    run_dir = tmp_path / "deep" / "grid" / "cell0"
    summary = run_cell(to_spec(cfg), run_dir, cell_name="cell0", group="g1", axes={"seed": 3})
    assert threads == [1]
    on_disk = read_summary(run_dir)
    assert on_disk is not None and dict(on_disk) == json.loads(json.dumps(dict(summary), default=str))
    assert (summary["cell"], summary["spec_name"], summary["group"], summary["axes"]) == \
        ("cell0", "runner-test", "g1", {"seed": 3})
    model = build_model(to_spec(cfg).model, load_tokenizer(run_dir / "tokenizer"))
    assert summary["num_params"] == summary["num_trainable_params"] == sum(p.numel() for p in model.parameters())
    assert (summary["world_size"], summary["grad_accum_steps"], summary["per_process_batch_size"]) == (1, 2, 2)
    steps_per_epoch = build_trainer(to_spec(cfg), tmp_path / "probe", "probe").steps_per_epoch
    assert (summary["steps"], summary["tokens"], summary["stop_reason"]) == (6, 6 * 4 * 16, "max_steps")
    assert summary["epochs"] == pytest.approx(6 / steps_per_epoch, rel=1e-12)
    assert summary["train_tokens_per_s"] == pytest.approx(summary["tokens"] / summary["train_s"], rel=1e-12)
    assert summary["flops_per_token"] == model.flops_per_token(16)
    assert summary["train_flops_per_s"] == pytest.approx(summary["flops_per_token"] * summary["train_tokens_per_s"])
    assert summary["wall_s"] >= summary["train_s"] > 0 and summary["resumed_from"] == []
    losses = [r["train_loss"] for r in rows(run_dir) if "train_loss" in r]
    assert (summary["first_train_loss"], summary["last_train_loss"], summary["min_train_loss"]) == \
        (losses[0], losses[-1], min(losses))
    assert summary["untrained_val_loss"] > summary["val_loss"] and summary["diverged"] is False
    assert summary["divergence_reason"] is None and summary["best_step"] in (3, 6)
    assert summary["num_samples"] == len((run_dir / "samples.jsonl").read_text().splitlines()) == 1
    assert load_spec(run_dir / "spec.yaml") == to_spec(cfg)
    assert "prøjekt ü" in (run_dir / "spec.yaml").read_bytes().decode("utf-8")
    fingerprints = json.loads((run_dir / "env.json").read_text())["fingerprints"]
    assert fingerprints["mixed_precision"] == "no"
    assert fingerprints["mixed_precision_reason"] == summary["mixed_precision_reason"]
    assert fingerprints["data"] == json.loads(json.dumps(prepare_data(to_spec(cfg), progress=False).fingerprint))


def test_a_failure_after_the_build_is_recorded_with_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception while training: summary.json says failed, names the exception and keeps the facts and the
    progress so far; a non-finite loss is a failed summary returned (not raised) with the failing step."""
    from lmbench.training.trainer import Trainer, TrainModule

    real_step = Trainer.train_step

    def broken(self: Trainer, step: int) -> object:
        if step == 2:
            raise ValueError("disk full")
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(ValueError, match="disk full"):
        run(tiny_cfg(tmp_path, train={"checkpoint_every": 1, "eval_every": None}), tmp_path / "broken")
    summary = read_summary(tmp_path / "broken")
    assert summary is not None and summary["status"] == "failed" and summary["error"] == "ValueError: disk full"
    assert summary["cell"] == "broken" and summary["steps"] == 2 and summary["num_params"] > 0
    monkeypatch.setattr(Trainer, "train_step", real_step)
    real_forward = TrainModule.forward

    def poisoned(self: TrainModule, *args: object, **kwargs: object) -> object:
        nll, state = real_forward(self, *args, **kwargs)
        return nll * float("nan"), state

    monkeypatch.setattr(TrainModule, "forward", poisoned)
    failed = run(tiny_cfg(tmp_path, train={"eval_every": None}), tmp_path / "nan")
    assert failed["status"] == "failed" and failed["failed_step"] == 1 and "non-finite loss" in failed["error"]
    assert failed["steps"] == 0 and failed["cell"] == "nan" and failed["stop_reason"] is None
    assert read_summary(tmp_path / "nan") == json.loads(json.dumps(dict(failed), default=str))


def test_a_launcher_precision_the_spec_overrides_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from lmbench.training.precision import LAUNCHER_ENV

    monkeypatch.setenv(LAUNCHER_ENV, "bf16")
    summary = run(tiny_cfg(tmp_path, train={"mixed_precision": "no", "max_steps": 1, "eval_every": None},
                           sample={"samplers": []}), tmp_path / "cell")
    assert summary["mixed_precision"] == "no"
    warned = [r for r in caplog.records if "overrides the launcher" in r.getMessage()]
    assert len(warned) == 1 and warned[0].getMessage().startswith("cell: ")
    caplog.clear()
    monkeypatch.delenv(LAUNCHER_ENV)
    run(tiny_cfg(tmp_path, train={"mixed_precision": "no", "max_steps": 1, "eval_every": None},
                 sample={"samplers": []}), tmp_path / "quiet")
    assert not [r for r in caplog.records if r.name == "lmbench.training.runner" and r.levelname == "WARNING"]


def test_build_trainer_has_no_trackers(tmp_path: Path) -> None:
    from lmbench.training.runner import build_trainer

    cfg = tiny_cfg(tmp_path, tracking={"backends": ["tensorboard"]})
    trainer = build_trainer(to_spec(cfg), tmp_path / "run", "probe")
    assert trainer.acc.log_with == [] and trainer.cell_name == "probe" and trainer.total_steps == 6


@pytest.mark.parametrize("planted", ["loss went up", None])
def test_the_divergence_check_gets_the_runs_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture, planted: str | None) -> None:
    """The runner hands divergence_reason the run's own numbers and records its answer (with a warning)."""
    from lmbench.training import divergence

    seen: list[dict] = []

    def spy(**kwargs: object) -> str | None:
        seen.append(kwargs)
        return planted

    monkeypatch.setattr(divergence, "divergence_reason", spy)
    cfg = tiny_cfg(tmp_path, eval={"untrained": True}, train={"divergence_factor": 2.5}, sample={"samplers": []})
    summary = run(cfg, tmp_path / "cell")
    assert len(seen) == 1
    kwargs = seen[0]
    assert kwargs == {"final_val_loss": summary["val_loss"], "untrained_val_loss": summary["untrained_val_loss"],
                      "vocab_size": kwargs["vocab_size"], "first_train_loss": summary["first_train_loss"],
                      "last_train_loss": summary["last_train_loss"], "min_train_loss": summary["min_train_loss"],
                      "factor": 2.5, "stopped": False}
    from lmbench.tokenizers import load_tokenizer

    assert kwargs["vocab_size"] == load_tokenizer(tmp_path / "cell" / "tokenizer").vocab_size
    assert summary["diverged"] is (planted is not None) and summary["divergence_reason"] == planted
    warned = [r.getMessage() for r in caplog.records if "diverged" in r.getMessage()]
    assert warned == ([f"cell diverged: {planted} (listed apart in reports, not ranked)"] if planted else [])


def test_no_samples_without_samplers_or_prompts_and_the_tables_have_no_index(tmp_path: Path) -> None:
    summary = run(tiny_cfg(tmp_path, sample={"samplers": []}, train={"max_steps": 1, "eval_every": None}),
                  tmp_path / "none")  # (no prompts at all is refused by the spec check)
    assert summary["num_samples"] == 0 and not (tmp_path / "none" / "samples.jsonl").exists()
    assert not (tmp_path / "none" / "sampler_metrics.csv").exists()
    summary = run(tiny_cfg(tmp_path, train={"max_steps": 1, "eval_every": None},
                           sample={"samplers": [{"kind": "greedy"}, {"kind": "sample"}]}), tmp_path / "two")
    table = pd.read_csv(tmp_path / "two" / "sampler_metrics.csv")
    assert summary["num_samples"] == 2 and not any(c.startswith("Unnamed") for c in table.columns)
    samples = [json.loads(ln) for ln in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    assert [s["sampler"] for s in samples] == ["greedy", "sample"]


@pytest.mark.parametrize(("batching", "start"), [("packed", "eos_id"), ("documents", "bos_id")])
def test_samples_start_like_training_documents(tmp_path: Path, batching: str, start: str) -> None:
    """A packed stream's documents start after an EOS, documents batches' after BOS: prompts start the same way."""
    from lmbench.tokenizers import load_tokenizer

    run(tiny_cfg(tmp_path, data={"batching": batching}, train={"max_steps": 1, "eval_every": None}),
        tmp_path / batching)
    tokenizer = load_tokenizer(tmp_path / batching / "tokenizer")
    samples = [json.loads(ln) for ln in (tmp_path / batching / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["prompt_ids"][0] for s in samples} == {getattr(tokenizer, start)}


def test_earlier_cells_already_scored_are_kept_and_the_scan_goes_on(tmp_path: Path) -> None:
    """When `ref` completes: a cell whose table already has every reference_ppl keeps it (123 stays 123) and the
    cells after it are still scored; a sampler whose samples are gone gets NaN and no note; a cell naming itself
    as reference is never scored by itself."""
    sample = {"prompts": ["the"], "max_new_tokens": 6, "samplers": [{"kind": "greedy"}, {"kind": "sample"}],
              "reference_run": "cell:ref"}
    grid = tmp_path / "grid"
    run(tiny_cfg(tmp_path, sample=sample), grid / "b-other")
    shutil.copytree(grid / "b-other", grid / "a-scored")
    table = pd.read_csv(grid / "a-scored" / "sampler_metrics.csv")
    table["reference_ppl"] = 123.0
    table.to_csv(grid / "a-scored" / "sampler_metrics.csv", index=False)
    samples = (grid / "b-other" / "samples.jsonl").read_text().splitlines()
    (grid / "b-other" / "samples.jsonl").write_text(
        "\n".join(ln for ln in samples if json.loads(ln)["sampler"] == "greedy") + "\n")
    run(tiny_cfg(tmp_path, sample={**sample, "reference_run": None}), grid / "ref")
    assert pd.read_csv(grid / "a-scored" / "sampler_metrics.csv")["reference_ppl"].tolist() == [123.0, 123.0]
    other = pd.read_csv(grid / "b-other" / "sampler_metrics.csv").set_index("sampler")
    assert other.loc["greedy", "reference_ppl"] > 1
    assert np.isnan(other.loc["sample", "reference_ppl"]) and pd.isna(other.loc["sample", "note"])
    run(tiny_cfg(tmp_path, sample={**sample, "reference_run": "cell:self"}), grid / "self")
    assert table_has_no_reference(grid / "self" / "sampler_metrics.csv")


def test_a_reference_run_given_as_a_folder(tmp_path: Path) -> None:
    sample = {"prompts": ["the"], "max_new_tokens": 6, "samplers": [{"kind": "greedy"}]}
    run(tiny_cfg(tmp_path, sample=sample), tmp_path / "elsewhere" / "ref")
    run(tiny_cfg(tmp_path, sample={**sample, "reference_run": str(tmp_path / "elsewhere" / "ref")}),
        tmp_path / "grid" / "cell")
    assert (pd.read_csv(tmp_path / "grid" / "cell" / "sampler_metrics.csv")["reference_ppl"] > 1).all()


def test_a_run_stopped_for_divergence_is_judged_as_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.stop_on_divergence ended the run (stop_reason "diverged"): divergence_reason hears stopped=True."""
    from lmbench.training import divergence
    from lmbench.training.trainer import Trainer

    seen: list[dict] = []
    monkeypatch.setattr(divergence, "divergence_reason", lambda **kw: seen.append(kw) or "stopped")
    real = Trainer._log_train

    def log_then_stop(self: Trainer, *args: object) -> None:
        real(self, *args)
        self._progress.stop_reason = "diverged"

    monkeypatch.setattr(Trainer, "_log_train", log_then_stop)
    summary = run(tiny_cfg(tmp_path, sample={"samplers": []}), tmp_path / "cell")
    assert summary["stop_reason"] == "diverged" and summary["steps"] == 2  # the first logged step
    assert [kw["stopped"] for kw in seen] == [True] and summary["diverged"] is True


def test_units_of_splits_after_one_without_units_are_written(tmp_path: Path) -> None:
    """eval.splits [train, validation]: train has no evaluation units, validation does; its parquet file holds the
    7 unit columns and nothing else (no index column)."""
    import pyarrow.parquet as pq

    summary = run(tiny_cfg(tmp_path, eval={"splits": ["train", "validation"]}, sample={"samplers": []},
                           train={"max_steps": 1, "eval_every": None}), tmp_path / "cell")
    assert not (tmp_path / "cell" / "units_train.parquet").exists() and "train_units" not in summary
    path = tmp_path / "cell" / "units_validation.parquet"
    assert pq.read_schema(path).names == ["doc", "chunk", "nll_nats", "tokens", "bytes", "chars", "words"]
    assert summary["val_units"] == pq.read_metadata(path).num_rows


def test_the_samples_go_to_the_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.training import tracking

    logged: list[list[dict]] = []
    monkeypatch.setattr(tracking, "log_samples", lambda acc, rows: logged.append(list(rows)))
    run(tiny_cfg(tmp_path, train={"max_steps": 1, "eval_every": None},
                 sample={"samplers": [{"kind": "greedy"}, {"kind": "sample"}]}), tmp_path / "cell")
    written = [json.loads(ln) for ln in (tmp_path / "cell" / "samples.jsonl").read_text().splitlines()]
    assert len(logged) == 1 and [r["text"] for r in logged[0]] == [r["text"] for r in written] and len(written) == 2


def test_while_training_the_summary_says_running_with_the_cells_facts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed mid-training leaves a summary that names it (cell, group, axes, precision), and the trackers
    start under the cell's name and the grid's group."""
    from lmbench.training import tracking
    from lmbench.training.runner import run_cell
    from lmbench.training.trainer import Trainer

    seen: list[dict] = []
    started: list[tuple] = []
    real_run, real_start = Trainer.run, tracking.start

    def run_and_look(self: Trainer) -> object:
        seen.append(dict(read_summary(self.run_dir) or {}))
        return real_run(self)

    def start(acc: object, spec: object, run_dir: Path, cell_name: str, group: str | None = None) -> None:
        started.append((run_dir, cell_name, group))
        real_start(acc, spec, run_dir, cell_name, group)

    monkeypatch.setattr(Trainer, "run", run_and_look)
    monkeypatch.setattr(tracking, "start", start)
    run_dir = tmp_path / "grid" / "cell7"
    run_cell(to_spec(tiny_cfg(tmp_path, train={"max_steps": 1, "eval_every": None}, sample={"samplers": []})),
             run_dir, cell_name="cell7", group="g2", axes={"seed": 5})
    assert len(seen) == 1 and seen[0]["status"] == "running"
    assert (seen[0]["cell"], seen[0]["group"], seen[0]["axes"], seen[0]["mixed_precision"]) == \
        ("cell7", "g2", {"seed": 5}, "no")
    assert started == [(run_dir, "cell7", "g2")]


def test_a_cell_builds_with_its_trackers_seed_and_precision_and_reruns_into_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_cell's cell: trackers on (TensorBoard events in the cell's folder), the model initialised from the
    spec's seed (the same weights as build_model with it), the Accelerator at the chosen precision; a second
    run into the same folder (a relaunch of a finished grid) works."""
    import torch
    from accelerate.utils import set_seed

    from lmbench import models
    from lmbench.models import build_model
    from lmbench.training.runner import build_cell

    cfg = tiny_cfg(tmp_path, train={"max_steps": 1, "eval_every": None, "mixed_precision": "bf16",
                                    "grad_accum_steps": 2}, sample={"samplers": []},
                   tracking={"backends": ["tensorboard"]})
    spec = to_spec(cfg)
    run_dir = tmp_path / "grid" / "cell"
    parts = build_cell(spec, run_dir, "cell")
    assert parts.accelerator.mixed_precision == "bf16" and parts.facts["mixed_precision"] == "bf16"
    assert parts.evaluator.accelerator is parts.accelerator  # evaluation under the same autocast and processes
    assert parts.accelerator.gradient_accumulation_steps == 2 and parts.trainer.train_data.carry is False
    lstm = build_cell(to_spec(tiny_cfg(tmp_path, "lstm")), tmp_path / "lstm", "lstm")
    assert lstm.trainer.train_data.carry is True  # the recurrent model carries its state on the packed stream
    assert [t.name for t in parts.accelerator.trackers] == [] and len(parts.accelerator.log_with) == 1
    set_seed(spec.seed)
    reference = build_model(spec.model, parts.data.tokenizer, seed=spec.seed)
    torch.manual_seed(12345)  # the build must not depend on the global generator's state
    again = build_cell(spec, run_dir, "cell").model
    for (name, a), b, c in zip(parts.model.state_dict().items(), reference.state_dict().values(),
                               again.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c), name
    seeds: list[int] = []
    real_build = models.build_model
    def build(*args: object, seed: int) -> object:
        seeds.append(seed)
        model = real_build(*args, seed=seed)
        next(model.parameters()).requires_grad_(False)  # a frozen table, as pretrained vectors are
        return model

    monkeypatch.setattr(models, "build_model", build)
    first = run(cfg, run_dir)
    assert seeds == [spec.seed]  # also the seed of pretrained vectors' uncovered rows
    frozen = next(parts.model.parameters()).numel()
    assert first["num_trainable_params"] == first["num_params"] - frozen
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    second = run(cfg, run_dir)
    assert first["status"] == second["status"] == "completed" and second["steps"] == 1


def test_only_a_nodes_first_process_builds_the_data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process of the node waits for the cache and loads it: with no cache it does not build one."""
    from accelerate import PartialState

    from lmbench.training.runner import build_cell

    monkeypatch.setattr(PartialState, "is_local_main_process", property(lambda self: False))
    with pytest.raises(RuntimeError, match="is missing or damaged; the main process must prepare it first"):
        build_cell(to_spec(tiny_cfg(tmp_path)), tmp_path / "cell", "cell")
    assert not (tmp_path / "cache").exists()  # nothing was built
