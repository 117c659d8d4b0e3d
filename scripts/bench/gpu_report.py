"""gpu.md and gpu.json from what the GPU suite's sections left in the work folder (scripts/bench/gpu_suite.sh calls
this last). Sections that failed, timed out or were skipped are listed with the tail of their log; every figure
that was measured is in a table; the issue's goals are marked met / missed / not measured.

    python scripts/bench/gpu_report.py --work /tmp/lmbench-gpu-work --out OUT --command "bash scripts/bench/..."
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_json  # noqa: E402

TARGET_MFU, TARGET_CE, TARGET_GEN = 0.40, 1.5, 2.0


# ------------------------------------------------------------------------------------------ inputs
def read_status(path: Path) -> list[dict[str, Any]]:
    """status.tsv rows written by gpu_suite.sh: name, rc, seconds, cap, log file."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split("\t")
        if len(parts) >= 5:
            rows.append({"name": parts[0], "rc": parts[1], "seconds": parts[2], "cap": parts[3], "log": parts[4]})
    return rows


def verdict(rc: str) -> str:
    return {"0": "ok", "124": "TIMED OUT", "137": "KILLED", "skipped": "SKIPPED"}.get(rc, f"FAILED (exit {rc})")


def tail(path: Path, section: str, lines: int = 25) -> str:
    """The last lines `section` wrote to its log (gpu_suite.sh opens each section's part with `=== name:`)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    starts = [i for i, ln in enumerate(text) if ln.startswith(f"=== {section}:")]
    if starts:
        ends = [i for i, ln in enumerate(text) if ln.startswith("=== ") and i > starts[-1]]
        text = text[starts[-1]:ends[0] if ends else len(text)]
    text = [ln for ln in text if ln.strip() and "it/s]" not in ln and "step/s" not in ln]  # drop progress bars
    return "\n".join(text[-lines:])


def pytest_counts(log: Path) -> dict[str, Any]:
    """pytest's closing line, or (a run killed before it) the per-test PASSED/FAILED/... words of -v output."""
    text = log.read_text(errors="replace") if log.exists() else ""
    counted = re.compile(r"\d+ (passed|failed|skipped|error|deselected)")
    closing = [ln.strip("= \n") for ln in text.splitlines() if counted.search(ln) and " in " in ln]
    counts: dict[str, Any] = {}
    if closing:
        counts["closing_line"] = closing[-1]
        for num, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", closing[-1]):
            counts[word.rstrip("s") if word.startswith("error") else word] = int(num)
    else:
        for word in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            counts[word.lower()] = len(re.findall(rf"\b{word}\b", text))
        counts["closing_line"] = "(none: the run was cut off; counted from per-test lines)"
    counts["failures"] = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)))[:30]
    return counts


# ------------------------------------------------------------------------------------------ tables
def fmt(x: Any, spec: str = ",.0f", scale: float = 1.0) -> str:
    return "–" if x is None else format(x * scale, spec)


def peaks_lines(peaks: dict[str, Any] | None) -> list[str]:
    if not peaks:
        return ["(not measured)"]
    p = peaks["peaks"]
    return ["| bf16 matmul | fp32 matmul (TF32 off) | TF32 matmul | device copy (read + write) | matmul size |",
            "|---:|---:|---:|---:|---:|",
            f"| {fmt(p.get('bf16_flops'), '.1f', 1e-12)} TFLOP/s | {fmt(p.get('fp32_flops'), '.2f', 1e-12)} TFLOP/s | "
            f"{fmt(p.get('tf32_flops'), '.1f', 1e-12)} TFLOP/s | {fmt(p.get('copy_bytes_per_s'), ',.0f', 1e-9)} GB/s | "
            f"{p.get('matmul_n')}^3 |"]


