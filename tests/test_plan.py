"""The leaderboard plan (plan.py): reading a plan, which runs it asks for (seeds, filters, skipped datasets) and
what ``resume`` skips. The benchmark runs themselves are stubbed here; test_runner.py and test_store.py run real
plans end to end."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from retrieval_zoo import runner
from retrieval_zoo.data import registry
from retrieval_zoo.data.features import compose_item_texts
from retrieval_zoo.models.registry import load_config
from retrieval_zoo.plan import finished_runs, read_plan, run_plan
from retrieval_zoo.reports import RECIPE

REPO = Path(__file__).resolve().parents[1]


def test_a_plan_needs_datasets(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ValueError, match="a plan needs a 'datasets' mapping"):
        read_plan(empty)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("seeds: 2\nruns: []\n")
    with pytest.raises(ValueError, match="wrong.yaml"):
        read_plan(wrong)
    good = tmp_path / "good.yaml"
    good.write_text("seeds: 2\ndatasets:\n  toy:\n    - {model: bm25}\n")
    assert read_plan(good) == {"seeds": 2, "datasets": {"toy": [{"model": "bm25"}]}}


@pytest.fixture
def stubbed(tmp_path, monkeypatch, label_dataset):
    """``toy`` loads the label dataset, any other name fails to load; run_benchmark records its calls."""
    calls = []

    def load(spec):
        if spec != "toy":
            raise registry.DatasetError(f"unknown dataset '{spec}'")
        return label_dataset

    monkeypatch.setattr(registry, "load_dataset", load)
    monkeypatch.setattr(runner, "run_benchmark", lambda *args, **kwargs: calls.append((args, kwargs)))
    return calls


def write_plan(tmp_path, runs: dict, **top) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"claims": str(tmp_path / "no-claims"), **top, "datasets": runs}))
    return path


def test_runs_seeds_filters_and_skipped_datasets(tmp_path, stubbed, label_dataset, capsys):
    plan = write_plan(tmp_path, {
        "missing": [{"model": "bm25"}],
        "toy": [{"model": "bm25", "set": ["model.k1=0.9"]}, {"model": "light_two_tower", "seeds": 1},
                {"model": "mmse"}],
    }, seeds=3)
    board = run_plan(plan, tmp_path / "results", seeds=2, only=["bm25", "light_two_tower"], wandb="disabled")
    assert "skipping dataset missing: unknown dataset 'missing'" in capsys.readouterr().out
    assert [(args[0], args[2], args[3], args[4]) for args, _ in stubbed] == [
        ("bm25", [0, 1], None, ["model.k1=0.9"]),  # the seeds argument overrides the plan's 3
        ("light_two_tower", [0], None, None),      # a run's own seeds win
    ]  # mmse is filtered out by ``only``
    args, kwargs = stubbed[0]
    assert args[1] is label_dataset and args[5] == tmp_path / "results" and args[6] == "disabled"
    assert kwargs == {"progress": False}
    assert board.height == 0  # the stub wrote nothing


def test_the_plans_seed_count_is_the_default(tmp_path, stubbed):
    run_plan(write_plan(tmp_path, {"toy": [{"model": "bm25"}]}, seeds=2), tmp_path, wandb="disabled")
    run_plan(write_plan(tmp_path, {"toy": [{"model": "bm25"}]}), tmp_path, wandb="disabled")
    assert [args[2] for args, _ in stubbed] == [[0, 1], [0, 1, 2]]  # 3 when the plan says nothing


def test_a_runs_seeds_may_be_a_list_and_resume_skips_the_made_ones(tmp_path, stubbed, label_dataset):
    identity = runner.dataset_identity("toy", label_dataset)
    wanted = runner.config_hash(load_config("bm25"), identity.fingerprint)
    results = tmp_path / "results"
    write_board(results, [board_row(0, wanted), board_row(2, wanted)])
    run_plan(write_plan(tmp_path, {"toy": [{"model": "bm25", "seeds": [1, 2, 3]}]}), results, wandb="disabled",
             resume=True)
    assert [args[2] for args, _ in stubbed] == [[1, 3]]  # seed 0 is not asked for, seed 2 is made


def board_row(seed: int, config_hash: str | None, recipe: str = RECIPE) -> dict:
    return {"dataset": "toy", "model": "bm25", "variant": "default", "seed": seed, "config_hash": config_hash,
            "recipe": recipe}


def write_board(results, rows: list[dict]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema_overrides={"config_hash": pl.Utf8}).write_csv(results / "leaderboard.csv")
    for row in rows:
        (results / "runs" / "toy" / "bm25" / "default" / f"seed{row['seed']}").mkdir(parents=True, exist_ok=True)


def test_resume_skips_seeds_made_with_the_same_config(tmp_path, stubbed, label_dataset):
    identity = runner.dataset_identity("toy", label_dataset)
    wanted = runner.config_hash(load_config("bm25"), identity.fingerprint)
    results = tmp_path / "results"
    write_board(results, [board_row(0, wanted), board_row(1, "000000000000"), board_row(2, wanted)])
    (results / "runs" / "toy" / "bm25" / "default" / "seed2").rmdir()  # its run folder is gone: rerun
    run_plan(write_plan(tmp_path, {"toy": [{"model": "bm25"}]}, seeds=4), results, wandb="disabled", resume=True)
    assert [args[2] for args, _ in stubbed] == [[1, 2, 3]]


def test_resume_with_every_seed_made_runs_nothing(tmp_path, stubbed, label_dataset, capsys):
    identity = runner.dataset_identity("toy", label_dataset)
    wanted = runner.config_hash(load_config("bm25"), identity.fingerprint)
    results = tmp_path / "results"
    write_board(results, [board_row(0, wanted)])
    run_plan(write_plan(tmp_path, {"toy": [{"model": "bm25"}]}, seeds=1), results, wandb="disabled", resume=True)
    assert stubbed == [] and "already on the leaderboard" in capsys.readouterr().out


def test_finished_runs_reads_old_rows_from_their_saved_config(tmp_path):
    config = {"model": {"name": "bm25", "k1": 1.2}}
    write_board(tmp_path, [board_row(0, None), board_row(1, None, recipe="2020-01-01"), board_row(2, "abc")])
    (tmp_path / "runs" / "toy" / "bm25" / "default" / "seed0" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "runs" / "toy" / "bm25" / "default" / "seed1" / "config.yaml").write_text(yaml.safe_dump(config))
    made = finished_runs(tmp_path, "toy", "f" * 64)
    # seed 0: no hash on the board, current recipe -> hashed from its config; seed 1: an older recipe -> rerun
    assert made == {("bm25", "default", 0): runner.config_hash(config, "f" * 64), ("bm25", "default", 2): "abc"}
    assert finished_runs(tmp_path, "other", "f" * 64) == {}
    assert finished_runs(tmp_path / "nothing", "toy", "f" * 64) == {}


SHIPPED_PLANS = ["benchmarks/leaderboard.yaml", "benchmarks/title_only.yaml"]


@pytest.mark.parametrize("plan_file", SHIPPED_PLANS)
def test_every_run_of_a_shipped_plan_builds_its_config(plan_file):
    """A mistyped override or variant would otherwise fail hours into `make leaderboard` / `make title-only`."""
    plan = read_plan(REPO / plan_file)
    for runs in plan["datasets"].values():
        for run in runs:
            config = load_config(run["model"], run.get("variant"), run.get("set"))
            assert config["name"] == run["model"]


def test_the_title_only_plan_gives_every_model_the_title_alone():
    products = pl.DataFrame({"title": ["Acme USB-C cable 2 m"], "brand": ["Belkin"],
                             "category": ["Computers > Cables"], "description": ["Braided nylon, fast charging."],
                             "bullets": [""], "color": ["black"]})
    plan = read_plan(REPO / "benchmarks/title_only.yaml")
    runs = plan["datasets"]["icecat"]
    assert {run["model"] for run in runs} >= {"bm25", "minilm_zeroshot", "light_two_tower", "mgdspr", "mmse", "mrse"}
    for run in runs:
        budgets = load_config(run["model"], run.get("variant"), run.get("set"))["data"]["features"]["item_text"]
        assert compose_item_texts(products, budgets) == ["Acme USB-C cable 2 m"], run
    # the board's default composes more, so the plan's overrides are what make the difference
    assert compose_item_texts(products, load_config("bm25")["data"]["features"]["item_text"]) != [
        "Acme USB-C cable 2 m"]
