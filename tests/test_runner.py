"""End to end: every registered model through the one runner on tiny simshop; results and leaderboard."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import polars as pl
import pytest
import torch

import retrieval_zoo as rz
from retrieval_zoo.data.features import compose_item_texts, without_unread_text
from retrieval_zoo.models import list_models
from retrieval_zoo.models.registry import load_config, text_columns_read
from retrieval_zoo.runner import data_settings, run_benchmark

FAST = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "data.eval_batch_size=256"]


@pytest.fixture(scope="module")
def tiny():
    return rz.load_dataset("simshop-tiny")


@pytest.mark.slow
@pytest.mark.parametrize("model", list_models())
def test_every_model_runs_end_to_end(model, tiny, tmp_path):
    overrides = FAST + (["trainer.max_steps=0"] if model == "minilm_zeroshot" else [])
    [result] = run_benchmark(model, tiny, seeds=1, overrides=overrides, results_dir=tmp_path, wandb="disabled",
                             progress=False, print_table=False)
    for metric in ("recall@100", "ndcg@10", "mrr@10", "rel@10", "p_recall@100"):
        assert math.isfinite(result.metrics[metric]), metric
        assert 0.0 <= result.metrics[metric] <= 1.0
    assert result.costs["catalogue_size"] == tiny.products.height
    for name in ("metrics.json", "config.yaml", "meta.json", "run.parquet", "per_query.parquet", "units.parquet"):
        assert (result.run_dir / name).exists(), name
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["seed"] == 0 and "torch" in meta["versions"]
    assert meta["versions"]["torch_threads"] == str(torch.get_num_threads())  # scores' last bits depend on it
    timings = json.loads((result.run_dir / "timings.json").read_text())
    stages = ["load", "features", "index", "search", "metrics"]
    stages += [] if model == "bm25" else ["encode", "query_encode"]  # bm25 has no dense encoding
    for stage in stages:  # per-stage wall time (issue 21): what a scale run reports
        assert timings[f"{stage}_seconds"] >= 0.0, stage
    board = pl.read_csv(tmp_path / "leaderboard.csv")
    assert board.filter(pl.col("model") == model).height == 1
    assert f"| {model}" in (tmp_path / "leaderboard.md").read_text()


def test_leaderboard_keeps_one_row_per_seed_and_tests_against_the_best_baseline(tiny, tmp_path):
    run_benchmark("bm25", tiny, seeds=2, results_dir=tmp_path, wandb="disabled", progress=False, print_table=False)
    run_benchmark("light_two_tower", tiny, seeds=[0], overrides=FAST, results_dir=tmp_path, wandb="disabled",
                  progress=False, print_table=False)
    [again] = run_benchmark("bm25", tiny, seeds=[1], results_dir=tmp_path, wandb="disabled", progress=False,
                            print_table=False)
    board = rz.leaderboard(tmp_path)
    assert board.height == 3
    assert sorted(board.filter(pl.col("model") == "bm25")["seed"].to_list()) == [0, 1]
    assert again.metrics["ndcg@10"] > 0
    # light_two_tower is a baseline too, so nothing is compared; mark it as a zoo model to exercise the test
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "## simshop-tiny" in markdown and "Protocol:" in markdown and "± " in markdown


def test_a_failed_run_leaves_the_leaderboard_untouched(tiny, tmp_path, monkeypatch):
    run_benchmark("bm25", tiny, seeds=1, results_dir=tmp_path, wandb="disabled", progress=False, print_table=False)
    before_csv = (tmp_path / "leaderboard.csv").read_text()
    before_md = (tmp_path / "leaderboard.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash during evaluation")

    monkeypatch.setattr("retrieval_zoo.runner.evaluate_run", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_benchmark("bm25", tiny, seeds=[7], results_dir=tmp_path, wandb="disabled", progress=False)
    assert (tmp_path / "leaderboard.csv").read_text() == before_csv
    assert (tmp_path / "leaderboard.md").read_text() == before_md
    assert not (tmp_path / "runs" / "simshop-tiny" / "bm25" / "default" / "seed7").exists()


def test_label_only_dataset_runs_without_behaviour_metrics(label_dataset, tmp_path):
    [result] = run_benchmark("light_two_tower", label_dataset, seeds=1, overrides=FAST, results_dir=tmp_path,
                             wandb="disabled", progress=False, print_table=False)
    assert "p_recall@100" not in result.metrics
    assert result.metrics["recall@100"] > 0


def test_wandb_offline_never_fails_a_run(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    [result] = run_benchmark("bm25", tiny, seeds=1, results_dir=tmp_path, wandb="offline", progress=False,
                             print_table=False)
    assert math.isfinite(result.metrics["ndcg@10"])


def test_a_resumed_plan_runs_only_the_missing_seeds(tmp_path):
    from retrieval_zoo.plan import run_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text("seeds: 1\ndatasets:\n  simshop-tiny:\n    - {model: bm25}\n")
    run_plan(plan, tmp_path, wandb="disabled")
    first = tmp_path / "runs" / "simshop-tiny" / "bm25" / "default" / "seed0" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    board = run_plan(plan, tmp_path, seeds=2, wandb="disabled", resume=True)
    assert first.stat().st_mtime_ns == stamp  # seed 0 was not run again
    assert sorted(board["seed"].to_list()) == [0, 1]


# -- the re-ranking protocol (ESCI task 1) ---------------------------------------------------------------------
def test_rerank_scores_exactly_each_units_judged_candidates():
    from retrieval_zoo.evaluation import rerank_run

    units = pl.DataFrame({"unit_id": ["u1", "u2"], "query_id": ["q1", "q2"], "group": [None, None]})
    judgments = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q3"], "product_id": ["a", "c", "b", "a"],
                              "label": ["E", "I", "S", "E"]})
    run = rerank_run(units, judgments, ["a", "b", "c"], lambda rows, items: 10.0 * rows + items)
    assert sorted(run.iter_rows()) == [("u1", "a", 0.0), ("u1", "c", 2.0), ("u2", "b", 11.0)]


def test_rerank_ndcg_is_one_for_the_ideal_order_and_exact_for_the_reversed_one():
    from retrieval_zoo.evaluation import build_targets, rerank_metrics

    units = pl.DataFrame({"unit_id": ["q1"], "query_id": ["q1"], "group": [None]}, schema_overrides={"group": pl.Utf8})
    judgments = pl.DataFrame({"query_id": ["q1"] * 3, "product_id": ["e", "s", "i"], "label": ["E", "S", "I"]})
    targets = build_targets(judgments, units)
    ideal = pl.DataFrame({"q_id": ["q1"] * 3, "doc_id": ["e", "s", "i"], "score": [3.0, 2.0, 1.0]})
    reversed_ = ideal.with_columns(-pl.col("score"))
    assert rerank_metrics(targets, ideal)["rerank_ndcg"] == pytest.approx(1.0)
    # gains 100/10/0 at ranks 3, 2, 1: (10 / log2 3 + 100 / log2 4) / (100 + 10 / log2 3)
    assert rerank_metrics(targets, reversed_)["rerank_ndcg"] == pytest.approx(
        (10 / math.log2(3) + 50) / (100 + 10 / math.log2(3)))



@pytest.mark.reliability
def test_a_missing_best_baseline_run_is_said_not_silently_skipped(tiny, tmp_path, capsys):
    import shutil

    run_benchmark("bm25", tiny, seeds=1, results_dir=tmp_path, wandb="disabled", progress=False, print_table=False)
    shutil.rmtree(tmp_path / "runs" / "simshop-tiny" / "bm25" / "default" / "seed0")
    [result] = run_benchmark("mgdspr", tiny, seeds=1, overrides=FAST, results_dir=tmp_path, wandb="disabled",
                             progress=False, print_table=False)
    assert "no significance test against the best baseline bm25/default" in capsys.readouterr().out
    assert result.significance == {"compared_to": "bm25/default (run folder missing: not tested)"}
    assert "pval_ndcg@10" not in result.significance
    markdown = (tmp_path / "leaderboard.md").read_text()  # and the board says so instead of dropping the mark
    assert "Not tested against bm25/default (no mark): mgdspr/default;" in markdown


def test_a_neutral_key_at_its_neutral_value_leaves_the_config_hash_as_before():
    from retrieval_zoo.models import load_config
    from retrieval_zoo.runner import config_hash

    config = load_config("light_two_tower")
    before = {**config, "index": {k: v for k, v in config["index"].items()
                                  if k not in ("approximate_above", "approximate_factory")},
              "data": {**config["data"], "features": {k: v for k, v in config["data"]["features"].items()
                                                      if k != "sentence_dtype"}}}
    neutral = {**config, "index": {**config["index"], "approximate_above": None, "approximate_factory": "IVF1,Flat"},
               "data": {**config["data"], "features": {**config["data"]["features"], "sentence_dtype": "float32"}}}
    assert config_hash(neutral, "fp") == config_hash(before, "fp")  # rows made before the keys stay current
    switched = {**neutral, "index": {**neutral["index"], "approximate_above": 10}}
    half = {**neutral, "data": {**neutral["data"], "features": {**neutral["data"]["features"],
                                                                "sentence_dtype": "float16"}}}
    assert len({config_hash(c, "fp") for c in (neutral, switched, half)}) == 3
    assert config["validation"]["wise_ft_alpha"] == 1.0  # shipped at its neutral value: board rows stay current
    without_wise_ft = {**config, "validation": {k: v for k, v in config["validation"].items() if k != "wise_ft_alpha"}}
    ensembled = {**config, "validation": {**config["validation"], "wise_ft_alpha": 0.5}}
    assert config_hash(config, "fp") == config_hash(without_wise_ft, "fp") != config_hash(ensembled, "fp")
    assert config["validation"]["average_top_k"] == 1
    without_average = {**config, "validation": {k: v for k, v in config["validation"].items()
                                                if k != "average_top_k"}}
    averaged = {**config, "validation": {**config["validation"], "average_top_k": 3}}
    assert config_hash(config, "fp") == config_hash(without_average, "fp") != config_hash(averaged, "fp")
    assert config["runtime"] == {"torch_threads": None}  # a section of neutral keys only: rows before it stay current
    without_runtime = {k: v for k, v in config.items() if k != "runtime"}
    pinned = {**config, "runtime": {"torch_threads": 1}}
    assert config_hash(config, "fp") == config_hash(without_runtime, "fp") != config_hash(pinned, "fp")


def test_a_pinned_torch_thread_count_is_used_recorded_and_restored(tmp_path):
    import json

    import torch

    import retrieval_zoo as rz
    from retrieval_zoo.models.registry import ConfigError

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    [result] = rz.run_benchmark("light_two_tower", "simshop-tiny", overrides=[
        f"runtime.torch_threads={target}", "trainer.max_steps=2", "trainer.max_epochs=1"],
        results_dir=tmp_path, wandb="disabled", progress=False, print_table=False)
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["versions"]["torch_threads"] == str(target)
    assert torch.get_num_threads() == before
    for bad in ("0", "-2", "two"):
        with pytest.raises(ConfigError, match="runtime.torch_threads"):
            rz.run_benchmark("bm25", "simshop-tiny", overrides=[f"runtime.torch_threads={bad}"],
                             results_dir=tmp_path / "bad", wandb="disabled", progress=False, print_table=False)


def test_the_false_negative_margin_moves_the_hash_of_label_data_rows_only():
    from retrieval_zoo.models import load_config
    from retrieval_zoo.runner import config_hash

    config = load_config("light_two_tower")
    assert config["data"]["hard_negatives"]["relative_margin"] == 0.05  # the shipped recipe filters
    mining = {k: v for k, v in config["data"]["hard_negatives"].items() if k != "relative_margin"}
    made_before = {**config, "data": {**config["data"], "hard_negatives": mining}}
    unfiltered = {**config, "data": {**config["data"], "hard_negatives": {**mining, "relative_margin": None}}}
    # label data (Icecat, ESCI): the filter changes the mined lists, so rows made without it are stale
    assert config_hash(config, "fp", label_data=True) != config_hash(made_before, "fp", label_data=True)
    assert config_hash(unfiltered, "fp", label_data=True) == config_hash(made_before, "fp", label_data=True)
    # behaviour data under label_data_only mines nothing, so the simshop rows keep their hashes
    assert config_hash(config, "fp", label_data=False) == config_hash(made_before, "fp", label_data=False)
    opted_in = {**config, "data": {**config["data"], "hard_negatives": {**config["data"]["hard_negatives"],
                                                                        "label_data_only": False}}}
    opted_in_before = {**made_before, "data": {**made_before["data"],
                                               "hard_negatives": {**mining, "label_data_only": False}}}
    assert config_hash(opted_in, "fp", label_data=False) != config_hash(opted_in_before, "fp", label_data=False)


def test_the_encoding_batch_size_does_not_move_the_config_hash_and_a_results_key_does(monkeypatch):
    from retrieval_zoo import runner
    from retrieval_zoo.models import load_config

    config = load_config("mrse")
    assert config["data"]["eval_batch_size"] != 1024
    made_before = {**config, "data": {**config["data"], "eval_batch_size": 1024}}  # every row before 2026-12-06
    other_lr = {**config, "optimizer": {**config["optimizer"], "lr": 0.5}}
    assert runner.config_hash(config, "fp") == runner.config_hash(made_before, "fp")
    assert runner.config_hash(other_lr, "fp") != runner.config_hash(config, "fp")
    stored = runner.config_hash(config, "fp")
    monkeypatch.setattr(runner, "SPEED_ONLY_KEY", ("data", "no_such_key"))  # the rule those rows were hashed by
    assert runner.config_hash(made_before, "fp") == stored  # so their stored hashes stay current


def test_above_the_configured_catalogue_size_the_runner_searches_approximately(tiny, tmp_path):
    overrides = [*FAST, "index.approximate_above=100", "index.approximate_factory=HNSW16"]
    [result] = run_benchmark("light_two_tower", tiny, seeds=1, overrides=overrides, results_dir=tmp_path,
                             wandb="disabled", progress=False, print_table=False)
    assert tiny.products.height > 100 and result.costs["index"] == "HNSW16"
    [exact] = run_benchmark("light_two_tower", tiny, seeds=1, overrides=[*FAST, "index.approximate_above=10000000"],
                            results_dir=tmp_path / "exact", wandb="disabled", progress=False, print_table=False)
    assert exact.costs["index"] == "Flat"


def test_bm25_chooses_its_item_text_on_valid_and_reports_what_it_tried(tiny, tmp_path):
    """The choice is scored on valid units only; the test metrics are those of the chosen text's index."""
    [chosen] = run_benchmark("bm25", tiny, seeds=1, results_dir=tmp_path / "a", wandb="disabled", progress=False,
                             print_table=False)
    tried = dict(pair.rsplit(" ", 1) for pair in chosen.costs["item_text_valid_ndcg@10"].split(", "))
    assert set(tried) == {"default", "description=0"}
    best = max(tried, key=lambda name: float(tried[name]))
    assert chosen.costs["item_text_choice"] == best and chosen.costs["validation_seconds"] >= 0
    overrides = ["model.item_text_choices=[]"]  # no choice: the winner's text set directly
    overrides += [] if best == "default" else ["data.features.item_text.description=0"]
    [same] = run_benchmark("bm25", tiny, seeds=1, overrides=overrides, results_dir=tmp_path / "b",
                           wandb="disabled", progress=False, print_table=False)
    assert same.metrics["ndcg@10"] == pytest.approx(chosen.metrics["ndcg@10"], abs=1e-12)


