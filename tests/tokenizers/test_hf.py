"""hf tokenizer: a byte-level BPE saved as a local transformers directory (never the network), GPT-2 special ids,
exact round trips, training from scratch, save/load."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from lmbench.errors import SpecError
from lmbench.spec import TokenizerSpec
from lmbench.tokenizers import build_tokenizer, load_tokenizer
from lmbench.tokenizers.hf import ENDOFTEXT, HFConfig, HFTokenizer, train_byte_level_bpe


@pytest.fixture(scope="module")
def gpt2_like_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """A GPT-2-style tokenizer directory built with `tokenizers` directly, as a hub download would look."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rust = Tokenizer(models.BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    rust.train_from_iterator(corpus, trainer)
    directory = tmp_path_factory.mktemp("gpt2-like")
    PreTrainedTokenizerFast(tokenizer_object=rust, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                            unk_token=ENDOFTEXT).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def local(gpt2_like_dir: Path) -> HFTokenizer:
    tok = build_tokenizer(TokenizerSpec("hf", {"name_or_path": str(gpt2_like_dir)}), [])
    assert isinstance(tok, HFTokenizer)
    return tok


def test_gpt2_style_special_ids(local: HFTokenizer) -> None:
    assert local.vocab_size == 400
    endoftext = local.hf.convert_tokens_to_ids(ENDOFTEXT)
    assert local.eos_id == local.bos_id == local.pad_id == local.unk_id == endoftext < local.vocab_size
    assert local.sep_id is None


def test_round_trip_is_exact(local: HFTokenizer, varied_texts: list[str]) -> None:
    unseen = "Bytes never seen in training: ✈ ♞ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\r\n"
    for text in [*varied_texts, unseen]:
        assert local.decode(local.encode(text)) == text
    assert local.encode_batch(varied_texts) == [local.encode(t) for t in varied_texts]


def test_decode_drops_endoftext(local: HFTokenizer) -> None:
    ids = local.encode("the fox")
    assert local.decode([local.bos_id, *ids, local.eos_id, local.pad_id]) == "the fox"
    assert local.encode(f"a{ENDOFTEXT}b").count(local.eos_id) == 1  # the separator string is one token


def test_tokens_are_the_library_token_strings(local: HFTokenizer) -> None:
    tokens = local.tokens()
    assert len(tokens) == local.vocab_size and tokens[local.eos_id] == ENDOFTEXT
    assert "Ġthe" in tokens  # byte-level BPE marks a preceding space with Ġ


def test_train_from_scratch_with_sep(corpus: list[str], varied_texts: list[str]) -> None:
    spec = TokenizerSpec("hf", {"train_from_scratch": True, "vocab_size": 320, "extra_special_tokens": ["<sep>"]})
    tok = build_tokenizer(spec, iter(corpus))
    assert tok.vocab_size == 320 and tok.eos_id == 0 and tok.sep_id == 1
    ids = tok.encode("the prompt <sep> the story")
    assert ids.count(tok.sep_id) == 1 and tok.decode(ids) == "the prompt <sep> the story"
    for text in varied_texts:
        assert tok.decode(tok.encode(text)) == text


def test_train_from_scratch_like_an_existing_tokenizer(gpt2_like_dir: Path, corpus: list[str]) -> None:
    params = {"name_or_path": str(gpt2_like_dir), "train_from_scratch": True, "vocab_size": 300}
    tok = build_tokenizer(TokenizerSpec("hf", params), corpus)
    assert tok.vocab_size == 300
    assert tok.decode(tok.encode("the quick brown fox\n")) == "the quick brown fox\n"


def test_save_load_gives_identical_ids(tmp_path: Path, local: HFTokenizer, varied_texts: list[str]) -> None:
    local.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, HFTokenizer) and loaded.config == local.config
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id, loaded.unk_id) == (local.pad_id, local.bos_id,
                                                                             local.eos_id, local.unk_id)
    assert loaded.encode_batch(varied_texts) == local.encode_batch(varied_texts)
    from transformers import AutoTokenizer  # the saved folder is a plain transformers tokenizer too

    assert AutoTokenizer.from_pretrained(str(tmp_path / "tok"))("the fox")["input_ids"] == local.encode("the fox")


