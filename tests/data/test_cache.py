"""Token cache: layout, statistics, reuse without tokenization, fingerprints, prompt/story, dtypes, CLI."""

from __future__ import annotations

import functools
import json
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lmbench.cli import main
from lmbench.data.cache import CHUNK_CHARS, META_FILE, MIN_UNIT_DOCS, data_fingerprint, prepare_data, token_dtype
from lmbench.data.corpus import iter_documents
from lmbench.errors import SpecError
from lmbench.tokenizers.char import CharTokenizer

from .helpers import LINES, write_lines


@pytest.fixture
def lines_path(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "corpus.txt", LINES + ["naïve café — ünïcode"])


def test_layout_tokens_and_stats(make_spec, lines_path: Path) -> None:
    spec = make_spec(source="text", path=str(lines_path), val_fraction=0.2)
    data = prepare_data(spec, progress=False)
    assert not data.reused and (data.cache_dir / META_FILE).is_file()
    assert data.cache_dir == Path(spec.data.cache_dir) / data.fingerprint[:16]
    assert {p.name for p in data.cache_dir.iterdir()} >= {"tokenizer", "train.tokens.bin", "train.offsets.npy",
                                                          "train.stats.json", "validation.tokens.bin"}
    for name, split in data.splits.items():
        docs = [d.text for d in iter_documents(spec.data, name)]
        assert split.tokens.dtype == np.uint8 and split.doc_offsets[0] == 0 and split.prompt_lens is None  # char
        assert [data.tokenizer.decode(split.doc(i).tolist()) for i in range(split.num_docs)] == docs
        s = split.stats
        assert (s.num_docs, s.num_tokens) == (len(docs), int(split.doc_offsets[-1])) == (len(docs), len(split.tokens))
        assert s.num_bytes == sum(len(d.encode("utf-8")) for d in docs) and s.num_chars == sum(map(len, docs))
        assert s.num_words == sum(len(d.split()) for d in docs)
    train_chars = {c for d in iter_documents(spec.data, "train") for c in d.text}
    assert data.tokenizer.vocab_size == 4 + len(train_chars)  # trained on the train split only


