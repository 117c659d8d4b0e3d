"""Word tokenizer: the documented normalisation (split, lowercase, detokenizer), unknown words, vocabulary rules."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lmbench.errors import SpecError
from lmbench.tokenizers import load_tokenizer
from lmbench.tokenizers.word import WordConfig, WordTokenizer, detokenize

PROSE = "Hello, world! It's (really) fine: 3.14% of U.S. users, e.g. state-of-the-art... \"Quoted\" [text]?!"


def word(texts: list[str], **params: object) -> WordTokenizer:
    return WordTokenizer.train(texts, WordConfig(**params))  # type: ignore[arg-type]


def test_regex_split_keeps_words_numbers_and_abbreviations() -> None:
    assert word([]).split(PROSE) == [
        "Hello", ",", "world", "!", "It's", "(", "really", ")", "fine", ":", "3.14", "%", "of", "U.S.", "users",
        ",", "e.g.", "state-of-the-art", "...", '"', "Quoted", '"', "[", "text", "]", "?!",
    ]


def test_round_trip_of_single_spaced_prose_is_exact() -> None:
    tok = word([PROSE])
    assert tok.decode(tok.encode(PROSE)) == PROSE


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, world! It's (really) fine.", "Hello, world! It's (really) fine."),
    ("THE END. another one? yes! ok", "The end. Another one? Yes! Ok"),
    ('he said: "WHY?" and left.', 'He said: "why?" And left.'),  # ':' is no sentence end
    ("first line\n\nsecond   line", "First line second line"),  # whitespace is not kept
    ("we use e.g. GloVe ... and lstm.", "We use e.g. glove... And lstm."),
])
def test_lowercase_normalisation_and_prettify(text: str, expected: str) -> None:
    tok = word([text], lowercase=True)
    assert tok.split(text) == tok.split(text.lower())
    assert tok.decode(tok.encode(text)) == expected


@pytest.mark.parametrize(("tokens", "expected"), [
    (["a", ",", "b", ".", "c", "!", "d", "?", "e", ";", "f", ":", "g", "%"], "a, b. c! d? e; f: g%"),
    (["(", "a", ")", "[", "b", "]", "{", "c", "}"], "(a) [b] {c}"),
    (['"', "a", "b", '"', "c", '"', "d", '"'], '"a b" c "d"'),
    (["``", "a", "''", "b"], '"a" b'),
    (["«", "да", "»", "“", "yes", "”"], "«да» “yes”"),
    (["do", "n't", "it", "'s", "we", "'re", "players", "'"], "don't it's we're players'"),
    (["don", "'", "t", "it", "’", "s"], "don't it’s"),  # razdel splits contractions around the apostrophe
    (["role", "@-@", "playing", "1", "@,@", "000", "3", "@.@", "5"], "role-playing 1,000 3.5"),
    (["=", "Title", "=", "<unk>", "x"], "= Title = <unk> x"),
    ([], ""),
])
def test_detokenizer_rules(tokens: list[str], expected: str) -> None:
    assert detokenize(tokens) == expected


def test_capitalisation_skips_quotes_brackets_and_numbers() -> None:
    tokens = ["it", "ended", ".", '"', "then", "(", "what", "?", ")", "x", ".", "3", "cats", "."]
    assert detokenize(tokens, capitalize=True) == 'It ended. "Then (what?) X. 3 cats.'


def test_unknown_words_map_to_unk_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    tok = word(["the cat sat on the mat ."])
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.word"):
        ids = tok.encode_batch(["the dog sat .", "a zebra sat ."])
    assert ids[0] == [tok.encode("the")[0], tok.unk_id, tok.encode("sat")[0], tok.encode(".")[0]]
    assert ids[1][:2] == [tok.unk_id, tok.unk_id]
    assert len(caplog.records) == 1
    assert "3 of 8 tokens unknown" in caplog.text and "'dog'" in caplog.text and "'zebra'" in caplog.text
    assert tok.decode(ids[0]) == "the <unk> sat."


def test_known_text_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    tok = word(["the cat sat"])
    with caplog.at_level(logging.WARNING):
        tok.encode("the cat")
    assert not caplog.records


def test_vocabulary_by_frequency_with_min_freq_and_max_size() -> None:
    texts = ["b b b a a c", "a b d"]
    assert word(texts).tokens()[4:] == ["b", "a", "c", "d"]  # counts 4, 3, then ties in string order
    assert word(texts, min_freq=2).tokens()[4:] == ["b", "a"]
    assert word(texts, max_size=5).tokens() == ["<pad>", "<bos>", "<eos>", "<unk>", "b"]


def test_pretokenized_wikitext_line() -> None:
    line = " = Valkyria <unk> = \n The game 's role @-@ playing ( 1 @,@ 000 copies ) . \n"
    tok = word([line], pretokenized=True)
    assert "<unk>" not in tok.tokens()[4:]  # the literal <unk> is the special token, not a new word
    ids = tok.encode(line)
    assert ids[2] == tok.unk_id and tok.encode("@-@") == [tok.tokens().index("@-@")]
    assert tok.decode(ids) == "= Valkyria <unk> = The game's role-playing (1,000 copies)."


def test_literal_specials_in_text_are_their_own_ids() -> None:
    tok = word(["prompt words <sep> story words"], specials=["<sep>"])
    assert tok.sep_id == 4
    assert tok.encode("story <sep> prompt <unk>") == [tok.tokens().index("story"), 4,
                                                      tok.tokens().index("prompt"), tok.unk_id]


def test_razdel_backend() -> None:
    text = "We don't know, e.g. why. Вот и всё!"
    tok = word([text], backend="razdel", lowercase=True)
    assert tok.split(text) == ["we", "don", "'", "t", "know", ",", "e.g.", "why", ".", "вот", "и", "всё", "!"]
    assert tok.decode(tok.encode(text)) == "We don't know, e.g. why. Вот и всё!"


def test_save_load_gives_identical_ids(tmp_path: Path) -> None:
    tok = word([PROSE, "more words here"], lowercase=True, specials=["<sep>"])
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, WordTokenizer) and loaded.config == tok.config
    assert loaded.tokens() == tok.tokens()
    assert loaded.encode(PROSE + " unseen") == tok.encode(PROSE + " unseen")


@pytest.mark.parametrize(("params", "path"), [
    ({"backend": "spacy"}, "tokenizer.params.backend"),
    ({"min_freq": 0}, "tokenizer.params.min_freq"),
    ({"max_size": 4}, "tokenizer.params.max_size"),
    ({"specials": ["<sep>", "<sep>"]}, "tokenizer.params.specials"),
])
def test_check_spec_names_the_field(params: dict[str, object], path: str) -> None:
    with pytest.raises(SpecError) as err:
        WordTokenizer.check_spec(WordConfig(**params), None)  # type: ignore[arg-type]
    assert err.value.path == path


@pytest.mark.integration
def test_wikitext2_vocabulary(shared_data: Path) -> None:
    lines = (shared_data / "wikitext-2" / "train.txt").read_text(encoding="utf-8").splitlines()
    tok = word(lines, pretokenized=True)
    assert tok.vocab_size == 33278 + 2  # the usual 33,278 (with <unk> and <eos>) plus <pad> and <bos>


@pytest.mark.parametrize(("params", "path", "message"), [
    ({"backend": "spacy"}, "tokenizer.params.backend", "'spacy'"),
    ({"min_freq": 0}, "tokenizer.params.min_freq", "0 is out of range; allowed: >= 1"),
    ({"max_size": 4}, "tokenizer.params.max_size",
     "4 is out of range; allowed: > 4 (the number of special tokens), or null"),
    ({"max_size": 5, "specials": ["<sep>"]}, "tokenizer.params.max_size", "allowed: > 5"),
])
def test_check_spec_messages_name_the_value_and_the_rule(params: dict[str, object], path: str,
                                                          message: str) -> None:
    with pytest.raises(SpecError) as err:
        WordTokenizer.check_spec(WordConfig(**params), None)  # type: ignore[arg-type]
    assert err.value.path == path and message in err.value.message, err.value.message
    WordTokenizer.check_spec(WordConfig(max_size=5, min_freq=1), None)  # the smallest allowed values


def test_razdel_missing_is_named_unless_the_text_is_pretokenized(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_razdel(name: str, *args: object, **kwargs: object) -> object:
        if name == "razdel":
            raise ImportError("no razdel")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_razdel)
    with pytest.raises(SpecError) as err:
        WordTokenizer.check_spec(WordConfig(backend="razdel"), None)
    assert err.value.path == "tokenizer.params.backend"
    assert err.value.message == "razdel is not installed: pip install 'lmbench[razdel]' (or backend: regex)"
    WordTokenizer.check_spec(WordConfig(backend="razdel", pretokenized=True), None)  # split on spaces only
    WordTokenizer.check_spec(WordConfig(backend="regex"), None)


def test_longer_specials_win_over_their_prefixes_and_max_size_keeps_only_specials() -> None:
    tok = word(["a <s> b <sep> c"], specials=["<s>", "<sep>"])
    ids = tok.encode("x <sep> <s>")
    assert ids[1:] == [tok.tokens().index("<sep>"), tok.tokens().index("<s>")]
    only = word(["a b c"], max_size=5)  # one word fits after the 4 specials
    assert only.tokens() == ["<pad>", "<bos>", "<eos>", "<unk>", "a"]


def test_flat_encoding_warns_about_unknown_words_but_not_about_a_literal_unk(
        caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    tok = word(["the cat sat ."])
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.word"):
        flat, lengths = tok.encode_flat(["the <unk> sat .", "the cat ."])
    assert flat.dtype == np.uint32 and flat.tolist() == tok.encode("the <unk> sat .") + tok.encode("the cat .")
    assert lengths.dtype == np.int64 and lengths.tolist() == [4, 3]
    assert not caplog.records  # the literal <unk> is the unk token, not an unknown word
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.word"):
        tok.encode_flat(["the dog <unk> ran"])
    assert len(caplog.records) == 1 and "2 of 4 tokens unknown" in caplog.text and "'dog'" in caplog.text
    assert "'ran'" in caplog.text and "'<unk>'" not in caplog.text and "word" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.word"):
        tok.encode_batch(["the <unk> cat"])
    assert not caplog.records


@pytest.mark.parametrize(("tokens", "expected"), [
    (["it", "'s", "fine"], "it's fine"),  # a contraction joins its word
    (["'s", "fine"], "'s fine"),  # nothing before it: not a contraction
    (["x", "'", "s"], "x's"),
    (["ok", "'"], "ok'"),  # a quote at the end
    (["\"", "a", "\"", "b", "\"", "c", "\""], '"a" b "c"'),  # quotes open and close in turn
])
def test_detokenizer_contractions_and_quotes(tokens: list[str], expected: str) -> None:
    assert detokenize(tokens) == expected


def test_capitalize_only_letters() -> None:
    from lmbench.tokenizers.word import _capitalize

    assert [_capitalize(t) for t in ("word", "élan", "3rd", "'tis", "")] == ["Word", "Élan", "3rd", "'tis", ""]


def test_the_unknown_warning_names_the_tokenizer_kind(caplog: pytest.LogCaptureFixture) -> None:
    tok = word(["the cat"])
    with caplog.at_level(logging.WARNING):
        tok.encode_batch(["the dog"])
        tok.encode_flat(["a cat"])
    assert [r.getMessage() for r in caplog.records] == [
        "word tokenizer: 1 of 2 tokens unknown, mapped to <unk> (e.g. 'dog')",
        "word tokenizer: 1 of 2 tokens unknown, mapped to <unk> (e.g. 'a')"]


def test_text_with_specials_splits_by_the_regex_rules_around_them() -> None:
    """Abbreviations are whole words only where the regex finds them: "xa.b." is the word "xa", then "." "b" "."."""
    tok = word(["x"])
    assert tok.split("xa.b. <unk> U.S.") == ["xa", ".", "b", ".", "<unk>", "U.S."]
    assert tok.split("xa.b. U.S.") == ["xa", ".", "b", ".", "U.S."]  # the same without a special


def test_a_special_that_begins_another_does_not_hide_it_in_words() -> None:
    tok = word(["a"], specials=["<s>", "<s>>"])
    assert tok.split("a<s>>a<s>") == ["a", "<s>>", "a", "<s>"]


@pytest.mark.parametrize(("tokens", "expected"), [
    (["U.S", "'", "s", "view"], "U.S's view"),  # the token before ends in a letter: a contraction
    (["(", "'", "s", ")"], "(' s)"),  # not after a word: the apostrophe is a quote
    (["'", "s", "x"], "' s x"),  # nothing before it
    (["x", "(", "'", "s"], "x (' s"),  # the word two tokens back does not count
])
def test_an_apostrophe_joins_a_contraction_only_after_a_word(tokens: list[str], expected: str) -> None:
    assert detokenize(tokens) == expected


def test_capitalisation_of_a_first_word_that_mixes_letters_and_digits() -> None:
    assert detokenize(["b2b", "works", ".", "a1", "too", "."], capitalize=True) == "B2b works. A1 too."


def test_flat_encoding_warning_shows_the_first_unknown_words_across_texts(caplog: pytest.LogCaptureFixture) -> None:
    """The warning counts every unknown word of the call and shows the first five distinct ones in text order,
    however the texts share them out (read again only from the texts that hold one)."""
    tok = word(["the cat sat ."])
    texts = ["the dog", "the cat", "emu emu", "the fox yak", "cat", "gnu owl", "pig"]
    with caplog.at_level(logging.WARNING, logger="lmbench.tokenizers.word"):
        flat, lengths = tok.encode_flat(texts)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == ("word tokenizer: 8 of 13 tokens unknown, mapped to <unk> "
                                              "(e.g. 'dog', 'emu', 'fox', 'yak', 'gnu')")
    assert flat.tolist() == [i for t in texts for i in tok.encode(t)] and lengths.tolist() == [2, 2, 2, 3, 1, 2, 1]