@pytest.mark.parametrize("model", list_models())
def test_the_text_a_run_releases_is_text_its_model_never_reads(model, tiny):
    """Releasing unread long text (memory at ESCI size) must not change a run: every text the model composes
    (BM25: under each of its text choices) is the same from the released products as from the full ones."""
    config = load_config(model)
    item_text = data_settings(config["data"]).features.item_text
    released, names = without_unread_text(tiny, text_columns_read(config, item_text))
    assert names == ["bullets"]  # the shipped configs' item text skips the bullets (budget 0)
    choices = [{}, *config["model"].get("item_text_choices", [])]
    for choice in choices:
        budgets = {**item_text, **choice}
        assert compose_item_texts(released.products, budgets) == compose_item_texts(tiny.products, budgets)


def test_columns_bm25_names_are_kept_and_a_run_says_what_it_released(tiny, tmp_path, capsys):
    config = load_config("bm25", overrides=["model.fields=[title,bullets]"])
    assert text_columns_read(config, data_settings(config["data"]).features.item_text) == {"title", "bullets"}
    run_benchmark("bm25", tiny, seeds=1, results_dir=tmp_path, wandb="disabled", progress=True, print_table=False)
    assert "product text not read by this run, released from memory: bullets" in capsys.readouterr().err


def test_each_folds_weights_are_written_and_its_model_freed_before_the_next_fold_trains(label_dataset, tmp_path,
                                                                                       monkeypatch):
    """Held to the run's end, every fold's weights and the reference cycles Lightning leaves between a trainer and
    its module (freed only by a full collection) piled up: ~1.1 GiB a fold for mgdspr/pretrained on Icecat."""
    import gc
    from dataclasses import replace

    from retrieval_zoo import runner
    from retrieval_zoo.models.base import RetrievalModule

    queries = label_dataset.queries.with_columns((pl.int_range(pl.len()) % 3).cast(pl.Int32).alias("fold"))
    data = replace(label_dataset, queries=queries, meta={**label_dataset.meta, "cv_folds": 3})
    at_fold_start = []
    train_and_search = runner.train_and_search

    def recorded(*args, **kwargs):
        modules = sum(issubclass(type(o), RetrievalModule) for o in gc.get_objects())
        at_fold_start.append((modules, len(list(tmp_path.glob("runs/.staging/**/model-fold*.pt")))))
        return train_and_search(*args, **kwargs)

    monkeypatch.setattr(runner, "train_and_search", recorded)
    gc.collect()
    gc.disable()  # the automatic collection would hide the cycles, at its own rare times
    try:
        [result] = run_benchmark("light_two_tower", data, overrides=FAST, results_dir=tmp_path, wandb="disabled",
                                 progress=False, print_table=False, update_leaderboard=False)
    finally:
        gc.enable()
    before = at_fold_start[0][0]
    assert at_fold_start == [(before, 0), (before, 1), (before, 2)]
    assert sorted(p.name for p in result.run_dir.glob("model*.pt")) == [f"model-fold{k}.pt" for k in range(3)]


