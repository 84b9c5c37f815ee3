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


def test_parameters_that_carry_a_pretrained_start_get_their_own_learning_rate():
    from retrieval_zoo.models.components import mark_pretrained

    model = TableAndLayer()
    mark_pretrained(model.item_tower)
    optimizer = RetrievalModule(model, InBatchSoftmaxLoss(), {"name": "adam", "lr": 0.01, "pretrained_lr": 0.001}
                                ).configure_optimizers()
    pretrained, own = optimizer.param_groups
    assert (pretrained["group"], pretrained["lr"], len(pretrained["params"])) == ("pretrained", 0.001, 2)
    assert (own["group"], own["lr"], len(own["params"])) == ("all", 0.01, 1)


class _PlannedSteps:
    estimated_stepping_batches = 10


def _factors(name: str, warmup: float) -> list[float]:
    module = RetrievalModule(TableAndLayer(), InBatchSoftmaxLoss(), scheduler={"name": name, "warmup": warmup})
    module._trainer = _PlannedSteps()  # what Lightning's Trainer tells the module: 10 planned steps
    schedule = module.lr_schedule()
    return [round(schedule(step), 6) for step in range(10)]


def test_warmup_then_linear_or_cosine_decay_over_the_planned_steps():
    assert _factors("linear", 0.2) == [round(x, 6) for x in (1 / 3, 2 / 3, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375,
                                                              0.25, 0.125)]
    cosine = _factors("cosine", 0.0)
    assert cosine[0] == 1.0 and cosine[5] == 0.5 and all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    assert RetrievalModule(TableAndLayer(), InBatchSoftmaxLoss()).lr_schedule() is None  # constant: no scheduler


def test_an_unknown_schedule_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="scheduler.name"):
        RetrievalModule(TableAndLayer(), InBatchSoftmaxLoss(), scheduler={"name": "step"})


def test_the_catalogue_is_encoded_batch_by_batch_into_catalogue_order():
    import numpy as np

    from retrieval_zoo.data.datamodule import RetrievalDataModule
    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.models.registry import build_model, load_config
    from retrieval_zoo.runner import data_settings

    config = load_config("light_two_tower")
    untrained = build_model(config)
    untrained.attach(RetrievalDataModule(load_dataset("simshop-tiny"), set(untrained.required_fields),
                                       data_settings(config["data"]), seed=0))
    untrained.eval()
    n = len(untrained.catalog)
    with torch.no_grad():
        expected = untrained._encode_item_rows(torch.arange(n)).numpy()
    in_order = untrained.encode_catalog(batch_size=64, progress=False)
    assert in_order.dtype == np.float32 and in_order.flags.c_contiguous
    np.testing.assert_allclose(in_order, expected, atol=1e-6, rtol=0)
    order = np.random.default_rng(0).permutation(n)  # a model that encodes in its own order (e.g. longest first)
    untrained.model.catalogue_order = lambda catalog: order
    np.testing.assert_allclose(untrained.encode_catalog(batch_size=64, progress=False), expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(untrained.encode_catalog(batch_size=n, progress=False),
                                  untrained._encode_item_rows(torch.as_tensor(order)).detach().numpy()[np.argsort(order)])
