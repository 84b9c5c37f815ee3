"""Model selection by the retrieval metric: the start counts, the best state is tested, early stopping stops."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import retrieval_zoo as rz
from retrieval_zoo.runner import fold_view, with_valid_split
from retrieval_zoo.validation import ValidationSettings, valid_sample

QUIET = {"wandb": "disabled", "progress": False, "print_table": False}
PRETRAINED = ["light_two_tower", "mgdspr", "mmse", "mrse"]


@pytest.fixture(scope="module")
def tiny():
    return rz.load_dataset("simshop-tiny")


def _curve(result) -> pl.DataFrame:
    return pl.read_csv(result.run_dir / "valid_curve.csv")


def test_valid_sample_is_a_stable_subset_of_the_requested_size():
    ids = [f"u{i}" for i in range(50)]
    chosen = valid_sample(ids, np.arange(10, 50), 7)
    assert len(chosen) == 7 and set(chosen) <= set(range(10, 50))
    assert np.array_equal(chosen, valid_sample(ids, np.arange(10, 50), 7))
    assert np.array_equal(valid_sample(ids, np.arange(5), None), np.arange(5))


def test_settings_reject_a_monitor_that_is_not_computed():
    with pytest.raises(ValueError, match="validation.monitor"):
        ValidationSettings(monitor="mrr@10", metrics=["ndcg@10"])


def test_training_that_can_only_hurt_keeps_the_start(tiny, tmp_path):
    """An absurd learning rate wrecks every epoch; selection keeps epoch 0, so the test metrics are the start's
    (the untrained model's, run with max_steps=0), and early stopping ends training after `patience` checks."""
    # the frozen query side keeps the test fast; the shipped (fine-tuned) query side is exercised by the start test
    hurt = ["optimizer.lr=1000.0", "optimizer.pretrained_lr=1000.0", "scheduler.name=constant",
            "scheduler.warmup=0.0", "trainer.max_epochs=10", "validation.patience=2",
            "pretrained.query_encoder=frozen"]
    [wrecked] = rz.run_benchmark("light_two_tower", tiny, variant="pretrained", overrides=hurt, results_dir=tmp_path,
                                 **QUIET)
    [start] = rz.run_benchmark("light_two_tower", tiny, variant="pretrained",
                               overrides=["trainer.max_steps=0", "pretrained.query_encoder=frozen"],
                               results_dir=tmp_path / "start", **QUIET)
    assert wrecked.costs["best_epoch"] == 0
    assert wrecked.costs["epochs_trained"] == 2  # two checks in a row below the start (patience 2), then stop
    curve = _curve(wrecked)
    assert curve["epoch"].to_list() == [0, 1, 2]
    assert curve["ndcg@10"][1] < curve["ndcg@10"][0]  # training really did hurt
    for metric in ("ndcg@10", "recall@100", "mrr@10"):
        assert wrecked.metrics[metric] == start.metrics[metric], metric


def test_a_trained_epoch_that_beats_the_start_is_the_one_tested(tiny, tmp_path):
    [result] = rz.run_benchmark("light_two_tower", tiny, overrides=["trainer.max_epochs=3"], results_dir=tmp_path,
                                **QUIET)
    curve = _curve(result)
    best = result.costs["best_epoch"]
    assert best >= 1  # a from-scratch tower starts at chance, so some epoch beats it
    assert curve.filter(pl.col("epoch") == best)["ndcg@10"][0] == curve["ndcg@10"].max()


@pytest.mark.parametrize("model", PRETRAINED)
def test_each_pretrained_variant_starts_as_zero_shot_minilm_at_its_shipped_config(model, tiny, tmp_path):
    [untrained] = rz.run_benchmark(model, tiny, variant="pretrained", overrides=["trainer.max_steps=0"],
                                   results_dir=tmp_path, **QUIET)
    [zero_shot] = rz.run_benchmark("minilm_zeroshot", tiny, results_dir=tmp_path, **QUIET)
    config = rz.load_config(model, variant="pretrained")
    assert config["model"]["dim"] == 384  # the shipped width, not a convenient test size
    for metric in ("ndcg@10", "recall@100", "recall@500", "mrr@10", "p_recall@100"):
        assert untrained.metrics[metric] == pytest.approx(zero_shot.metrics[metric], abs=1e-12), metric


def test_a_dataset_without_valid_split_gets_a_stable_carve_of_its_train_queries(tiny):
    from dataclasses import replace

    queries = tiny.queries.with_columns(pl.lit("train").alias("split"))
    plain = replace(tiny, queries=queries, searches=None, interactions=None, users=None)
    carved = with_valid_split(plain, 0.25)
    share = (carved.queries["split"] == "valid").mean()
    assert 0.1 < share < 0.4
    assert "carved by the runner" in carved.meta["protocol"]
    assert carved.queries.equals(with_valid_split(plain, 0.25).queries)
    assert with_valid_split(carved, 0.25) is carved  # a valid split of its own is kept


def test_icecat_folds_select_on_an_inner_fold_never_the_test_fold(tiny):
    from dataclasses import replace

    queries = tiny.queries.with_columns((pl.int_range(pl.len()) % 5).cast(pl.Int32).alias("fold"))
    dataset = replace(tiny, queries=queries, meta={**tiny.meta, "cv_folds": 5})
    view = fold_view(dataset, 4)
    splits = view.queries.group_by("fold").agg(pl.col("split").unique()).sort("fold")
    assert splits["split"].to_list() == [["valid"], ["train"], ["train"], ["train"], ["test"]]


@pytest.mark.parametrize("option", ["validation.wise_ft_alpha=1.0", "validation.wise_ft_alpha=0.5",
                                    "validation.average_top_k=3"])
def test_the_test_search_reuses_the_selected_checks_catalogue_vectors_exactly(option, tiny, tmp_path, monkeypatch):
    """The catalogue is encoded once per check (and once for the average of the best checks) and never again for
    the test search, and the test metrics are those of a run that encodes the selected state afresh (the reuse
    switched off): at alpha 0.5 the WiSE-FT ensemble a check scored is the state selection restores, bit for bit,
    and so is the average where selection keeps it."""
    from retrieval_zoo.models.base import RetrievalModule
    from retrieval_zoo.validation import RetrievalValidation

    encodes = []
    encode_catalog = RetrievalModule.encode_catalog

    def counted(self, *args, **kwargs):
        encodes.append(1)
        return encode_catalog(self, *args, **kwargs)

    monkeypatch.setattr(RetrievalModule, "encode_catalog", counted)
    overrides = ["trainer.max_epochs=3", "validation.patience=3", option]
    checks = 5 if "average" in option else 4  # the start, three epochs (and their average)
    [reused] = rz.run_benchmark("light_two_tower", tiny, overrides=overrides, results_dir=tmp_path / "a", **QUIET)
    assert len(encodes) == len(_curve(reused)) == checks  # none for the test search
    assert reused.costs["best_epoch"] >= 1

    monkeypatch.setattr(RetrievalValidation, "catalogue_of", lambda self, epoch: None)
    [fresh] = rz.run_benchmark("light_two_tower", tiny, overrides=overrides, results_dir=tmp_path / "b", **QUIET)
    assert len(encodes) == checks + checks + 1
    assert fresh.costs["best_epoch"] == reused.costs["best_epoch"]
    assert fresh.costs.get("averaged_checks") == reused.costs.get("averaged_checks")
    for metric, value in fresh.metrics.items():
        assert reused.metrics[metric] == value or (np.isnan(value) and np.isnan(reused.metrics[metric])), metric


def test_weight_space_ensemble_interpolates_floating_weights_and_keeps_the_rest():
    import torch

    from retrieval_zoo.validation import weight_space_ensemble

    start = {"w": torch.zeros(3), "steps": torch.tensor([0])}
    trained = {"w": torch.tensor([1.0, -2.0, 4.0]), "steps": torch.tensor([7])}
    mixed = weight_space_ensemble(start, trained, 0.25)
    assert torch.equal(mixed["w"], torch.tensor([0.25, -0.5, 1.0]))
    assert torch.equal(mixed["steps"], torch.tensor([7]))
    assert torch.equal(weight_space_ensemble(start, trained, 1.0)["w"], trained["w"])


def test_settings_reject_a_wise_ft_alpha_outside_zero_to_one():
    for alpha in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="wise_ft_alpha"):
            ValidationSettings(wise_ft_alpha=alpha)


