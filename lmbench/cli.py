"""Command line: `lmbench {run,show,data,sample,report,compare,slurm,export} ...` (also `python -m lmbench`).

Arguments are declared here; each command's work lives in the module that owns it, imported lazily so that
`lmbench show` and spec errors stay fast. A SpecError prints one line and exits with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from lmbench.allocator import keep_freed_memory
from lmbench.errors import SpecError

# command -> (module, function): the function takes the parsed arguments and returns an exit code.
HANDLERS: dict[str, tuple[str, str]] = {
    "run": ("lmbench.experiment.launch", "cmd_run"),
    "show": ("lmbench.show", "cmd_show"),
    "data": ("lmbench.show", "cmd_data"),
    "sample": ("lmbench.sample", "cmd_sample"),
    "report": ("lmbench.reporting.report", "cmd_report"),
    "slurm": ("lmbench.experiment.slurm", "cmd_slurm"),
    "export": ("lmbench.export", "cmd_export"),
    "compare": ("lmbench.reporting.report", "cmd_compare"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with lmbench's one-line errors: `lmbench: error: --jobs: invalid int value: 'x'`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lmbench: error: {message} (see `{self.prog} --help`)\n")


class _MainProcessOnly(logging.Filter):
    """Under `accelerate launch` only rank 0 reports (errors from every rank): a warning is said once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return int(os.environ.get("RANK", "0")) == 0 or record.levelno >= logging.ERROR


def configure_logging(verbosity: int) -> None:
    """lmbench's messages on stderr, configured once: INFO by default (resumes, early stops, embedding coverage),
    DEBUG with -v, warnings only with -q; other libraries' loggers are left alone. W&B's own console output
    stays quiet unless -v (WANDB_SILENT, if the user did not set it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lmbench: %(levelname)s: %(message)s"))
    handler.addFilter(_MainProcessOnly())
    logger = logging.getLogger("lmbench")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO)
    logger.propagate = False
    if verbosity <= 0:
        os.environ.setdefault("WANDB_SILENT", "true")


def _verbosity_args(p: argparse.ArgumentParser, default: object = 0) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="debug messages, and W&B's own output")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="warnings and errors only")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=1e-3")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmbench")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmbench", description="Train, evaluate, sample and compare small language models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _verbosity_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="train + evaluate + sample every cell of a spec or grid, then report")
    _spec_args(p)
    p.add_argument("--cell", help="run one cell only (name or index), as a cluster array task does")
    p.add_argument("--jobs", type=int, help="cells to run at once (default: one per GPU, or 1 without GPUs; "
                                            "CPU threads are divided between them)")
    p.add_argument("--devices", metavar="IDS", help="GPUs to give out, e.g. 0,1,2,3 (default: all visible); "
                                                    "each running cell gets its own")
    p.add_argument("--gpus-per-cell", type=int, metavar="K", help="GPUs per cell (default 1); a cell over K "
                                                                  "GPUs runs under accelerate launch --multi_gpu")
    p.add_argument("--results", help="results root (default: tracking.results_dir)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--runner", metavar="MODULE:FUNCTION",
                   help="a custom cell runner called as fn(spec, run_dir, *, cell_name, group, axes) -> summary "
                        "(default: lmbench's own training runner)")

    p = sub.add_parser("show", help="print the resolved spec, grid cells, data/tokenizer summary and model sizes")
    _spec_args(p)
    p.add_argument("--cell", help="print that cell's resolved spec only (name, index or id)")
    p.add_argument("--no-models", action="store_true", help="skip building models for parameter counts")

    p = sub.add_parser("data", help="prepare the token cache(s) of a spec or grid and print corpus and token "
                                    "statistics (e.g. on a login node, before compute nodes without network)")
    _spec_args(p)
    p.add_argument("--cell", help="prepare this grid cell's cache only (name, index or id); default: every cache")
    p.add_argument("--json", dest="json_out", help="also write the statistics to this JSON file")

    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("run_dir", nargs="?", help="a run directory (results/<spec>/<cell>)")
    p.add_argument("--prompt", action="append", help="prompt text (repeatable; default: the run's prompts)")
    p.add_argument("--sampler", action="append", nargs="+", metavar="KIND [key=value ...]",
                   help="sampler kind followed by its parameters, e.g. --sampler sample top_p=0.9; repeatable, "
                        "one sampler each (default: greedy)")
    p.add_argument("-n", "--num-samples", type=int, default=1, help="texts per prompt and sampler (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=50, help="(default 50)")
    p.add_argument("--seed", type=int, default=0, help="(default 0)")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default=None,
                   help="decoding precision (default: the run's sample.dtype; bf16 = autocast, faster, ids may differ)")

    p = sub.add_parser("report", help="aggregate a results folder into tables, plots and report.md/html")
    p.add_argument("results_dir", nargs="?", help="results/<spec name>")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="build the tables from W&B runs instead")
    p.add_argument("--out", help="output folder (default: the results folder)")

    p = sub.add_parser("export", help="write a trained run as a transformers model + tokenizer folder "
                                      "(AutoModelForCausalLM / AutoTokenizer), checked against the run")
    p.add_argument("run_dir", help="a run directory with a checkpoint (results/<spec>/<cell>)")
    p.add_argument("out_dir", help="folder to write (must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace out_dir if it holds files")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hub repository "
                                                         "(owner/name; needs `huggingface-cli login`)")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private (with --push-to-hub)")

    p = sub.add_parser("compare", help="one report over several results folders (e.g. before/after a change), "
                                       "cells labelled by folder")
    p.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR", help="results/<spec name> folders, two or more")
    p.add_argument("--out", help="output folder (default: results/compare/<A>_vs_<B>)")

    p = sub.add_parser("slurm", help="write an sbatch array script that runs every cell with accelerate")
    _spec_args(p)
    p.add_argument("--nodes", type=int, default=1, help="nodes per cell (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per node, one process each (default 1)")
    p.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    p.add_argument("--time", default="24:00:00", help="time limit per cell (default 24:00:00)")
    p.add_argument("--account", help="Slurm account to charge (default: yours)")
    p.add_argument("--max-concurrent", type=int, default=4, help="cells running at once, the array's %% limit "
                                                                 "(default 4)")
    p.add_argument("--port", type=int, default=29500, help="rendezvous port; cell i uses port + i (default 29500)")
    p.add_argument("--out", help="script path (default: results/<spec>/slurm.sbatch)")
    p.add_argument("--results", help="results root (default: tracking.results_dir)")
    p.add_argument("--cpus-per-task", type=int, help="CPUs per node task (data loading threads)")
    p.add_argument("--setup", action="append", default=[], metavar="SHELL_LINE",
                   help="a line the job runs first, e.g. 'source ~/venv/bin/activate' (repeatable)")
    for subparser in sub.choices.values():  # -v/-q also after the command (not resetting one given before it)
        _verbosity_args(subparser, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may also come after --flags (`lmbench run SPEC --cell 2 train.lr=1e-3`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbosity)
    keep_freed_memory()  # before any work: see lmbench.allocator
    module_name, function = HANDLERS[args.command]
    try:
        handler = getattr(importlib.import_module(module_name), function)
        return int(handler(args) or 0)
    except SpecError as exc:
        print(f"lmbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