@pytest.mark.parametrize(("params", "path", "message"), [
    ({}, "tokenizer.params.name_or_path", "required field is missing (a hub id such as 'gpt2' or a local tokenizer "
                                          "directory), unless train_from_scratch: true"),
    ({"name_or_path": "./no/such/dir"}, "tokenizer.params.name_or_path",
     "'./no/such/dir' is not a directory (nor a hub id like 'gpt2')"),
    ({"train_from_scratch": True, "vocab_size": 257}, "tokenizer.params.vocab_size",
     "257 is out of range; allowed: > 257 (256 bytes and the special tokens)"),
    ({"train_from_scratch": True, "vocab_size": 258, "extra_special_tokens": ["<sep>"]},
     "tokenizer.params.vocab_size", "allowed: > 258"),
    ({"train_from_scratch": True, "min_frequency": 0}, "tokenizer.params.min_frequency",
     "0 is out of range; allowed: >= 1"),
    ({"name_or_path": "gpt2", "extra_special_tokens": [" "]}, "tokenizer.params.extra_special_tokens[0]",
     "' ' is empty or whitespace"),
])
def test_check_spec_names_the_field(params: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        HFTokenizer.check_spec(HFConfig(**params), None)  # type: ignore[arg-type]
    assert err.value.path == path and message in err.value.message, err.value.message


def test_smallest_training_settings_pass_the_check() -> None:
    HFTokenizer.check_spec(HFConfig(train_from_scratch=True, vocab_size=258, min_frequency=1), None)
    HFTokenizer.check_spec(HFConfig(train_from_scratch=True, vocab_size=259, extra_special_tokens=["<sep>"]), None)


def test_encoding_adds_no_special_tokens_on_either_path(corpus: list[str]) -> None:
    """A BERT-like tokenizer whose post-processor adds [CLS] ... [SEP]: lmbench's encode adds none, through the
    Rust batch encode and through the Python path a truncating tokenizer takes; decoding does no space clean-up."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rust = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.train_from_iterator(corpus + ["hello , world ."], trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    rust.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]")
    tok = HFTokenizer(hf, HFConfig())
    fast = tok.encode_batch(["hello , world .", "world"])
    assert fast[1] == [hf.convert_tokens_to_ids("world")] and 2 not in fast[0] and 3 not in fast[0]
    hf.backend_tokenizer.enable_truncation(max_length=100)  # Rust batch path off: the Python path
    assert tok.encode_batch(["hello , world .", "world"]) == fast
    assert tok.decode(fast[0]) == "hello , world ."  # no clean-up of the space before punctuation


def test_unreachable_hub_id_is_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError) as err:
        build_tokenizer(TokenizerSpec("hf", {"name_or_path": "lmbench-test/no-such-tokenizer"}), [])
    assert err.value.path == "tokenizer.params.name_or_path"
    assert err.value.message.startswith("tokenizer 'lmbench-test/no-such-tokenizer' is not in the local Hugging Face "
                                        "cache and HF_HUB_OFFLINE is set; "), err.value.message


def test_special_ids_of_a_tokenizer_with_its_own_tokens_and_of_one_with_none(corpus: list[str]) -> None:
    """A BERT-like tokenizer keeps its own bos/pad/unk/sep ids; one with no special token at all gets
    <|endoftext|> added as EOS, and every other special id falls back to it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def fast(specials: list[str], **named: str) -> PreTrainedTokenizerFast:
        rust = Tokenizer(models.WordLevel(unk_token=named.get("unk_token", "[UNK]")))
        rust.pre_tokenizer = pre_tokenizers.Whitespace()
        rust.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials, show_progress=False))
        return PreTrainedTokenizerFast(tokenizer_object=rust, **named)

    own = HFTokenizer(fast(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"], pad_token="[PAD]", unk_token="[UNK]",
                           bos_token="[CLS]", sep_token="[SEP]", eos_token="[EOS]"), HFConfig())
    assert (own.pad_id, own.unk_id, own.bos_id, own.sep_id, own.eos_id) == (0, 1, 2, 3, 4)
    bare = HFTokenizer(fast([]), HFConfig())
    assert bare.hf.convert_ids_to_tokens(bare.eos_id) == ENDOFTEXT
    assert bare.bos_id == bare.pad_id == bare.unk_id == bare.eos_id and bare.sep_id is None
    with_sep = HFTokenizer(fast([]), HFConfig(extra_special_tokens=["<sep>"]))
    assert with_sep.hf.convert_ids_to_tokens(with_sep.sep_id) == "<sep>" and with_sep.sep_id != with_sep.eos_id


