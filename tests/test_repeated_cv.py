"""benchmarks/repeated_cv.py: each query's value averaged over fold seeds, and the paired test on those averages."""

from __future__ import annotations

import polars as pl
import pytest

from retrieval_zoo.evaluation import per_query_p_value


def write_scores(folder, values: list[float], queries: list[str] | None = None, metric: str = "ndcg@10"):
    queries = queries or [f"q{i}" for i in range(len(values))]
    folder.mkdir(parents=True)
    pl.DataFrame({"unit_id": queries, "metric": [metric] * len(values), "value": values}).write_parquet(
        folder / "per_query.parquet")
    return folder


def test_fold_seed_specs(load_benchmark):
    repeated = load_benchmark("repeated_cv")
    assert repeated.fold_spec(0) == "icecat" and repeated.fold_spec(2) == "icecat:fold_seed=2"


def test_each_query_is_averaged_over_the_fold_seeds_before_the_paired_test(load_benchmark, tmp_path):
    repeated = load_benchmark("repeated_cv")
    reference = {0: write_scores(tmp_path / "r0", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
                 1: write_scores(tmp_path / "r1", [0.3, 0.2, 0.1, 0.4, 0.5, 0.8])}
    model = {0: write_scores(tmp_path / "m0", [0.5, 0.1, 0.3, 0.9, 0.5, 0.6]),
             1: write_scores(tmp_path / "m1", [0.1, 0.5, 0.5, 0.7, 0.6, 1.0])}
    averaged = repeated.averaged_over_fold_seeds([model[0], model[1]], "ndcg@10")
    assert averaged["value"].to_list() == pytest.approx([0.3, 0.3, 0.4, 0.8, 0.55, 0.8])
    rows = repeated.report_rows({("ref", "default"): {s: [f] for s, f in reference.items()},
                                 ("m", "pretrained"): {s: [f] for s, f in model.items()}}, [0, 1],
                                ("ref", "default"), ["ndcg@10"])
    row = next(r for r in rows if r["model"] == "m/pretrained")
    assert row["fold seed 0"] == pytest.approx(2.9 / 6) and row["fold seed 1"] == pytest.approx(3.4 / 6)
    assert row["mean"] == pytest.approx(3.15 / 6)
    assert row["change vs reference"] == pytest.approx((3.15 - 2.2) / 2.2)  # reference mean 2.2 / 6
    reference_averaged = repeated.averaged_over_fold_seeds([reference[0], reference[1]], "ndcg@10")
    assert row["p"] == per_query_p_value(averaged, reference_averaged, "ndcg@10")
    assert next(r for r in rows if r["model"] == "ref/default")["p"] is None
    assert "| m/pretrained | ndcg@10 | 0.4833 | 0.5667 | 0.5250 | +43.2% |" in repeated.markdown(
        rows, [0, 1], ("ref", "default"))


def test_training_seeds_under_a_fold_seed_are_averaged_with_every_other_run(load_benchmark, tmp_path):
    repeated = load_benchmark("repeated_cv")
    reference = {0: [write_scores(tmp_path / "r", [0.2, 0.2, 0.2, 0.2])]}
    model = {0: [write_scores(tmp_path / "m0", [0.1, 0.3, 0.5, 0.7]), write_scores(tmp_path / "m1", [0.3, 0.3, 0.3, 0.9])]}
    [_, row] = repeated.report_rows({("ref", "default"): reference, ("m", "pretrained"): model}, [0],
                                    ("ref", "default"), ["ndcg@10"])
    assert row["fold seed 0"] == pytest.approx((0.4 + 0.45) / 2)  # the mean of its training seeds' means
    averaged = repeated.averaged_over_fold_seeds(repeated.all_runs(model, [0]), "ndcg@10")
    assert averaged["value"].to_list() == pytest.approx([0.2, 0.3, 0.4, 0.8])
    assert row["p"] == per_query_p_value(averaged, repeated.averaged_over_fold_seeds(reference[0], "ndcg@10"),
                                         "ndcg@10")
    assert "training seeds 0, 1 under each" in repeated.markdown([row], [0], ("ref", "default"), [0, 1])


def test_runs_that_scored_other_queries_are_refused(load_benchmark, tmp_path):
    repeated = load_benchmark("repeated_cv")
    first = write_scores(tmp_path / "a", [0.1, 0.2], ["q0", "q1"])
    other = write_scores(tmp_path / "b", [0.1, 0.2], ["q0", "q2"])
    with pytest.raises(SystemExit, match="do not score the same queries"):
        repeated.averaged_over_fold_seeds([first, other], "ndcg@10")
