"""sentencepiece tokenizer: the notebook's ids, exact round trips (whitespace and newlines), <sep>, save/load."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from lmbench.errors import SpecError
from lmbench.tokenizers import load_tokenizer
from lmbench.tokenizers.bpe import BPEConfig, BPETokenizer, sample_documents


@pytest.fixture(scope="module")
def bpe(corpus: list[str]) -> BPETokenizer:
    config = BPEConfig(vocab_size=300, user_defined_symbols=["<sep>"], character_coverage=1.0)
    return BPETokenizer.train(iter(corpus), config)


def test_special_ids_follow_the_writingprompts_notebook(bpe: BPETokenizer) -> None:
    assert (bpe.pad_id, bpe.unk_id, bpe.bos_id, bpe.eos_id, bpe.sep_id) == (0, 1, 2, 3, 4)
    assert bpe.tokens()[:6] == ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>", "\n"]
    assert bpe.vocab_size == 300


def test_round_trip_is_exact(bpe: BPETokenizer, varied_texts: list[str]) -> None:
    for text in varied_texts:
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.encode_batch(varied_texts) == [bpe.encode(t) for t in varied_texts]


@pytest.mark.parametrize("text", ["a\nb", "\n\nx\n", " the fox\n  the fox ", "\n\tindented\n", "   ", ""])
def test_newlines_and_whitespace_survive(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


def test_newline_and_sep_are_single_tokens(bpe: BPETokenizer) -> None:
    newline = bpe.tokens().index("\n")
    ids = bpe.encode("the fox<sep> the bear\n\n")
    assert ids.count(bpe.sep_id) == 1 and ids[-2:] == [newline, newline]
    assert bpe.decode(ids) == "the fox<sep> the bear\n\n"


def test_decode_drops_control_tokens(bpe: BPETokenizer) -> None:
    ids = bpe.encode("the fox")
    assert bpe.decode([bpe.bos_id, *ids, bpe.eos_id, bpe.pad_id]) == "the fox"


def test_uncovered_characters(corpus: list[str]) -> None:
    plain = BPETokenizer.train(corpus, BPEConfig(vocab_size=200, character_coverage=1.0))
    assert plain.decode(plain.encode("fox ✈ fox")) == "fox <unk> fox"
    with_bytes = BPETokenizer.train(corpus, BPEConfig(vocab_size=600, character_coverage=1.0, byte_fallback=True))
    assert with_bytes.decode(with_bytes.encode("fox ✈ fox")) == "fox ✈ fox"


def test_unigram_round_trip(corpus: list[str], varied_texts: list[str]) -> None:
    tok = BPETokenizer.train(corpus, BPEConfig(model_type="unigram", vocab_size=150, character_coverage=1.0))
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.sep_id) == (0, 1, 2, 3, None)
    for text in varied_texts:
        assert tok.decode(tok.encode(text)) == text


def test_document_sample_is_seeded_reservoir_sampling() -> None:
    """Algorithm R with random.Random(seed), written out here: keep the first k, then the i-th document (1-based)
    replaces slot randrange(i) when that is < k. Pinned for seed 0; the first k without shuffling."""
    docs = [f"d{i}" for i in range(40)]
    rng, expected = random.Random(0), docs[:5]
    for i in range(6, 41):
        slot = rng.randrange(i)
        if slot < 5:
            expected[slot] = docs[i - 1]
    assert sample_documents(docs, 5, seed=0) == expected == ["d8", "d1", "d2", "d25", "d34"]
    assert sample_documents(iter(docs), 5, seed=1) != expected
    assert sample_documents(docs, 5, seed=0, shuffle=False) == docs[:5]
    assert sample_documents(docs[:3], 5, seed=0) == docs[:3]


def test_training_sample_follows_the_seed_in_every_process() -> None:
    """Documents that each bring one character of their own: the trained alphabet is the sample. It is the seeded
    sample (sentencepiece's own sampling ignores the seed and differs from process to process), of the given size."""
    docs = [("ab cd ef " * 5) + chr(0x4E00 + i) * 3 for i in range(300)]

    def alphabet(**params: Any) -> list[int]:
        config = BPEConfig(vocab_size=200, input_sentence_size=150, character_coverage=1.0, **params)
        return sorted(ord(t) - 0x4E00 for t in BPETokenizer.train(docs, config).tokens()
                      if len(t) == 1 and 0x4E00 <= ord(t) < 0x4E00 + 300)

    chosen = sorted(ord(d[-1]) - 0x4E00 for d in sample_documents(docs, 150, seed=0))
    assert alphabet() == chosen and len(chosen) == 150
    assert alphabet(seed=1) != chosen
    assert alphabet(shuffle_input_sentence=False) == list(range(150))


def test_save_load_gives_identical_ids(tmp_path: Path, bpe: BPETokenizer, varied_texts: list[str]) -> None:
    bpe.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BPETokenizer) and loaded.config == bpe.config
    assert loaded.sep_id == bpe.sep_id and loaded.tokens() == bpe.tokens()
    assert loaded.encode_batch(varied_texts) == bpe.encode_batch(varied_texts)


def test_too_large_vocabulary_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as err:
        BPETokenizer.train(["tiny corpus"] * 3, BPEConfig(vocab_size=5000))
    assert err.value.path == "tokenizer.params.vocab_size"
    assert "Vocabulary size too high (5000)" in err.value.message and "INTERNAL" not in err.value.message