def test_wise_ft_serves_the_ensemble_it_selected_while_training_goes_on_from_the_trained_weights(
        tiny, tmp_path, monkeypatch):
    """At alpha 0.5 each trained check scores start + 0.5 (trained - start); the weights training goes on from
    are the trained ones, untouched by the check; the run folder's model is the selected check's ensemble."""
    import torch

    from retrieval_zoo.validation import RetrievalValidation, weight_space_ensemble

    trained_at, after_check = {}, {}
    evaluate = RetrievalValidation.evaluate

    def watched(self, module, epoch=None):
        trained_at[epoch] = {name: tensor.clone() for name, tensor in module.state_dict().items()}
        scores = evaluate(self, module, epoch)
        after_check[epoch] = {name: tensor.clone() for name, tensor in module.state_dict().items()}
        return scores

    monkeypatch.setattr(RetrievalValidation, "evaluate", watched)
    overrides = ["trainer.max_epochs=3", "validation.patience=3", "validation.wise_ft_alpha=0.5"]
    [result] = rz.run_benchmark("light_two_tower", tiny, overrides=overrides, results_dir=tmp_path, **QUIET)
    assert sorted(trained_at) == [0, 1, 2, 3]
    for epoch, state in trained_at.items():
        assert all(torch.equal(state[name], after_check[epoch][name]) for name in state), epoch
    best = result.costs["best_epoch"]
    assert best >= 1  # a from-scratch tower starts at chance, so some ensemble beats it
    expected = weight_space_ensemble(trained_at[0], trained_at[best], 0.5)
    served = torch.load(result.run_dir / "model.pt", map_location="cpu", weights_only=False)
    floating = [name for name, tensor in expected.items() if tensor.is_floating_point()]
    assert any(not torch.equal(expected[name], trained_at[best][name]) for name in floating)  # not the trained
    for name in floating:
        assert torch.equal(served[name], expected[name]), name


