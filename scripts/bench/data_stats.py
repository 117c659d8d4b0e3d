"""Data benchmark: `lmbench data` on the shared corpora with a fresh cache, one child process per corpus.

For each corpus: validate the spec, prepare the token cache from scratch (tokenizer training + tokenization),
then prepare it again (must be reused, nothing tokenized). Records per split: documents, tokens, bytes, chars,
words, tokens/doc, bytes/token, tokenization throughput (MB of UTF-8 text per second inside `encode_batch`),
and per corpus: tokenizer training time, build time, reuse (load) time and the child's peak RSS.

    python scripts/bench/data_stats.py                      # all corpora, writes results/bench/data_stats.{md,json}
    python scripts/bench/data_stats.py --only tinyshakespeare wikitext2 --limit 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Inline specs (paths relative to the data root). The lead turns these into experiments/*.yaml.
CORPORA: dict[str, dict[str, Any]] = {
    "tinyshakespeare": {
        "title": "Tiny Shakespeare (char, 90/10 tail split)",
        "data": {"source": "text", "path": "tinyshakespeare/input.txt", "unit": "file", "split": "tail",
                 "val_fraction": 0.1},
        "tokenizer": {"kind": "char"},
    },
    "wikitext2": {
        "title": "WikiText-2 (word, pretokenized, own splits)",
        "data": {"source": "text", "unit": "line", "files": {"train": "wikitext-2/train.txt",
                                                              "validation": "wikitext-2/valid.txt",
                                                              "test": "wikitext-2/test.txt"}},
        "tokenizer": {"kind": "word", "params": {"pretokenized": True}},
    },
    "writingprompts": {
        "title": "WritingPrompts pair (sentencepiece BPE 2500 + <sep>, prompt masked)",
        "data": {"source": "prompt_story", "path": "writingprompts-automatants/colab_train.txt",
                 "prompt_path": "writingprompts-automatants/colab_train_prompts.txt",
                 "replace": {"<newline>": "\n"}, "val_fraction": 0.1},
        "tokenizer": {"kind": "bpe", "params": {"vocab_size": 2500, "user_defined_symbols": ["<sep>"]}},
    },
    "tinystories": {
        "title": "TinyStories 10k lines (hf byte-level BPE 4096 trained from scratch)",
        "data": {"source": "text", "path": "tinystories/tinystories_10k.txt", "unit": "separator",
                 "separator": "<|endoftext|>", "val_fraction": 0.1},
        "tokenizer": {"kind": "hf", "params": {"train_from_scratch": True, "vocab_size": 4096}},
    },
    "builtin": {
        "title": "builtin corpus: CPython docs (char)",
        "data": {"source": "builtin", "val_fraction": 0.1},
        "tokenizer": {"kind": "char"},
    },
}


def make_spec(name: str, data_root: Path, cache_dir: Path, limit: int | None) -> Any:
    from lmbench.spec import to_spec

    entry = CORPORA[name]
    data = dict(entry["data"], cache_dir=str(cache_dir))
    for key in ("path", "prompt_path"):
        if key in data:
            data[key] = str(data_root / data[key])
    if "files" in data:
        data["files"] = {k: str(data_root / v) for k, v in data["files"].items()}
    if limit is not None:
        data["limit"] = limit
    return to_spec({"name": f"bench-{name}", "data": data, "tokenizer": entry["tokenizer"],
                    "model": {"family": "transformer"}, "train": {"max_steps": 1}})


def run_one(name: str, data_root: Path, cache_dir: Path, limit: int | None) -> dict[str, Any]:
    """In a child process: validate, build the cache, load it again; statistics and timings."""
    import psutil

    from lmbench.data.cache import data_summary, peak_rss_mb, prepare_data
    from lmbench.validate import validate

    spec = make_spec(name, data_root, cache_dir, limit)
    validate(spec)
    rss_before = psutil.Process().memory_info().rss / 1e6
    started = time.perf_counter()
    built = prepare_data(spec, progress=False)
    build_seconds = time.perf_counter() - started
    summary = data_summary(built)
    started = time.perf_counter()
    again = prepare_data(spec, progress=False)
    summary.update(name=name, title=CORPORA[name]["title"], build_wall_seconds=build_seconds,
                   reuse_seconds=time.perf_counter() - started, reused_second_time=again.reused,
                   rss_after_imports_mb=rss_before, peak_rss_mb=peak_rss_mb(),
                   spec={"data": CORPORA[name]["data"], "tokenizer": CORPORA[name]["tokenizer"], "limit": limit})
    return summary


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for name in args.only or list(CORPORA):
        with tempfile.TemporaryDirectory(prefix=f"lmbench-bench-{name}-") as tmp:
            out = Path(tmp) / "result.json"
            cmd = [sys.executable, __file__, "--one", name, "--data-root", str(args.data_root),
                   "--cache-dir", str(Path(tmp) / "cache"), "--result", str(out)]
            if args.limit is not None:
                cmd += ["--limit", str(args.limit)]
            print(f"[{name}] {CORPORA[name]['title']} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "true"})
            results.append(json.loads(out.read_text("utf-8")))
    return results


def render_markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = ["# Data statistics and tokenization throughput", "", f"Command: `{command}`", "",
             f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores "
             f"(shared with other work), {time.strftime('%Y-%m-%d %H:%M')}. Fresh cache per corpus; each corpus "
             "runs in its own process, so peak RSS is that corpus's (after importing torch for validation). "
             f"1-minute load average {results[0]['load_average_1min'][0]:.1f} before, "
             f"{results[0]['load_average_1min'][1]:.1f} after: throughputs are lower bounds on a busy machine.", "",
             "| corpus | split | docs | tokens | bytes | chars | words | tokens/doc | bytes/token | tokenize MB/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for split, s in r["splits"].items():
            lines.append(f"| {r['name']} | {split} | {s['num_docs']:,} | {s['num_tokens']:,} | {s['num_bytes']:,} | "
                         f"{s['num_chars']:,} | {s['num_words']:,} | {s['tokens_per_doc']:.1f} | "
                         f"{s['bytes_per_token']:.2f} | {s['tokenize_mb_per_s']:.2f} |")
    lines += ["", "| corpus | tokenizer | vocab | ids | tokenizer training s | build s | reuse s | reused | "
                  "RSS after imports MB | peak RSS MB |", "|---|---|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in results:
        t = r["tokenizer"]
        lines.append(f"| {r['name']} | {t['kind']} | {t['vocab_size']:,} | {t['dtype']} | {t['train_seconds']:.2f} | "
                     f"{r['build_wall_seconds']:.2f} | {r['reuse_seconds']:.3f} | {r['reused_second_time']} | "
                     f"{r['rss_after_imports_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "Corpora:"] + [f"- `{r['name']}`: {r['title']}" for r in results]
    lines += ["", "Notes:", "- tokenize MB/s = UTF-8 bytes passed to `encode_batch` (prompt_story: prompt + story) "
              "per second spent in it; build s also covers reading, filtering, tokenizer training and writing.",
              "- bytes/chars/words count the scored text (prompt_story: the story only); tokens count every id "
              "stored (prompt + `<sep>` + story), without the BOS/EOS the batcher adds."]
    for r in results:
        if r["name"] == "wikitext2":
            stream = {k: s["num_tokens"] + s["num_docs"] for k, s in r["splits"].items()}
            lines.append(f"- WikiText-2 words + one `<eos>` per line: {stream} (pytorch word_language_model: "
                         "train 2,088,628, valid 217,646, test 245,569).")
        if "sha256" in r["source"]:
            src = r["source"]
            lines.append(f"- builtin corpus fingerprint: Python {src['python']}, corpus version "
                         f"{src['corpus_version']}, {src['num_docs']:,} documents, {src['num_chars']:,} characters, "
                         f"sha256 `{src['sha256']}`.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--only", nargs="+", choices=list(CORPORA), help="corpora to run (default: all)")
    p.add_argument("--limit", type=int, help="keep the first N documents of each split (quick runs)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "data_stats",
                   help="output path without suffix (.md and .json are written)")
    p.add_argument("--one", choices=list(CORPORA), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        result = run_one(args.one, args.data_root, args.cache_dir, args.limit)
        args.result.write_text(json.dumps(result, indent=2, default=str), "utf-8")
        return 0
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    load_before = os.getloadavg()[0]
    results = run_all(args)
    for r in results:
        r["load_average_1min"] = [load_before, os.getloadavg()[0]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "results": results}, indent=2,
                                                        default=str) + "\n", "utf-8")
    args.out.with_suffix(".md").write_text(render_markdown(results, command), "utf-8")
    print(render_markdown(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
