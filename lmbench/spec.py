"""Experiment specs: typed dataclasses loaded from YAML with OmegaConf, plus torch-free range and choice checks.

A spec names what to train and how to measure it. Names that pick an implementation (data.source,
tokenizer.kind, model.family, sample.samplers[].kind, train.optimizer, train.schedule) are checked against their
registries, and family-, kind- and source-specific parameters against the owner's `Config`, by
`lmbench.validate`; the closed sets of choices below are `Literal` fields that OmegaConf checks on load.

    spec = load_spec("experiments/quickstart.yaml", ["train.lr=1e-3", "model.family=gru"])
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from lmbench.errors import SpecError, choice_error, did_you_mean, range_error


@dataclass(frozen=True)
class DataSpec:
    """Where documents come from, how they are split and how they are batched."""

    source: str = "builtin"  # a SOURCES name: builtin | text | json | jsonl | csv | parquet | hf | prompt_story
    path: str | None = None  # file, glob, or Hugging Face dataset id (source: hf)
    name: str | None = None  # Hugging Face dataset config name
    files: dict[str, str] = field(default_factory=dict)  # explicit split files {train, validation, test}
    text_field: str = "text"  # json/jsonl/csv/parquet/hf: column holding the text
    prompt_field: str | None = None  # prompt_story from one table: column holding the prompt
    prompt_path: str | None = None  # prompt_story from two files: line i is the prompt of story i in `path`
    unit: str = "line"  # text source: one document per file | line | separator (checked by the text source)
    separator: str = "<|endoftext|>"  # text source with unit: separator
    encoding: str = "utf-8"  # text files (text source, two-file prompt_story), e.g. latin-1
    replace: dict[str, str] = field(default_factory=dict)  # literal replacements, e.g. {"<newline>": "\n"}
    lowercase: bool = False
    limit: int | None = None  # keep the first N documents (before splitting)
    subsample: float = 1.0  # keep this seeded fraction of documents
    min_chars: int = 1  # drop shorter documents
    max_chars: int | None = None  # drop longer documents
    split: Literal["documents", "tail"] = "documents"  # seeded fraction of documents | last fraction of the text
    val_fraction: float = 0.1  # used when the source has no validation split of its own
    test_fraction: float = 0.0
    split_seed: int = 42
    streaming: bool = False  # hf: stream instead of downloading the whole split
    # The tokenizer learns from a seeded sample of the train split of about this many MB (None: all of it);
    # smaller splits are used whole. meta.json records the sample. (sentencepiece's training peaks at about 4 bytes
    # of memory per byte of sample: about 400 MB at the default.)
    tokenizer_sample_mb: float | None = 100.0
    num_workers: int | None = None  # tokenization processes (char/word; bpe/hf use their library's threads); None = all cores
    batching: Literal["packed", "documents"] = "packed"  # contiguous block_size windows | BOS + doc + EOS, padded
    block_size: int = 128  # training window (packed) or maximum document length (documents), in tokens
    bucket_by_length: bool = False  # documents: batch documents of similar length together
    cache_dir: str = "results/cache"  # token cache root, shared by all runs with the same fingerprint


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str = "char"  # a TOKENIZERS name: char | word | bpe | hf
    params: dict[str, Any] = field(default_factory=dict)  # checked against the kind's Config


@dataclass(frozen=True)
class ModelSpec:
    family: str = MISSING  # a MODELS name: rnn | lstm | gru | transformer | hf
    params: dict[str, Any] = field(default_factory=dict)  # checked against the family's Config


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str = "adamw"  # an OPTIMIZERS name: adamw | adam
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW only; never applied to biases, norms or embeddings
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "constant"  # a SCHEDULES name: constant | warmup_constant | cosine | linear | inverse_sqrt
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine/linear decay floor as a fraction of lr
    batch_size: int = 16  # global batch in sequences: per process x processes x grad_accum_steps
    grad_accum_steps: int = 1
    grad_clip: float | None = 1.0
    max_steps: int | None = None  # budgets: whichever is reached first ends training
    epochs: float | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where the device runs it fast
    compile: bool = False
    eval_every: int | None = None  # steps between validation passes (and at the end)
    checkpoint_every: int | None = None  # steps between checkpoints (and at the end)
    early_stopping_patience: int | None = None  # validation passes without improvement before stopping
    # A finished run is flagged `diverged` (listed apart, never ranked) when its final validation loss is not
    # below the untrained one (or ln(vocabulary) without eval.untrained), its last logged training loss is more
    # than 5% above its first, or above divergence_factor x its lowest.
    divergence_factor: float = 3.0
    stop_on_divergence: float | None = None  # stop when a logged training loss passes this x its lowest so far
    log_every: int = 10
    num_threads: int | None = None  # torch intra-op threads; None keeps torch's default


@dataclass(frozen=True)
class EvalSpec:
    splits: list[Literal["train", "validation", "test"]] = field(
        default_factory=lambda: ["validation", "test"])  # those that exist are evaluated
    batch_size: int = 16
    stride: int | None = None  # sliding-window stride for long documents; None = block_size // 2
    untrained: bool = False  # also evaluate the freshly initialised model (untrained vs trained table)


@dataclass(frozen=True)
class SamplerSpec:
    """One decoding strategy; the fields follow transformers' GenerationConfig names."""

    kind: str = "greedy"  # a SAMPLERS name: greedy | sample | beam | beam_sample
    name: str | None = None  # label in tables; defaults to a name built from kind and parameters
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = True
    num_return_sequences: int = 1


