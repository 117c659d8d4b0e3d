"""Corpus preparation at scale: lmbench's token cache against the raw tokenizer libraries, 10 MB to 1 GB.

For each size (MB) it writes a deterministic training corpus under a temporary folder (never committed): seeded
shuffles of the TinyStories sample (`../shared/data/tinystories/`, stories separated by ``<|endoftext|>``) and, for
the word tokenizer, of WikiText-2's training lines, repeated until the size is reached; validation is the corpus's
own small validation file. Then, per tokenizer kind, in one child process each (own peak RSS):

- **pipeline**: `lmbench.data.prepare_data` from scratch (tokenizer training on the default seeded sample, then
  the train and validation splits streamed into the memmapped cache on `data.num_workers` = every core);
- **raw**: the same train text read in 16 MB chunks and encoded the fastest plain way with the tokenizer the
  pipeline trained: HF `tokenizers` `encode_batch_fast` (Rust, all threads), sentencepiece `encode(list,
  num_threads=cores)`, and for char/word a plain one-process encoder (numpy code-point table lookup for char;
  `str.split` + dict lookup for the pretokenized WikiText words). Its ids are kept in memory only as a count
  (nothing written);
- **raw + write** (char/word): the same plain encoder writing its ids to a file as nanoGPT's prepare.py does
  (`tofile`, in the narrowest dtype as lmbench's cache), the job the token cache does.

Throughput is MB of the train file per second of tokenization (tokenizer training excluded, timed apart).
Pipeline and raw alternate per kind within a size (same machine state). RSS is sampled every 20 ms in the child,
per phase (tokenizer training, tokenization), and the worker processes' peak is `RUSAGE_CHILDREN`.

A loader section times the training batches as the Trainer builds them (packed windows and documents, batch 64 x
1024, from the largest cache of the byte-level BPE) against the step rate of the 10.7M transformer measured in
`results/bench/gpu.json` (H200) and on this CPU.

    python scripts/bench/data_scale.py                          # 10, 100, 1000 MB; writes results/bench/data_scale.md
    python scripts/bench/data_scale.py --sizes 10 --kinds char  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEPARATOR = "<|endoftext|>"
CHUNK_BYTES = 16 << 20
KINDS: dict[str, dict[str, Any]] = {
    "char": {"corpus": "tinystories", "label": "char", "tokenizer": {"kind": "char"}},
    "word": {"corpus": "wikitext2", "label": "word (WikiText-2, pretokenized)",
             "tokenizer": {"kind": "word", "params": {"pretokenized": True}}},
    "bpe": {"corpus": "tinystories", "label": "sentencepiece BPE 8000",
            "tokenizer": {"kind": "bpe", "params": {"vocab_size": 8000}}},
    "hf": {"corpus": "tinystories", "label": "byte-level BPE 8192 (tokenizers)",
           "tokenizer": {"kind": "hf", "params": {"train_from_scratch": True, "vocab_size": 8192}}},
}


NOTES = [
    "The corpora repeat a 1.4 MB TinyStories sample (and WikiText-2's 11 MB) in seeded shuffles: the libraries' "
    "word caches hit more often than on 1 GB of distinct text, on both sides alike.",
    "The pipeline does what the raw loop does not: documents (offsets), the filters and the seeded split, text "
    "statistics (bytes, characters, words) for bits per byte, evaluation units for the held-out split, and the "
    "write to the memory-mapped cache. For char and word the worker processes read their own 1 MB shards of the "
    "file, encode them and write the ids into the cache at places taken in shard order; the main process only "
    "cuts the file and writes the offsets.",
    "Char encoding is a numpy table lookup: per MB and core, about 0.6 ms reading, 0.5 decoding, 0.9 cutting "
    "documents, 2.6 encoding and 1.6 counting bytes, characters and words (scripts run by hand on 40 shards). "
    "The count-only plain loop writes nothing; on this virtual machine, memory the guest has not touched lately is "
    "slow to take: writing 2 GB into fresh page cache took about 5 s of kernel time, into pages just freed "
    "0.35-0.8 s. Both writing sides here start from the memory the previous side freed.",
    "Word encoding is a Python dict lookup per token: lmbench maps each text's words straight into a C array, as "
    "fast per core as the plain loop, and runs it in two worker processes; a pretokenized cache counts its words as "
    "its ids (one id per whitespace-separated word) instead of scanning the text again.",
    "lmbench processes run with glibc's malloc keeping freed buffers (lmbench.allocator); the loader and both "
    "sides here do too.",
]


def data_root() -> Path:
    return Path(os.environ.get("LMBENCH_DATA", REPO.parent / "shared" / "data"))


# ----------------------------------------------------------------------------------------------- corpora
def source_documents(corpus: str) -> tuple[list[str], Path]:
    """(training documents, validation file) of a shared corpus."""
    root = data_root()
    if corpus == "tinystories":
        text = (root / "tinystories" / "tinystories_10k.txt").read_text(encoding="utf-8")
        docs = [d.strip() for d in text.split(SEPARATOR) if d.strip()]
        return docs, root / "tinystories" / "tinystories_val.txt"
    lines = (root / "wikitext-2" / "train.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()], root / "wikitext-2" / "valid.txt"


def make_corpus(corpus: str, size_mb: int, folder: Path) -> Path:
    """folder/train.txt of at least size_mb MB (seeded shuffles of the documents, round after round) and
    folder/validation.txt; made once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "train.txt"
    docs, validation = source_documents(corpus)
    if not (folder / "validation.txt").exists():
        shutil.copyfile(validation, folder / "validation.txt")
    if train.exists() and train.stat().st_size >= size_mb * 1e6:
        return folder
    joiner = f"\n{SEPARATOR}\n" if corpus == "tinystories" else "\n"
    rng, written = random.Random(0), 0
    with open(train.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        while written < size_mb * 1e6:
            order = list(range(len(docs)))
            rng.shuffle(order)
            piece = joiner.join(docs[i] for i in order) + joiner
            written += f.write(piece)
    os.replace(train.with_suffix(".tmp"), train)
    return folder


def spec_for(kind: str, folder: Path, cache: Path) -> Any:
    from lmbench.spec import to_spec

    entry = KINDS[kind]
    files = {"train": str(folder / "train.txt"), "validation": str(folder / "validation.txt")}
    data: dict[str, Any] = {"source": "text", "files": files, "cache_dir": str(cache)}
    data.update({"unit": "separator", "separator": SEPARATOR} if entry["corpus"] == "tinystories" else
                {"unit": "line"})
    return to_spec({"name": f"scale-{kind}", "data": data, "tokenizer": entry["tokenizer"],
                    "model": {"family": "transformer"}, "train": {"max_steps": 1}})


# ----------------------------------------------------------------------------------------------- memory
class RssSampler:
    """Peak resident set size of this process, sampled every 20 ms, per named phase."""

    def __init__(self) -> None:
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self.starts: dict[str, float] = {}  # RSS when each phase began
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def enter(self, phase: str) -> None:
        self.starts.setdefault(phase, self.rss())
        self.phase = phase

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), self.rss())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        out = {k: round(v, 1) for k, v in self.peaks.items()}
        return out | {f"{k}_start": round(v, 1) for k, v in self.starts.items()}


def maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss * 1024 / 1e6


# ----------------------------------------------------------------------------------------------- children
def child_pipeline(kind: str, folder: Path, cache: Path, workers: str = "all") -> dict[str, Any]:
    import dataclasses

    from lmbench.allocator import keep_freed_memory
    from lmbench.data import cache as cache_module
    from lmbench.data.cache import prepare_data

    keep_freed_memory()  # as the lmbench CLI does

    sampler = RssSampler()
    write_splits = cache_module._write_splits

    def marked(*args: Any, **kwargs: Any) -> Any:  # RSS phases: tokenizer training, then tokenization
        sampler.enter("tokenize")
        return write_splits(*args, **kwargs)

    cache_module._write_splits = marked
    sampler.enter("train_tokenizer")
    spec = spec_for(kind, folder, cache)
    if workers != "all":
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, num_workers=int(workers)))
    started = time.perf_counter()
    data = prepare_data(spec, progress=False, verify=False)
    wall = time.perf_counter() - started
    peaks = sampler.stop()
    meta = data.meta
    train = meta["splits"]["train"]
    return {"kind": kind, "wall_s": wall, "build_s": meta["build_seconds"],
            "train_tokenizer_s": meta["tokenizer"]["train_seconds"],
            "train_sample": meta["tokenizer"]["train_sample"],
            "tokenize_s": train["tokenize_seconds"], "workers": train["workers"],
            "tokens": train["stats"]["num_tokens"], "docs": train["stats"]["num_docs"],
            "file_bytes": (folder / "train.txt").stat().st_size,
            "cache_bytes": sum(p.stat().st_size for p in data.cache_dir.rglob("*") if p.is_file()),
            "rss_mb": peaks, "maxrss_mb": maxrss_mb(resource.RUSAGE_SELF),
            "workers_maxrss_mb": maxrss_mb(resource.RUSAGE_CHILDREN), "tokenizer_dir": str(data.cache_dir / "tokenizer")}