def test_only_the_checks_selection_can_still_pick_keep_their_vectors(tmp_path):
    from retrieval_zoo.validation import RetrievalValidation

    validation = RetrievalValidation.__new__(RetrievalValidation)
    validation.settings, validation.checkpoint_dir, validation.keep_catalogue = ValidationSettings(), tmp_path, True
    validation.curve, validation.encode_seconds = [], {}
    for epoch, score in enumerate([0.5, 0.3, 0.6, 0.6 - 1e-8, 0.4, float("nan")]):
        np.save(validation._catalogue_path(epoch), np.full((2, 2), epoch, dtype=np.float32))
        validation.curve.append({"epoch": epoch, "ndcg@10": score})
        validation.encode_seconds[epoch] = 1.0
        validation._drop_unselectable_catalogues()
    kept = sorted(int(path.stem.removeprefix("catalogue-epoch")) for path in tmp_path.glob("catalogue-*.npy"))
    assert kept == [0, 2, 3]  # the start, the best, and a check within float32 rounding of it
    vectors, seconds = validation.catalogue_of(2)
    assert vectors[0, 0] == 2 and seconds == 1.0
    assert validation.catalogue_of(1) is None


def test_uniform_average_means_the_weights_that_differ_and_keeps_shared_ones_bit_for_bit():
    import torch

    from retrieval_zoo.validation import uniform_average

    shared = torch.tensor([0.1, 0.7, 1 / 3])  # values whose float32 mean of three copies may round
    states = [{"w": torch.tensor([1.0, 2.0]), "frozen": shared.clone(), "steps": torch.tensor([k])}
              for k in (1, 2, 3)]
    states[1]["w"], states[2]["w"] = torch.tensor([3.0, 2.0]), torch.tensor([5.0, 8.0])
    averaged = uniform_average(states)
    assert torch.equal(averaged["w"], torch.tensor([3.0, 4.0]))
    assert torch.equal(averaged["frozen"], shared)
    assert torch.equal(averaged["steps"], torch.tensor([1]))


