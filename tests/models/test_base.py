"""The interface's shared helpers (the per-family contract is test_contract.py)."""

from __future__ import annotations

import torch

from lmbench.models.base import positions_from_mask


def test_positions_count_from_each_rows_first_real_token() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3], [0, 0, 0, 1]]