@dataclass(frozen=True)
class SampleSpec:
    prompts: list[str] = field(default_factory=lambda: ["Once upon a time"])
    num_samples: int = 1  # samples per prompt and sampler
    max_new_tokens: int = 50
    seed: int = 0
    samplers: list[SamplerSpec] = field(default_factory=lambda: [SamplerSpec()])
    reference_run: str | None = None  # run directory whose model scores every sample (coherence proxy)
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # decoding precision; auto: the run's (its autocast, if any)


@dataclass(frozen=True)
class TrackingSpec:
    backends: list[Literal["wandb", "tensorboard", "none"]] = field(default_factory=lambda: ["wandb"])
    project: str | None = None  # defaults to the spec name
    group: str | None = None  # defaults to the grid name
    wandb_mode: Literal["auto", "offline", "online", "disabled"] = "auto"  # auto: offline without an API key
    results_dir: str = "results"


@dataclass(frozen=True)
class ExperimentSpec:
    name: str = MISSING
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    sample: SampleSpec = field(default_factory=SampleSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    grid: Any = None  # axes that turn this spec into many cells (lmbench.experiment.grid)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Load one YAML file, merging the files listed in its `defaults:` (paths relative to it) underneath it."""
    path = path.resolve()
    if path in seen:
        raise SpecError("defaults", f"include cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    if not path.is_file():
        raise SpecError("", f"spec file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: report, don't trace
        raise SpecError("", f"cannot parse {path}: {_one_line(exc)}") from None
    if not isinstance(cfg, DictConfig):
        raise SpecError("", f"{path} must hold a mapping at the top level")
    bases = cfg.pop("defaults", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / str(base), (*seen, path)))
    return OmegaConf.merge(merged, cfg)


def _one_line(exc: Exception) -> str:
    """A YAML error in one line: what is wrong and where (`found duplicate key lr (line 4, column 3)`)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        context_mark = getattr(exc, "context_mark", None)
        first = f"; first at line {context_mark.line + 1}" if context_mark is not None and "duplicate" in problem else ""
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1}{first})"
    return " ".join(str(exc).split())


def raw_spec(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The spec file with its defaults and the command-line `key=value` overrides merged, not yet typed."""
    cfg = _read_yaml(Path(path))
    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" not in override:
            raise SpecError("", f"override {override!r} is not of the form key=value")
        if not key or any(not part for part in key.split(".")):
            raise SpecError(key or override, f"override {override!r} has an empty part in its dotted key")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # a value the YAML parser cannot read, e.g. an unclosed [
        raise SpecError("", f"cannot parse the overrides {list(overrides)}: {_one_line(exc)}") from None


def to_spec(cfg: DictConfig | dict[str, Any]) -> ExperimentSpec:
    """Type `cfg` against ExperimentSpec and check ranges and choices; SpecError names the first bad field."""
    try:
        cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg.copy()
        if OmegaConf.select(cfg, "train.mixed_precision") is False:  # YAML reads a bare `no` as false
            OmegaConf.update(cfg, "train.mixed_precision", "no")
        _check_samplers(cfg)
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentSpec), cfg)
        spec = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _translate(exc) from None
    assert isinstance(spec, ExperimentSpec)
    check_spec(spec)
    return spec


