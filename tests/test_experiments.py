"""Every recipe in experiments/ loads and validates, and runs end to end at a tiny budget on data the test makes.

The recipes read their corpora from `${oc.env:LMBENCH_DATA,../shared/data}` (arXiv: `${oc.env:ARXIV_JSON}`), so
the test writes a miniature copy of that layout and points the variables at it. The Hugging Face recipe
(TinyStories, hub dataset + gpt2 tokenizer) is pointed at a local dataset folder and a local byte-level BPE.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmbench.cli import main
from lmbench.experiment.grid import load_cells

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
WORDS = ("the cat sat on a mat and we propose a new model for language . once upon a time there was a little "
         "girl named lily who liked to play in the park with her dog , and every day she ran home .").split()


def _sentences(rng: random.Random, num: int, length: int = 12) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() for _ in range(num)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny copy of ../shared/data's layout, plus an arXiv-style JSON file and a local HF dataset folder."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    (root / "tinyshakespeare").mkdir()
    (root / "tinyshakespeare" / "input.txt").write_text("\n".join(f"ROMEO:\n{s}\n" for s in _sentences(rng, 60)))
    (root / "wikitext-2").mkdir()
    for split, num in (("train", 80), ("valid", 12), ("test", 12)):
        lines = [" = Heading = "] + [s.lower() + " <unk> @-@ ." for s in _sentences(rng, num)]
        (root / "wikitext-2" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    wp = root / "writingprompts-automatants"
    wp.mkdir()
    (wp / "colab_train.txt").write_text("\n".join(f"{a} <newline> {b}" for a, b in
                                                  zip(_sentences(rng, 30), _sentences(rng, 30))) + "\n")
    (wp / "colab_train_prompts.txt").write_text("\n".join(f"[ WP ] {s}" for s in _sentences(rng, 30, 6)) + "\n")
    (root / "tinystories").mkdir()
    (root / "tinystories" / "tinystories_10k.txt").write_text(
        "\n<|endoftext|>\n".join(" ".join(_sentences(rng, 3)) for _ in range(40)))
    (root / "arxivData.json").write_text(json.dumps(
        [{"id": str(i), "summary": " ".join(_sentences(rng, 2)), "title": "t"} for i in range(40)]))
    hf = root / "hf_tinystories"
    hf.mkdir()
    for split, num in (("train", 40), ("validation", 8)):
        (hf / f"{split}.jsonl").write_text("".join(json.dumps({"text": " ".join(_sentences(rng, 2))}) + "\n"
                                                   for _ in range(num)))
    return root


@pytest.fixture(scope="module")
def hf_tokenizer_dir(data_root: Path) -> Path:
    """A GPT-2-style byte-level BPE saved as a transformers tokenizer folder (the hub's gpt2 is unreachable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    out = data_root / "gpt2_like"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>").save_pretrained(out)
    return out


@pytest.fixture()
def data_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Path:
    monkeypatch.setenv("LMBENCH_DATA", str(data_root))
    monkeypatch.setenv("ARXIV_JSON", str(data_root / "arxivData.json"))
    return data_root


def _local_overrides(path: Path, data_root: Path, tokenizer_dir: Path) -> list[str]:
    if path.stem == "tinystories":  # hub dataset + hub tokenizer -> local folder + local tokenizer
        return [f"data.path={data_root / 'hf_tinystories'}", f"tokenizer.params.name_or_path={tokenizer_dir}"]
    if path.stem in ("writingprompts", "writingprompts_seq2seq"):  # sentencepiece cannot learn 2500 pieces
        return ["tokenizer.params.vocab_size=200"]                   # from a few hundred words
    return []


def _late_overrides(path: Path) -> list[str]:
    """After TINY: an encoder-decoder's prompts are a source followed by <sep>."""
    cells = load_cells(path, [])[1]
    return ["sample.prompts=['Once upon a time <sep>']"] if any(c.spec.model.family == "hf_seq2seq" for c in cells) \
        else []


TINY = ["train.max_steps=2", "train.batch_size=4", "train.max_seconds=null", "train.eval_every=null", "train.checkpoint_every=null",
        "eval.batch_size=4", "sample.num_samples=1", "sample.max_new_tokens=3", "sample.prompts=[Once upon a time]",
        "tracking.backends=[none]"]


def test_there_is_a_recipe_for_every_notebook() -> None:
    names = {p.stem for p in EXPERIMENTS}
    assert {"quickstart", "tinystories", "tinystories_local", "shakespeare_char", "shakespeare_char_large",
            "writingprompts", "writingprompts_seq2seq", "t5_pairs", "arxiv_rnn", "wikitext2_lstm"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_recipe_loads_and_validates(path: Path, data_env: Path, hf_tokenizer_dir: Path) -> None:
    grid_name, cells = load_cells(path, _local_overrides(path, data_env, hf_tokenizer_dir))
    assert cells and all(c.spec.name == grid_name for c in cells)
    assert len({c.id for c in cells}) == len(cells)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_recipe_runs_at_a_tiny_budget(path: Path, data_env: Path, hf_tokenizer_dir: Path, tmp_path: Path) -> None:
    overrides = (_local_overrides(path, data_env, hf_tokenizer_dir) + TINY + _late_overrides(path)
                 + [f"data.cache_dir={tmp_path / 'cache'}"])
    code = main(["run", str(path), *overrides, "--results", str(tmp_path / "results")])
    assert code == 0
    grid_name, cells = load_cells(path, overrides)
    for cell in cells:
        run_dir = tmp_path / "results" / grid_name / cell.name
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed", cell.name
        assert summary["val_bpb"] > 0 and summary["steps"] == 2
        samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
        assert len(samples) >= len(cell.spec.sample.samplers)
    if len(cells) > 1:
        assert (tmp_path / "results" / grid_name / "report.md").is_file()
