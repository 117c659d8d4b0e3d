"""hf tokenizer: a byte-level BPE saved as a local transformers directory (never the network), GPT-2 special ids,
exact round trips, training from scratch, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.errors import SpecError
from lmbench.spec import TokenizerSpec
from lmbench.tokenizers import build_tokenizer, load_tokenizer
from lmbench.tokenizers.hf import ENDOFTEXT, HFConfig, HFTokenizer


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
    assert err.value.path == "tokenizer.params.name_or_path" and "no-such-tokenizer" in err.value.message


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