def train_lines(train: dict[str, Any] | None) -> list[str]:
    if not train or not train.get("rows"):
        return ["(no measurement)"] + [f"- {n}" for n in (train or {}).get("notes", [])]
    lines = ["| model | params | shape (L / d / heads / block) | side | compile | batch | tokens/s | ms/step | "
             "MFU (bf16 peak) | peak memory | warm-up s |", "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in train["rows"]:
        s = r.get("shape", {})
        mem = "–" if r.get("peak_memory_gb") is None else \
            f"{r['peak_memory_gb']:.1f} GB ({100 * r['memory_share']:.0f}%)"
        lines.append(f"| {r['model']} | {r['num_params'] / 1e6:.2f}M | {s.get('num_layers')} / {s.get('d_model')} / "
                     f"{s.get('num_heads')} / {s.get('block_size')} | {r['side']} | "
                     f"{'yes' if r['compile'] else 'no'} | "
                     f"{r['batch']} | {r['tokens_per_s']:,.0f} | {1000 * r['s_per_step']:.1f} | "
                     f"{100 * r['mfu']:.1f}% | {mem} | {r['warmup_s']:.1f} |")
    chosen = ", ".join(f"{c['model']}: {c['batch']}" for c in train.get("chosen", []))
    lines += ["", f"Batch chosen by the eager search (doubling while tokens/s grew > 5% and memory < 60%): {chosen}.",
              "MFU = flops_per_token x tokens/s / the bf16 matmul peak above; flops_per_token = 6 x (non-embedding "
              "parameters + output projection) + 12 x layers x d_model x block "
              "(lmbench's TransformerLM.flops_per_token)."]
    lines += [f"- {n.get('item', n.get('model'))}: {n['note']}" for n in train.get("notes", [])]
    return lines


def lstm_lines(lstm: dict[str, Any] | None) -> list[str]:
    if not lstm or not lstm.get("rows"):
        return ["(no measurement)"]
    lines = ["| precision | side | tokens/s (best round) | median | ms/step |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['precision']} | {r['side']} | {r['tokens_per_s']:,.0f} | {r['median_tokens_per_s']:,.0f} | "
              f"{1000 * r['s_per_step']:.2f} |" for r in lstm["rows"]]
    lines += ["", "| comparison | speed-up |", "|---|---:|"]
    lines += [f"| {s['comparison']} | {s['speedup']:.2f}x |" for s in lstm.get("speedups", [])]
    notes = [f"- {n['item']}: {n['note']}" for n in lstm.get("notes", [])]
    return lines + ([""] + notes if notes else [])


def generation_table(report: dict[str, Any], shape: dict[str, Any]) -> list[str]:
    """generation.py's own table for one shape; a plain one when that module cannot be imported here."""
    try:
        import generation

        return generation.table({**report, "results": shape["results"], "verdicts": shape.get("verdicts", [])})
    except Exception:  # the figures matter more than the layout
        return ["| strategy | batch | impl | tokens/s |", "|---|---:|---|---:|",
                *(f"| {r['strategy']} | {r['batch']} | {r['impl']} | {r['tokens_per_s']:,.1f} |"
                  for r in shape["results"])]


def agreement(g: dict[str, Any]) -> str:
    if g["equal"]:
        return "equal"
    return f"differ from token {g['first_mismatch']} (logit gap there {g.get('logit_gap_at_mismatch', math.nan):.2e})"


def generation_lines(gens: dict[str, dict[str, Any] | None]) -> list[str]:
    lines: list[str] = []
    for dtype, report in gens.items():
        if not report:
            lines += [f"**{dtype}**: (no measurement)", ""]
            continue
        a = report["args"]
        for shape in report["shapes"]:
            lines += [f"**{dtype}**, {shape['name']} — {shape['num_layers']} layers, d_model {shape['d_model']}, "
                      f"vocab {a['vocab_size']} ({shape['num_params'] / 1e6:.1f}M parameters), prompt {a['prompt_len']}, "
                      f"{a['new_tokens']} new tokens, best of {a['repeats']}, device {report['env'].get('device')}:",
                      "", *generation_table(report, shape), "",
                      f"Short-run ids equal (lmbench, transformers; 12 tokens, batch 2): {shape['same_outputs']}; "
                      "greedy over the whole length: " + ", ".join(
                          f"batch {g['batch']}: " + agreement(g) for g in shape.get("greedy_full_length", [])), ""]
    return lines


def recipe_lines(recipe: dict[str, Any] | None) -> list[str]:
    if not recipe or "summary" not in recipe:
        return ["(no measurement)" + (f": {recipe.get('error')}" if recipe else "")]
    s, m, e = recipe["summary"], recipe.get("memory", {}), recipe.get("extrapolation", {})
    mem = m.get("max_memory_allocated_gb")
    lines = ["| figure | value |", "|---|---|",
             f"| status / stop reason | {s.get('status')} / {s.get('stop_reason')} |",
             f"| model / mixed precision | {fmt(s.get('num_params'), '.2f', 1e-6)}M parameters / "
             f"{s.get('mixed_precision')} |",
             f"| CE on tinystories_val.txt, final weights (nats/token) | {fmt(s.get('val_loss'), '.4f')} "
             f"(ppl {fmt(s.get('val_ppl'), '.1f')}, {fmt(s.get('val_bpb'), '.4f')} bits/byte) |",
             f"| best CE of the periodic evaluations | {fmt(s.get('best_val_loss'), '.4f')} at step "
             f"{s.get('best_step')} |",
             f"| steps / tokens / epochs | {s.get('steps')} / {fmt(s.get('tokens'))} / {fmt(s.get('epochs'), '.1f')} |",
             f"| training time / wall time (evaluations included) | {fmt(s.get('train_s'), '.1f')} s / "
             f"{fmt(s.get('wall_s'), '.1f')} s |",
             f"| training tokens/s (whole run) | {fmt(s.get('train_tokens_per_s'))} |",
             "| peak device memory (allocated / reserved) | "
             + (f"{mem:.2f} GB / {m.get('max_memory_reserved_gb', 0):.2f} GB |" if mem is not None
                else f"– (CPU: peak RSS {fmt(m.get('peak_rss_gb'), '.2f')} GB) |")]
    lines += ["", "Validation curve (tinystories_val.txt, every evaluation):", "",
              "| wall s | step | tokens | CE (nats/token) | bits/byte | |", "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {fmt(p['wall_s'], '.1f')} | {p['step']} | {fmt(p['tokens'])} | {fmt(p['val_loss'], '.4f')} | "
              f"{fmt(p['val_bpb'], '.4f')} | {'final weights' if p.get('final') else ''} |"
              for p in recipe.get("curve", [])]
    if "val_loss_at" in e and not e.get("rising_after_best"):
        lines += ["", f"Extrapolation (rough: no loss floor): a power law CE = a * t^b fitted to the last "
                      f"{e['points_fitted']} evaluations up to the best gives b = {e['exponent']:.3f} and CE "
                      f"{e['val_loss_at']:.3f} at {e['at_s']:.0f} s"
                  + (f"; CE {TARGET_CE} would need ~{e['seconds_to_target']:.3g} s" if "seconds_to_target" in e else "")
                  + "."]
    elif e.get("rising_after_best"):
        lines += ["", "Extrapolation: none; the CE rose after its best evaluation (the model overfits the ~350k-token "
                      "training sample), so a longer run would not lower it."]
    elif e:
        lines += ["", f"Extrapolation: {e.get('note')}"]
    lines += ["", f"Command: `{' '.join(recipe.get('command', []))}`"]
    return lines


# ------------------------------------------------------------------------------------------ goals
def goals(train: dict | None, recipe: dict | None, gens: dict[str, dict | None]) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) rows."""
    out = []
    rows = [r for r in (train or {}).get("rows", []) if r["model"] == "tinystories-30M" and r["side"] == "lmbench"
            and r["compile"]]
    if rows:
        mfu = max(r["mfu"] for r in rows)
        out.append((f"<=30M TinyStories transformer >= {TARGET_MFU:.0%} MFU, bf16 + compile",
                    f"{mfu:.1%} ({rows[0]['num_params'] / 1e6:.1f}M params, batch {rows[0]['batch']})",
                    "met" if mfu >= TARGET_MFU else "missed"))
    else:
        out.append((f"<=30M TinyStories transformer >= {TARGET_MFU:.0%} MFU, bf16 + compile", "–", "not measured"))
    s = (recipe or {}).get("summary")
    if s and s.get("best_val_loss") is not None:
        best = min(x for x in (s.get("best_val_loss"), s.get("val_loss")) if x is not None)
        first = recipe.get("first_at_target")
        e = recipe.get("extrapolation", {})
        measured = f"best CE {best:.3f} in a {fmt(s.get('wall_s'), '.0f')} s run"
        if first is not None:
            measured += f"; CE {first['val_loss']:.3f} reached at {first['wall_s']:.0f} s"
        elif e.get("rising_after_best"):
            measured += "; CE rose after its best (overfitting the sample): no extrapolation"
        elif "val_loss_at" in e:
            measured += f"; power-law extrapolation {e['val_loss_at']:.3f} at 900 s"
        met = first is not None and (first.get("wall_s") or 1e9) <= 900
        extrapolated = first is None and "val_loss_at" in e and not e.get("rising_after_best")
        out.append((f"recipe CE <= {TARGET_CE} on tinystories_val.txt within 15 min", measured,
                    "met" if met else "missed" + (" (extrapolated)" if extrapolated else "")))
    else:
        out.append((f"recipe CE <= {TARGET_CE} on tinystories_val.txt within 15 min", "–", "not measured"))
    for dtype, report in gens.items():
        if not report:
            out.append((f"generation >= {TARGET_GEN:.0f}x transformers' generate ({dtype})", "–", "not measured"))
            continue
        by = {(sh["name"], r["strategy"], r["batch"], r["impl"]): r["tokens_per_s"] for sh in report["shapes"]
              for r in sh["results"]}
        ratios = {f"{n} {s} b{b}": by[(n, s, b, "lmbench")] / by[(n, s, b, "transformers")] for n, s, b, i in by
                  if i == "lmbench" and (n, s, b, "transformers") in by}
        if ratios:
            worst = min(ratios, key=ratios.get)
            out.append((f"generation >= {TARGET_GEN:.0f}x transformers' generate, batch 1 and 16 ({dtype})",
                        ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
                        "met" if ratios[worst] >= TARGET_GEN else f"missed (worst {worst} {ratios[worst]:.2f}x)"))
    fp32 = gens.get("fp32")
    checks = [(sh["name"], g) for sh in fp32["shapes"] for g in sh.get("greedy_full_length", [])] if fp32 else []
    if checks:
        equal = all(g["equal"] for _, g in checks) and all(sh["same_outputs"].get("greedy", False)
                                                           for sh in fp32["shapes"])
        out.append(("greedy ids equal to transformers' in fp32",
                    ", ".join(f"{name} batch {g['batch']}: {'equal' if g['equal'] else 'differ'}"
                              for name, g in checks), "met" if equal else "missed"))
    else:
        out.append(("greedy ids equal to transformers' in fp32", "–", "not measured"))
    return out


# ------------------------------------------------------------------------------------------ report
def build(args: argparse.Namespace) -> tuple[str, dict[str, Any], list[str]]:
    w = args.work
    peaks, train, lstm, recipe = (read_json(w / f) for f in ("peaks.json", "train.json", "lstm.json", "recipe.json"))
    gens = {"bf16": read_json(w / "gen-bf16.json"), "fp32": read_json(w / "gen-fp32.json")}
    status = read_status(w / "status.tsv")
    env = (peaks or {}).get("env") or (read_json(w / "env.json") or {})
    v = env.get("versions", {})
    pytest = pytest_counts(args.out / "pytest.log")
    goal_rows = goals(train, recipe, gens)
    lines = ["# lmbench GPU suite" + (" (smoke run on the CPU, toy sizes)" if args.smoke else ""), "",
             f"Command: `{args.command}`", "",
             f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; suite wall time {args.wall_s:.0f} s.", "",
             f"GPU: {env.get('gpu', 'none (CPU)')} ({env.get('gpu_count', 0)} visible, "
             f"{fmt(env.get('gpu_memory_gb'), '.0f')} GB, compute capability {env.get('capability', '–')}); "
             f"nvidia-smi: {env.get('nvidia_smi', '–')}.",
             f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn', '–')}), transformers "
             f"{v.get('transformers')}, accelerate {v.get('accelerate')}, tokenizers {v.get('tokenizers')}, "
             f"sentencepiece {v.get('sentencepiece')}, numpy {v.get('numpy')}, Python {env.get('python')}, "
             f"{env.get('cpu_count')} CPUs.", "",
             "## Sections", "", "| section | result | seconds (cap) | log |", "|---|---|---:|---|"]
    lines += [f"| {s['name']} | {verdict(s['rc'])} | {s['seconds']} ({s['cap']}) | {s['log']} |" for s in status]
    lines += ["", "## Goals", "", "| goal | measured | verdict |", "|---|---|---|"]
    lines += [f"| {g} | {m} | **{x}** |" for g, m, x in goal_rows]
    lines += ["", "## Peaks (measured in this run)", "", *peaks_lines(peaks),
              "", "## Tests: `python -m pytest -m gpu`", "",
              f"{pytest.get('closing_line')}"
              + (f"; failures: {', '.join(pytest['failures'])}" if pytest.get("failures") else ""),
              "", "## Training throughput (lmbench's Trainer.train_step, bf16)", "", *train_lines(train),
              "", "## LSTM 2x200, WikiText-2 (lmbench vs the pytorch/examples loop)", "", *lstm_lines(lstm),
              "", "## Generation vs transformers' `generate`", "", *generation_lines(gens),
              "## TinyStories local recipe", "", *recipe_lines(recipe), ""]
    bad = [s for s in status if s["rc"] != "0"]
    if bad:
        lines += ["## Sections that did not finish", ""]
        for s in bad:
            lines += [f"### {s['name']}: {verdict(s['rc'])}", "", "```", tail(args.out / s["log"], s["name"]), "```",
                      ""]
    data = {"command": args.command, "smoke": args.smoke, "wall_s": args.wall_s, "env": env, "sections": status,
            "goals": [{"goal": g, "measured": m, "verdict": x} for g, m, x in goal_rows], "pytest": pytest,
            "peaks": peaks, "train": train, "lstm": lstm, "generation": gens, "recipe": recipe}
    summary = [f"{'section':<24} {'result':<18} seconds", *(f"{s['name']:<24} {verdict(s['rc']):<18} {s['seconds']}"
                                                           for s in status), "",
               *(f"{x:<28} {g}: {m}" for g, m, x in goal_rows),
               # not pytest's own closing-line format: CI reads that line of .ci/run's own test runs
               "gpu tests (pytest.log): " + ", ".join(f"{k}={pytest[k]}" for k in ("passed", "failed", "skipped",
                                                                                   "error") if k in pytest)]
    return "\n".join(lines), data, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--command", default="")
    p.add_argument("--wall-s", type=float, default=0.0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    markdown, data, summary = build(args)
    (args.out / "gpu.md").write_text(markdown + "\n")
    (args.out / "gpu.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
