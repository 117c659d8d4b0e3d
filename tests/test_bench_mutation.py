"""scripts/bench/mutation.py's bookkeeping: the score per module and the sorting of survivors (the mutmut run itself
is a benchmark, not a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import bench_scripts


@pytest.fixture(scope="module")
def mutation():  # noqa: ANN201
    return bench_scripts.load("mutation")


def diff(old: str, new: str) -> str:
    return f"--- a\n+++ b\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_score_is_killed_over_killed_survived_and_unreached(mutation) -> None:  # noqa: ANN001
    module = "lmbench/stats.py"
    mutants = ([{"module": module, "category": "killed"}] * 6 + [{"module": module, "category": "survived"}] * 2
               + [{"module": module, "category": "no tests"}] + [{"module": module, "category": "equivalent"}] * 3
               + [{"module": module, "category": "message"}, {"module": module, "category": "platform"}])
    rows = mutation.summarise({"statistics and divergence": {"mutants": mutants}})
    row = rows[module]
    assert (row["total"], row["killed"], row["survived"], row["no tests"], row["equivalent"]) == (14, 6, 2, 1, 3)
    assert row["score"] == pytest.approx(6 / 9)  # equivalent, message and platform mutants left out
    assert rows["lmbench/training/divergence.py"]["score"] == 1.0  # nothing judged
    assert "lmbench/stats.py" not in mutation.summarise({"statistics and divergence": {"mutants": [],
                                                                                         "failure": "exit 1"}})


def test_survivors_are_sorted_by_the_rules(mutation) -> None:  # noqa: ANN001
    name = "lmbench.sampling.filters.x_top_k__mutmut_3"
    verdict = mutation.verdict
    module = "lmbench/sampling/filters.py"
    line = "    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (N, 1)"
    assert verdict(module, name, diff(line, line.replace("dim=-1", "dim=+1")), {})[0] == "equivalent"
    assert verdict(module, name, diff(line, line.replace("dim=-1", "")), {})[0] == "equivalent"
    assert verdict(module, name, diff(line, line.replace("k, dim", "k + 1, dim")), {}) == ("survived", "")
    key = mutation.change_key(name, diff(line, line.replace("k, dim", "k + 1, dim")))
    assert key == ("lmbench.sampling.filters.x_top_k: kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (N, 1)"
                   " -> kth = torch.topk(scores, k + 1, dim=-1).values[..., -1:]  # (N, 1)")
    assert verdict(module, name, diff(line, line.replace("k, dim", "k + 1, dim")), {key: "why"}) == \
        ("equivalent", "why")
    device = "    seen = torch.zeros(3, dtype=torch.bool, device=scores.device)"
    assert verdict(module, name, diff(device, device.replace(", device=scores.device", "")), {})[0] == "platform"


def test_listed_lines_and_platform_entries(mutation) -> None:  # noqa: ANN001
    name = "lmbench.training.evaluate.x__batches__mutmut_7"
    module = "lmbench/training/evaluate.py"
    line = '    cuda = accelerator is not None and accelerator.device.type == "cuda"'
    mutant = diff(line, line.replace("==", "!="))
    head = "lmbench.training.evaluate.x__batches: " + line.strip()
    assert mutation.verdict(module, name, mutant, {}, {head + " -> *": "only CUDA reads it"}) == \
        ("platform", "only CUDA reads it")
    assert mutation.verdict(module, name, mutant, {head + " -> *": "same"}) == ("equivalent", "same")
    other = "    loader = DataLoader(items, batch_size=batch_size)"
    assert mutation.verdict(module, name, diff(other, other.replace("batch_size=batch_size", "")),
                            {head + " -> *": "same"}) == ("survived", "")
    dropped = "        self.nll = torch.zeros(len(table), dtype=torch.float64, device=device)"
    assert mutation.verdict(module, name, diff(dropped, dropped.replace("device=device", "")), {})[0] == "platform"


def test_the_report_names_groups_run_earlier_and_stale_entries_apart(mutation, tmp_path: Path) -> None:  # noqa: ANN001
    groups = {"evaluation": {"seconds": 60, "when": "2026-12-01 10:00", "commit": "aaa", "mutants": []},
              "samplers": {"seconds": 60, "when": "2026-12-01 11:00", "commit": "bbb", "mutants": []}}
    groups["statistics and divergence"] = {"seconds": None, "when": "2026-12-01 11:00", "commit": "bbb", "mutants": [],
                       "note": "resumed by hand"}
    out = tmp_path / "mutation.md"
    mutation.write_markdown(groups, ["lmbench.stats.x_f: a -> b"], out)
    text = out.read_text()
    assert "evaluation 60 s (2026-12-01 10:00, aaa)" in text
    assert "statistics and divergence not timed (2026-12-01 11:00, bbb; resumed by hand)" in text
    assert "Ran at an earlier commit than bbb, so without the tests added since (rerun with `--groups` to update): " \
           "evaluation." in text
    stale = text.split("## Stale equivalence entries")[1]
    assert "- `lmbench.stats.x_f: a -> b`" in stale and "samplers" not in stale


def test_logging_and_progress_bar_lines_are_not_mutated(mutation, tmp_path: Path) -> None:  # noqa: ANN001
    source = tmp_path / "m.py"
    source.write_text(
        "import logging\n"
        "log = logging.getLogger(__name__)\n"
        "def f(bar, x):\n"
        "    log.warning('%s is %d', 'x',\n"
        "                x + 1)\n"
        "    bar.set_postfix(loss=f'{x:.4f}')\n"
        "    y = x + 1\n"
        "    if y: log.info('y')\n"  # the line also computes: mutated
        "    return y\n"
        "def g(x):\n"
        "    y = x + 1\n"  # the same text as a computing line above
        "    return tqdm(total=x)\n")
    lines = mutation.display_lines([source])
    assert lines == ["    bar.set_postfix(loss=f'{x:.4f}')", "    log.warning('%s is %d', 'x',",
                     "    return tqdm(total=x)"]
    config = mutation.mutmut_config(["m.py"], ["tests"], lines)
    patterns = next(line for line in config.splitlines() if line.startswith("do_not_mutate_patterns"))
    import json
    import re

    compiled = [re.compile(p) for p in json.loads(patterns.partition(" = ")[2])]
    text = source.read_text().splitlines()
    assert [n for n, line in enumerate(text, 1) if any(p.search(line) for p in compiled)] == [4, 6, 12]


def test_a_run_of_every_group_is_summed(mutation, tmp_path: Path) -> None:  # noqa: ANN001
    groups = {g: {"seconds": 60.0, "when": "2026-12-01 18:00", "commit": "abc", "invocation": "2026-12-01 17:00:00",
                  "mutants": []} for g in mutation.GROUPS}
    out = tmp_path / "m.md"
    mutation.write_markdown(groups, [], out)
    assert f"Every group in one command (started 2026-12-01 17:00:00): {len(groups):.1f} minutes in all." \
        in out.read_text()
    groups["evaluation"]["invocation"] = "2026-12-01 16:00:00"  # one group rerun alone: no whole-run total
    mutation.write_markdown(groups, [], out)
    assert "Every group in one command" not in out.read_text()


def test_a_deleted_line_has_its_own_key(mutation) -> None:  # noqa: ANN001
    deleted = "--- a\n+++ b\n@@ -1,3 +1,2 @@\n         x=1,\n-        add_dummy_prefix=False,\n         y=2,\n"
    other = deleted.replace("add_dummy_prefix=False", "num_threads=4")
    assert mutation.change_key("m.x_f__mutmut_3", deleted) == "m.x_f: add_dummy_prefix=False, -> (removed)"
    assert mutation.change_key("m.x_f__mutmut_4", other) != mutation.change_key("m.x_f__mutmut_3", deleted)


def test_a_methods_logging_line_shown_dedented_is_a_message(mutation) -> None:  # noqa: ANN001
    """mutmut shows a method's body dedented to the method's level; the line is still found in the source."""
    line = '    log.info("%s: resumed from step %d (%s)", self.cell_name, p.step, self.run_dir)'
    assert ("        " + line.lstrip()) in (Path(mutation.REPO) / "lmbench/training/trainer.py").read_text()
    name = "lmbench.training.trainer.xǁTrainerǁ_resume__mutmut_40"
    category, _ = mutation.verdict("lmbench/training/trainer.py", name, diff(line, line.replace("p.step", "None")), {})
    assert category == "message"