def read_documents(path: Path, separator: str | None):  # noqa: ANN201  (a generator of document lists)
    """Lists of documents from `path` read in CHUNK_BYTES pieces (the plain streaming reader)."""
    rest = ""
    with open(path, encoding="utf-8") as f:
        while chunk := f.read(CHUNK_BYTES):
            pieces = (rest + chunk).split(separator) if separator else (rest + chunk).split("\n")
            rest = pieces.pop()
            yield pieces
    if rest:
        yield [rest]


def child_raw(kind: str, folder: Path, tokenizer_dir: Path, out: str | None = None) -> dict[str, Any]:
    """The train text encoded the fastest plain way. char/word with `out`: the ids are also written to that file
    as nanoGPT's prepare.py writes its train.bin (`tofile` per 16 MB chunk; in the narrowest dtype, as lmbench's
    cache: uint8 for at most 256 ids), the job the token cache does; without it they are only counted."""
    import numpy as np

    from lmbench.allocator import keep_freed_memory

    keep_freed_memory()
    threads = len(os.sched_getaffinity(0))
    separator = SEPARATOR if KINDS[kind]["corpus"] == "tinystories" else None
    sink = open(out, "wb") if out else None  # noqa: SIM115  (closed below)
    if kind == "hf":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))

        def encode(docs: list[str]) -> int:  # batches of 1,000 documents: the library's fastest here
            return sum(len(e.ids) for i in range(0, len(docs), 1000)
                       for e in tok.encode_batch_fast(docs[i:i + 1000], add_special_tokens=False))
    elif kind == "bpe":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "sentencepiece.model"))

        def encode(docs: list[str]) -> int:
            return sum(len(ids) for i in range(0, len(docs), 1000)
                       for ids in sp.encode(docs[i:i + 1000], out_type=int, num_threads=threads))
    else:
        vocab = json.loads(next(tokenizer_dir.glob("*_vocab.json")).read_text(encoding="utf-8"))
        vocab = vocab["vocab"] if isinstance(vocab, dict) else vocab
        stoi = {s: i for i, s in enumerate(vocab)}
        unk = stoi["<unk>"]
        dtype = np.uint8 if len(vocab) <= 256 else np.uint16 if len(vocab) <= 65535 else np.uint32  # as lmbench
        if kind == "char":
            table = np.full(max(ord(c) for c in vocab if len(c) == 1) + 2, unk, dtype=dtype)
            for s, i in stoi.items():
                if len(s) == 1:
                    table[ord(s)] = i

            def encode(docs: list[str]) -> int:
                cps = np.frombuffer("".join(docs).encode("utf-32-le"), dtype=np.uint32)
                ids = np.take(table, cps, mode="clip")  # past the table: its last slot, unk
                np.cumsum([len(d) for d in docs])  # document boundaries, as a cache needs them
                if sink is not None:
                    ids.tofile(sink)
                return len(ids)
        else:
            get = stoi.get

            def encode(docs: list[str]) -> int:
                if sink is None:
                    return sum(len([get(w, unk) for w in d.split()]) for d in docs)
                ids = [get(w, unk) for d in docs for w in d.split()]
                np.array(ids, dtype=dtype).tofile(sink)
                return len(ids)
    started = time.perf_counter()
    tokens = 0
    for docs in read_documents(folder / "train.txt", separator):
        docs = [d.strip() for d in docs] if separator else docs
        tokens += encode([d for d in docs if d])
    if sink is not None:
        sink.close()
    seconds = time.perf_counter() - started
    return {"kind": kind, "tokenize_s": seconds, "tokens": tokens, "threads": threads if kind in ("hf", "bpe") else 1,
            "written": out is not None, "file_bytes": (folder / "train.txt").stat().st_size,
            "maxrss_mb": maxrss_mb(resource.RUSAGE_SELF)}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- loader
