"""Char tokenizer: id layout, exact round trips, lowercase, unknown characters, specials, save/load."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lmbench.errors import SpecError
from lmbench.tokenizers import load_tokenizer
from lmbench.tokenizers.char import CharConfig, CharTokenizer


def test_ids_are_specials_then_sorted_characters() -> None:
    tok = CharTokenizer.train(["hello", "world"], CharConfig())
    assert tok.tokens() == ["<pad>", "<bos>", "<eos>", "<unk>", "d", "e", "h", "l", "o", "r", "w"]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.sep_id) == (0, 1, 2, 3, None)
    assert tok.vocab_size == 11
    assert tok.encode("hello") == [6, 5, 7, 7, 8]


def test_round_trip_is_exact(corpus: list[str], varied_texts: list[str]) -> None:
    tok = CharTokenizer.train(iter(corpus), CharConfig())
    for text in varied_texts:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(varied_texts) == [tok.encode(t) for t in varied_texts]


def test_lowercase_folds_case_before_training_and_encoding() -> None:
    tok = CharTokenizer.train(["Hello World"], CharConfig(lowercase=True))
    assert "H" not in tok.tokens() and "h" in tok.tokens()
    assert tok.decode(tok.encode("HeLLo")) == "hello"


def test_unknown_characters_map_to_unk_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    tok = CharTokenizer.train(["abc"], CharConfig())
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.char"):
        ids = tok.encode_batch(["abz", "xa"])
    assert ids == [[4, 5, tok.unk_id], [tok.unk_id, 4]]
    assert len(caplog.records) == 1
    assert "2 of 5 tokens unknown" in caplog.text and "'z'" in caplog.text and "'x'" in caplog.text
    assert tok.decode(ids[0]) == "ab<unk>"


def test_vectorised_encode_equals_the_per_character_one(corpus: list[str], varied_texts: list[str]) -> None:
    for config in (CharConfig(), CharConfig(lowercase=True)):
        tok = CharTokenizer.train(corpus[: len(corpus) // 2], config)  # some characters of the texts stay unknown
        flat, lengths = tok.encode_flat(varied_texts + corpus)
        seqs = tok.encode_batch(varied_texts + corpus)
        assert lengths.tolist() == [len(s) for s in seqs] and flat.tolist() == [i for s in seqs for i in s]


def test_vectorised_encode_matches_the_definition(caplog: pytest.LogCaptureFixture) -> None:
    """encode_flat (a code-point table) gives the ids of the definition, written out by hand: unknown characters
    (above and below the table's largest code point, a lone surrogate) are <unk> with one warning that counts them,
    and lowercase folds before lengths are taken ("İ" lower-cases to two characters)."""
    tok = CharTokenizer.train(["abc"], CharConfig())  # a=4 b=5 c=6
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.char"):
        flat, lengths = tok.encode_flat(["cab", "", "a\x00z😀\ud800"])
    assert flat.tolist() == [6, 4, 5, 4, 3, 3, 3, 3] and lengths.tolist() == [3, 0, 5]
    assert len(caplog.records) == 1 and "4 of 8 tokens unknown" in caplog.records[0].getMessage()
    lower = CharTokenizer.train(["i\u0307ab"], CharConfig(lowercase=True))  # "i", "\u0307", "a", "b": 6..7, 4, 5
    flat, lengths = lower.encode_flat(["İA", "B"])
    assert lengths.tolist() == [3, 1] and flat.tolist() == [6, 7, 4, 5]
    special = CharTokenizer.train(["ab"], CharConfig(specials=["<sep>"]))  # the per-character path keeps <sep> whole
    assert special.encode_flat(["a<sep>b"])[0].tolist() == [5, 4, 6]


def test_decode_drops_pad_bos_eos() -> None:
    tok = CharTokenizer.train(["ab"], CharConfig())
    assert tok.decode([tok.bos_id, *tok.encode("ab"), tok.eos_id, tok.pad_id, tok.pad_id]) == "ab"


def test_specials_are_single_tokens() -> None:
    tok = CharTokenizer.train(["prompt <sep> story"], CharConfig(specials=["<sep>"]))
    assert tok.sep_id == 4
    ids = tok.encode("pro <sep> st")
    assert ids.count(tok.sep_id) == 1 and len(ids) == 8
    assert tok.decode(ids) == "pro <sep> st"


def test_save_load_gives_identical_ids(tmp_path: Path, corpus: list[str], varied_texts: list[str]) -> None:
    tok = CharTokenizer.train(corpus, CharConfig(lowercase=True, specials=["<sep>"]))
    tok.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, CharTokenizer) and loaded.config == tok.config
    assert loaded.tokens() == tok.tokens() and loaded.sep_id == tok.sep_id
    assert loaded.encode_batch(varied_texts) == tok.encode_batch(varied_texts)


def test_blank_special_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as err:
        CharTokenizer.check_spec(CharConfig(specials=["<sep>", " "]), None)
    assert err.value.path == "tokenizer.params.specials[1]"


@pytest.mark.integration
def test_tiny_shakespeare_has_65_characters(shared_data: Path) -> None:
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    tok = CharTokenizer.train([text], CharConfig())
    assert tok.vocab_size == 65 + 4
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]


def test_overlapping_specials_match_longest_first_and_messages_name_the_kind(
        caplog: pytest.LogCaptureFixture) -> None:
    tok = CharTokenizer.train(["ab"], CharConfig(specials=["<s>", "<sep>"]))
    sep, s = tok.tokens().index("<sep>"), tok.tokens().index("<s>")
    assert tok.encode("a<sep>b<s>") == [tok.tokens().index("a"), sep, tok.tokens().index("b"), s]
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.char"):
        tok.encode_flat(["abz"])
        tok.encode_batch(["ab"])  # nothing unknown: no second warning
    assert [r.getMessage() for r in caplog.records] == [
        "char tokenizer: 1 of 3 tokens unknown, mapped to <unk> (e.g. 'z')"]
    with pytest.raises(SpecError) as err:
        CharTokenizer.check_spec(CharConfig(specials=["<sep>", " "]), None)
    assert err.value.message == "' ' is empty or whitespace; a special symbol needs visible text"
    with pytest.raises(SpecError) as err:
        CharTokenizer.check_spec(CharConfig(specials=["<sep>", "<sep>"]), None)
    assert err.value.path == "tokenizer.params.specials" and err.value.message == "['<sep>', '<sep>'] lists a symbol twice"


def test_a_vocabulary_of_specials_only_encodes_everything_as_unknown() -> None:
    tok = CharTokenizer.train([], CharConfig())
    flat, lengths = tok.encode_flat(["ab", ""])
    assert flat.tolist() == [tok.unk_id] * 2 and lengths.tolist() == [2, 0]


def test_the_unknown_warning_names_the_unknown_characters_only(caplog: pytest.LogCaptureFixture) -> None:
    tok = CharTokenizer.train(["abc"], CharConfig())
    with caplog.at_level(logging.WARNING):
        ids, lengths = tok.encode_flat(["ab§", "¤c"])
    assert (ids.dtype, lengths.dtype, lengths.tolist()) == (np.uint32, np.int64, [3, 2])
    message = " ".join(r.getMessage() for r in caplog.records)
    assert message == "char tokenizer: 2 of 5 tokens unknown, mapped to <unk> (e.g. '§', '¤')"


def test_a_special_that_begins_another_does_not_hide_it() -> None:
    """Specials are matched longest first: "<s>" must not cut "<s>>" into "<s>" and ">"."""
    tok = CharTokenizer.train(["a>"], CharConfig(specials=["<s>", "<s>>"]))
    ids = tok.encode("a<s>>a<s>")
    assert [tok.decode([i]) for i in ids] == ["a", "<s>>", "a", "<s>"]