def _word_level(corpus: list[str], cls: type | None = None, lowercase: bool = False, **named: object) -> Any:
    """A whitespace word-level tokenizer with [PAD] 0 and [UNK] 1 (optionally lowercasing, as an uncased model)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rust = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    if lowercase:
        rust.normalizer = normalizers.Lowercase()
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.train_from_iterator(corpus + ["hello , world ."], trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]"], show_progress=False))
    return (cls or PreTrainedTokenizerFast)(tokenizer_object=rust, pad_token="[PAD]", unk_token="[UNK]", **named)


def _counting_calls() -> type:
    """A PreTrainedTokenizerFast that counts calls of transformers' Python encode (`tokenizer(texts)`)."""
    from transformers import PreTrainedTokenizerFast

    class CountingCalls(PreTrainedTokenizerFast):
        calls = 0

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return super().__call__(*args, **kwargs)

    return CountingCalls


def _ids(hf: Any, text: str) -> list[int]:
    """The reference: each whitespace-separated word's id in the word-level vocabulary."""
    return [int(hf.convert_tokens_to_ids(word)) for word in text.split()]


def test_a_fast_tokenizer_encodes_with_the_rust_batch_encoder(corpus: list[str]) -> None:
    hf = _word_level(corpus, cls=_counting_calls())
    tok = HFTokenizer(hf, HFConfig())
    assert tok.encode_batch(["the fox", "fox"]) == [_ids(hf, "the fox"), _ids(hf, "fox")]
    assert hf.calls == 0  # not through transformers' Python encode


