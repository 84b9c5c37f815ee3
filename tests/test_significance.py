"""Claims: the effect comes from the leaderboard, the p-value from the saved runs (untested without them)."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from retrieval_zoo.reports import RECIPE, read_leaderboard
from retrieval_zoo.runner import run_benchmark
from retrieval_zoo.significance import check_claims, verdict

FAST = ["trainer.max_steps=5", "trainer.limit_val_batches=1"]


@pytest.fixture
def board_dir(label_dataset, tmp_path):
    for model, overrides in (("bm25", []), ("light_two_tower", FAST)):
        run_benchmark(model, label_dataset, seeds=1, overrides=overrides, results_dir=tmp_path, wandb="disabled",
                      progress=False, print_table=False)
    return tmp_path


def claims_file(tmp_path, expect: dict) -> str:
    import yaml

    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump([{"claim": "bm25 beats the untrained tower", "dataset": "toy",
                                     "metric": "ndcg@10", "a": "bm25/default", "b": "light_two_tower/default",
                                     "expect": expect}]))
    return str(path)


def test_effect_is_the_seed_mean_of_the_leaderboard_and_p_comes_from_the_saved_runs(board_dir, label_dataset):
    board = read_leaderboard(board_dir)
    [row] = check_claims(claims_file(board_dir, {"max_p": 0.5}), board, results_dir=board_dir).to_dicts()
    ndcg = {r["model"]: float(r["ndcg@10"]) for r in board.iter_rows(named=True)}
    assert row["a_mean"] == pytest.approx(ndcg["bm25"]) and row["b_mean"] == pytest.approx(ndcg["light_two_tower"])
    assert row["relative_change"] == pytest.approx(ndcg["bm25"] / ndcg["light_two_tower"] - 1)
    assert 0.0 <= row["p_max"] <= 1.0
    assert row["verdict"] == ("yes" if row["p_max"] < 0.5 else "no")


def test_without_run_folders_a_p_claim_is_untested_but_an_effect_claim_still_gets_itsverdict(board_dir,
                                                                                                label_dataset):
    shutil.rmtree(board_dir / "runs")
    board = read_leaderboard(board_dir)
    [p_claim] = check_claims(claims_file(board_dir, {"max_p": 0.5}), board, results_dir=board_dir).to_dicts()
    assert p_claim["verdict"] == "untested (runs not saved)"
    assert p_claim["p_max"] != p_claim["p_max"]  # NaN
    [effect] = check_claims(claims_file(board_dir, {"max_relative_loss": 10.0}), board, results_dir=board_dir).to_dicts()
    assert effect["verdict"] == "yes"
    [fails] = check_claims(claims_file(board_dir, {"min_relative_gain": 100.0, "max_p": 0.01}), board,
                           results_dir=board_dir).to_dicts()
    assert fails["verdict"] == "no"  # the effect alone already fails it


def test_a_refresh_keeps_the_p_value_of_the_same_runs_once_their_folders_are_gone(board_dir, label_dataset):
    file = claims_file(board_dir, {"max_p": 0.5})
    with_runs = check_claims(file, read_leaderboard(board_dir), results_dir=board_dir)
    shutil.rmtree(board_dir / "runs")
    board = read_leaderboard(board_dir)
    [kept] = check_claims(file, board, known=with_runs, results_dir=board_dir).to_dicts()
    [original] = with_runs.to_dicts()
    assert kept["p_max"] == pytest.approx(original["p_max"]) and kept["verdict"] == original["verdict"]
    other = with_runs.with_columns(pl.col("a_mean") + 0.01)  # other runs: the old p-value does not apply
    [untouched] = check_claims(file, board, known=other, results_dir=board_dir).to_dicts()
    assert untouched["verdict"] == "untested (runs not saved)"


def test_a_claim_between_rows_of_different_recipes_is_untested_whatever_its_effect(board_dir, label_dataset):
    board = read_leaderboard(board_dir)
    older = board.with_columns(pl.when(pl.col("model") == "light_two_tower").then(pl.lit("2026-01-01"))
                               .otherwise(pl.col("recipe").cast(pl.Utf8)).alias("recipe"))
    for expect in ({"max_p": 0.5}, {"max_relative_loss": 10.0}, {"min_relative_gain": 100.0}):
        [row] = check_claims(claims_file(board_dir, expect), older, results_dir=board_dir).to_dicts()
        assert row["verdict"].startswith(f"untested (recipes differ: {RECIPE} vs 2026-01-01)"), row["verdict"]
    [same] = check_claims(claims_file(board_dir, {"max_relative_loss": 10.0}), board, results_dir=board_dir).to_dicts()
    assert same["verdict"] == "yes"


def test_verdict_rules():
    assert verdict({"min_relative_gain": 0.1, "max_p": 0.01}, 0.2, 0.001) == "yes"
    assert verdict({"min_relative_gain": 0.1, "max_p": 0.01}, 0.2, 0.02) == "no"
    assert verdict({"min_relative_gain": 0.1, "max_p": 0.01}, 0.05, float("nan")) == "no"
    assert verdict({"max_abs_relative_change": 0.02}, -0.01, float("nan")) == "yes"
    assert verdict({}, 0.3, 0.5) == "–"


def test_not_worse_fails_only_a_lower_mean_that_is_separable():
    rule = {"not_worse_at_p": 0.01}
    assert verdict(rule, 0.02, float("nan")) == "yes"  # higher: nothing to test
    assert verdict(rule, -0.01, 0.2) == "yes"  # lower, but not separable
    assert verdict(rule, -0.01, 0.001) == "no"  # lower at p < 0.01: a ▼
    assert verdict(rule, -0.01, float("nan")) == "untested (runs not saved)"


@pytest.mark.reliability
def test_the_boards_marks_do_not_depend_on_the_order_the_runs_were_made_in(tmp_path, monkeypatch):
    import itertools
    import time

    ticks = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: 0.25 * next(ticks))
    monkeypatch.setattr(time, "strftime", lambda *args: "2026-01-01T00:00:00")
    fast = ["trainer.max_steps=3", "trainer.max_epochs=1", "data.eval_batch_size=256"]
    orders = {"zoo_first": ["mgdspr", "bm25"], "baseline_first": ["bm25", "mgdspr"]}
    for name, models in orders.items():
        for model in models:
            run_benchmark(model, "simshop-tiny", seeds=1, overrides=None if model == "bm25" else fast,
                          results_dir=tmp_path / name, wandb="disabled", progress=False, print_table=False)
    boards = {name: read_leaderboard(tmp_path / name) for name in orders}
    zoo = boards["zoo_first"].filter(pl.col("model") == "mgdspr")
    assert zoo["compared_to"][0] == "bm25/default" and zoo["pval_ndcg@10"][0] is not None
    for file in ("leaderboard.csv", "leaderboard.md"):
        assert (tmp_path / "zoo_first" / file).read_bytes() == (tmp_path / "baseline_first" / file).read_bytes()


def test_p_values_need_only_the_committed_score_files_and_equal_ranx_compare(board_dir):
    """Tests read per_query.parquet (committed), not the ranked runs (not committed), and give ranx.compare's p."""
    from retrieval_zoo.evaluation import significance
    from retrieval_zoo.significance import SCORE_FILES, load_saved_run, saved_targets

    a, b = (board_dir / "runs" / "toy" / model / "default" / "seed0" for model in ("bm25", "light_two_tower"))
    expected = significance(saved_targets(a), load_saved_run(a).run, load_saved_run(b).run, "ndcg@10")
    for folder in (a, b):
        for path in folder.iterdir():
            if path.name not in SCORE_FILES:
                path.unlink()
    [row] = check_claims(claims_file(board_dir, {"max_p": 0.5}), read_leaderboard(board_dir),
                         results_dir=board_dir).to_dicts()
    assert row["p_max"] == pytest.approx(expected, rel=1e-12)


