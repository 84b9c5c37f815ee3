"""Reuse: a run saves its selected weights; the reloaded model reproduces the run's metrics exactly, searches
bare query texts over the catalogue (or a new one) and says clearly what it cannot serve."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

import retrieval_zoo as rz
from retrieval_zoo.runner import run_benchmark
from retrieval_zoo.serving import ServingError, _ordered

FAST = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "data.eval_batch_size=256"]


@pytest.fixture(scope="module")
def tiny():
    return rz.load_dataset("simshop-tiny")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    found = {}
    for model in ("light_two_tower", "mmse", "bm25"):
        [found[model]] = run_benchmark(model, "simshop-tiny", seeds=1, overrides=None if model == "bm25" else FAST,
                                       results_dir=results, wandb="disabled", progress=False, print_table=False,
                                       update_leaderboard=False)
    return found


def assert_same_metrics(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(value, abs=1e-9), name


def test_a_run_folder_without_its_weights_says_how_to_make_them(runs, tmp_path):
    """A fresh clone has a row's config.yaml and scores but never its weights: the error names the bench command."""
    import shutil

    folder = tmp_path / "seed0"
    shutil.copytree(runs["light_two_tower"].run_dir, folder, ignore=shutil.ignore_patterns("*.pt"))
    with pytest.raises(FileNotFoundError, match="--dataset simshop-tiny --model light_two_tower --variant default"):
        rz.load_model(folder)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["light_two_tower", "mmse", "bm25"])
def test_the_reloaded_model_reproduces_the_run_metrics_exactly(model, runs):
    result = runs[model]
    assert (result.run_dir / "model.pt").exists() == (model != "bm25")  # BM25 has no weights: index rebuilt
    served = rz.load_model(result.run_dir)  # the dataset from meta.json's dataset_spec
    means, per_query, run = served.evaluate()
    assert_same_metrics(means, result.metrics)
    saved = pl.read_parquet(result.run_dir / "per_query.parquet")
    assert per_query.sort("metric", "unit_id")["value"].to_list() == saved["value"].to_list()
    assert run.height == pl.read_parquet(result.run_dir / "run.parquet").height


@pytest.mark.slow
@pytest.mark.parametrize("model", ["light_two_tower", "mmse", "bm25"])
def test_search_returns_the_top_k_with_titles(model, runs, tiny):
    served = runs[model].load_model()
    hits = served.search(["red shoe"], 5)
    assert hits.columns == ["query", "rank", "product_id", "title", "score"]
    assert hits.height == 5 and hits["rank"].to_list() == [1, 2, 3, 4, 5]
    assert hits["query"].unique().to_list() == ["red shoe"]
    titles = dict(zip(tiny.products["product_id"], tiny.products["title"], strict=True))
    assert hits["title"].to_list() == [titles[p] for p in hits["product_id"]]
    assert hits["score"].to_list() == sorted(hits["score"].to_list(), reverse=True)
    two = served.search(["red shoe", "phone charger"], 3)
    assert two.height == 6 and two.filter(pl.col("query") == "red shoe")["product_id"].to_list() == \
        hits["product_id"].to_list()[:3]


@pytest.mark.slow
def test_query_and_item_vectors_are_the_ones_search_scores_with(runs, tiny):
    served = runs["light_two_tower"].load_model()
    queries, items = served.encode_queries(["red shoe", "kitchenware"]), served.encode_items()
    assert queries.dtype == np.float32 and queries.shape == (2, items.shape[1])
    assert items.shape[0] == tiny.products.height
    hits = served.search(["red shoe", "kitchenware"], 3)
    best = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, 0]
    assert hits.filter(pl.col("rank") == 1)["product_id"].to_list() == [served.product_ids[i] for i in best]
    # a test unit's vector as the run encoded it equals the bare text's on a model without user inputs
    unit = served.units.indices_of_split("test")[0]
    text = served.units.texts[unit]
    np.testing.assert_allclose(served.encode_units([served.units.unit_ids[unit]]), served.encode_queries([text]),
                               atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["light_two_tower", "bm25"])
