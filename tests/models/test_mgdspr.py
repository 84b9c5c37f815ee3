"""MGDSPR: shapes, padding masks, the zero-vector path, the no-user form and end-to-end runs on simshop-tiny."""

from __future__ import annotations

import math

import pytest
import torch

from retrieval_zoo.data import load_dataset
from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.data.features import dataset_fields
from retrieval_zoo.data.text import words_of
from retrieval_zoo.models import build_model, list_variants, load_config
from retrieval_zoo.models.mgdspr import ROWS, SPARSE_MIN_ROWS, SelfAttention, attend_with_null
from retrieval_zoo.runner import data_settings, run_benchmark

SMALL = {"dim": 32, "heads": 4, "word_buckets": 4096, "char_buckets": 4096}
DIM = SMALL["dim"]
HISTORIES = ("hist_realtime", "hist_short", "hist_long")


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("simshop-tiny")


def build(dataset, **model):
    config = load_config("mgdspr", overrides={"model": {**SMALL, **model}})
    module = build_model(config)
    fields = module.required_fields | (module.optional_fields & dataset_fields(dataset))
    datamodule = RetrievalDataModule(dataset, fields, data_settings(config["data"]), seed=0)
    module.attach(datamodule)
    torch.manual_seed(0)
    return module.eval(), datamodule


@pytest.fixture(scope="module")
def prepared(tiny):
    return build(tiny)


@pytest.fixture()
def batch(prepared):
    _, datamodule = prepared
    return next(iter(datamodule.train_dataloader()))


def empty_history(batch):
    batch = dict(batch)
    for name in HISTORIES:
        batch[name] = torch.full_like(batch[name], -1)
    batch["hist_long_action"] = torch.zeros_like(batch["hist_long_action"])
    batch["mgdspr_hist_words"] = torch.zeros_like(batch["mgdspr_hist_words"])
    return batch


# -- shapes -------------------------------------------------------------------------------------------
def test_shapes(prepared, batch):
    module, _ = prepared
    tower = module.model.query_tower
    size = len(batch["pos_item"])
    with torch.no_grad():
        q_mgs = tower.unit(batch)
        blocks = tower.behaviour(q_mgs, batch)
        assert q_mgs.shape == (size, ROWS, DIM)
        assert [b.shape for b in blocks] == [(size, ROWS, DIM)] * 3
        assert module.encode_queries(batch).shape == (size, DIM)
        assert module.encode_item_indices(batch["pos_item"]).shape == (size, DIM)
        # row 6 is the sum of rows 1-5
        assert torch.allclose(q_mgs[:, 5], q_mgs[:, :5].sum(1), atol=1e-5)


def test_units_built_in_prepare(prepared):
    module, datamodule = prepared
    units = datamodule.units
    for name in ("mgdspr_words", "mgdspr_chars", "mgdspr_hist_words"):
        assert name in units.tensors
    assert "mgdspr_title_words" in datamodule.catalog.tensors
    hasher = module.model.word_hasher
    assert units.tensors["mgdspr_words"][0, 0] == hasher(words_of(units.texts[0])[0])
    # a previous query's words are the words of that earlier search of the same user
    history = units.tensors["mgdspr_hist_words"]
    row, slot = torch.nonzero(history.gt(0).any(-1))[0].tolist()
    earlier = {tuple(w.tolist()) for w in units.tensors["mgdspr_words"][
        [i for i, u in enumerate(units.user_ids) if u == units.user_ids[row]]]}
    assert tuple(history[row, slot].tolist()) in earlier


# -- masks ----------------------------------------------------------------------------------------------
def test_query_attention_ignores_padding_and_uses_the_zero_vector():
    torch.manual_seed(0)
    queries = torch.randn(3, ROWS, 8)
    keys = torch.randn(3, 5, 8)
    mask = torch.tensor([[True, True, False, False, False], [False, False, False, True, True], [False] * 5])
    garbage = keys.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), 8) * 1e3
    out = attend_with_null(queries, keys, mask)
    assert torch.equal(out, attend_with_null(queries, garbage, mask))
    assert torch.equal(out[2], torch.zeros(ROWS, 8))  # empty set: only the zero vector -> exactly 0
    # with the zero vector in the softmax, a set's output is a shrunk convex combination of its keys
    weights = torch.cat([torch.zeros(ROWS, 1), queries[0] @ keys[0, :2].T / math.sqrt(8)], 1).softmax(1)
    assert torch.allclose(out[0], weights[:, 1:] @ keys[0, :2], atol=1e-6)