def loader_rows(cache_dir: Path, seconds: float = 10.0) -> list[dict[str, Any]]:
    """Tokens/s of the Trainer's host-side batch work (items of a global batch from the seeded plan, collate,
    target count: `Trainer._batches` without the device copy) at 64 x 1024 from a cache."""
    from lmbench.allocator import keep_freed_memory
    from lmbench.data.batching import IGNORE_INDEX
    from lmbench.data.cache import load_prepared
    from lmbench.training.plan import make_train_data

    keep_freed_memory()  # as the lmbench CLI does (the Trainer runs under it)
    data = load_prepared(cache_dir, verify=False)
    rows = []
    for batching in ("packed", "documents"):
        train = make_train_data(_loader_spec(batching), data.splits["train"], data.tokenizer, carries_state=False)
        done, tokens, padded, started = 0, 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds and done < train.plan.steps_per_epoch:
            indices = train.plan.batch(0, done)  # what Trainer._batches does, less the device copy
            train.num_targets(indices)
            batch = train.batch(indices)
            tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            padded += batch["input_ids"].numel()
            done += 1
        elapsed = time.perf_counter() - started
        rows.append({"batching": batching, "batches": done, "tokens_per_s": tokens / elapsed,
                     "ms_per_batch": 1e3 * elapsed / done, "positions_per_batch": padded / done,
                     "cache_tokens": int(data.splits["train"].stats.num_tokens)})
    return rows


def _loader_spec(batching: str) -> Any:
    from lmbench.spec import to_spec

    return to_spec({"name": "loader", "data": {"source": "builtin", "batching": batching, "block_size": 1024},
                    "tokenizer": {"kind": "char"}, "model": {"family": "transformer"},
                    "train": {"max_steps": 1, "batch_size": 64}})


def step_times() -> dict[str, float]:
    """ms per optimizer step of the 10.7M transformer for 64 x 1024 tokens at the H200's measured rates
    (results/bench/gpu.json: eager and compiled, their fastest batch)."""
    gpu = REPO / "results" / "bench" / "gpu.json"
    if not gpu.is_file():
        return {}
    rows = [r for r in json.loads(gpu.read_text(encoding="utf-8"))["train"]["rows"]
            if r["model"] == "shakespeare-10.7M" and r["side"] == "lmbench"]
    out = {}
    for compiled in (False, True):
        rates = [r["tokens_per_s"] for r in rows if r["compile"] == compiled]
        if rates:
            out[f"H200 {'compiled' if compiled else 'eager'}"] = 64 * 1024 / max(rates) * 1e3
    return out