def _check_samplers(cfg: DictConfig) -> None:
    """Type each sampler on its own first: OmegaConf loses the path of a bad key inside a list of dataclasses."""
    samplers = OmegaConf.select(cfg, "sample.samplers", default=None)
    if isinstance(samplers, ListConfig):
        for i, sampler in enumerate(samplers):
            if isinstance(sampler, DictConfig):
                typed_params(SamplerSpec, OmegaConf.to_container(sampler), f"sample.samplers[{i}]")


def typed_params(config_cls: type, params: dict[str, Any], path: str) -> Any:
    """Check a `params` dict against a family's/kind's Config dataclass and return the typed Config.

    Unknown keys, wrong types and missing required values become a SpecError under `path` (e.g. ``model.params``).
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config_cls), params)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        err = _translate(exc)
        leaf = err.path.split(".")[-1] if err.path else ""
        known = sorted(OmegaConf.structured(config_cls).keys())
        if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
            return_msg = f"unknown key {leaf!r}{did_you_mean(leaf, known)}; known fields: {', '.join(known)}"
            raise SpecError(f"{path}.{leaf}", return_msg) from None
        literal = _literal_choices(exc)
        full = f"{path}.{err.path}" if err.path else path
        if literal is not None:  # name the field with its full path in the message too
            raise choice_error(full, *literal) from None
        raise SpecError(full, err.message) from None


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Load, merge and type-check a spec file (torch-free). The `grid:` block is kept, not expanded."""
    return to_spec(raw_spec(path, overrides))


def spec_to_yaml(spec: ExperimentSpec) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(spec))


def spec_to_dict(spec: ExperimentSpec) -> dict[str, Any]:
    container = OmegaConf.to_container(OmegaConf.structured(spec), resolve=True)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]


_LITERAL_ERROR = re.compile(r"Invalid value '(.*)', expected one of (\[.*\])$")


def _literal_choices(exc: OmegaConfBaseException) -> tuple[str, list[str]] | None:
    """(bad value, allowed values) when `exc` is OmegaConf refusing a value of a Literal field."""
    match = _LITERAL_ERROR.match(str(exc).splitlines()[0]) if isinstance(exc, ValidationError) else None
    return (match.group(1), list(ast.literal_eval(match.group(2)))) if match else None


def _translate(exc: OmegaConfBaseException) -> SpecError:
    """Turn OmegaConf's exceptions into one readable SpecError naming the field."""
    key = str(getattr(exc, "full_key", "") or "")
    if isinstance(exc, MissingMandatoryValue):
        return SpecError(key, "required field is missing")
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        parent, _, leaf = key.rpartition(".")
        known = _known_fields(parent)
        choices = f"; known fields: {', '.join(known)}" if known else ""
        return SpecError(key, f"unknown key {leaf!r}{did_you_mean(leaf, known)}{choices}")
    literal = _literal_choices(exc)
    if literal is not None:  # a Literal field: name the allowed values as a registry does
        return choice_error(key, *literal)
    if isinstance(exc, (ValidationError, ConfigTypeError)):
        return SpecError(key, f"wrong type: {str(exc).splitlines()[0]}")
    return SpecError(key, str(exc).splitlines()[0])


def _known_fields(dotted_parent: str) -> list[str]:
    """The fields of the spec section at `dotted_parent` (`sample.samplers[0]` is a SamplerSpec)."""
    cls: Any = ExperimentSpec
    for part in [p for p in dotted_parent.split(".") if p]:
        name, indexed = re.sub(r"\[\d+\]$", "", part), part.endswith("]")
        hint = typing.get_type_hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
        if indexed and typing.get_origin(hint) is list:
            hint = typing.get_args(hint)[0]
        if not dataclasses.is_dataclass(hint):
            return []
        cls = hint
    return sorted(f.name for f in dataclasses.fields(cls))


def _positive(path: str, value: float | None, allow_none: bool = True, allow_zero: bool = False) -> None:
    if value is None:
        if not allow_none:
            raise SpecError(path, "required field is missing")
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise range_error(path, value, ">= 0" if allow_zero else "> 0 (and finite)")


def _fraction(path: str, value: float, allowed: str, low: float, high: float, *, open_low: bool = False,
              open_high: bool = False) -> None:
    """`value` in the interval [low, high] (open ends as given); NaN and inf are out of range."""
    if not math.isfinite(value) or value < low or value > high or (open_low and value == low) or \
            (open_high and value == high):
        raise range_error(path, value, allowed)


# A name that becomes a folder (spec name, cell name): one path component, no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=,@~-]{0,127}")