def test_self_attention_ignores_padding():
    torch.manual_seed(0)
    attention = SelfAttention(8, 2, dropout=0.0).eval()
    values = torch.randn(3, 6, 8)
    mask = torch.tensor([[True, True, True, False, False, False], [True, False, False, False, False, False],
                         [False] * 6])  # compacted: real positions first
    garbage = values.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), 8) * 1e3
    out, out_garbage = attention(values, mask), attention(garbage, mask)
    assert torch.equal(out[mask], out_garbage[mask])
    assert torch.isfinite(out_garbage[mask]).all() and torch.isfinite(attention(values, mask)).all()


def test_padded_history_positions_are_never_attended(prepared, batch):
    module, _ = prepared
    changed = dict(batch)
    for name in HISTORIES:
        padded = batch[name] < 0
        changed[name] = torch.where(padded, torch.randint(-50, -1, batch[name].shape), batch[name])
        # one more column of padding in front (histories are left-padded): dropped, never attended
        changed[name] = torch.cat([torch.full((len(batch[name]), 1), -1), changed[name]], 1)
    padded = batch["hist_long"] < 0
    actions = torch.where(padded, torch.randint(1, 4, padded.shape), batch["hist_long_action"])
    changed["hist_long_action"] = torch.cat([torch.full((len(padded), 1), 2), actions], 1)
    with torch.no_grad():
        assert torch.equal(module.encode_queries(batch), module.encode_queries(changed))


def test_empty_history_takes_the_zero_vector_path(prepared, batch):
    module, _ = prepared
    tower = module.model.query_tower
    empty = empty_history(batch)
    with torch.no_grad():
        q_mgs = tower.unit(empty)
        assert torch.equal(q_mgs[:, 4], torch.zeros_like(q_mgs[:, 4]))  # row 5: no previous query
        blocks = tower.behaviour(q_mgs, empty)
        for block in blocks:
            assert torch.equal(block, torch.zeros_like(block))
        vector = module.encode_queries(empty)
        assert torch.isfinite(vector).all()
        zero = torch.zeros_like(q_mgs)
        assert torch.equal(vector, tower.fusion([q_mgs, zero, zero, zero]))
        # history changes the query vector when there is one
        assert not torch.allclose(vector, module.encode_queries(batch))


def test_sparse_gradients_and_one_training_step(tiny, batch):
    module, _ = build(tiny, word_buckets=SPARSE_MIN_ROWS)  # large tables get sparse gradients
    module.train()
    optimizer = module.configure_optimizers()
    loss = module._losses(batch)["loss"]
    loss.backward()
    words = module.model.query_tower.unit.words.weight
    assert words.grad.is_sparse and words.grad.is_coalesced()
    assert not module.model.items.item.weight.grad.is_sparse  # the small item table stays dense
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 3.0)
    assert torch.isfinite(loss) and torch.isfinite(norm)
    optimizer.step()


def test_id_only_behaviour_items_and_cosine_vectors(tiny, batch):
    module, _ = build(tiny, behaviour_items="id", normalize=True)
    assert module.model.query_tower.behaviour.item_tower is None
    with torch.no_grad():
        queries = module.encode_queries(batch)
        items = module.encode_item_indices(batch["pos_item"])
    assert torch.allclose(queries.norm(dim=1), torch.ones(len(queries)), atol=1e-5)
    assert torch.allclose(items.norm(dim=1), torch.ones(len(items)), atol=1e-5)


def blocks_of(module, batch):
    tower = module.model.query_tower
    q_mgs = tower.unit(batch)
    return [q_mgs, *tower.behaviour(q_mgs, batch)]


def test_residual_fusion_adds_the_fusion_output_to_the_sum_rows(tiny, batch):
    residual, _ = build(tiny, fusion_residual=True)
    plain, _ = build(tiny)
    with torch.no_grad():
        for module in (residual, plain):
            tower, blocks = module.model.query_tower, blocks_of(module, batch)
            fused = tower.fusion(blocks)
            summed = torch.stack([block[:, -1] for block in blocks]).sum(0)
            # the paper's form is the [CLS] output alone; the residual form adds it to the blocks' sum rows
            expected = summed + fused if module is residual else fused
            torch.testing.assert_close(tower(batch), expected)