def test_git_keeps_the_score_files_of_a_run_folder_and_ignores_the_rest():
    import subprocess
    from pathlib import Path

    from retrieval_zoo.significance import SCORE_FILES

    root = Path(__file__).resolve().parents[1]
    folder = "results/runs/simshop/mmse/default/seed0"
    # meta.json: the versions and threads a differing rerun is traced to; config.yaml: the recipe; valid_curve.csv
    # and valid_per_query.parquet: what selection saw
    kept = [*SCORE_FILES, "meta.json", "config.yaml", "valid_curve.csv", "valid_per_query.parquet"]
    for name, ignored in [*((n, False) for n in kept), ("run.parquet", True), ("run.trec", True),
                          ("qrels.parquet", True), ("model.pt", True)]:
        check = subprocess.run(["git", "check-ignore", "-q", f"{folder}/{name}"], cwd=root, check=False)
        assert (check.returncode == 0) == ignored, name
    logs = subprocess.run(["git", "check-ignore", "-q", "results/runs/logs/simshop/mmse/default/seed0/metrics.csv"],
                          cwd=root, check=False)
    assert logs.returncode == 0


def test_each_row_stands_against_the_top_row_by_the_paired_test_of_its_saved_scores(board_dir):
    from retrieval_zoo.evaluation import per_query_p_value
    from retrieval_zoo.significance import against_top, load_saved_scores

    board = read_leaderboard(board_dir)
    means = {row["model"]: float(row["ndcg@10"]) for row in board.iter_rows(named=True)}
    top, other = sorted(means, key=means.get, reverse=True)
    folders = {model: board_dir / "runs" / "toy" / model / "default" / "seed0" for model in means}
    p = per_query_p_value(load_saved_scores(folders[other]).per_query, load_saved_scores(folders[top]).per_query,
                          "ndcg@10")
    standing = against_top(board, board_dir)
    assert standing[(top, "default")] == "top"
    assert standing[(other, "default")] == f"{'≈' if p >= 0.01 else 'below'} (p {p:.2g})"
    assert against_top(board, board_dir, alpha=p / 2)[(other, "default")].startswith("≈")  # p above alpha
    assert against_top(board, board_dir, alpha=min(1.0, p * 2))[(other, "default")].startswith("below")
    shutil.rmtree(folders[other])
    assert against_top(board, board_dir)[(other, "default")] == "–"  # no saved scores: not tested, not guessed
    assert "| vs top |" in (board_dir / "leaderboard.md").read_text()
