"""Data: sources -> documents per split -> token cache -> batches.

    from lmbench.data import prepare_data, PackedDataset
    data = prepare_data(spec)                        # tokenizer + memory-mapped token splits (cached)
    train = PackedDataset(data.splits["train"], spec.data.block_size, data.tokenizer.eos_id)

Names are imported lazily, so `import lmbench.data.sources` (spec validation) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Document": "sources", "Source": "sources", "SOURCES": "sources", "make_source": "sources",
    "split_names": "corpus", "iter_documents": "corpus",
    "prepare_data": "cache", "PreparedData": "cache", "TokenSplit": "cache", "SplitStats": "cache",
    "data_fingerprint": "cache",
    "PackedDataset": "batching", "StreamSampler": "batching", "DocumentDataset": "batching",
    "collate_documents": "batching", "LengthBucketSampler": "batching",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmbench.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lmbench.data.{_EXPORTS[name]}"), name)
