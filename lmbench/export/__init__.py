"""`lmbench export RUN_DIR OUT_DIR [--push-to-hub REPO]`: a trained run as a transformers folder.

    export_run(Path("results/quickstart/arch=transformer,seed=0"), Path("exported"))
    AutoModelForCausalLM.from_pretrained("exported"); AutoTokenizer.from_pretrained("exported")

The model goes through its family's exporter (`models.py`: GPT-2 / GPT-NeoX layouts, the wrapped transformers
model, or a remote-code recurrent model), the tokenizer through its kind's (`tokenizers.py`). Before anything is
written the exporters refuse what has no faithful equivalent (one line naming the field). After writing, the
folder is loaded back with the Auto classes and checked against the lmbench model: the largest logit difference
on random ids (must be <= 1e-4) and the ids of the run's prompts; both go into `lmbench_export.json`, with the
run's metrics in a model card (README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lmbench.errors import SpecError
from lmbench.progress import quiet

log = logging.getLogger(__name__)

EXPORT_FILE = "lmbench_export.json"
MAX_LOGIT_DIFF = 1e-4
REMOTE_CODE_FAMILIES = ("rnn", "lstm", "gru")
CHECK_TEXT = "Once upon a time, the model said: \"It's 3.14 -- or not?\"\n"


def export_run(run_dir: Path, out_dir: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the run at `run_dir` into `out_dir` as a transformers model + tokenizer folder; returns what
    `lmbench_export.json` records (architecture, checks)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise SpecError("out_dir", f"{out_dir} exists and is not empty (pass --overwrite to replace it)")
    if out_dir.resolve() in (run_dir.resolve(), *run_dir.resolve().parents):
        raise SpecError("out_dir", f"{out_dir} holds the run {run_dir}; export into a folder of its own")
    with _quiet():
        return _export(run_dir, out_dir)


def _export(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    from lmbench.export import models as model_exporters
    from lmbench.export import tokenizers as tokenizer_exporters
    from lmbench.sampling.search import prompt_start_id
    from lmbench.training.checkpoint import load_run
    from lmbench.training.tracking import package_versions

    model, tokenizer, spec = load_run(run_dir, "cpu")
    start_id = prompt_start_id(spec.data, tokenizer)
    export_tokenizer = tokenizer_exporters.EXPORTERS.get(spec.tokenizer.kind)
    export_model = model_exporters.EXPORTERS.get(spec.model.family)
    hf_tokenizer = export_tokenizer(tokenizer, start_id)
    special = {"bos_token_id": start_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    hf_model = export_model(model, special)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    hf_model.save_pretrained(str(out_dir))
    hf_tokenizer.save_pretrained(str(out_dir))
    remote = spec.model.family in REMOTE_CODE_FAMILIES
    texts = [*spec.sample.prompts, CHECK_TEXT]
    record = {
        "run_dir": str(run_dir),
        "family": spec.model.family,
        "tokenizer_kind": spec.tokenizer.kind,
        "architecture": type(hf_model).__name__,
        "trust_remote_code": remote,
        **_check(out_dir, model, tokenizer, start_id, texts, remote, spec.data.block_size),
        "versions": package_versions(("lmbench", "torch", "transformers", "tokenizers")),
    }
    (out_dir / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(model_card(run_dir, record), encoding="utf-8")
    if record["max_abs_logit_diff"] > MAX_LOGIT_DIFF:
        raise RuntimeError(f"export check failed: the exported model's logits differ from lmbench's by "
                           f"{record['max_abs_logit_diff']:.2e} (> {MAX_LOGIT_DIFF}); see {out_dir / EXPORT_FILE}")
    if record["tokenizer_mismatches"]:
        raise RuntimeError(f"export check failed: the exported tokenizer encodes {record['tokenizer_mismatches']} "
                           f"of {len(texts)} check texts differently from lmbench's; see {out_dir / EXPORT_FILE}")
    return record


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No transformers progress bars for a tiny save/load, no unknown-token warnings from the check texts."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with quiet(logging.getLogger("lmbench.tokenizers")):
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _check(out_dir: Path, model: Any, tokenizer: Any, start_id: int, texts: list[str], remote: bool,
           block_size: int) -> dict[str, Any]:
    """Load `out_dir` with the Auto classes; compare logits on seeded random ids and the ids of `texts`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(str(out_dir), trust_remote_code=remote).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out_dir), trust_remote_code=remote)
    vocab = min(tokenizer.vocab_size, hf_model.get_input_embeddings().num_embeddings)
    ids = torch.randint(0, vocab, (2, min(block_size, 64)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(ids).float() - hf_model(input_ids=ids).logits.float()).abs().max().item()
    ours = [[start_id, *row] for row in tokenizer.encode_batch(texts)]
    theirs = [hf_tokenizer(t)["input_ids"] for t in texts]
    if ours[0][:1] != theirs[0][:1]:  # a library tokenizer (GPT-2) adds no start token: compare the text ids
        theirs = [[start_id, *row] for row in theirs]
    return {"max_abs_logit_diff": diff, "checked_ids_shape": list(ids.shape),
            "tokenizer_checked_texts": len(texts), "tokenizer_mismatches": sum(a != b for a, b in zip(ours, theirs))}


def model_card(run_dir: Path, record: dict[str, Any]) -> str:
    """A short README.md: what the model is, how to load it, the run's held-out metrics (summary.json)."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    remote = ", trust_remote_code=True" if record["trust_remote_code"] else ""
    rows = [f"| {key} | {summary[key]:.4g} |" for key in ("val_loss", "val_ppl", "val_bpb", "test_ppl", "test_bpb")
            if isinstance(summary.get(key), (int, float))]
    metrics = "\n".join(["| metric | value |", "|---|---|", *rows]) if rows else "(no summary.json in the run)"
    return (f"---\nlibrary_name: transformers\ntags: [lmbench, {record['family']}]\n---\n\n"
            f"# {summary.get('cell', run_dir.name)}\n\n"
            f"A `{record['family']}` language model trained with lmbench (tokenizer: `{record['tokenizer_kind']}`), "
            f"exported as `{record['architecture']}`; the exported logits differ from lmbench's by at most "
            f"{record['max_abs_logit_diff']:.1e}.\n\n"
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            f"model = AutoModelForCausalLM.from_pretrained(PATH{remote})\n"
            f"tokenizer = AutoTokenizer.from_pretrained(PATH{remote})\n```\n\n"
            f"Held-out metrics of the run (perplexity per token, bits per byte of text):\n\n{metrics}\n")


def push_folder(out_dir: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload `out_dir` to the Hub repository `repo_id` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, commit_message="lmbench export")
    return str(getattr(info, "commit_url", info))


def cmd_export(args: argparse.Namespace) -> int:
    record = export_run(Path(args.run_dir), Path(args.out_dir), overwrite=args.overwrite)
    print(f"exported {record['family']} as {record['architecture']} to {args.out_dir} "
          f"(max |logit difference| {record['max_abs_logit_diff']:.1e}; tokenizer ids equal on "
          f"{record['tokenizer_checked_texts']} texts)")
    if args.push_to_hub:
        print(f"pushed to {push_folder(Path(args.out_dir), args.push_to_hub, private=args.private)}")
    return 0
