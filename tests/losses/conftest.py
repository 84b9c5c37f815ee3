"""Shared by the loss tests: a hand-checkable two-query batch over a small item table, and an item encoder that
stands in for RetrievalModule.encode_item_indices (the function a loss's ``extra_vectors`` encodes with)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


class TableEncoder:
    """Item i is row i of a fixed table (-1 padding encodes item 0); counts its calls and the items it encodes."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.calls = 0
        self.encoded = 0

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.encoded += indices.numel()
        return self.table[indices.clamp(min=0)]


@dataclass
class HandBatch:
    """Queries q0 = (1, 0), q1 = (0, 1) with positives items 10 = (2, 0) and 11 = (0, 1): in-batch logits
    q @ p.T = [[2, 0], [0, 1]]. Other items: 0 (what padding encodes) = (9, 9), 5 = (1, 1), 7 = (0, -1)."""

    table: torch.Tensor
    queries: torch.Tensor
    pos_item: torch.Tensor
    encode: TableEncoder

    @property
    def positives(self) -> torch.Tensor:
        return self.table[self.pos_item]

    def batch(self, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pos_item": self.pos_item, **extra}


@pytest.fixture
def hand() -> HandBatch:
    table = torch.zeros(12, 2)
    table[0] = torch.tensor([9.0, 9.0])
    table[5] = torch.tensor([1.0, 1.0])
    table[7] = torch.tensor([0.0, -1.0])
    table[10] = torch.tensor([2.0, 0.0])
    table[11] = torch.tensor([0.0, 1.0])
    return HandBatch(table, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([10, 11]), TableEncoder(table))


@pytest.fixture
def table_encoder() -> type[TableEncoder]:
    """The encoder class, for a test over a table of its own."""
    return TableEncoder