def test_second_call_reuses_the_cache_without_tokenizing(make_spec, lines_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(source="text", path=str(lines_path))
    first = prepare_data(spec, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(CharTokenizer, "encode_batch", boom)
    monkeypatch.setattr(CharTokenizer, "encode_flat", boom)
    monkeypatch.setattr(CharTokenizer, "train", classmethod(boom))
    second = prepare_data(spec, progress=False)
    assert second.reused and second.fingerprint == first.fingerprint
    assert np.array_equal(second.splits["train"].tokens, first.splits["train"].tokens)
    assert second.tokenizer.tokens() == first.tokenizer.tokens()
    assert prepare_data(spec, load_only=True).reused


def test_token_split_pickles_as_a_memory_map(make_spec, lines_path: Path) -> None:
    """DataLoader workers started with spawn get the memory map back, not a pickled copy of every token."""
    split = prepare_data(make_spec(source="text", path=str(lines_path)), progress=False).splits["train"]
    clone = pickle.loads(pickle.dumps(split))
    assert isinstance(clone.tokens, np.memmap) and np.array_equal(clone.tokens, split.tokens)
    assert len(pickle.dumps(split)) < split.tokens.nbytes


def test_load_only_without_a_cache_fails(make_spec, lines_path: Path) -> None:
    with pytest.raises(RuntimeError, match="main process"):
        prepare_data(make_spec(source="text", path=str(lines_path)), load_only=True)


def test_fingerprint_follows_what_changes_the_tokens(make_spec, lines_path: Path) -> None:
    base = data_fingerprint(make_spec(source="text", path=str(lines_path)))
    assert base == data_fingerprint(make_spec(source="text", path=str(lines_path), block_size=512,
                                              batching="documents"))
    assert base != data_fingerprint(make_spec(source="text", path=str(lines_path), lowercase=True))
    assert base != data_fingerprint(make_spec(source="text", path=str(lines_path), val_fraction=0.2))
    assert base != data_fingerprint(make_spec({"kind": "char", "params": {"lowercase": True}},
                                              source="text", path=str(lines_path)))
    swapped = [make_spec(source="text", path=str(lines_path), replace=r) for r in ({"a": "b", "b": "c"},
                                                                                    {"b": "c", "a": "b"})]
    assert data_fingerprint(swapped[0]) != data_fingerprint(swapped[1])
    lines_path.write_text(lines_path.read_text("utf-8") + "one more line\n", "utf-8")
    assert base != data_fingerprint(make_spec(source="text", path=str(lines_path)))  # size/mtime changed


def test_concurrent_preparation_builds_once(make_spec, lines_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(source="text", path=str(lines_path))
    calls, lock = [], threading.Lock()
    original = CharTokenizer.train.__func__

    def counting_train(cls, texts, config):
        with lock:
            calls.append(1)
        return original(cls, texts, config)

    monkeypatch.setattr(CharTokenizer, "train", classmethod(counting_train))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: prepare_data(spec, progress=False), range(2)))
    assert len(calls) == 1 and sorted(r.reused for r in results) == [False, True]
    leftovers = [p.name for p in Path(spec.data.cache_dir).iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_prompt_story_layout_and_masking_lengths(make_spec, tmp_path: Path) -> None:
    stories = write_lines(tmp_path / "s.txt", ["Once . <newline> The end .", "Second story ."])
    prompts = write_lines(tmp_path / "p.txt", ["[ WP ] A prompt", "[ WP ] Two"])
    spec = make_spec({"kind": "char", "params": {"specials": ["<sep>"]}}, source="prompt_story",
                     path=str(stories), prompt_path=str(prompts), replace={"<newline>": "\n"}, val_fraction=0.0)
    data = prepare_data(spec, progress=False)
    tok, split = data.tokenizer, data.splits["train"]
    for i, doc in enumerate(iter_documents(spec.data, "train")):
        ids = split.doc(i).tolist()
        prompt = tok.encode(doc.prompt)
        assert split.prompt_lens[i] == len(prompt) + 1
        assert ids == prompt + [tok.sep_id] + tok.encode(doc.text)
    assert split.stats.num_bytes == len("Once . \n The end .") + len("Second story .")  # stories only


def test_prompt_story_without_sep_symbol(make_spec, tmp_path: Path) -> None:
    stories = write_lines(tmp_path / "s.txt", ["story"])
    prompts = write_lines(tmp_path / "p.txt", ["prompt"])
    spec = make_spec(source="prompt_story", path=str(stories), prompt_path=str(prompts), val_fraction=0.0)
    with pytest.raises(SpecError, match="<sep>") as err:
        prepare_data(spec, progress=False)
    assert err.value.path == "tokenizer.params"
    assert not list(Path(spec.data.cache_dir).glob("*/meta.json"))


def test_empty_split_fails_and_leaves_no_cache(make_spec, lines_path: Path) -> None:
    spec = make_spec(source="text", path=str(lines_path), max_chars=3)
    with pytest.raises(SpecError, match="empty after filtering"):
        prepare_data(spec, progress=False)
    assert [p.name for p in Path(spec.data.cache_dir).iterdir() if not p.name.endswith(".lock")] == []


def test_token_dtype_choice(make_spec, tmp_path: Path) -> None:
    assert token_dtype(256) == np.uint8 and token_dtype(257) == np.uint16
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32
    many = "".join(chr(0x10000 + i) for i in range(70_000))  # 70,000 distinct characters -> vocab > 65535
    path = tmp_path / "wide.txt"
    path.write_text(many, "utf-8")
    data = prepare_data(make_spec(source="text", path=str(path), unit="file", val_fraction=0.0), progress=False)
    tokens = data.splits["train"].tokens
    assert tokens.dtype == np.uint32 and int(tokens.max()) == data.tokenizer.vocab_size - 1 > 65535


def test_cmd_data_prints_and_writes_json(tmp_path: Path, lines_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(f"name: cli\ndata: {{source: text, path: {lines_path}, cache_dir: {tmp_path / 'c'}}}\n"
                         "tokenizer: {kind: char}\nmodel: {family: transformer}\ntrain: {max_steps: 1}\n", "utf-8")
    out = tmp_path / "stats.json"
    assert main(["data", str(spec_path), "data.val_fraction=0.25", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation" in printed and "tok MB/s" in printed and "built in" in printed
    summary = json.loads(out.read_text("utf-8"))
    assert set(summary["splits"]) == {"train", "validation"} and not summary["reused"]
    on_disk = sum(f.stat().st_size for f in Path(summary["cache_dir"]).rglob("*") if f.is_file())
    assert summary["cache_mb"] == pytest.approx(on_disk / 1e6) and f"{on_disk / 1e6:,.1f} MB" in printed
    assert "peak RSS:" in printed and summary["peak_rss_mb"] > 0
    assert summary["splits"]["train"]["num_docs"] + summary["splits"]["validation"]["num_docs"] == len(LINES) + 1
    assert main(["data", str(spec_path), "data.val_fraction=0.25"]) == 0
    assert "reused" in capsys.readouterr().out


def test_cmd_data_prepares_one_grid_cell_or_every_cache_of_a_grid(tmp_path: Path, lines_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """A grid over tokenizers (and seeds, which share a cache): --cell builds that cell's cache only; without it,
    each distinct cache once."""
    spec_path = tmp_path / "grid.yaml"
    spec_path.write_text(f"name: g\ndata: {{source: text, path: {lines_path}, cache_dir: {tmp_path / 'c'}, "
                         "val_fraction: 0.25}\ntokenizer: {kind: char}\nmodel: {family: lstm}\n"
                         "train: {max_steps: 1}\ngrid: {axes: {tokenizer.kind: [char, word], seed: [0, 1]}}\n",
                         "utf-8")
    out = tmp_path / "one.json"
    assert main(["data", str(spec_path), "--cell", "kind=word,seed=1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["tokenizer"]["kind"] == "word"
    assert len([d for d in (tmp_path / "c").iterdir() if d.is_dir() and not d.name.startswith(".")]) == 1
    capsys.readouterr()
    assert main(["data", str(spec_path), "--json", str(tmp_path / "all.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("# cache ") == 2 and "kind=char,seed=0, kind=char,seed=1" in printed
    both = json.loads((tmp_path / "all.json").read_text())
    assert sorted(s["tokenizer"]["kind"] for s in both.values()) == ["char", "word"]
    assert [s["reused"] for s in both.values() if s["tokenizer"]["kind"] == "word"] == [True]


def test_cmd_data_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(f"name: cli\ndata: {{source: text, path: {tmp_path / 'missing.txt'}}}\n"
                         "model: {family: transformer}\ntrain: {max_steps: 1}\n", "utf-8")
    assert main(["data", str(spec_path)]) == 2
    assert "data.path: file not found" in capsys.readouterr().err


@pytest.mark.integration
def test_tiny_shakespeare_char_cache(shared_data: Path, make_spec) -> None:
    spec = make_spec(source="text", path=str(shared_data / "tinyshakespeare/input.txt"), unit="file", split="tail")
    data = prepare_data(spec, progress=False)
    assert data.tokenizer.vocab_size == 65 + 4  # the notebook's 65 characters + pad/bos/eos/unk
    assert data.splits["train"].stats.num_tokens == 1_003_854 and data.splits["validation"].stats.num_tokens == 111_540
    units = data.splits["validation"].units  # one text: 1,000-character chunks, 112 of them
    assert units.shape == (112, 6) and units[:, 1].tolist() == list(range(112)) and units[:, 4].max() == CHUNK_CHARS
    assert units[:, 2].tolist() == units[:, 4].tolist()  # a char tokenizer: one token per character, per chunk
    assert data.splits["train"].units is None


def assert_units_add_up(split) -> None:
    """The unit table covers the split: tokens, bytes, chars and words sum to the split's statistics."""
    s, u = split.stats, split.units
    assert u[:, 2:].sum(0).tolist() == [s.num_tokens, s.num_bytes, s.num_chars, s.num_words]
    assert (np.diff(u[:, 0]) >= 0).all() and u[-1, 0] == s.num_docs - 1


def test_units_are_documents_or_chunks_of_few_long_ones(make_spec, tmp_path: Path) -> None:
    many = write_lines(tmp_path / "many.txt", [f"line {i} with some words, naïve café" for i in range(400)])
    data = prepare_data(make_spec(source="text", path=str(many), val_fraction=0.25), progress=False)
    split = data.splits["validation"]
    assert split.stats.num_docs >= MIN_UNIT_DOCS and len(split.units) == split.stats.num_docs
    assert (split.units[:, 1] == 0).all()
    assert_units_add_up(split)
    assert split.units[:, 2].tolist() == split.doc_lengths().tolist()

    long_text = " ".join(f"wörd{i % 50}" for i in range(3000))  # one ~20,000-character document per file
    (tmp_path / "docs").mkdir()
    for i in range(3):
        (tmp_path / "docs" / f"{i}.txt").write_text(long_text[i:], encoding="utf-8")
    spec = make_spec({"kind": "word"}, source="text", path=str(tmp_path / "docs" / "*.txt"), unit="file",
                     val_fraction=0.34, split_seed=1)
    data = prepare_data(spec, progress=False)
    split = data.splits["validation"]
    doc = next(iter_documents(spec.data, "validation")).text
    assert len(split.units) == -(-len(doc) // CHUNK_CHARS) * split.stats.num_docs
    assert_units_add_up(split)
    chunk = doc[:CHUNK_CHARS]
    # a word tokenizer: chunk 0 holds about as many tokens as its own words (a word cut by the boundary aside)
    assert abs(int(split.units[0, 2]) - len(chunk.split())) <= 2


def test_prompt_story_units_count_the_story_and_give_the_prompt_to_the_first_chunk(make_spec, tmp_path: Path) -> None:
    stories = write_lines(tmp_path / "s.txt", [f"story {i} " * 200 for i in range(6)])
    prompts = write_lines(tmp_path / "p.txt", [f"[ WP ] prompt {i}" for i in range(6)])
    spec = make_spec({"kind": "char", "params": {"specials": ["<sep>"]}}, source="prompt_story",
                     path=str(stories), prompt_path=str(prompts), val_fraction=0.4, split_seed=3)
    data = prepare_data(spec, progress=False)
    split = data.splits["validation"]
    assert_units_add_up(split)
    assert split.units[0, 2] == split.prompt_lens[0] + min(CHUNK_CHARS, len(next(iter_documents(spec.data,
                                                                                                  "validation")).text))


@pytest.mark.parametrize("tokenizer", [
    {"kind": "char"},
    {"kind": "word", "params": {"lowercase": True}},
    {"kind": "bpe", "params": {"vocab_size": 80}},
    {"kind": "hf", "params": {"train_from_scratch": True, "vocab_size": 400}},
])
def test_many_workers_write_the_same_cache_as_one(tokenizer: dict, tmp_path: Path) -> None:
    """3,000 documents (several batches per split): worker processes (char, word) or the library's threads called
    from encoding threads (bpe, hf) give byte-identical token files, offsets and units, in the same order."""
    from .helpers import experiment

    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "Ünïcode", "don't", "e.g.", "3.14", "!"]
    corpus = write_lines(tmp_path / "c.txt", [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(3000)])
    built = []
    for workers in (1, 2):
        spec = experiment({"source": "text", "path": str(corpus), "val_fraction": 0.4, "num_workers": workers,
                           "cache_dir": str(tmp_path / f"cache{workers}")}, tokenizer)
        built.append(prepare_data(spec, progress=False))
    one, two = built
    assert one.fingerprint == two.fingerprint  # num_workers does not change the tokens
    assert two.meta["splits"]["train"]["workers"] == 2 and one.meta["splits"]["train"]["workers"] == 1
    for name in one.splits:
        for suffix in ("tokens.bin", "offsets.npy", "units.npy"):
            a, b = one.cache_dir / f"{name}.{suffix}", two.cache_dir / f"{name}.{suffix}"
            assert a.is_file() == b.is_file() and (not a.is_file() or a.read_bytes() == b.read_bytes()), (name, suffix)


def test_text_statistics_count_like_python() -> None:
    """Bytes, characters and words (as str.split counts them: Unicode whitespace, no word across two texts),
    pinned by hand."""
    from lmbench.data.cache import text_stats

    assert text_stats(["two words", "", "naïve\u3000café😀", "\x1c a\u00a0b\n"]) == (9 + 0 + 18 + 7, 9 + 0 + 11 + 6,
                                                                                2 + 0 + 2 + 2)
    assert text_stats(["ab", "cd"]) == (4, 4, 2) and text_stats([]) == (0, 0, 0) and text_stats([" "]) == (1, 1, 0)
    rng = np.random.default_rng(0)  # ASCII, two-byte and astral characters among every kind of whitespace
    alphabet = list("ab \t\n") + ["é", "\u2019", "\u3000", "\u3022", "\u2028", "\x85", "😀", "𝔘", "\ud800", "\x1f"]
    for _ in range(50):
        texts = ["".join(rng.choice(alphabet, rng.integers(0, 12))) for _ in range(rng.integers(0, 5))]
        assert text_stats(texts) == (sum(len(t.encode("utf-8", "surrogatepass")) for t in texts),
                                     sum(map(len, texts)), sum(len(t.split()) for t in texts)), texts


def test_word_counts_from_ids_only_when_each_id_is_a_word() -> None:
    """A pretokenized word tokenizer counts words as its ids (no second scan of the text); every other tokenizer
    is counted from the text. Both give str.split's count, whatever the whitespace or the vocabulary."""
    from lmbench.data.cache import encode_batch
    from lmbench.tokenizers.word import WordConfig, WordTokenizer

    texts = ["the cat\tsat", "", "naïve\u3000café <unk>\u00a0x\n", "don't stop, U.S.!", "  "]
    words = sum(len(t.split()) for t in texts)
    pretokenized = WordTokenizer.train(texts[:1], WordConfig(pretokenized=True, lowercase=True))
    regex = WordTokenizer.train(texts[:1], WordConfig())
    assert pretokenized.tokens_are_words and not regex.tokens_are_words
    assert not CharTokenizer.train(texts, CharTokenizer.Config()).tokens_are_words
    for tokenizer in (pretokenized, regex):
        batch = encode_batch(tokenizer, texts)
        assert batch.num_words == words and batch.num_bytes == sum(len(t.encode()) for t in texts)
    assert len(encode_batch(regex, texts).flat) != words  # so the regex count really comes from the text


def test_progress_size_estimate_of_a_split(make_spec, lines_path: Path) -> None:
    """The bar's total (MB, for the ETA): the train files' size times the split's fraction; None without files."""
    from lmbench.data.cache import _split_size

    size = lines_path.stat().st_size
    spec = make_spec(source="text", path=str(lines_path), val_fraction=0.2, test_fraction=0.1)
    assert (_split_size(spec, "train"), _split_size(spec, "validation")) == (int(size * 0.7), int(size * 0.2))
    assert _split_size(make_spec(source="builtin"), "train") is None


def test_tokenizer_learns_from_a_recorded_sample_of_a_large_split(make_spec, tmp_path: Path) -> None:
    """data.tokenizer_sample_mb: a seeded sample of documents of about that size; meta.json records it. A char
    vocabulary then lacks characters that only occur outside the sample (they become <unk>)."""
    lines = [f"common words {i}" for i in range(2000)] + ["rare ζ"]
    path = write_lines(tmp_path / "c.txt", lines)
    size = path.stat().st_size
    whole = prepare_data(make_spec(source="text", path=str(path), val_fraction=0.1), progress=False)
    record = whole.meta["tokenizer"]["train_sample"]
    assert record["rate"] == 1.0 and record["docs"] == record["of_docs"] == whole.splits["train"].stats.num_docs
    sampled = prepare_data(make_spec(source="text", path=str(path), val_fraction=0.1,
                                     tokenizer_sample_mb=size * 0.9 * 0.25 / 1e6), progress=False)
    record = sampled.meta["tokenizer"]["train_sample"]
    assert record["rate"] == pytest.approx(0.25, rel=1e-3)
    assert 0.18 < record["docs"] / record["of_docs"] < 0.32  # about a quarter of the documents
    assert sampled.fingerprint != whole.fingerprint and sampled.tokenizer.vocab_size <= whole.tokenizer.vocab_size


@pytest.mark.parametrize("kind", ["char", "hf"])
def test_documents_stream_through_the_build_in_bounded_batches(kind: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat: while a split is tokenized, the documents read but not yet written never exceed a few
    batches per worker and one read chunk (here 20,000 documents in batches of 100, at most (2 x workers + 3) x
    100 + 100 in flight), whatever the split's size; a build that held the split as a list would reach 20,000."""
    from lmbench.data import cache as cache_module

    from .helpers import experiment

    from lmbench.data.sources import local

    monkeypatch.setattr(cache_module, "DOCS_PER_BATCH", 100)
    monkeypatch.setattr(local, "CHUNK_CHARS", 2048)  # the file is read 2 KB (about 90 lines) at a time
    corpus = write_lines(tmp_path / "c.txt", [f"story {i} of the cat" for i in range(20_000)])
    read, in_flight, writing = [0], [], [False]
    real_iter, real_write = cache_module.iter_document_batches, cache_module._write_split

    def counted(spec, split):  # noqa: ANN001, ANN202  (the tokenizer's training pass reads too: not counted)
        for batch in real_iter(spec, split):
            if writing[0]:
                read[0] += len(batch)
                in_flight.append(read[0] - written[0])
            yield batch

    def write_split(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        read[0], written[0], writing[0] = 0, 0, True
        try:
            return real_write(*args, **kwargs)
        finally:
            writing[0] = False

    monkeypatch.setattr(cache_module, "iter_document_batches", counted)
    written = _count_written(monkeypatch)
    monkeypatch.setattr(cache_module, "_write_split", write_split)
    # The document-batch path, which every source but local text files takes (those are read in shards by the
    # worker processes: test_text_files_stream_through_the_workers_in_bounded_shards).
    monkeypatch.setattr(cache_module, "_shardable", lambda *args: False)
    tokenizer = {"kind": "char"} if kind == "char" else {"kind": "hf", "params": {"train_from_scratch": True,
                                                                                   "vocab_size": 300}}
    spec = experiment({"source": "text", "path": str(corpus), "val_fraction": 0.1, "num_workers": 2,
                       "cache_dir": str(tmp_path / "cache")}, tokenizer)
    data = prepare_data(spec, progress=False)
    assert data.splits["train"].num_docs > 17_000 and data.meta["splits"]["train"]["workers"] == 2
    workers = cache_module.ENCODING_THREADS if kind == "hf" else 2  # threads calling a library parallel itself
    assert read[0] > 1_000 and max(in_flight) <= (2 * workers + 3) * 100 + 100, max(in_flight)


def test_text_files_stream_through_the_workers_in_bounded_shards(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Local text files with a tokenizer encoded in processes are read in shards that the workers cut into
    documents: the shards read but not yet written never exceed two per worker plus the one being read (here
    20,000 lines read 2 KB at a time, about 90 lines a shard), and the main process reads no documents; train and
    the validation split carved out of it are written in one pass."""
    from lmbench.data import cache as cache_module
    from lmbench.data import shards as shards_module

    from .helpers import experiment

    monkeypatch.setattr(cache_module, "iter_shards", functools.partial(shards_module.iter_shards, shard_bytes=2048))
    corpus = write_lines(tmp_path / "c.txt", [f"story {i} of the cat" for i in range(20_000)])
    read, in_flight = [0], []
    real_iter = cache_module.iter_shards

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for shard in real_iter(*args, **kwargs):
            read[0] += shard.num_docs
            in_flight.append(read[0] - written[0])
            yield shard

    def no_documents(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the main process read documents while tokenizing")

    monkeypatch.setattr(cache_module, "iter_shards", counted)
    written = _count_written(monkeypatch)
    monkeypatch.setattr(cache_module, "_write_split", no_documents)  # the path that reads documents here
    spec = experiment({"source": "text", "path": str(corpus), "val_fraction": 0.1, "num_workers": 2,
                       "cache_dir": str(tmp_path / "cache")}, {"kind": "char"})
    data = prepare_data(spec, progress=False)
    splits = data.meta["splits"]
    assert splits["train"]["workers"] == 2 and splits["train"]["read_with"] == ["train", "validation"]
    assert data.splits["train"].num_docs + data.splits["validation"].num_docs == 20_000 == read[0]
    assert len(in_flight) > 150 and max(in_flight) <= (2 * 2 + 1) * 100, max(in_flight)


def _count_written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the documents the split writers append (patched into _SplitWriter.add)."""
    from lmbench.data import cache as cache_module

    written, real_add = [0], cache_module._SplitWriter.add

    def add(self, batch, docs=None):  # noqa: ANN001, ANN202
        written[0] += len(batch.lengths)
        return real_add(self, batch, docs)

    monkeypatch.setattr(cache_module._SplitWriter, "add", add)
    return written


def test_streamed_parquet_shards_of_a_hub_dataset_build_the_same_cache(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`source: hf` on a folder laid out like a Hub dataset (data/train-0000k-of-00004.parquet, a validation
    shard) with `streaming: true` is read as an IterableDataset, batch by batch, into the same token cache as the
    downloaded (non-streaming) dataset."""
    import datasets
    import pandas as pd

    from lmbench.data.sources import hf as hf_source

    from .helpers import experiment

    folder = tmp_path / "hub" / "data"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = ["once", "upon", "a", "time", "the", "dog", "ran", "home", "."]
    for shard in range(4):
        texts = [" ".join(rng.choice(words, 12)) for _ in range(300)]
        pd.DataFrame({"text": texts, "id": range(300)}).to_parquet(folder / f"train-{shard:05d}-of-00004.parquet")
    # One schema for every split, as on the Hub (datasets 3.x casts every split to the first one's features).
    pd.DataFrame({"text": ["the dog ran home ."] * 60, "id": range(60)}).to_parquet(
        folder / "validation-00000-of-00001.parquet")
    loaded = []
    real_load = hf_source._hf_load

    def spy(config, split):  # noqa: ANN001, ANN202
        ds = real_load(config, split)
        loaded.append(type(ds))
        return ds

    monkeypatch.setattr(hf_source, "_hf_load", spy)
    built = []
    for streaming in (True, False):
        spec = experiment({"source": "hf", "path": str(tmp_path / "hub"), "streaming": streaming,
                           "cache_dir": str(tmp_path / f"cache-{streaming}")}, {"kind": "char"})
        built.append(prepare_data(spec, progress=False))
    assert datasets.IterableDataset in loaded and datasets.Dataset in loaded
    streamed, downloaded = built
    assert streamed.splits["train"].num_docs == 1200 and streamed.splits["validation"].num_docs == 60
    for name in ("train", "validation"):
        a, b = (d.cache_dir / f"{name}.tokens.bin" for d in built)
        assert a.read_bytes() == b.read_bytes()
