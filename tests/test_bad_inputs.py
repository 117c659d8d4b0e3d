"""Bad input, refused up front: every case exits 2 with one line on stderr that names the field or the file, no
traceback, and nothing written under the results folder. A case is a command line built in a workspace that
holds a good spec (GOOD), a grid spec, a tiny corpus, a latin-1 file, a binary file and an empty file.

`scripts/bench/reliability.py` runs the same table in real processes and counts the outcomes.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmbench.cli import main

GOOD = """\
name: good
data: {{source: text, path: {corpus}, unit: line, block_size: 16, val_fraction: 0.2, cache_dir: {cache}}}
tokenizer: {{kind: char}}
model: {{family: lstm, params: {{d_hidden: 8, num_layers: 1}}}}
train: {{max_steps: 1, batch_size: 4}}
eval: {{batch_size: 4}}
sample: {{prompts: ["the"], max_new_tokens: 4}}
tracking: {{backends: [none]}}
"""


MINIMAL = """\
name: minimal
data: {source: text, path: {corpus}, unit: line, block_size: 16, cache_dir: {cache}}
train: {max_steps: 1, batch_size: 4}
tracking: {backends: [none]}
"""


@dataclass(frozen=True)
class Case:
    """`argv` with {spec}, {grid}, {results}, {corpus}, {latin1}, {binary}, {empty}, {tmp} filled in; `spec`
    replaces GOOD's text (same placeholders) when given; `needle`: what the error line must name."""

    id: str
    argv: tuple[str, ...]
    needle: str
    spec: str | None = None


def c(id: str, needle: str, *overrides: str, argv: tuple[str, ...] | None = None, spec: str | None = None) -> Case:
    return Case(id, argv or ("run", "{spec}", *overrides, "--results", "{results}"), needle, spec)


