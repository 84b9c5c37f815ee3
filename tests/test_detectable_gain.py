"""benchmarks/detectable_gain.py: the smallest mean gain the board's paired test separates, from saved scores."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.evaluation import per_query_p_value


@pytest.fixture(scope="module")
def gain(load_benchmark):
    return load_benchmark("detectable_gain")


def per_query(values: np.ndarray, metric: str = "ndcg@10") -> pl.DataFrame:
    return pl.DataFrame({"unit_id": [f"q{i:03d}" for i in range(len(values))], "metric": metric,
                         "value": values.astype(float)})


def save_run(results, dataset: str, model: str, variant: str, values: np.ndarray) -> None:
    folder = results / "runs" / dataset / model / variant / "seed0"
    folder.mkdir(parents=True)
    per_query(values).write_parquet(folder / "per_query.parquet")


def test_a_mean_gain_equal_to_the_detectable_gain_has_the_boards_p_value_at_alpha(gain):
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.2, 0.8, 116)
    noise = rng.normal(0.0, 0.13, 116)
    for alpha in (0.01, 0.05):
        needed = gain.detectable_gain(noise, alpha)
        run = reference + noise - noise.mean() + needed  # the same spread, the mean moved to exactly the bar
        assert per_query_p_value(per_query(run), per_query(reference), "ndcg@10") == pytest.approx(alpha, rel=1e-6)
    # a wider spread needs a larger mean gain: the reason a higher mean can be the less separable one
    assert gain.detectable_gain(2 * noise, 0.01) == pytest.approx(2 * gain.detectable_gain(noise, 0.01))


def test_the_report_compares_each_run_with_the_reference_and_marks_what_is_separable(gain, tmp_path):
    rng = np.random.default_rng(1)
    reference = rng.uniform(0.2, 0.8, 100)
    save_run(tmp_path, "icecat", "minilm_zeroshot", "default", reference)
    save_run(tmp_path, "icecat", "steady", "pretrained", reference + 0.03 + rng.normal(0, 0.02, 100))
    save_run(tmp_path, "icecat", "erratic", "pretrained", reference + 0.03 + rng.normal(0, 0.4, 100))
    frame = gain.report(tmp_path, "icecat", "pretrained", "minilm_zeroshot/default", "ndcg@10", 0.01)
    rows = {row["run"].split("/")[0]: row for row in frame.iter_rows(named=True)}
    assert set(rows) == {"steady", "erratic"}
    assert rows["steady"]["separable"] == "yes" and rows["erratic"]["separable"] == "no"
    assert rows["erratic"]["gain needed for p < 0.01"] > rows["steady"]["gain needed for p < 0.01"]


def test_a_run_without_its_reference_seed_is_a_clear_error(gain, tmp_path):
    save_run(tmp_path, "icecat", "mrse", "pretrained", np.linspace(0, 1, 10))
    with pytest.raises(SystemExit, match="no saved scores of minilm_zeroshot/default seed0"):
        gain.report(tmp_path, "icecat", "pretrained", "minilm_zeroshot/default", "ndcg@10", 0.01)


def test_the_report_names_the_query_that_carries_the_mean(gain, tmp_path):
    reference = np.full(50, 0.9)
    run = reference + 0.01  # every query gains a little ...
    run[7] = 0.0  # ... but one loses everything, and flips the mean's sign
    save_run(tmp_path, "icecat", "minilm_zeroshot", "default", reference)
    save_run(tmp_path, "icecat", "mgdspr", "pretrained", run)
    [row] = gain.report(tmp_path, "icecat", "pretrained", "minilm_zeroshot/default", "ndcg@10", 0.01).iter_rows(
        named=True)
    assert row["mean gain"] < 0 and row["better / worse"] == "49 / 1"
    assert row["largest single query"] == "q007 (-0.9000)"
    assert row["mean gain without it"] == pytest.approx(0.01)


def test_reports_of_other_metrics_get_their_own_file(gain):
    assert gain.report_name("icecat", "ndcg@10") == "detectable_gain_icecat.md"
    assert gain.report_name("icecat", "recall@100") == "detectable_gain_icecat_recall@100.md"