def test_a_runs_costs_keep_what_hard_negative_mining_made(tiny, tmp_path):
    """On label data the mined lists' summary (the line mining prints) is kept in the run's costs and meta.json."""
    from dataclasses import replace

    labels_only = replace(tiny, name="simshop-tiny-labels", searches=None, interactions=None, users=None)
    [result] = run_benchmark("light_two_tower", labels_only, seeds=1, overrides=FAST, results_dir=tmp_path,
                             wandb="disabled", progress=False, print_table=False)
    assert result.costs["mined_queries"] == labels_only.queries.filter(pl.col("split") == "train").height
    assert result.costs["mined_mean_length"] > 0 and result.costs["mined_likely_false_negatives"] >= 0
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["costs"]["mined_queries"] == result.costs["mined_queries"]


SAME_SEED_RUNS = """
import sys
from retrieval_zoo.runner import run_benchmark
for row in sys.argv[2].split(","):
    model, variant = row.split("/")
    run_benchmark(model, "simshop-tiny", [0], variant, ["trainer.max_steps=3", "trainer.max_epochs=1",
                  "validation.max_queries=50"], sys.argv[1], wandb="disabled", progress=False, print_table=False)
"""
TRAINED_ZOO_ROWS = [f"{model}/{variant}" for model in ("light_two_tower", "mgdspr", "mmse", "mrse")
                    for variant in ("default", "pretrained")]


def _score_file_digests(results) -> dict[str, str]:
    return {str(path.relative_to(results)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(results.rglob("*.parquet"))}


@pytest.mark.slow
def test_a_run_does_not_depend_on_the_process_it_runs_in(tmp_path):
    """Same seed, same results, whatever ran before in the process and whatever Python's str-hash salt
    (PYTHONHASHSEED): every trained zoo row in two processes, in opposite orders. It caught a pretrained token
    table shared through a cache and trained in place, so that a row's start depended on the rows (and folds)
    trained before it in the process. Compared: the runs, the per-query scores, each check's per-query values."""
    digests = []
    for hash_seed, rows in (("1", TRAINED_ZOO_ROWS), ("2", TRAINED_ZOO_ROWS[::-1])):
        results = tmp_path / f"hash_seed_{hash_seed}"
        subprocess.run([sys.executable, "-c", SAME_SEED_RUNS, str(results), ",".join(rows)], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        digests.append(_score_file_digests(results))
    assert any("valid_per_query" in name for name in digests[0])
    assert len(digests[0]) >= 4 * len(TRAINED_ZOO_ROWS) and digests[0] == digests[1]