# ----------------------------------------------------------------------------------------------- report
def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def write_report(out: Path, results: dict[str, Any]) -> None:
    lines = ["# Corpus preparation at scale", "",
             f"Command: `{results['command']}` ({results['date']}, {results['machine']}).", "",
             "Train-split tokenization throughput in MB of the corpus file per second (tokenizer training excluded),",
             f"the best of {results['rounds']} interleaved rounds per side; `raw` is the library called the fastest "
             "plain way on the same text in the same run (see the script's docstring; for char and word a plain "
             "one-process encoder that only counts its ids), `raw + write` the same plain char/word encoder writing "
             "its ids to a file as nanoGPT's prepare.py does (the job the token cache does), `1 process` is "
             "lmbench with `data.num_workers: 1`. Peak RSS: the pipeline process during tokenization (and tokenizer "
             "training), its worker processes' peak apart.", "",
             "| size | kind | pipeline MB/s | raw MB/s | pipeline / raw | raw + write MB/s | pipeline / raw + write "
             "| lmbench 1 process MB/s | pipeline / 1 process "
             "| workers | tokens | tokenizer training s (sample MB) | RSS tokenize MB | RSS train-tok. MB | workers RSS MB "
             "| cache MB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        p, r = row["pipeline"], row["raw"]
        pipe, raw = mb_s(p), mb_s(r)
        one_cells = f"{fmt(mb_s(row['one_process']))} | **{pipe / mb_s(row['one_process']):.2f}x**" \
            if "one_process" in row else "- | -"
        write_cells = f"{fmt(mb_s(row['raw_write']))} | **{pipe / mb_s(row['raw_write']):.2f}x**" \
            if "raw_write" in row else "- | -"
        lines.append(f"| {row['size_mb']} MB | {KINDS[row['kind']]['label']} | {fmt(pipe)} | {fmt(raw)} | "
                     f"**{pipe / raw:.2f}x** | {write_cells} | {one_cells} | {p['workers']} | {p['tokens']:,} | "
                     f"{fmt(p['train_tokenizer_s'])} "
                     f"({fmt(p['train_sample']['chars'] / 1e6)}) | {fmt(p['rss_mb'].get('tokenize', 0), 0)} | "
                     f"{fmt(p['rss_mb'].get('train_tokenizer', 0), 0)} | {fmt(p['workers_maxrss_mb'], 0)} | "
                     f"{fmt(p['cache_bytes'] / 1e6, 0)} |")
    lines += ["", "## Memory: peak RSS as the corpus grows", "",
              "RSS added while the splits are tokenized (peak minus the RSS when tokenization began: what streaming "
              "keeps flat), and the whole process's peak, which includes tokenizer training on its capped sample "
              "(`data.tokenizer_sample_mb`, 100 MB by default: a corpus above that trains on the same amount).", "",
              "| kind | sizes | RSS added while tokenizing, small -> large MB | growth MB | whole-process peak growth MB "
              "| tokenizer sample MB |", "|---|---|---:|---:|---:|---:|"]
    for kind, growth in results["growth"].items():
        lines.append(f"| {KINDS[kind]['label']} | {growth['sizes']} | {fmt(growth['within_small'], 0)} -> "
                     f"{fmt(growth['within_large'], 0)} | {fmt(growth['tokenize_mb'], 0)} | "
                     f"{fmt(growth['process_mb'], 0)} | {fmt(growth['sample_mb'][0], 0)} -> "
                     f"{fmt(growth['sample_mb'][1], 0)} |")
    lines += ["", "## Full TinyStories (about 1.9 GB of text), extrapolated from the largest size", "",
              "Tokenization at the largest size's measured rate plus its tokenizer training time (the sample is "
              "capped, so training does not grow with the corpus); 16 cores scales tokenization linearly, an upper "
              "bound.", "",
              "| kind | 2 cores (measured rate) | 16 cores |", "|---|---:|---:|"]
    for kind, ex in results["extrapolated"].items():
        lines.append(f"| {KINDS[kind]['label']} | {ex['two_cores_min'] * 60:,.0f} s | {ex['sixteen_cores_min'] * 60:,.0f} s |")
    if results.get("loader"):
        lines += ["", "## Training loader (batch 64, block 1024)", "",
                  "What `Trainer._batches` does on the host per update (plan, target count, the collated batch; the "
                  "device copy excluded), timed over the largest byte-level BPE cache. The share is of a step of "
                  "the 10.7M transformer on the same number of positions (its H200 tokens/s from gpu.json): "
                  "the shortest steps lmbench has measured, so the largest share.", "",
                  "| batching | cache tokens | positions per batch (padded) | ms per batch | target tokens/s | "
                  "share of a 10.7M-transformer step |", "|---|---:|---:|---:|---:|---|"]
        for row in results["loader"]:
            share = row["positions_per_batch"] / (64 * 1024)
            shares = "; ".join(f"{name}: {row['ms_per_batch'] / (step_ms * share) * 100:.2f}%"
                               for name, step_ms in results["step_ms"].items())
            lines.append(f"| {row['batching']} | {row['cache_tokens']:,} | {fmt(row['positions_per_batch'], 0)} | "
                         f"{row['ms_per_batch']:.2f} | {fmt(row['tokens_per_s'], 0)} | {shares} |")
        lines += ["", "Step times of the 10.7M transformer at 64 x 1024 positions: " +
                  "; ".join(f"{k} {v:.1f} ms" for k, v in results["step_ms"].items()) + "."]
    lines += ["", "## Goals (issue 14)", ""] + goal_lines(results)
    lines += ["", "## Notes", ""] + [f"- {n}" for n in results.get("notes", [])]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def goal_lines(results: dict[str, Any]) -> list[str]:
    """Each goal with the measured figure and whether it is met."""
    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = []
    for row in results["rows"]:
        if row["size_mb"] < 100:
            continue
        p, r = mb_s(row["pipeline"]), mb_s(row["raw"])
        label = f"{row['size_mb']} MB {KINDS[row['kind']]['label']}"
        if row["kind"] in ("char", "word"):
            one, w = mb_s(row["one_process"]), mb_s(row["raw_write"])
            lines.append(f"- {label}: pipeline / plain one-process encoder writing its ids (the cache's job) "
                         f"{p / w:.2f}x (goal 1.6x: {mark(p / w >= 1.6)}). For reference, not the goal: against "
                         f"the same encoder counting its ids only (nothing written) {p / r:.2f}x; against lmbench "
                         f"in one process (scaling over the cores) {p / one:.2f}x")
        else:
            lines.append(f"- {label}: pipeline / raw library {p / r:.2f}x (goal 0.9x: {mark(p / r >= 0.9)})")
    for kind, growth in results["growth"].items():
        lines.append(f"- {KINDS[kind]['label']}, {growth['sizes']}: RSS growth while tokenizing "
                     f"{growth['tokenize_mb']:.0f} MB, whole process {growth['process_mb']:.0f} MB (goal 200 MB: "
                     f"{mark(growth['tokenize_mb'] <= 200)} / {mark(growth['process_mb'] <= 200)})")
    for row in results.get("loader", []):
        share = row["positions_per_batch"] / (64 * 1024)
        worst = max(row["ms_per_batch"] / (ms * share) for ms in results["step_ms"].values()) * 100
        lines.append(f"- loader, {row['batching']}: {worst:.2f}% of the shortest measured step (goal < 2%: "
                     f"{mark(worst < 2)})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--work", type=Path, default=None, help="corpora and caches (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "data_scale.md")
    parser.add_argument("--no-loader", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per side (the best is reported)")
    args = parser.parse_args()
    if args.child:
        mode, kind, folder, where, *rest = args.child
        fn = child_pipeline if mode == "pipeline" else child_raw
        print(json.dumps(fn(kind, Path(folder), Path(where), *rest)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="lmbench-scale-"))
    results: dict[str, Any] = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
                               "date": time.strftime("%Y-%m-%d"), "rows": [], "growth": {}, "extrapolated": {},
                               "rounds": args.rounds, "notes": NOTES,
                               "machine": f"{platform.processor() or platform.machine()}, "
                                          f"{len(os.sched_getaffinity(0))} cores"}
    if not args.child:
        from lmbench.allocator import keep_freed_memory

        keep_freed_memory()
    for size in args.sizes:
        for kind in args.kinds:
            results["rows"].append(measure(kind, size, work, args.rounds, keep=kind == "hf" and size == max(args.sizes)))
            row = results["rows"][-1]
            print(json.dumps({k: row[k] for k in ("size_mb", "kind")} | {
                "pipeline_mb_s": [mb_s(r) for r in row["pipeline_rounds"]],
                "raw_mb_s": [mb_s(r) for r in row["raw_rounds"]],
                "raw_write_mb_s": [mb_s(r) for r in row.get("raw_write_rounds", [])],
                "one_process_mb_s": [mb_s(r) for r in row.get("one_process_rounds", [])]}), flush=True)
    summarise(results, args.sizes, args.kinds)
    if not args.no_loader and "hf" in args.kinds:
        results["loader"] = loader_rows(next((work / f"cache-hf-{max(args.sizes)}").glob("*/meta.json")).parent)
        results["step_ms"] = step_times()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    write_report(args.out, results)
    print(f"wrote {args.out}")


def mb_s(run: dict[str, Any]) -> float:
    return run["file_bytes"] / 1e6 / run["tokenize_s"]


def measure(kind: str, size: int, work: Path, rounds: int, keep: bool) -> dict[str, Any]:
    """`rounds` interleaved rounds of pipeline, raw and (char/word) lmbench in one process, each from a fresh
    cache; the fastest round of each side is reported (the machine's speed drifts; interleaving shares it)."""
    folder = make_corpus(KINDS[kind]["corpus"], size, work / f"{KINDS[kind]['corpus']}-{size}")
    cache = work / f"cache-{kind}-{size}"
    row: dict[str, Any] = {"size_mb": size, "kind": kind, "pipeline_rounds": [], "raw_rounds": []}
    tokenizer_dir = work / f"tokenizer-{kind}-{size}"
    for r in range(rounds):
        shutil.rmtree(cache, ignore_errors=True)
        row["pipeline_rounds"].append(run_child("pipeline", kind, str(folder), str(cache)))
        shutil.rmtree(tokenizer_dir, ignore_errors=True)
        shutil.copytree(row["pipeline_rounds"][-1]["tokenizer_dir"], tokenizer_dir)
        if not (keep and r == rounds - 1):  # the loader section reads the largest byte-level BPE cache
            shutil.rmtree(cache)  # every side that writes starts with the memory the last one freed
        row["raw_rounds"].append(run_child("raw", kind, str(folder), str(tokenizer_dir)))
        if kind in ("char", "word"):
            ids = work / f"raw-{kind}-{size}.bin"  # the plain encoder writing its ids, as nanoGPT's prepare.py
            row.setdefault("raw_write_rounds", []).append(run_child("raw", kind, str(folder), str(tokenizer_dir),
                                                                    str(ids)))
            ids.unlink()
            one = work / f"cache-{kind}-{size}-one"  # lmbench in one process (data.num_workers: 1): the scaling
            shutil.rmtree(one, ignore_errors=True)
            row.setdefault("one_process_rounds", []).append(run_child("pipeline", kind, str(folder), str(one), "1"))
            shutil.rmtree(one, ignore_errors=True)
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    row["pipeline"] = max(row["pipeline_rounds"], key=mb_s)
    row["raw"] = max(row["raw_rounds"], key=mb_s)
    for side in ("one_process", "raw_write"):
        if f"{side}_rounds" in row:
            row[side] = max(row[f"{side}_rounds"], key=mb_s)
    return row


def summarise(results: dict[str, Any], sizes: list[int], kinds: list[str]) -> None:
    by = {(r["size_mb"], r["kind"]): r for r in results["rows"]}
    small, large = min(sizes), max(sizes)
    if len(sizes) > 1:
        small = sorted(sizes)[-2]  # growth from the second-largest size (100 MB -> 1 GB)
    for kind in kinds:
        a, b = by[(small, kind)]["pipeline"], by[(large, kind)]["pipeline"]
        within = {name: r["rss_mb"].get("tokenize", 0) - r["rss_mb"].get("tokenize_start", 0) for name, r in
                  (("small", a), ("large", b))}
        results["growth"][kind] = {"sizes": f"{small} -> {large} MB", "within_small": within["small"],
                                   "within_large": within["large"], "tokenize_mb": within["large"] - within["small"],
                                   "process_mb": b["maxrss_mb"] - a["maxrss_mb"],
                                   "sample_mb": (a["train_sample"]["chars"] / 1e6, b["train_sample"]["chars"] / 1e6)}
        rate = b["file_bytes"] / b["tokenize_s"]  # bytes/s on this machine's cores
        cores = len(os.sched_getaffinity(0))
        full = 1.9e9
        results["extrapolated"][kind] = {"two_cores_min": (full / rate + b["train_tokenizer_s"]) / 60 * cores / 2,
                                         "sixteen_cores_min": (full / rate / (16 / cores) + b["train_tokenizer_s"]) / 60}


if __name__ == "__main__":
    main()
