"""`lmbench sample RUN_DIR --prompt ... --sampler KIND key=value ... [--sampler ...] -n N --max-new-tokens T`.

Loads a finished (or checkpointed) run: its spec.yaml, tokenizer/ and checkpoint/model.safetensors (weights are
read only from safetensors), and prints the generated texts.

    lmbench sample results/tinystories/cell-0 --prompt "Once upon a time" --sampler top_p top_p=0.9 -n 10
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmbench.errors import SpecError, range_error
from lmbench.sampling.kinds import ALIASES, check_sampler
from lmbench.spec import ExperimentSpec, SampleSpec, SamplerSpec, typed_params



def parse_sampler(words: list[str], path: str = "--sampler") -> SamplerSpec:
    """``["top_p", "top_p=0.9", "temperature=0.8"]`` -> a checked SamplerSpec; SpecError names the bad field.

    Values are read as YAML scalars (``null``, ``true``, numbers); a bare ``KIND`` may be an alias such as
    ``top_p`` (multinomial sampling).
    """
    if not words:
        raise SpecError(path, "expected a sampler kind, e.g. --sampler sample top_p=0.9")
    kind, *pairs = words
    if "=" in kind:
        kind, pairs = "sample", list(words)
    params: dict[str, Any] = {"kind": ALIASES.get(kind, kind)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(path, f"{pair!r} is not of the form key=value")
        params[key] = _scalar(value)
    sampler = typed_params(SamplerSpec, params, path)
    check_sampler(path, sampler)
    return sampler


def _scalar(value: str) -> Any:
    """A YAML scalar: 0.9 -> float, 40 -> int, true -> bool, null -> None, anything else stays a string."""
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]  # type: ignore[index]
    except (OmegaConfBaseException, ValueError):
        return value


def samplers_from_args(args: argparse.Namespace) -> list[SamplerSpec]:
    """Each `--sampler KIND key=value ...` (repeatable; default greedy) as a checked SamplerSpec. A word
    without `=` after the kind is the run directory that argparse's `nargs="+"` took along
    (`--sampler sample top_p=0.9 RUN`): it goes back to `run_dir`."""
    groups = [list(g) for g in (args.sampler or [["greedy"]])]
    for group in groups:
        strays = [w for w in group[1:] if "=" not in w]
        for word in strays:
            if args.run_dir is not None:
                raise SpecError("--sampler", f"{word!r} is not of the form key=value (and the run directory is "
                                             f"already {args.run_dir!r})")
            args.run_dir = word
            group.remove(word)
    args.sampler = groups  # cleaned: a second call finds no strays
    if args.run_dir is None:
        raise SpecError("run_dir", "missing: lmbench sample RUN_DIR [--sampler KIND key=value ...]")
    return [parse_sampler(g, f"--sampler[{i}]" if len(groups) > 1 else "--sampler")
            for i, g in enumerate(groups)]


def check_counts(args: argparse.Namespace) -> None:
    if args.num_samples < 1:
        raise range_error("--num-samples", args.num_samples, ">= 1")
    if args.max_new_tokens < 1:
        raise range_error("--max-new-tokens", args.max_new_tokens, ">= 1")


def sample_spec_from_args(args: argparse.Namespace, spec: ExperimentSpec) -> SampleSpec:
    """The run's `sample` section with the command line's prompts, sampler, counts and seed."""
    check_counts(args)
    prompts = list(args.prompt) if args.prompt else list(spec.sample.prompts)
    return dataclasses.replace(spec.sample, prompts=prompts, num_samples=args.num_samples,
                               max_new_tokens=args.max_new_tokens, seed=args.seed,
                               samplers=samplers_from_args(args), dtype=args.dtype or spec.sample.dtype)


def cmd_sample(args: argparse.Namespace) -> int:
    """Print every generated text of the run at `args.run_dir`; returns the exit code."""
    from lmbench.sampling.search import prompt_start_id, sample_texts

    samplers = samplers_from_args(args)  # fail on a bad sampler or count before loading anything
    check_counts(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from lmbench.training.checkpoint import load_run

    model, tokenizer, spec = load_run(Path(args.run_dir), device)
    sample_spec = sample_spec_from_args(args, spec)
    rows = sample_texts(model, tokenizer, sample_spec, device, start_id=prompt_start_id(spec.data, tokenizer))
    for row in rows:
        eos = " <eos>" if row["ended_with_eos"] else ""
        print(f"=== {row['sampler']} | prompt {row['prompt']!r} | sample {row['index']} | "
              f"{row['num_new_tokens']} new tokens{eos} | {row['tokens_per_s']:.0f} tokens/s")
        print(row["text"])
    print(f"# {', '.join(s.kind for s in samplers)}: {len(rows)} texts", flush=True)
    return 0