# -- configuration ------------------------------------------------------------------------------------------
def test_variants_resolve_and_the_ladder_is_ordered():
    assert list_variants("mgdspr") == ["default", "base", "mgs", "behaviour", "fusion", "tau", "no_user",
                                       "residual_fusion", "residual_fusion_no_user", "pretrained",
                                       "pretrained_no_mix"]
    switches = ("multi_granular", "behaviour", "fusion")
    ladder = []
    for variant in ("base", "mgs", "behaviour", "fusion", "tau", "default"):
        config = load_config("mgdspr", variant)
        model, loss = config["model"], config["loss"]
        ladder.append(sum(model[s] for s in switches) + (loss["temperature"] > 1) + (loss["hard_fraction"] > 0))
    assert ladder == [0, 1, 2, 3, 4, 5]
    default = load_config("mgdspr")
    assert default["model"]["dim"] == 128 and default["model"]["heads"] == 8
    assert default["optimizer"]["name"] == "adagrad" and default["optimizer"]["lr"] == 0.1
    assert default["trainer"]["gradient_clip_val"] == 3.0 and default["data"]["batch_size"] == 256
    assert default["loss"]["temperature"] == 2.0
    features = default["data"]["features"]
    assert (features["realtime_length"], features["short_term_length"], features["long_term_length"]) == (50, 100, 100)
    pretrained = load_config("mgdspr", "pretrained")["model"]
    assert pretrained["pretrained_subwords"] and pretrained["pretrained_sentence"]


def test_the_no_mix_ablation_is_the_pretrained_variant_without_the_mixed_negatives_alone():
    with_mix, without = load_config("mgdspr", "pretrained"), load_config("mgdspr", "pretrained_no_mix")
    assert with_mix["loss"]["hard_fraction"] > 0 and without["loss"]["hard_fraction"] == 0
    for config in (with_mix, without):
        del config["loss"]["hard_fraction"], config["variant"]
    assert without == with_mix


def test_config_class_has_one_field_per_yaml_key_and_is_checked_at_load():
    import dataclasses

    from retrieval_zoo.models import ConfigError
    from retrieval_zoo.models.mgdspr import MGDSPRConfig
    from retrieval_zoo.models.registry import own_model_keys

    # model.encoder is the registry's shared key (registry.own_model_keys), not the config class's
    assert {f.name for f in dataclasses.fields(MGDSPRConfig)} == set(own_model_keys(load_config("mgdspr")))
    with pytest.raises(ConfigError, match=r"mgdspr.yaml.*model.long_term expects one of 'action_sets', 'sequence'"):
        load_config("mgdspr", overrides=["model.long_term=seq"])


def test_no_user_variant_asks_for_no_user_input():
    module = build_model(load_config("mgdspr", "no_user", overrides={"model": SMALL}))
    assert not module.optional_fields & {"user", "user_history", "query_history"}
    assert {"user_history", "query_history"} <= build_model(
        load_config("mgdspr", overrides={"model": SMALL})).optional_fields


# -- end to end ---------------------------------------------------------------------------------------------
RUN = ["model.dim=32", "model.heads=4", "model.word_buckets=4096", "model.char_buckets=4096",
       "trainer.max_steps=3", "data.batch_size=64", "eval.k=500"]


def finite_metrics(result, names):
    for name in names:
        assert name in result.metrics and math.isfinite(result.metrics[name]), name


@pytest.mark.slow
def test_end_to_end_on_simshop_tiny(tmp_path):
    [result] = run_benchmark("mgdspr", "simshop-tiny", seeds=1, results_dir=tmp_path, wandb="disabled",
                             progress=False, overrides=RUN, print_table=False)
    finite_metrics(result, ["recall@100", "ndcg@10", "rel@10", "p_recall@100"])
    assert result.costs["params"] > 0 and (result.run_dir / "run.parquet").exists()


@pytest.mark.slow
def test_no_user_form_on_a_dataset_without_behaviour(tiny, tmp_path):
    # Icecat / ESCI have no searches, users or histories: the model must run as is, without user branches
    plain = ProductSearchDataset(name="simshop-tiny-nologs", products=tiny.products, queries=tiny.queries,
                                 judgments=tiny.judgments, meta={**tiny.meta})
    assert not {"user_history", "query_history"} & dataset_fields(plain)
    module, datamodule = build(plain)
    assert not any(name.startswith("hist_") or name == "mgdspr_hist_words" for name in datamodule.units.tensors)
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        assert torch.isfinite(module.encode_queries(batch)).all()
    [result] = run_benchmark("mgdspr", plain, seeds=1, results_dir=tmp_path, wandb="disabled", progress=False,
                             overrides=RUN, print_table=False)
    finite_metrics(result, ["recall@100", "ndcg@10", "rel@10"])
    assert "p_recall@100" not in result.metrics