CASES = [
    # the spec file itself
    c("missing spec file", "not found", argv=("run", "{tmp}/nope.yaml", "--results", "{results}")),
    c("spec is a list", "mapping", spec="- a\n- b\n"),
    c("yaml syntax", "cannot parse", spec="name: [unclosed\n"),
    c("duplicate yaml key", "duplicate key", spec="name: a\nname: b\n"),
    c("include cycle", "include cycle", spec="defaults: [spec.yaml]\nname: x\n"),
    c("override without =", "key=value", "train.lr"),
    c("empty part in dotted key", "empty part", "train..lr=1"),
    c("unknown section", "did you mean 'train'", "trian.lr=1"),
    c("unknown field", "did you mean 'family'", "model.famly=lstm"),
    c("unreadable override value", "cannot parse the overrides", "train.betas=[0.9"),
    # names that become folders
    c("name escapes results", "name", "name=../../outside_x"),
    c("absolute name", "name", "name=/tmp/outside_x"),
    c("empty name", "name", "name="),
    c("name with a space", "name", "name=a b"),
    c("name starting with a dot", "name", "name=.hidden"),
    c("bad W&B project", "tracking.project", "tracking.project=team/proj"),
    c("bad W&B group", "tracking.group", "tracking.group=a:b"),
    # registries and closed choices
    c("model family", "model.family", "model.family=lstn"),
    c("tokenizer kind", "tokenizer.kind", "tokenizer.kind=wrod"),
    c("data source", "data.source", "data.source=txt"),
    c("batching", "data.batching", "data.batching=pakced"),
    c("split mode", "data.split", "data.split=head"),
    c("text unit", "data.unit", "data.unit=lines"),
    c("optimizer", "train.optimizer", "train.optimizer=sgd"),
    c("schedule", "train.schedule", "train.schedule=cosin"),
    c("mixed precision", "train.mixed_precision", "train.mixed_precision=bf32"),
    c("tracking backend", "tracking.backends[0]", "tracking.backends=[wandbb]"),
    c("wandb mode", "tracking.wandb_mode", "tracking.wandb_mode=sometimes"),
    c("eval split name", "eval.splits[0]", "eval.splits=[valid]"),
    # numbers
    c("negative lr", "train.lr", "train.lr=-1"),
    c("nan lr", "train.lr", "train.lr=nan"),
    c("infinite lr", "train.lr", "train.lr=.inf"),
    c("lr not a number", "train.lr", "train.lr=abc"),
    c("negative seed", "seed", "seed=-1"),
    c("zero batch", "train.batch_size", "train.batch_size=0"),
    c("batch not divisible by accumulation", "train.batch_size", "train.grad_accum_steps=3"),
    c("no budget", "budget", "train.max_steps=null"),
    c("decaying schedule without steps", "train.schedule", "train.max_steps=null", "train.max_seconds=10",
      "train.schedule=cosine"),
    c("val fraction above 1", "data.val_fraction", "data.val_fraction=1.5"),
    c("fractions summing to 1", "data.val_fraction", "data.val_fraction=0.6", "data.test_fraction=0.5"),
    c("zero subsample", "data.subsample", "data.subsample=0"),
    c("zero block", "data.block_size", "data.block_size=0"),
    c("zero tokenization workers", "data.num_workers", "data.num_workers=0"),
    c("max_chars below min_chars", "data.max_chars", "data.max_chars=1", "data.min_chars=5"),
    c("one beta", "train.betas", "train.betas=[0.9]"),
    c("min lr ratio above 1", "train.min_lr_ratio", "train.min_lr_ratio=2"),
    c("nan grad clip", "train.grad_clip", "train.grad_clip=nan"),
    c("divergence factor of 1", "train.divergence_factor", "train.divergence_factor=1"),
    c("stop on divergence below 1", "train.stop_on_divergence", "train.stop_on_divergence=0.5"),
    c("zero new tokens", "sample.max_new_tokens", "sample.max_new_tokens=0"),
    # samplers
    c("sampler kind", "sample.samplers[0].kind", "sample.samplers=[{kind: nucleus}]"),
    c("typo inside a sampler", "did you mean 'top_p'", "sample.samplers=[{kind: sample, topp: 0.9}]"),
    c("zero temperature", "sample.samplers[0].temperature", "sample.samplers=[{kind: sample, temperature: 0}]"),
    c("nan temperature", "sample.samplers[0].temperature", "sample.samplers=[{kind: sample, temperature: .nan}]"),
    c("one beam to sample", "sample.samplers[0].num_beams", "sample.samplers=[{kind: beam_sample, num_beams: 1}]"),
    c("beams for greedy", "sample.samplers[0].num_beams", "sample.samplers=[{kind: greedy, num_beams: 3}]"),
    c("no prompts", "sample.prompts", "sample.prompts=[]"),
    c("missing reference run", "sample.reference_run", "sample.reference_run={tmp}/nowhere"),
    c("decoding precision", "sample.dtype", "sample.dtype=fp16"),
    # family and kind parameters
    c("unknown model param", "model.params.d_hiden", "model.params.d_hiden=4"),
    c("model param type", "model.params.num_layers", "model.params.num_layers=many"),
    c("dropout out of range", "model.params.dropout", "model.params.dropout=1.5"),
    c("unknown tokenizer param", "tokenizer.params.vocab", "tokenizer.params.vocab=10"),
    c("glove with chars", "model.params.embeddings", "model.params.embeddings=glove"),
    c("block longer than the transformer", "data.block_size", spec=MINIMAL + "model: {family: transformer, params: "
      "{num_layers: 1, num_heads: 2, d_model: 8, block_size: 8}}\n"),
    c("pretrained hf with a char tokenizer", "tokenizer.kind",
      spec=MINIMAL + "model: {family: hf, params: {name_or_path: gpt2}}\n"),
    # data files
    c("missing data file", "data.path", "data.path={tmp}/nope.txt"),
    c("glob matching nothing", "data.path", "data.path={tmp}/*.nothing"),
    c("split alias in files", "data.files.valid", "data.path=null", "data.files={train: {corpus}, valid: {corpus}}"),
    c("binary file", "data.encoding", "data.path={binary}"),
    c("latin-1 file read as utf-8", "data.encoding", "data.path={latin1}"),
    c("unknown encoding", "data.encoding", "data.encoding=klingon"),
    c("json without the text field", "data.text_field", "data.source=json", "data.path={table}",
      "data.text_field=summry"),
    # data that only the data can refuse (checked before any cell folder exists)
    c("empty corpus", "empty", "data.path={empty}"),
    c("subsample leaving nothing", "empty", "data.subsample=0.0001"),
    c("min_chars leaving nothing", "min_chars", "data.min_chars=100000"),
    c("no split to evaluate", "eval.splits", "eval.splits=[test]"),
    c("block longer than the validation split", "data.block_size", "data.block_size=2000",
      "train.batch_size=1", "data.val_fraction=0.01"),
    c("batch larger than the data", "train.batch_size", "train.batch_size=100000"),
    # grids
    c("sampler as a grid axis", "cannot be a grid axis", spec="{good}grid: {axes: {sample.max_new_tokens: [1, 2]}}\n"),
    c("grid axis typo", "did you mean 'family'", spec="{good}grid: {axes: {model.famly: [rnn]}}\n"),
    c("exclude everything", "grid.exclude", spec="{good}grid: {axes: {seed: [0]}, exclude: [{seed: 0}]}\n"),
    c("unknown preset", "preset", spec="{good}grid: {presets: {a: {x: {seed: 1}}}, include: [{a: y}]}\n"),
    c("name in a grid escapes", "name", "name=../x", spec="{good}grid: {axes: {seed: [0, 1]}}\n"),
    # the command line
    c("cell index out of range", "--cell", argv=("run", "{grid}", "--cell", "99", "--results", "{results}")),
    c("no such cell", "--cell", argv=("run", "{grid}", "--cell", "nosuch", "--results", "{results}")),
    c("zero jobs", "--jobs", argv=("run", "{spec}", "--jobs", "0", "--results", "{results}")),
    c("negative jobs", "--jobs", argv=("run", "{spec}", "--jobs", "-3", "--results", "{results}")),
    c("jobs with one cell", "--jobs", argv=("run", "{grid}", "--jobs", "2", "--cell", "0", "--results", "{results}")),
    c("jobs not a number", "--jobs", argv=("run", "{spec}", "--jobs", "x", "--results", "{results}")),
    c("results is a file", "--results", argv=("run", "{spec}", "--results", "{corpus}")),
    c("runner not importable", "--runner", argv=("run", "{spec}", "--runner", "nowhere:run", "--results", "{results}")),
    c("unknown flag", "--bogus", argv=("run", "{spec}", "--bogus", "--results", "{results}")),
    c("report of an empty folder", "holds no cell folders", argv=("report", "{empty_folder}")),
    c("report of a missing folder", "results_dir", argv=("report", "{tmp}/nowhere")),
    c("report of a bad W&B path", "--wandb", argv=("report", "--wandb", "just-a-name")),
    c("sample without a checkpoint", "run_dir", argv=("sample", "{tmp}")),
    c("sample with an unknown sampler", "--sampler.kind", argv=("sample", "{tmp}", "--sampler", "beem")),
    c("sample with zero samples", "--num-samples", argv=("sample", "{tmp}", "-n", "0")),
    c("slurm with no nodes", "--nodes", argv=("slurm", "{grid}", "--nodes", "0", "--out", "{results}/x.sbatch")),
    c("show with a bad family", "model.family", argv=("show", "{spec}", "model.family=lstn")),
    c("data with a missing file", "data.path", argv=("data", "{spec}", "data.path={tmp}/nope.txt")),
]