def check_name(path: str, value: str) -> None:
    """`value` is used as one folder name under the results folder: refuse anything that could leave it."""
    if not SAFE_NAME.fullmatch(value):
        raise SpecError(path, f"{value!r} cannot be a folder name under the results folder: use letters, digits "
                              "and . _ - + = , @ ~ (not first: . - + = , @ ~), at most 128 characters, no / or ..")


def check_batch_split(train: TrainSpec, num_processes: int) -> None:
    """`train.batch_size` is the global batch: it must split evenly over processes x accumulation steps."""
    if train.batch_size % (num_processes * train.grad_accum_steps):
        raise SpecError("train.batch_size", f"{train.batch_size} is not divisible by processes x grad_accum_steps "
                                            f"({num_processes} x {train.grad_accum_steps})")


def check_spec(spec: ExperimentSpec) -> None:
    """Choices and ranges that need no registry, no torch and no data."""
    if not spec.name.strip():
        raise SpecError("name", "must not be empty")
    check_name("name", spec.name)
    seeds = (("seed", spec.seed), ("data.split_seed", spec.data.split_seed), ("sample.seed", spec.sample.seed))
    for path, seed in seeds:
        if not 0 <= seed < 2**32:
            raise range_error(path, seed, "in [0, 2**32)")
    d, t, e = spec.data, spec.train, spec.eval
    for path, value in (("data.val_fraction", d.val_fraction), ("data.test_fraction", d.test_fraction)):
        _fraction(path, value, "in [0, 1)", 0.0, 1.0, open_high=True)
    if d.val_fraction + d.test_fraction >= 1:
        raise range_error("data.val_fraction", d.val_fraction, "val_fraction + test_fraction < 1")
    _fraction("data.subsample", d.subsample, "in (0, 1]", 0.0, 1.0, open_low=True)
    _positive("data.limit", d.limit)
    _positive("data.min_chars", d.min_chars, allow_zero=True)
    _positive("data.max_chars", d.max_chars)
    _positive("data.block_size", d.block_size, allow_none=False)
    if d.max_chars is not None and d.max_chars < d.min_chars:
        raise range_error("data.max_chars", d.max_chars, f">= data.min_chars ({d.min_chars})")
    _positive("train.lr", t.lr, allow_none=False)
    _positive("train.weight_decay", t.weight_decay, allow_zero=True)
    if len(t.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in t.betas):
        raise range_error("train.betas", list(t.betas), "two numbers in [0, 1)")
    _positive("train.warmup_steps", t.warmup_steps, allow_zero=True)
    _fraction("train.min_lr_ratio", t.min_lr_ratio, "in [0, 1]", 0.0, 1.0)
    for name in ("batch_size", "grad_accum_steps", "log_every"):
        _positive(f"train.{name}", getattr(t, name), allow_none=False)
    for name in ("grad_clip", "max_steps", "epochs", "max_tokens", "max_seconds", "eval_every",
                 "checkpoint_every", "early_stopping_patience", "num_threads"):
        _positive(f"train.{name}", getattr(t, name))
    for name in ("divergence_factor", "stop_on_divergence"):
        value = getattr(t, name)
        if value is not None and not (math.isfinite(value) and value > 1):
            raise range_error(f"train.{name}", value, "> 1 (a multiple of the lowest training loss)")
    if all(getattr(t, b) is None for b in ("max_steps", "epochs", "max_tokens", "max_seconds")):
        raise SpecError("train", "no budget: set at least one of max_steps, epochs, max_tokens, max_seconds")
    check_batch_split(t, 1)
    _positive("data.num_workers", spec.data.num_workers)
    _positive("data.tokenizer_sample_mb", spec.data.tokenizer_sample_mb)
    _positive("eval.batch_size", e.batch_size, allow_none=False)
    _positive("eval.stride", e.stride)
    _positive("sample.num_samples", spec.sample.num_samples, allow_none=False)
    _positive("sample.max_new_tokens", spec.sample.max_new_tokens, allow_none=False)
    if spec.sample.samplers and not spec.sample.prompts:
        raise SpecError("sample.prompts", "is empty: give at least one prompt, or set sample.samplers: [] to "
                                          "sample nothing")
    for path, name in (("tracking.project", spec.tracking.project), ("tracking.group", spec.tracking.group)):
        if name is not None and (not name.strip() or len(name) > 128 or any(c in name for c in '/\\#?%:')):
            raise SpecError(path, f"{name!r} is not a valid W&B {path.split('.')[1]} name: 1-128 characters, "
                                  "none of / \\ # ? % :")