@pytest.mark.parametrize(("params", "path"), [
    ({"vocab_size": 6, "user_defined_symbols": ["<sep>"]}, "tokenizer.params.vocab_size"),
    ({"vocab_size": 261, "byte_fallback": True}, "tokenizer.params.vocab_size"),
    ({"model_type": "bep"}, "tokenizer.params.model_type"),
    ({"normalization_rule_name": "nfc"}, "tokenizer.params.normalization_rule_name"),
    ({"character_coverage": 0.0}, "tokenizer.params.character_coverage"),
    ({"max_sentence_length": 0}, "tokenizer.params.max_sentence_length"),
    ({"input_sentence_size": -1}, "tokenizer.params.input_sentence_size"),
    ({"user_defined_symbols": ["a,b"]}, "tokenizer.params.user_defined_symbols[0]"),
    ({"user_defined_symbols": ["<unk>"]}, "tokenizer.params.user_defined_symbols[0]"),
])
def test_check_spec_names_the_field(params: dict[str, object], path: str) -> None:
    with pytest.raises(SpecError) as err:
        BPETokenizer.check_spec(BPEConfig(**params), None)  # type: ignore[arg-type]
    assert err.value.path == path


@pytest.mark.integration
def test_writingprompts_with_sep(shared_data: Path) -> None:
    folder = shared_data / "writingprompts-automatants"
    stories = (folder / "colab_train.txt").read_text(encoding="utf-8").replace(" <newline> ", "\n").splitlines()
    tok = BPETokenizer.train(stories, BPEConfig(vocab_size=2500, user_defined_symbols=["<sep>"]))
    assert tok.vocab_size == 2500 and tok.sep_id == 4
    assert tok.decode(tok.encode_batch(stories[:20])[7]) == stories[7]


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"model_type": "wordpiece"}, "model_type", "'wordpiece'"),
    ({"normalization_rule_name": "nfkd"}, "normalization_rule_name", "'nfkd'"),
    ({"vocab_size": 5}, "vocab_size",
     "5 is out of range; allowed: > 5 (special tokens, user-defined symbols and byte pieces)"),
    ({"vocab_size": 261, "byte_fallback": True}, "vocab_size", "allowed: > 261 (special"),
    ({"character_coverage": 0.0}, "character_coverage", "0.0 is out of range; allowed: in (0, 1]"),
    ({"character_coverage": 1.5}, "character_coverage", "1.5 is out of range; allowed: in (0, 1]"),
    ({"max_sentence_length": 0}, "max_sentence_length", "0 is out of range; allowed: >= 1"),
    ({"input_sentence_size": -1}, "input_sentence_size", "-1 is out of range; allowed: >= 0 (0: all)"),
])
def test_check_spec_messages_name_the_value_and_the_rule(params: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        BPETokenizer.check_spec(BPEConfig(**params), None)
    assert err.value.path == f"tokenizer.params.{field}" and message in err.value.message, err.value.message


def test_smallest_allowed_settings_pass_the_check() -> None:
    # 4 specials + "\\n": vocab 6 is the smallest; with byte pieces 262; coverage 1 and one-byte documents are fine
    BPETokenizer.check_spec(BPEConfig(vocab_size=6, character_coverage=1.0, max_sentence_length=1), None)
    BPETokenizer.check_spec(BPEConfig(vocab_size=262, byte_fallback=True, input_sentence_size=0), None)
    BPETokenizer.check_spec(BPEConfig(vocab_size=5, split_newlines=False), None)


def test_ids_are_python_ints(bpe: BPETokenizer) -> None:
    ids = bpe.encode("once upon a time")
    batch = bpe.encode_batch(["once upon", "a time"])
    assert ids and all(type(i) is int for i in ids) and all(type(i) is int for row in batch for i in row)


def test_no_dummy_prefix_the_first_word_is_encoded_as_written() -> None:
    """sentencepiece would add a space before every text (add_dummy_prefix); lmbench keeps the text as written.
    (Trained here, not by the module's fixture, so that mutation testing maps the test to the training code.)"""
    tok = BPETokenizer.train(["the cat sat on the mat"] * 20, BPEConfig(vocab_size=30, character_coverage=1.0))
    first = tok._sp.id_to_piece(tok.encode("the cat")[0])
    assert not first.startswith("▁")


def test_long_training_documents_are_learned_not_skipped() -> None:
    """sentencepiece skips training sentences over max_sentence_length bytes (4192 by default); lmbench's default
    (1 MiB) keeps a 10 KB document, so its word becomes one piece."""
    long_doc = "qzxv " * 2000  # 10,000 bytes
    tok = BPETokenizer.train([long_doc, "a b c d e f g h"], BPEConfig(vocab_size=30, character_coverage=1.0,
                                                                      split_newlines=False))
    assert len(tok.encode("qzxv")) == 1


@pytest.mark.parametrize(("symbols", "path", "message"), [
    (["", "<x>"], "tokenizer.params.user_defined_symbols[0]", "'' must be non-empty and contain no comma"),
    (["<x>", "<pad>"], "tokenizer.params.user_defined_symbols[1]", "'<pad>' is already a special token (pad, unk, "
                                                                   "bos, eos)"),
    (["<x>", "<x>"], "tokenizer.params.user_defined_symbols", "['<x>', '<x>'] lists a symbol twice"),
])
def test_user_defined_symbol_errors_name_the_entry_and_the_rule(symbols: list[str], path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        BPETokenizer.check_spec(BPEConfig(user_defined_symbols=symbols), None)  # type: ignore[arg-type]
    assert (err.value.path, err.value.message) == (path, message)