def make_workspace(tmp: Path) -> dict[str, str]:
    """The files the cases point at, and the placeholders that name them."""
    corpus = tmp / "corpus.txt"
    corpus.write_text("".join(f"the cat sat on mat number {i} and then ran off\n" for i in range(120)))
    (tmp / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 40)
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (tmp / "empty.txt").write_text("")
    (tmp / "empty-folder").mkdir()
    (tmp / "table.json").write_text(json.dumps([{"summary": "we propose a model", "title": "t"}] * 20))
    paths = {"tmp": str(tmp), "corpus": str(corpus), "latin1": str(tmp / "latin1.txt"),
             "binary": str(tmp / "binary.txt"), "empty": str(tmp / "empty.txt"), "table": str(tmp / "table.json"),
             "empty_folder": str(tmp / "empty-folder"), "cache": str(tmp / "cache")}
    good = GOOD.format(**paths)
    (tmp / "grid.yaml").write_text(good + "grid: {axes: {seed: [0, 1]}}\n")
    return {**paths, "good": good, "grid": str(tmp / "grid.yaml")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_workspace(tmp_path_factory.mktemp("bad-inputs"))


def materialise(case: Case, ws: dict[str, str], where: Path) -> list[str]:
    """The command line of `case` in a fresh folder `where` (its spec, its results folder)."""
    where.mkdir(parents=True, exist_ok=True)
    values = {**ws, "results": str(where / "results"), "spec": str(where / "spec.yaml")}
    text = ws["good"] if case.spec is None else fill(textwrap.dedent(case.spec), values)
    (where / "spec.yaml").write_text(text)
    return [fill(arg, values) for arg in case.argv]


def fill(text: str, values: dict[str, str]) -> str:
    """Replace {name} placeholders (and only those: YAML flow mappings keep their braces)."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_up_front(case: Case, workspace: dict[str, str], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = materialise(case, workspace, tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lmbench: error: "), err
    assert case.needle in lines[0], lines[0]
    results = tmp_path / "results"
    written = sorted(str(p.relative_to(results)) for p in results.rglob("*")) if results.is_dir() else []
    assert written == [], f"wrote under the results folder: {written}"


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)
