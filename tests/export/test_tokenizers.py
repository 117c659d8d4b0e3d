"""Exported tokenizers give lmbench's ids on real corpora, prepend the start token, and refuse what has no equivalent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lmbench.errors import SpecError
from lmbench.export.tokenizers import EXPORTERS, sentencepiece_merges
from lmbench.tokenizers import Tokenizer, load_tokenizer
from lmbench.tokenizers.bpe import BPEConfig, BPETokenizer
from lmbench.tokenizers.char import CharConfig, CharTokenizer
from lmbench.tokenizers.hf import HFConfig, HFTokenizer
from lmbench.tokenizers.word import WordConfig, WordTokenizer


def exported(tokenizer: Tokenizer, tmp_path: Path, start_id: int | None = None) -> Any:
    """The exported tokenizer after a save_pretrained / AutoTokenizer.from_pretrained round trip."""
    from transformers import AutoTokenizer

    EXPORTERS.get(tokenizer.kind)(tokenizer, tokenizer.bos_id if start_id is None else start_id).save_pretrained(
        str(tmp_path / "tok"))
    return AutoTokenizer.from_pretrained(str(tmp_path / "tok"))


def assert_same_ids(tokenizer: Tokenizer, hf: Any, texts: list[str]) -> None:
    for text in texts:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == tokenizer.encode(text), text[:80]


def corpus(shared_data: Path) -> dict[str, list[str]]:
    return {
        "shakespeare": (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n"),
        "wikitext": [ln for ln in (shared_data / "wikitext-2" / "train.txt").read_text(encoding="utf-8")
                     .splitlines() if ln.strip()][:3000],
        "stories": (shared_data / "tinystories" / "tinystories_10k.txt").read_text(encoding="utf-8")
                   .split("\n\n")[:1500],
        "prompts": (shared_data / "writingprompts-automatants" / "colab_train.txt").read_text(encoding="utf-8")
                   .splitlines(),
    }


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> dict[str, list[str]]:
    return corpus(shared_data)


@pytest.mark.parametrize("config, name", [
    (CharConfig(), "shakespeare"),
    (CharConfig(lowercase=True, specials=["<sep>"]), "shakespeare"),
])
def test_char_ids_equal_on_tiny_shakespeare(config: CharConfig, name: str, texts: dict[str, list[str]],
                                            tmp_path: Path) -> None:
    tokenizer = CharTokenizer.train(texts[name][:2000], config)  # later paragraphs hold unseen characters too
    docs = texts[name] + [p + " <sep> X" for p in texts[name][:50]]
    assert_same_ids(tokenizer, exported(tokenizer, tmp_path), docs)


@pytest.mark.parametrize("config, name", [
    (WordConfig(pretokenized=True), "wikitext"),
    (WordConfig(max_size=2000), "stories"),
    (WordConfig(lowercase=True, specials=["<sep>"]), "stories"),
])
def test_word_ids_equal_on_wikitext_and_tinystories(config: WordConfig, name: str, texts: dict[str, list[str]],
                                                    tmp_path: Path) -> None:
    tokenizer = WordTokenizer.train(texts[name][:1000], config)
    assert_same_ids(tokenizer, exported(tokenizer, tmp_path), texts[name] + ["e.g. 3.14 don't <unk> <sep> ...!?"])


@pytest.mark.parametrize("config", [
    BPEConfig(vocab_size=2000, user_defined_symbols=["<sep>"]),
    BPEConfig(vocab_size=1500, byte_fallback=True, character_coverage=0.99),
    BPEConfig(vocab_size=1500, model_type="unigram"),
    BPEConfig(vocab_size=1500, split_newlines=False),
])
def test_sentencepiece_ids_equal_on_writingprompts(config: BPEConfig, texts: dict[str, list[str]],
                                                   tmp_path: Path) -> None:
    tokenizer = BPETokenizer.train(texts["prompts"], config)
    docs = texts["prompts"] + ["  two  spaces\tand a tab\n\nnew <sep> lines  ", "ünïcödé ☃ 漢字"] + texts["stories"][:200]
    assert_same_ids(tokenizer, exported(tokenizer, tmp_path), docs)


def test_byte_level_bpe_is_the_transformers_tokenizer(texts: dict[str, list[str]], tmp_path: Path) -> None:
    tokenizer = HFTokenizer.train(texts["stories"][:500], HFConfig(train_from_scratch=True, vocab_size=400,
                                                                   extra_special_tokens=["<sep>"]))
    hf = exported(tokenizer, tmp_path, start_id=tokenizer.eos_id)
    assert_same_ids(tokenizer, hf, texts["stories"][:200] + ["a <sep> b"])


def test_start_token_is_prepended_and_decode_round_trips(tmp_path: Path) -> None:
    text = "Hello, world! It's fine."
    for tokenizer, start in ((CharTokenizer.train([text], CharConfig()), "bos"),
                             (WordTokenizer.train([text], WordConfig()), "eos"),
                             (BPETokenizer.train([text] * 20, BPEConfig(vocab_size=40)), "bos")):
        start_id = getattr(tokenizer, f"{start}_id")
        hf = exported(tokenizer, tmp_path / tokenizer.kind, start_id=start_id)
        ids = hf(text)["input_ids"]
        assert ids == [start_id, *tokenizer.encode(text)]
        assert hf.bos_token_id == start_id and hf.eos_token_id == tokenizer.eos_id
        assert hf.pad_token_id == tokenizer.pad_id and hf.unk_token_id == tokenizer.unk_id
        assert hf.decode(ids, skip_special_tokens=True) == text == tokenizer.decode(ids)


def test_saved_and_reloaded_lmbench_tokenizer_exports_the_same(tmp_path: Path) -> None:
    tokenizer = CharTokenizer.train(["abc"], CharConfig())
    tokenizer.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert exported(again, tmp_path)("cab")["input_ids"] == [tokenizer.bos_id, *tokenizer.encode("cab")]


def test_what_has_no_equivalent_is_refused_naming_the_field() -> None:
    pytest.importorskip("razdel")
    with pytest.raises(SpecError) as err:
        EXPORTERS.get("word")(WordTokenizer.train(["a b"], WordConfig(backend="razdel")), 1)
    assert err.value.path == "tokenizer.params.backend"
    spm = BPETokenizer.train(["a b c d e f"] * 50, BPEConfig(vocab_size=16, normalization_rule_name="nmt_nfkc"))
    with pytest.raises(SpecError) as err:
        EXPORTERS.get("bpe")(spm, spm.bos_id)
    assert err.value.path == "tokenizer.params.normalization_rule_name"


def test_sentencepiece_merges_rank_by_the_merged_piece() -> None:
    vocab = {"<unk>": 0, "a": 1, "b": 2, "c": 3, "bc": 4, "ab": 5, "abc": 6}
    assert sentencepiece_merges(vocab) == [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]