def test_a_new_catalogue_is_served_with_the_same_weights(model, runs, tiny):
    served = runs[model].load_model()
    subset = tiny.products.filter(pl.col("product_id").is_in(tiny.products["product_id"].gather([5, 17, 40, 41, 99])))
    other = served.with_catalogue(subset.select("product_id", "title", "description", "brand", "category"))
    hits = other.search(["red shoe"], 10)
    assert hits.height == 5 and set(hits["product_id"]) == set(subset["product_id"])
    if model == "light_two_tower":  # an item's vector is its own: the same in any catalogue
        rows = [served.product_ids.index(p) for p in subset["product_id"]]
        np.testing.assert_allclose(served.encode_items(subset), served.encode_items()[rows], atol=1e-6)
        np.testing.assert_allclose(other.encode_queries(["red shoe"]), served.encode_queries(["red shoe"]))
    with pytest.raises(ServingError, match="new catalogue"):
        other.evaluate()


@pytest.mark.slow
def test_what_cannot_be_served_fails_clearly(runs):
    served = runs["light_two_tower"].load_model()
    with pytest.raises(ServingError, match="non-empty"):
        served.search([""], 3)
    served.fields = served.fields | {"user_history"}  # as MGDSPR / MRSE read it on behaviour data
    with pytest.raises(ServingError, match="searcher's behaviour.*user_history"):
        served.search(["red shoe"], 3)
    bm25 = runs["bm25"].load_model()
    with pytest.raises(ServingError, match="sparse retriever"):
        bm25.encode_queries(["red shoe"])
    served.config = {**served.config, "name": "mgdspr"}
    with pytest.raises(ServingError, match="only the catalogue it was trained on"):
        served.with_catalogue(runs["light_two_tower"].load_model().dataset.products.head(3))


@pytest.mark.slow
def test_cross_validated_runs_save_one_model_per_fold(label_dataset, tmp_path):
    queries = label_dataset.queries.with_columns((pl.int_range(pl.len()) % 3).cast(pl.Int32).alias("fold"))
    data = replace(label_dataset, queries=queries, meta={**label_dataset.meta, "cv_folds": 3})
    [result] = run_benchmark("light_two_tower", data, seeds=1, overrides=FAST, results_dir=tmp_path,
                             wandb="disabled", progress=False, print_table=False, update_leaderboard=False)
    assert sorted(p.name for p in result.run_dir.glob("model*.pt")) == ["model-fold0.pt", "model-fold1.pt",
                                                                         "model-fold2.pt"]
    saved = pl.read_parquet(result.run_dir / "per_query.parquet")
    for fold in (0, 2):
        served = rz.load_model(result.run_dir, dataset=data, fold=fold)  # "toy" is no registered dataset
        _, per_query, _ = served.evaluate(metrics=["ndcg@10", "recall@100"])
        expected = saved.filter(pl.col("metric").is_in(["ndcg@10", "recall@100"])
                                & pl.col("unit_id").is_in(per_query["unit_id"].implode()))
        assert per_query.sort("metric", "unit_id").equals(expected.sort("metric", "unit_id"))
        assert set(per_query["unit_id"]) == set(queries.filter(pl.col("fold") == fold)["query_id"])


def test_configs_saved_with_sorted_keys_read_their_item_text_in_composing_order():
    from retrieval_zoo.data.features import DEFAULT_ITEM_TEXT

    config = {"data": {"features": {"item_text": dict(sorted(DEFAULT_ITEM_TEXT.items()))}}}
    assert list(_ordered(config)["data"]["features"]["item_text"]) == list(DEFAULT_ITEM_TEXT)
    own = {"description": 10, "title": 5}  # an order someone chose stays
    assert list(_ordered({"data": {"features": {"item_text": dict(own)}}})["data"]["features"]["item_text"]) == \
        list(own)
