"""RetrievalModule's optimiser: embedding tables and dense layers as separate groups (``optimizer.dense``)."""

from __future__ import annotations

import torch
from torch import nn

from retrieval_zoo.losses.softmax import InBatchSoftmaxLoss
from retrieval_zoo.models.base import RetrievalModule, TwoTowerModel


class TableAndLayer(TwoTowerModel):
    def __init__(self):
        super().__init__()
        self.query_tower = nn.Embedding(10, 4)
        self.item_tower = nn.Linear(4, 4)


def module(optimizer: dict) -> RetrievalModule:
    return RetrievalModule(TableAndLayer(), InBatchSoftmaxLoss(), optimizer)


def test_without_dense_settings_every_parameter_is_one_group():
    optimizer = module({"name": "adam", "lr": 0.01}).configure_optimizers()
    assert len(optimizer.param_groups) == 1
    assert len(optimizer.param_groups[0]["params"]) == 3


def test_dense_settings_apply_to_every_parameter_but_the_embedding_tables():
    optimizer = module({"name": "sgd", "lr": 0.1, "dense": {"lr": 0.01}}).configure_optimizers()
    tables, dense = optimizer.param_groups
    assert (tables["group"], tables["lr"], len(tables["params"])) == ("tables", 0.1, 1)
    assert (dense["group"], dense["lr"], len(dense["params"])) == ("dense", 0.01, 2)


def test_adagrad_accumulator_start_of_the_dense_group_is_its_own():
    # torch's Adagrad alone would start both groups at the constructor's 1e-4
    config = {"name": "adagrad", "lr": 0.1, "initial_accumulator_value": 1e-4,
              "dense": {"initial_accumulator_value": 0.1}}
    optimizer = module(config).configure_optimizers()
    tables, dense = optimizer.param_groups
    assert all(torch.all(optimizer.state[p]["sum"] == 1e-4) for p in tables["params"])
    assert all(torch.all(optimizer.state[p]["sum"] == 0.1) for p in dense["params"])