def test_encode_never_truncates_pads_or_warns_when_the_tokenizer_would(corpus: list[str]) -> None:
    """Truncation or padding switched on in the Rust tokenizer sends encode through transformers' Python path,
    which must still give every id of a long document, no pads, and no 'longer than the maximum' warning."""
    import logging

    class Recording(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    text = "the fox and the bear"
    handler = Recording()
    logging.getLogger("transformers").addHandler(handler)  # the library's root logger, which does not propagate
    try:
        hf = _word_level(corpus, cls=_counting_calls(), model_max_length=3)
        tok = HFTokenizer(hf, HFConfig())
        hf.backend_tokenizer.enable_truncation(max_length=2)
        assert tok.encode_batch([text]) == [_ids(hf, text)] and hf.calls == 1
        hf.backend_tokenizer.enable_padding(length=8)
        assert tok.encode_batch(["the fox"]) == [_ids(hf, "the fox")] and hf.calls == 2
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert [m for m in handler.messages if "maximum sequence length" in m] == []


def test_a_tokenizer_without_is_fast_encodes_through_its_call(corpus: list[str]) -> None:
    """transformers' tokenizers without a Rust backend (MistralCommonBackend has no `is_fast`, and no
    `backend_tokenizer`) encode through `tokenizer(texts)`."""
    inner = _word_level(corpus, cls=_counting_calls())

    class WithoutIsFast:
        def __init__(self, wrapped: Any) -> None:
            self.wrapped = wrapped

        def __getattr__(self, name: str) -> Any:
            if name in ("is_fast", "backend_tokenizer"):
                raise AttributeError(name)
            return getattr(self.wrapped, name)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self.wrapped(*args, **kwargs)

        def __len__(self) -> int:
            return len(self.wrapped)

    tok = HFTokenizer(WithoutIsFast(inner), HFConfig())
    assert tok.encode_batch(["the fox", "fox"]) == [_ids(inner, "the fox"), _ids(inner, "fox")] and inner.calls == 1
    assert tok.decode(_ids(inner, "the fox")) == "the fox"


def test_decode_does_no_clean_up_even_for_a_tokenizer_that_cleans_up_by_default(corpus: list[str]) -> None:
    hf = _word_level(corpus, clean_up_tokenization_spaces=True)
    ids = _ids(hf, "hello , world .")
    assert hf.decode(ids) == "hello, world."  # the library's own default removes the space before punctuation
    assert HFTokenizer(hf, HFConfig()).decode(ids) == "hello , world ."


def test_extra_tokens_are_special_and_matched_exactly(corpus: list[str]) -> None:
    """Added <sep> is a special token to the library (its skip_special_tokens drops it) and matches only the
    exact text '<sep>', even in a lowercasing (uncased) tokenizer: '<SEP>' is ordinary text."""
    tok = HFTokenizer(_word_level(corpus, lowercase=True), HFConfig(extra_special_tokens=["<sep>"]))
    ids = tok.encode("the <sep> fox")
    assert ids.count(tok.sep_id) == 1 and tok.decode(ids) == "the <sep> fox"
    assert tok.hf.decode(ids, skip_special_tokens=True) == "the fox"
    assert tok.sep_id not in tok.encode("the <SEP> fox")


def test_trained_bpe_special_tokens() -> None:
    """<|endoftext|> is id 0 and the BOS, EOS and unk token; no pad token (as GPT-2); the extra tokens follow."""
    hf = train_byte_level_bpe(["a a a a"], 300, extra_special_tokens=["<sep>"])
    assert (hf.bos_token, hf.eos_token, hf.unk_token, hf.pad_token) == (ENDOFTEXT, ENDOFTEXT, ENDOFTEXT, None)
    assert hf.convert_tokens_to_ids([ENDOFTEXT, "<sep>"]) == [0, 1]


def test_trained_bpe_learns_merges_seen_at_least_min_frequency_times() -> None:
    texts = ["ab", "cd", "cd", "ef", "ef", "ef"]  # the pairs a-b, c-d, e-f are seen 1, 2 and 3 times

    def learned(hf: Any) -> set[str]:
        return {t for t in ("ab", "cd", "ef") if t in hf.get_vocab()}

    assert learned(train_byte_level_bpe(texts, 300)) == {"cd", "ef"}  # the default min_frequency is 2
    assert learned(train_byte_level_bpe(texts, 300, min_frequency=1)) == {"ab", "cd", "ef"}
    assert learned(train_byte_level_bpe(texts, 300, min_frequency=3)) == {"ef"}


def test_trained_bpe_has_every_byte_and_gpt2_offsets() -> None:
    """Trained on 'a a a a' only: <|endoftext|>, the 256 bytes and the one merge 'Ġa', so unseen text still
    round-trips; offsets as GPT-2's (its tokenizer.json's ByteLevel post-processor has trim_offsets false):
    the space belongs to the token after it."""
    import json

    hf = train_byte_level_bpe(["a a a a"], 300)
    assert len(hf) == 258
    tok = HFTokenizer(hf, HFConfig())
    unseen = "Straße ✈ 日本\r\n"
    assert tok.decode(tok.encode(unseen)) == unseen
    encoded = hf("a a", add_special_tokens=False, return_offsets_mapping=True)
    assert hf.convert_ids_to_tokens(encoded["input_ids"]) == ["a", "Ġa"]
    assert [tuple(o) for o in encoded["offset_mapping"]] == [(0, 1), (1, 3)]
    post = json.loads(hf.backend_tokenizer.to_str())["post_processor"]
    assert (post["type"], post["trim_offsets"]) == ("ByteLevel", False)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_training_draws_no_progress_bar_on_a_terminal() -> None:
    """The tokenizers library draws its progress bars only when stderr is a terminal: give it one."""
    import pty
    import threading

    master, slave = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    saved = os.dup(2)
    try:
        os.dup2(slave, 2)
        train_byte_level_bpe(["a a a a"], 300)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(slave)
    reader.join(timeout=5)
    os.close(master)
    assert b"".join(drawn) == b""


def test_train_like_an_existing_tokenizer_keeps_extra_tokens_within_vocab_size(gpt2_like_dir: Path,
                                                                               corpus: list[str]) -> None:
    params = {"name_or_path": str(gpt2_like_dir), "train_from_scratch": True, "vocab_size": 300,
              "extra_special_tokens": ["<sep>"]}
    tok = build_tokenizer(TokenizerSpec("hf", params), corpus)
    assert tok.vocab_size == 300 and (tok.eos_id, tok.sep_id) == (0, 1)  # the base's <|endoftext|>, then <sep>


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache (no network) holding 'lmbench-test/tiny' at main and at the tag v0, whose tokenizer
    has an extra special token '<v0>' (id 1)."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--lmbench-test--tiny"
    for ref, commit, extra in (("main", "a" * 40, []), ("v0", "b" * 40, ["<v0>"])):
        snapshot = repo / "snapshots" / commit
        train_byte_level_bpe(["a a a a"], 300, extra_special_tokens=extra).save_pretrained(str(snapshot))
        (snapshot / "config.json").write_text('{"model_type": "gpt2"}')  # AutoTokenizer reads the model's first
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    import transformers.utils.hub

    if hasattr(transformers.utils.hub, "TRANSFORMERS_CACHE"):  # transformers < 5 copied the path at import
        monkeypatch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def test_a_cached_hub_tokenizer_loads_at_its_revision_without_asking_the_hub(hub_cache: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    real = AutoTokenizer.from_pretrained
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recording)
    main = build_tokenizer(TokenizerSpec("hf", {"name_or_path": "lmbench-test/tiny"}), [])
    assert main.vocab_size == 258 and "<v0>" not in main.hf.get_vocab()
    v0 = build_tokenizer(TokenizerSpec("hf", {"name_or_path": "lmbench-test/tiny", "revision": "v0"}), [])
    assert v0.vocab_size == 259 and v0.hf.convert_tokens_to_ids("<v0>") == 1
    assert calls == [(("lmbench-test/tiny",), {"revision": None, "local_files_only": True}),
                     (("lmbench-test/tiny",), {"revision": "v0", "local_files_only": True})]


def test_training_like_a_hub_tokenizer_starts_from_its_revision(hub_cache: Path, corpus: list[str]) -> None:
    params = {"name_or_path": "lmbench-test/tiny", "revision": "v0", "train_from_scratch": True, "vocab_size": 300}
    tok = build_tokenizer(TokenizerSpec("hf", params), corpus)
    assert tok.vocab_size == 300 and tok.hf.convert_tokens_to_ids("<v0>") == 1  # v0's special token is kept


def test_a_directory_under_home_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    train_byte_level_bpe(["a a a a"], 300).save_pretrained(str(tmp_path / "tok"))
    tok = build_tokenizer(TokenizerSpec("hf", {"name_or_path": "~/tok"}), [])
    assert tok.vocab_size == 258 and tok.decode(tok.encode("a a")) == "a a"


@pytest.mark.parametrize(("raised", "first_line"), [
    (OSError("\n  Can't load tokenizer for 'lmbench-test/broken'.\nIf you were trying to load it from the Hub...\n"),
     "Can't load tokenizer for 'lmbench-test/broken'."),
    (ValueError("no tokenizer.json"), "no tokenizer.json"),
    (ValueError(""), "ValueError"),
    (OSError(" \n "), "OSError"),
])
def test_a_load_failure_is_a_one_line_spec_error(monkeypatch: pytest.MonkeyPatch, raised: Exception,
                                                 first_line: str) -> None:
    """The library's error when the Hub answers but the tokenizer cannot be loaded: its first line, or its type."""
    import lmbench.hub
    from transformers import AutoTokenizer

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(lmbench.hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", failing)
    with pytest.raises(SpecError) as err:
        build_tokenizer(TokenizerSpec("hf", {"name_or_path": "lmbench-test/broken"}), [])
    assert err.value.path == "tokenizer.params.name_or_path"
    assert err.value.message == f"cannot load tokenizer 'lmbench-test/broken': {first_line}"


@pytest.mark.parametrize("name", ["/lmbench-no-such-dir", "./lmbench-no-such-dir", "~/lmbench-no-such-dir",
                                  "owner/name/lmbench-no-such-dir", "lmbench\\no-such-dir"])
def test_a_missing_local_path_is_a_spec_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that starts with / . or ~, has more than one '/', or has a backslash is a local path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SpecError) as err:
        HFTokenizer.check_spec(HFConfig(name_or_path=name), None)
    assert err.value.path == "tokenizer.params.name_or_path"
    assert err.value.message == f"{name!r} is not a directory (nor a hub id like 'gpt2')"


@pytest.mark.parametrize("name", ["gpt2", "owner/name"])
def test_a_hub_id_passes_the_check(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    HFTokenizer.check_spec(HFConfig(name_or_path=name), None)
