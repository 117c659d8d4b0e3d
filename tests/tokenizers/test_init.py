"""The package API: every registered kind honours the Tokenizer contract; build/load; fingerprints; params errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmbench.errors import SpecError
from lmbench.spec import TokenizerSpec
from lmbench.tokenizers import META_FILE, TOKENIZERS, Tokenizer, build_tokenizer, load_tokenizer, tokenizer_fingerprint

TINY_PARAMS: dict[str, dict[str, Any]] = {
    "char": {"specials": ["<sep>"]},
    "word": {"lowercase": True, "specials": ["<sep>"]},
    "bpe": {"vocab_size": 200, "user_defined_symbols": ["<sep>"], "character_coverage": 1.0},
    "hf": {"train_from_scratch": True, "vocab_size": 300, "extra_special_tokens": ["<sep>"]},
}


@pytest.fixture(scope="module", params=TOKENIZERS.names())
def tokenizer(request: pytest.FixtureRequest, corpus: list[str]) -> Tokenizer:
    return build_tokenizer(TokenizerSpec(request.param, TINY_PARAMS[request.param]), iter(corpus))


def test_every_kind_is_registered() -> None:
    assert TOKENIZERS.names() == ["bpe", "char", "hf", "word"]
    assert set(TINY_PARAMS) == set(TOKENIZERS.names())


def test_special_ids_are_in_range(tokenizer: Tokenizer) -> None:
    ids = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.sep_id]
    assert all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids)
    if tokenizer.kind == "hf":  # GPT-2 style: one <|endoftext|> plays every role but sep
        assert len({tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id}) == 1
        assert tokenizer.sep_id != tokenizer.eos_id
    else:
        assert len(set(ids)) == 5


def test_encode_contract(tokenizer: Tokenizer, varied_texts: list[str]) -> None:
    ids = tokenizer.encode("the fox <sep> the bear")
    assert ids and all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.bos_id not in ids and tokenizer.eos_id not in ids  # no BOS/EOS added
    assert tokenizer.sep_id in ids
    assert tokenizer.encode_batch(varied_texts) == [tokenizer.encode(t) for t in varied_texts]
    assert tokenizer.encode_batch([]) == [] and tokenizer.encode("") == []
    assert len(tokenizer.tokens()) == tokenizer.vocab_size


def test_encode_flat_is_encode_batch_back_to_back(tokenizer: Tokenizer, varied_texts: list[str]) -> None:
    """What the token cache stores: every kind's (vectorised or not) flat ids equal its per-text ids."""
    flat, lengths = tokenizer.encode_flat(varied_texts)
    seqs = tokenizer.encode_batch(varied_texts)
    assert flat.dtype == np.uint32 and lengths.dtype == np.int64
    assert lengths.tolist() == [len(s) for s in seqs]
    assert flat.tolist() == [i for s in seqs for i in s]


def test_decode_drops_pad_bos_eos(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("the fox")
    wrapped = [tokenizer.bos_id, *ids, tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(wrapped) == tokenizer.decode(ids)


def test_save_then_load_tokenizer(tmp_path: Path, tokenizer: Tokenizer, varied_texts: list[str]) -> None:
    tokenizer.save(tmp_path / "tok")
    assert (tmp_path / "tok" / META_FILE).is_file()
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is type(tokenizer) and loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode_batch(varied_texts) == tokenizer.encode_batch(varied_texts)
    assert [loaded.decode(loaded.encode(t)) for t in varied_texts] == [
        tokenizer.decode(tokenizer.encode(t)) for t in varied_texts]


def test_pickles_for_worker_processes(tokenizer: Tokenizer, varied_texts: list[str]) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode_batch(varied_texts) == tokenizer.encode_batch(varied_texts)


def test_load_tokenizer_without_meta_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_tokenizer(tmp_path)


def test_fingerprint_is_stable_and_resolves_defaults() -> None:
    fp = tokenizer_fingerprint(TokenizerSpec("bpe", {"vocab_size": 2500}))
    assert fp == tokenizer_fingerprint(TokenizerSpec("bpe", {"vocab_size": 2500}))
    assert fp == tokenizer_fingerprint(TokenizerSpec("bpe", {"vocab_size": 2500, "model_type": "bpe"}))
    assert len(fp) == 16 and int(fp, 16) >= 0


@pytest.mark.parametrize("other", [
    TokenizerSpec("bpe", {"vocab_size": 2501}),
    TokenizerSpec("bpe", {"vocab_size": 2500, "model_type": "unigram"}),
    TokenizerSpec("bpe", {"vocab_size": 2500, "user_defined_symbols": ["<sep>"]}),
    TokenizerSpec("char", {}),
    TokenizerSpec("word", {}),
])
def test_fingerprint_changes_with_params(other: TokenizerSpec) -> None:
    assert tokenizer_fingerprint(TokenizerSpec("bpe", {"vocab_size": 2500})) != tokenizer_fingerprint(other)


def test_fingerprint_of_local_hf_directory_follows_its_files(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    spec = TokenizerSpec("hf", {"name_or_path": str(tmp_path)})
    before = tokenizer_fingerprint(spec)
    (tmp_path / "tokenizer.json").write_text('{"changed": true}')
    assert tokenizer_fingerprint(spec) != before


def test_fingerprint_follows_every_file_transformers_saves(tmp_path: Path) -> None:
    """A changed tokenizer_config.json (special tokens, padding side, ...) gives a new fingerprint, so the token
    cache is rebuilt instead of reused with the old ids; so does every other file save_pretrained writes."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models

    PreTrainedTokenizerFast(tokenizer_object=RustTokenizer(models.WordLevel({"a": 0, "<u>": 1}, unk_token="<u>")),
                            unk_token="<u>").save_pretrained(str(tmp_path))
    spec = TokenizerSpec("hf", {"name_or_path": str(tmp_path)})
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert "tokenizer_config.json" in saved
    for name in saved:
        before = tokenizer_fingerprint(spec)
        path = tmp_path / name
        path.write_text(path.read_text() + "\n")
        assert tokenizer_fingerprint(spec) != before, name


@pytest.mark.parametrize(("kind", "params", "path", "words"), [
    ("bpe", {"vocab_sise": 10}, "tokenizer.params.vocab_sise", "did you mean 'vocab_size'"),
    ("bpe", {"vocab_size": "many"}, "tokenizer.params.vocab_size", "many"),
    ("word", {"lowercase": "maybe"}, "tokenizer.params.lowercase", "maybe"),
    ("word", {"specials": "<sep>"}, "tokenizer.params.specials", ""),
    ("char", {"lowercase": True, "size": 3}, "tokenizer.params.size", "known fields"),
])
def test_bad_params_name_the_field(kind: str, params: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        build_tokenizer(TokenizerSpec(kind, params), ["text"])
    assert err.value.path == path and words in err.value.message
    with pytest.raises(SpecError):
        tokenizer_fingerprint(TokenizerSpec(kind, params))


def test_unknown_kind_suggests_a_close_match() -> None:
    with pytest.raises(SpecError) as err:
        build_tokenizer(TokenizerSpec("wrod", {}), ["text"])
    assert err.value.path == "tokenizer.kind" and "did you mean 'word'" in err.value.message


def test_range_errors_come_before_training() -> None:
    consumed: list[str] = []

    def texts() -> Any:
        consumed.append("read")
        yield "text"

    with pytest.raises(SpecError) as err:
        build_tokenizer(TokenizerSpec("bpe", {"vocab_size": 3}), texts())
    assert err.value.path == "tokenizer.params.vocab_size" and not consumed
