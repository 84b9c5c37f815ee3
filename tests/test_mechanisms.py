"""benchmarks/mechanisms.py: the shipped curve plan is valid, and the curve-form claim's verdicts (issue 20)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from retrieval_zoo.data.registry import parse_dataset_spec
from retrieval_zoo.data.simshop.config import SimShopConfig, resolve_config
from retrieval_zoo.evaluation import METRICS
from retrieval_zoo.models import load_config
from retrieval_zoo.significance import read_claims

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mechanisms(load_benchmark):
    return load_benchmark("mechanisms")


@pytest.fixture(scope="module")
def plan(mechanisms):
    return mechanisms.read_mechanisms_plan(ROOT / "benchmarks" / "mechanisms.yaml")


def test_every_point_of_the_shipped_plan_is_a_valid_simshop_and_every_variant_exists(mechanisms, plan):
    knobs = {f.name for f in dataclasses.fields(SimShopConfig)}
    for name, curve in plan["curves"].items():
        assert curve["knob"] in knobs, name
        assert len(curve["points"]) >= 4, f"{name}: the issue asks for at least 4-5 points"
        for role in ("mechanism", "control"):
            assert load_config(curve["model"], curve[role])["variant"] == curve[role]
        assert set(curve["metrics"]) <= set(METRICS)
        for value in curve["points"]:
            spec_name, params = parse_dataset_spec(mechanisms.point_spec(plan, curve, value))
            assert spec_name == "simshop"
            config = resolve_config(**params)
            assert getattr(config, curve["knob"]) == pytest.approx(value)


def test_every_curve_claim_names_a_curve_and_one_of_its_metrics(plan):
    curve_claims = [c for c in read_claims(ROOT / "benchmarks" / "claims") if "curve" in c]
    assert {c["curve"] for c in curve_claims} == set(plan["curves"])  # each mechanism has its curve claim
    for claim in curve_claims:
        assert claim["metric"] in plan["curves"][claim["curve"]]["metrics"], claim["claim"]


def test_a_plan_without_its_null_point_among_the_points_is_refused(mechanisms, tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("curves:\n  c: {model: mgdspr, mechanism: default, control: no_user, knob: preference_strength,"
                    " points: [1, 2], null_point: 0, strongest_point: 2, metrics: [ndcg@10], headroom: label_oracle}\n")
    with pytest.raises(SystemExit, match="null and strongest points"):
        mechanisms.read_mechanisms_plan(path)


def table(null_gain: float, null_p: float, strong_gain: float, strong_p: float, share: float) -> pl.DataFrame:
    return pl.DataFrame({"knob": [0.0, 6.0], "metric": ["p_recall@100"] * 2, "gain": [null_gain, strong_gain],
                         "relative_gain": [null_gain / 0.5, strong_gain / 0.5], "p_max": [null_p, strong_p],
                         "headroom_share": [float("nan"), share]})


CURVE = {"null_point": 0.0, "strongest_point": 6.0}
CLAIM = {"claim": "c", "curve": "x", "metric": "p_recall@100",
         "expect": {"max_p": 0.01, "null_max_abs_change": 0.01, "min_headroom_share": 0.5}}


@pytest.mark.parametrize(("numbers", "verdict"), [
    ((0.0, 0.9, 0.05, 0.001, 0.7), "yes"),
    ((0.02, 0.001, 0.05, 0.001, 0.7), "no (gain at the null point)"),
    ((0.02, 0.2, 0.05, 0.001, 0.7), "yes"),  # a change at the null point that is not separable is no gain
    ((0.0, 0.9, 0.05, 0.02, 0.7), "no (too little gain where the signal is strongest)"),
    ((0.0, 0.9, 0.05, 0.001, 0.3), "no (too little gain where the signal is strongest)"),
    ((0.0, 0.9, -0.05, 0.001, -0.7), "no (too little gain where the signal is strongest)"),
])
def test_curve_claim_verdicts(mechanisms, numbers, verdict):
    assert mechanisms.check_curve_claim(CLAIM, table(*numbers), CURVE)["verdict"] == verdict


def test_a_curve_claim_without_its_points_is_untested(mechanisms):
    only_null = table(0.0, 0.9, 0.05, 0.001, 0.7).filter(pl.col("knob") == 0.0)
    assert mechanisms.check_curve_claim(CLAIM, only_null, CURVE)["verdict"] == "untested (points not run)"


def test_the_gain_interval_is_a_paired_t_interval_over_units(mechanisms):
    a = pl.DataFrame({"unit_id": ["u1", "u2", "u3", "u4"], "value": [1.0, 0.5, 1.0, 0.0]})
    b = pl.DataFrame({"unit_id": ["u4", "u3", "u2", "u1"], "value": [0.0, 0.0, 0.5, 0.5]})  # joined by id
    differences = np.array([0.5, 0.0, 1.0, 0.0])
    expected = stats.t.interval(0.95, 3, loc=differences.mean(), scale=stats.sem(differences))
    assert mechanisms.gain_interval(a, b) == pytest.approx(expected)


def test_a_report_without_runs_lists_every_point_as_not_run_and_leaves_the_boards_claims_alone(mechanisms,
                                                                                                tmp_path):
    plan = {"world": {"n_products": 300, "n_users": 60, "n_days": 15, "searches_per_day": 100},
            "curves": {"mgdspr_personalisation": {
                "model": "mgdspr", "mechanism": "default", "control": "no_user", "knob": "preference_strength",
                "points": [0.0, 6.0], "null_point": 0.0, "strongest_point": 6.0, "metrics": ["p_recall@100"],
                "headroom": "personalisation"}}}
    verdicts = mechanisms.write_report(plan, tmp_path, ROOT / "benchmarks" / "claims", tmp_path / "m.md")
    assert set(verdicts["verdict"]) == {"untested (points not run)"}
    assert "Points not run yet: 0.0, 6.0" in (tmp_path / "m.md").read_text()
    # claims.csv belongs to the board in the same folder (reports.py reads it with its own columns)
    assert (tmp_path / "curve_claims.csv").exists() and not (tmp_path / "claims.csv").exists()


def test_the_report_is_rebuilt_from_the_committed_files_alone(mechanisms, tmp_path):
    """A fresh clone has only the files .gitignore keeps (the ranked runs stay local): the curve table made from
    them equals the one made right after the runs, and the p-values equal ranx.compare's on the ranked runs."""
    import subprocess

    from retrieval_zoo.evaluation import significance

    curve = {"model": "mgdspr", "mechanism": "default", "control": "no_user", "knob": "preference_strength",
             "points": [6.0], "null_point": 6.0, "strongest_point": 6.0, "metrics": ["p_recall@10", "ndcg@10"],
             "group": "text_attr", "headroom": "personalisation", "set": {"trainer": {"max_epochs": 1}}}
    plan = {"world": {"n_products": 300, "n_users": 60, "n_days": 15, "searches_per_day": 100},
            "curves": {"c": curve}}
    mechanisms.run_curve(plan, curve, tmp_path, seeds=1, resume=True)
    after_runs = mechanisms.curve_table(plan, curve, tmp_path)
    assert after_runs.height == 2 and set(after_runs["seeds"]) == {1}

    [seed_folder] = [f for f in tmp_path.glob("runs/*/mgdspr/default/seed0")]
    control_folder = seed_folder.parents[1] / "no_user" / "seed0"
    targets = mechanisms.saved(control_folder)[2]
    text_attr = targets.groups.filter(pl.col("group") == "text_attr")["unit_id"].sort()
    assert text_attr.to_list() == mechanisms.group_units(control_folder, "text_attr").sort().to_list()
    for metric in curve["metrics"]:
        expected = significance(targets, mechanisms.saved(seed_folder)[0], mechanisms.saved(control_folder)[0],
                                metric, "text_attr")
        row = after_runs.filter(pl.col("metric") == metric)
        assert row["p_max"][0] == pytest.approx(expected, rel=1e-9, abs=1e-12)

    root = Path(__file__).resolve().parents[1]
    files = [f for f in (tmp_path / "runs").rglob("*") if f.is_file()]
    as_committed = {f: f"results/mechanisms/{f.relative_to(tmp_path)}" for f in files}
    ignored = subprocess.run(["git", "check-ignore", "--stdin"], cwd=root, input="\n".join(as_committed.values()),
                             capture_output=True, text=True, check=False).stdout.split()
    assert any(name.endswith("run.parquet") for name in ignored)  # the ranked runs are not kept...
    kept = {f.name for f, name in as_committed.items() if name not in ignored}
    assert {"curve_scores.parquet", "headroom.json", "units.parquet"} <= kept  # ...what the report reads is
    for f, name in as_committed.items():
        if name in ignored:
            f.unlink()
    mechanisms.saved.cache_clear()
    from_clone = mechanisms.curve_table(plan, curve, tmp_path)
    assert from_clone.equals(after_runs)
