"""Mutation testing of lmbench's numeric core with mutmut: do the tests fail when a number goes wrong?

mutmut (https://github.com/boxed/mutmut, `pip install -e '.[mutation]'`) rewrites one expression at a time in the
listed modules (an operator, a comparison, a constant, an argument, a string) and runs the tests that reach the
mutated function; a mutant is *killed* when a test fails (or times out), *survived* when every test passes.

Each group below is run apart, in its own copy of the checkout under a temporary folder (never in the working
tree), with only its mirrored test files selected (`tests/<package>/test_<module>.py`), so a module is judged by the
tests written for it. mutmut runs in its fork-server mode (torch is not fork-safe after use) on every core.

Survivors are then sorted:
- **equivalent**: listed in `scripts/bench/mutation_equivalent.toml` with a one-line reason (the program computes
  the same thing; e.g. `<` -> `<=` at a boundary where both branches agree). An entry is keyed by the function and
  the change (`module.x_function: old -> new`, as mutation.md prints it), so it survives renumbering; `old -> *`
  names every change of a line (one that only restates what its input already is); an entry that matches no
  surviving mutant any more is reported as stale, not silently used.
- **message**: a change to nothing but the text of an exception's message (the exception, and a SpecError's
  field, unchanged), or (in runs from before such lines were skipped) inside a logging call. These change what is
  written, not a number; they are counted apart and left out of the score.
- **platform**: the same here but not everywhere: a `device=` argument dropped (the CPU either way on a CPU-only
  run; the gpu-marked tests run this code on CUDA), a text encoding changed between "utf-8", "UTF-8" and the
  locale's default (UTF-8 here), or a line in the [platform] table of the same file (pinned memory, non-blocking
  copies: switches that only CUDA reads). Counted apart, listed.
- **survived**: everything else; the score is killed / (killed + survived + not reached by a test).

Statements that are nothing but a logging or progress-bar call (`log.warning(...)`, `bar.set_postfix(...)`,
`return tqdm(...)`) are not mutated at all (mutmut's `do_not_mutate_patterns`, made by `display_lines`): every
such mutant survived, and each made mutmut run all the tests of its function (a minute for a trainer method).

    python scripts/bench/mutation.py                       # every group, writes results/bench/mutation.md (~1 h)
    python scripts/bench/mutation.py --groups samplers     # one group; merges into the existing results JSON
    python scripts/bench/mutation.py --report-only         # the .md again from results/bench/mutation.json
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "bench"
EQUIVALENT_FILE = Path(__file__).with_name("mutation_equivalent.toml")

# group -> (modules to mutate, mirrored test files that judge them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "evaluation": (["lmbench/training/evaluate.py"], ["tests/training/test_evaluate.py"]),
    "training loop": (["lmbench/training/trainer.py", "lmbench/training/schedules.py", "lmbench/training/optim.py"],
                      ["tests/training/test_trainer.py", "tests/training/test_schedules.py",
                       "tests/training/test_optim.py"]),
    "checkpoints and resume": (["lmbench/training/checkpoint.py", "lmbench/training/runner.py"],
                               ["tests/training/test_checkpoint.py", "tests/training/test_runner.py"]),
    "data plan and batching": (["lmbench/training/plan.py", "lmbench/data/batching.py"],
                               ["tests/training/test_plan.py", "tests/data/test_batching.py"]),
    "samplers": (["lmbench/sampling/filters.py", "lmbench/sampling/kinds.py", "lmbench/sampling/search.py",
                  "lmbench/sampling/metrics.py"],
                 ["tests/sampling/test_kinds.py", "tests/sampling/test_filters.py", "tests/sampling/test_search.py",
                  "tests/sampling/test_metrics.py"]),
    "tokenizers": (["lmbench/tokenizers/base.py", "lmbench/tokenizers/char.py", "lmbench/tokenizers/word.py",
                    "lmbench/tokenizers/bpe.py", "lmbench/tokenizers/hf.py"], ["tests/tokenizers"]),
    "statistics and divergence": (["lmbench/stats.py", "lmbench/training/divergence.py"],
                                  ["tests/test_stats.py", "tests/training/test_divergence.py"]),
}
GOAL = {"evaluation": 0.95, "samplers": 0.95}  # others: 0.90 (issue #19)
KILLED = {1, 3, 24, -24, 152, 255, 36, 37}  # test failure, pytest internal error, timeouts, type check
SURVIVED = {0}
MESSAGE_CALLS = re.compile(r"(^|\.)(warn|warning|info|debug|error|exception|critical|log)$")


@dataclass
class Mutant:
    name: str
    module: str
    exit_code: int | None
    diff: str = ""
    category: str = ""  # killed | survived | equivalent | message | no tests | other
    reason: str = ""


def mutmut_config(modules: list[str], tests: list[str], skip_lines: list[str] = ()) -> str:
    return "\n".join([
        "[tool.mutmut]",
        'source_paths = ["lmbench"]',
        'also_copy = ["scripts"]',  # tests import scripts/bench helpers (e.g. generation.py)
        f"only_mutate = {json.dumps(modules)}",
        # logging and progress-bar calls (see display_lines): mutmut leaves every expression starting on them alone
        f"do_not_mutate_patterns = {json.dumps(['^' + re.escape(line) + '$' for line in skip_lines])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        # no:unraisableexception: pytest's end-of-session gc.collect() x5 took 0.6 of every mutant's 0.65 s of
        # pytest overhead (a heap with torch in it); mutation testing needs no unraisable-exception report
        # -m "not slow": the SIGKILL-a-subprocess resume tests (15 s each, run by every surviving trainer mutant)
        # stay in the suite; the in-process resume tests judge the same code here
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:unraisableexception", "-q", "-x", "-m", '
        '"not slow"]',
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        "",
    ])


# Appended to the copy's tests/conftest.py: a mutant's tests run fastest first (mutmut passes them as an unordered
# set and stops at the first failure, so a mutant that a 0.1 s test kills no longer waits for a 20 s one first).
FASTEST_FIRST = '''

_skip_gpu_tests = pytest_collection_modifyitems  # the suite's own hook, still run first


def pytest_collection_modifyitems(config, items):  # added by scripts/bench/mutation.py
    import json

    _skip_gpu_tests(config, items)
    try:  # mutmut's timings of every test, from its first run (the cwd is mutants/)
        with open("mutmut-stats.json") as f:
            durations = json.load(f)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
'''


def prepare_copy(work: Path, modules: list[str], tests: list[str]) -> None:
    """A copy of the checkout's package, tests and pyproject.toml whose [tool.mutmut] selects this group."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "lmbench", work / "lmbench", ignore=ignore)
    shutil.copytree(REPO / "tests", work / "tests", ignore=ignore)
    shutil.copytree(REPO / "scripts", work / "scripts", ignore=ignore)
    with (work / "tests" / "conftest.py").open("a") as f:
        f.write(FASTEST_FIRST)
    text = (REPO / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\]\n.*?(?=\n\[|\Z)", "\n", text, flags=re.S)
    skip = display_lines([REPO / m for m in modules])
    (work / "pyproject.toml").write_text(text.rstrip() + "\n\n" + mutmut_config(modules, tests, skip))


def run_group(work: Path, max_children: int, data: Path) -> tuple[float, str | None]:
    """(seconds, None) or (seconds, what went wrong): a group that fails is reported, the others still run."""
    env = {**os.environ, "LMBENCH_DATA": str(data), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
                          cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and "⠋" not in ln
                 and not re.match(r"^\W+ (Running|Generating)", ln)]
        return time.perf_counter() - start, f"mutmut exit {proc.returncode}: " + " | ".join(lines[-5:])
    return time.perf_counter() - start, None


def read_mutants(work: Path, modules: list[str]) -> list[Mutant]:
    found = []
    for module in modules:
        meta = work / "mutants" / (module + ".meta")
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found += [Mutant(name, module, code) for name, code in codes.items()]
    return found


def show(work: Path, name: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True, text=True)
    return proc.stdout.strip()


def message_spans(path: Path) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Line spans of `raise ...` statements, and of logging/warning calls, in a source file."""
    raises, logs = [], []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise):
            raises.append((node.lineno, node.end_lineno or node.lineno))
        elif isinstance(node, ast.Call):
            if _is_display_call(ast.unparse(node.func)):
                logs.append((node.lineno, node.end_lineno or node.lineno))
    return raises, logs


def _is_display_call(func: str) -> bool:
    """A call that only writes to the log or a progress bar (its arguments are what is shown)."""
    return bool((MESSAGE_CALLS.search(func) and func.startswith(("log.", "logger.", "logging.", "warnings.")))
                or func in ("tqdm", "bar", "bar.update", "progress.update")
                or func.endswith((".set_postfix", ".set_description")))


def display_lines(paths: list[Path]) -> list[str]:
    """Source lines (exact text) that begin a statement which is nothing but a logging or progress-bar call
    (`log.warning(...)`, `bar.set_postfix(...)`, `return tqdm(...)`), in any of `paths`. mutmut is told not to
    mutate these: such a mutant changes what is shown, never a number, yet it survives every test and makes mutmut
    run all of a function's tests. A text is kept only when every line with that text, in every module, is such a
    start line, so no computing line that merely reads the same is skipped."""
    starts: set[str] = set()
    other: set[str] = set()
    for path in paths:
        source = path.read_text()
        lines = source.splitlines()
        here: set[int] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Expr, ast.Return)) and isinstance(node.value, ast.Call) \
                    and _is_display_call(ast.unparse(node.value.func)):
                line = lines[node.lineno - 1]
                if node.col_offset == len(line) - len(line.lstrip()):  # the statement opens its line
                    here.add(node.lineno)
        for number, text in enumerate(lines, start=1):
            (starts if number in here else other).add(text)
    return sorted(starts - other)


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    body = [line for line in diff.splitlines() if not line.startswith(("+++", "---", "@@"))]
    return [line[1:] for line in body if line.startswith("-")], [line[1:] for line in body if line.startswith("+")]


def strings_only(old: list[str], new: list[str]) -> bool:
    """True when the mutant changed nothing but the text inside string literals."""
    strip = re.compile(r"(?P<q>['\"]).*?(?P=q)")
    return len(old) == len(new) and all(strip.sub("''", a) == strip.sub("''", b) for a, b in zip(old, new))


def in_message(source: str, old: list[str], spans: list[tuple[int, int]]) -> bool:
    lines = source.splitlines()
    for text in old:
        # mutmut shows a method's lines dedented to the method's level: compare without the indentation
        numbers = [i + 1 for i, line in enumerate(lines) if line.strip() == text.strip()]
        if not numbers or not all(any(a <= n <= b for a, b in spans) for n in numbers):
            return False
    return True


def change_key(name: str, diff: str) -> str:
    """`module.x_function: old -> new` (several changed lines joined by "; "): how equivalents are named."""
    old, new = changed_lines(diff)
    new = new or ["(removed)"] * len(old)  # a deleted line (a dropped keyword argument on its own line)
    change = "; ".join(f"{a.strip()} -> {b.strip()}" for a, b in zip(old, new))
    return f"{re.sub(r'__mutmut_[0-9]+$', '', name)}: {change}"


DEVICE_ARG = re.compile(r",?\s*device=[\w.]+")
ENCODING_ARG = re.compile(r",?\s*encoding=(\"utf-8\"|\"UTF-8\"|None)")


# keyword arguments that only restate a default: (keyword=value, calls whose default it is)
DEFAULT_KWARGS = {"dim=-1": ("topk(", "sort("), "descending=False": ("sort(",),
                  "ignore_index=IGNORE_INDEX": ("cross_entropy(",), 'side="left"': ("searchsorted(",)}


def default_removed(old: str, new: str) -> str:
    """The `keyword=value` that `new` drops from `old` when it restates the called function's default, else ""."""
    for kwarg, calls in DEFAULT_KWARGS.items():
        for variant in (f", {kwarg}", f"{kwarg}, ", kwarg):  # mutmut leaves "f(a, )" where it drops the last one
            if variant in old and any(c in old for c in calls) \
                    and old.replace(variant, "", 1).replace(", )", ")") == new.replace(", )", ")"):
                return kwarg
    return ""


def same_without(argument: re.Pattern[str], old: list[str], new: list[str]) -> bool:
    """True when each changed line is the same once `argument` is removed from it (mutmut leaves "f(a, )" where it
    drops the last argument)."""
    return all(argument.sub("", a).replace(", )", ")") == argument.sub("", b).replace(", )", ")")
               for a, b in zip(old, new))


@functools.cache
def module_source(module: str) -> tuple[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """(source, message_spans) of a module of the checkout, read and parsed once per run."""
    return (REPO / module).read_text(), message_spans(REPO / module)


def listed(key: str, table: dict[str, str]) -> str | None:
    """The reason `table` gives for the change `key`: its own entry, or `module.x_fn: old -> *` (any change of that
    line)."""
    if key in table:
        return table[key]
    head, sep, _ = key.rpartition(" -> ")
    return table.get(f"{head} -> *") if sep and "; " not in key else None


def verdict(module: str, name: str, diff: str, equivalent: dict[str, str],
            platform: dict[str, str] | None = None) -> tuple[str, str]:
    """(category, reason) of a surviving mutant; see the module docstring for the categories."""
    source, spans = module_source(module)
    old, new = changed_lines(diff)
    key = change_key(name, diff)
    if (reason := listed(key, equivalent)) is not None:
        return "equivalent", reason
    if (reason := listed(key, platform or {})) is not None:
        return "platform", reason
    if in_message(source, old, spans[1]):
        return "message", "inside a logging or progress-bar call: changes only what is shown"
    if strings_only(old, new) and in_message(source, old, spans[0]):
        return "message", "text of an exception's message only"
    if old and len(old) == len(new):
        if same_without(DEVICE_ARG, old, new):
            return "platform", "where a tensor is created (device=): the CPU either way on this CPU-only run"
        if same_without(ENCODING_ARG, old, new):
            return "platform", "the text encoding: UTF-8 either way (a UTF-8 locale; 'UTF-8' names the same codec)"
        removed = [default_removed(a, b) for a, b in zip(old, new)]
        if all(removed):
            return "equivalent", f"passes the argument's default value ({', '.join(removed)})"
        if module.startswith("lmbench/sampling/") and all(
                re.sub(r"(dim=|size\(|scatter_?\()\+1\b", r"\g<1>-1", b) == a for a, b in zip(old, new)):
            return "equivalent", "the sampling tensors are (rows, vocabulary): dimension +1 is dimension -1"
    return "survived", ""


def classify(work: Path, mutants: list[Mutant], equivalent: dict[str, str], platform: dict[str, str]) -> None:
    for m in mutants:
        if m.exit_code in KILLED:
            m.category = "killed"
        elif m.exit_code in SURVIVED:
            m.diff = show(work, m.name)
            m.category, m.reason = verdict(m.module, m.name, m.diff, equivalent, platform)
        elif m.exit_code in (5, 33):
            m.category = "no tests"
        else:
            m.category = "other"


def compact(record: dict) -> dict:
    """A mutant as stored: killed ones without their (empty) diff and reason."""
    return {k: v for k, v in record.items() if v != "" or k not in ("diff", "reason")}


def load_equivalent() -> tuple[dict[str, str], dict[str, str]]:
    """(equivalent, platform): the file's top-level entries, and those of its [platform] table (changes that do
    nothing on this CPU-only machine but would on CUDA, e.g. pinned memory)."""
    if not EQUIVALENT_FILE.exists():
        return {}, {}
    table = tomllib.loads(EQUIVALENT_FILE.read_text())
    platform = table.pop("platform", {})
    return {str(k): str(v) for k, v in table.items()}, {str(k): str(v) for k, v in platform.items()}


def summarise(groups: dict[str, dict]) -> dict[str, dict]:
    rows = {}
    for group, info in groups.items():
        if info.get("failure"):
            continue
        for module in GROUPS[group][0]:
            ms = [m for m in info["mutants"] if m["module"] == module]
            count = {c: sum(m["category"] == c for m in ms) for c in
                     ("killed", "survived", "equivalent", "message", "platform", "no tests", "other")}
            judged = count["killed"] + count["survived"] + count["no tests"]
            rows[module] = {"group": group, "total": len(ms), **count,
                            "score": count["killed"] / judged if judged else 1.0}
    return rows


def _seconds(info: dict) -> str:
    return "not timed" if info.get("seconds") is None else f"{info['seconds']:.0f} s"


def write_markdown(groups: dict[str, dict], stale: list[str], path: Path) -> None:
    rows = summarise(groups)
    lines = ["# Mutation testing of the numeric core", "",
             "Command: `python scripts/bench/mutation.py` (mutmut; every group, one after another; the wall time "
             "of each group's run on this 2-core machine is listed below the table). "
             "Each module is judged by its mirrored test files only. Score = killed / (killed + survived + not "
             "reached by a test); equivalent mutants (listed below with a reason, from "
             "`scripts/bench/mutation_equivalent.toml`) and mutants that change only the text of an error, log or "
             "warning message are counted apart and left out.", "",
             "| group | module | mutants | killed | survived | not reached | equivalent | message only | CPU/UTF-8 only | score | goal |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for module, r in rows.items():
        goal = GOAL.get(r["group"], 0.90)
        mark = "met" if r["score"] >= goal else "**not met**"
        lines.append(f"| {r['group']} | `{module}` | {r['total']} | {r['killed']} | {r['survived']} | "
                     f"{r['no tests']} | {r['equivalent']} | {r['message']} | {r['platform']} | {r['score']:.1%} | "
                     f"{goal:.0%} {mark} |")
    lines += ["", "Group runs (the code and tests of the commit named): " + ", ".join(
        f"{g} {_seconds(info)} ({info['when']}, {info.get('commit', 'unknown')}{'; ' + info['note'] if info.get('note') else ''})"
        for g, info in groups.items()), ""]
    runs: dict[str, list[str]] = {}
    for g, info in groups.items():
        if info.get("invocation") and info.get("seconds") is not None:
            runs.setdefault(info["invocation"], []).append(g)
    for started, names in runs.items():
        if len(names) == len(GROUPS):
            total = sum(groups[g]["seconds"] for g in names)
            lines += [f"Every group in one command (started {started}): {total / 60:.1f} minutes in all.", ""]
    newest = max(groups.values(), key=lambda info: info["when"]).get("commit") if groups else None
    behind = [g for g, info in groups.items() if info.get("commit") != newest]
    if behind:
        lines += [f"Ran at an earlier commit than {newest}, so without the tests added since (rerun with "
                  f"`--groups` to update): " + ", ".join(behind) + ".", ""]
    missing = [g for g in GROUPS if g not in groups]
    if missing:
        lines += ["Not run yet: " + ", ".join(missing) + ".", ""]
    failed = {g: info["failure"] for g, info in groups.items() if info.get("failure")}
    if failed:
        lines += ["## Groups that did not run", "", *[f"- {g}: {why}" for g, why in failed.items()], ""]
    for title, category in (("Surviving mutants", "survived"), ("Not reached by the module's tests", "no tests"),
                            ("Equivalent mutants", "equivalent"),
                            ("The same on this platform only (CPU, UTF-8 locale)", "platform")):
        chosen = [m for info in groups.values() for m in info["mutants"] if m["category"] == category]
        lines += [f"## {title} ({len(chosen)})", ""]
        if not chosen:
            lines += ["None.", ""]
        for m in chosen:
            key = change_key(m["name"], m["diff"]) if m.get("diff") else m["name"]
            lines.append(f"- `{key}`" + (f" -- {m['reason']}" if m.get("reason") else ""))
        lines.append("")
    if stale:
        lines += ["## Stale equivalence entries", "", *[f"- `{name}`" for name in stale], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", nargs="*", choices=sorted(GROUPS), default=sorted(GROUPS))
    p.add_argument("--work", type=Path, default=None, help="copies for mutmut (default: a temporary folder)")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("LMBENCH_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=RESULTS / "mutation.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the stored .json, run nothing")
    args = p.parse_args()
    store = args.out.with_suffix(".json")
    groups = json.loads(store.read_text()) if store.exists() else {}
    groups = {g: v for g, v in groups.items() if g in GROUPS}
    equivalent, platform = load_equivalent()
    root = args.work or Path(tempfile.mkdtemp(prefix="lmbench-mutation-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    invocation = time.strftime("%Y-%m-%d %H:%M:%S")  # groups run by one command share it (the report sums them)
    for group in [] if args.report_only else args.groups:
        modules, tests = GROUPS[group]
        work = root / re.sub(r"\W+", "_", group)
        prepare_copy(work, modules, tests)
        print(f"{group}: mutating {', '.join(modules)} against {', '.join(tests)}", flush=True)
        seconds, failure = run_group(work, args.max_children, args.data.resolve())
        if failure:
            print(f"  {group}: {failure}", flush=True)
            groups[group] = {"seconds": seconds, "when": time.strftime("%Y-%m-%d %H:%M"), "commit": commit,
                             "invocation": invocation, "mutants": [], "failure": failure}
            store.write_text(json.dumps(groups))
            continue
        mutants = read_mutants(work, modules)
        classify(work, mutants, equivalent, platform)
        groups[group] = {"seconds": seconds, "when": time.strftime("%Y-%m-%d %H:%M"), "commit": commit,
                         "invocation": invocation, "mutants": [compact(m.__dict__) for m in mutants]}
        counts = {c: sum(m.category == c for m in mutants) for c in ("killed", "survived", "equivalent", "message")}
        print(f"  {len(mutants)} mutants in {seconds:.0f} s: {counts}", flush=True)
        store.write_text(json.dumps(groups))
    for info in groups.values():  # rules and equivalents changed since a group ran apply without rerunning it
        for m in info["mutants"]:
            if m["category"] in ("survived", "equivalent", "message", "platform"):
                m["category"], m["reason"] = verdict(m["module"], m["name"], m["diff"], equivalent, platform)
    keys = {change_key(m["name"], m["diff"]) for info in groups.values() for m in info["mutants"] if m.get("diff")}
    lines = {k.rpartition(" -> ")[0] + " -> *" for k in keys}  # what the `old -> *` entries match
    stale = sorted(k for k in [*equivalent, *platform] if k not in keys and k not in lines
                   and any(k.startswith(mod.removesuffix(".py").replace("/", ".") + ".")
                           for g in groups for mod in GROUPS[g][0]))
    write_markdown(groups, stale, args.out)
    print(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