def test_settings_reject_an_average_of_no_checks_or_one_mixed_with_wise_ft():
    with pytest.raises(ValueError, match="average_top_k must be >= 1"):
        ValidationSettings(average_top_k=0)
    with pytest.raises(ValueError, match="set one of them"):
        ValidationSettings(average_top_k=3, wise_ft_alpha=0.5)


@pytest.mark.parametrize(("average_score", "kept"), [(0.2, "average"), (0.05, "start")])
def test_the_average_of_the_best_checks_stands_for_training_against_the_start(
        average_score, kept, tiny, tmp_path, monkeypatch):
    """Scripted valid scores (start 0.1, checks 0.3 / 0.5 / 0.4): with ``average_top_k`` 2 the two best checks
    (epochs 2 and 3) are averaged, and the average, not the best check, is weighed against the start: at 0.2 it
    is kept and served (though the check scored 0.5), at 0.05 the start is."""
    import torch

    from retrieval_zoo.validation import RetrievalValidation, uniform_average

    scripted = {0: 0.1, 1: 0.3, 2: 0.5, 3: 0.4, "average": average_score}
    states = {}

    def scored(self, module, epoch):
        states[epoch] = {name: tensor.clone() for name, tensor in module.state_dict().items()}
        return {"ndcg@10": scripted[epoch], "recall@100": scripted[epoch]}

    monkeypatch.setattr(RetrievalValidation, "_evaluate", scored)
    overrides = ["trainer.max_epochs=3", "validation.patience=3", "validation.average_top_k=2"]
    [result] = rz.run_benchmark("light_two_tower", tiny, overrides=overrides, results_dir=tmp_path, **QUIET)
    curve = _curve(result)
    assert curve["averaged"].to_list() == [0, 1, 1, 1, 2]
    assert curve.filter(pl.col("averaged") == 2)["epoch"].to_list() == [3]  # it exists once epoch 3 has trained
    average = uniform_average([states[2], states[3]])
    assert all(torch.equal(states["average"][name], tensor) for name, tensor in average.items())  # what it scored
    served = torch.load(result.run_dir / "model.pt", map_location="cpu", weights_only=False)
    expected = average if kept == "average" else states[0]
    for name, tensor in expected.items():
        assert torch.equal(served[name], tensor), name
    assert result.costs["averaged_checks"] == (2 if kept == "average" else 0)
    assert result.costs["best_epoch"] == (3 if kept == "average" else 0)


def test_every_checks_valid_values_are_kept_query_by_query_and_average_to_the_curve(tiny, tmp_path):
    """valid_per_query.parquet: each check's (and the average's) value of every valid unit, whose means are the
    curve's, so a selection rule can later be judged on valid units it did not select on."""
    overrides = ["trainer.max_epochs=2", "validation.patience=2", "validation.average_top_k=2"]
    [result] = rz.run_benchmark("light_two_tower", tiny, overrides=overrides, results_dir=tmp_path, **QUIET)
    queries = pl.read_parquet(result.run_dir / "valid_per_query.parquet")
    assert sorted(queries["check"].unique().to_list()) == ["0", "1", "2", "average"]
    means = queries.group_by("check", "metric").agg(pl.col("value").mean())
    curve = _curve(result)
    for row in curve.iter_rows(named=True):
        check = "average" if row["averaged"] >= 2 else str(row["epoch"])
        for metric in ("ndcg@10", "recall@100"):
            mean = means.filter((pl.col("check") == check) & (pl.col("metric") == metric))["value"][0]
            assert mean == pytest.approx(row[metric], abs=1e-12), (check, metric)
    assert queries.filter(pl.col("check") == "0")["unit_id"].n_unique() == len(
        queries.filter((pl.col("check") == "0") & (pl.col("metric") == "ndcg@10")))
