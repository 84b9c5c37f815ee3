"""Query-level significance tests with ranx: zoo models against the best baseline, and the papers' claims.

Both read the per-query metric values each benchmark run saved in its folder (``per_query.parquet``, with
``units.parquet`` for query groups and ``metrics.json``: ``SCORE_FILES``, committed with the board while the
ranked runs are not) and compare seed-matched runs with ranx's paired Student t-test over queries
(``evaluation.per_query_p_value``, the p-value ``ranx.compare`` gives on the ranked runs). So a fresh clone
can still test a new row against the rows already on the board. A difference is called significant only if it
is in every seed (the largest p over seeds is reported).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.evaluation import (
    EvaluationTargets,
    build_targets,
    per_query_p_value,
    relative_change,
)

BASELINE_METRICS = ["ndcg@10", "recall@100"]


@dataclass
class SavedRun:
    run: pl.DataFrame
    units: pl.DataFrame
    metrics: dict[str, float]


def load_saved_run(run_dir: str | Path) -> SavedRun | None:
    import json

    run_dir = Path(run_dir)
    if not (run_dir / "run.parquet").exists():
        return None
    return SavedRun(pl.read_parquet(run_dir / "run.parquet"), pl.read_parquet(run_dir / "units.parquet"),
                    json.loads((run_dir / "metrics.json").read_text()))


# the files of a run folder that significance tests read; .gitignore keeps them (and only them) under results/runs
SCORE_FILES = ("per_query.parquet", "units.parquet", "metrics.json")


@dataclass
class SavedScores:
    """A run's per-query metric values, its units (query groups) and its mean metrics."""

    per_query: pl.DataFrame
    units: pl.DataFrame
    metrics: dict[str, float]

    def group_units(self, group: str | None) -> pl.Series | None:
        """The unit ids of a query group (None: every unit)."""
        return None if group is None else self.units.filter(pl.col("group") == group)["unit_id"]


def load_saved_scores(run_dir: str | Path) -> SavedScores | None:
    """The ``SCORE_FILES`` of a run folder, or None when any is missing."""
    import json

    run_dir = Path(run_dir)
    if not all((run_dir / name).exists() for name in SCORE_FILES):
        return None
    return SavedScores(pl.read_parquet(run_dir / "per_query.parquet"), pl.read_parquet(run_dir / "units.parquet"),
                       json.loads((run_dir / "metrics.json").read_text()))


def saved_targets(run_dir: str | Path) -> EvaluationTargets | None:
    """The judgments a run was evaluated with (``qrels.parquet`` in its folder), or None for older folders."""
    path = Path(run_dir) / "qrels.parquet"
    if not path.exists():
        return None
    qrels = pl.read_parquet(path)
    units = pl.read_parquet(Path(run_dir) / "units.parquet")
    kinds = {kind: qrels.filter(pl.col("kind") == kind).drop("kind") for kind in qrels["kind"].unique().sort()}
    return EvaluationTargets(kinds, units.select("unit_id", pl.col("group").fill_null("all")))


def targets_for(dataset: ProductSearchDataset, units: pl.DataFrame) -> EvaluationTargets:
    return build_targets(dataset.judgments, units, dataset.interactions if dataset.has_behaviour else None)


def best_baseline(board: pl.DataFrame, dataset: str, metric: str = "ndcg@10") -> tuple[str, str] | None:
    """(model, variant) of the baseline with the highest mean ``metric`` on ``dataset``."""
    if not board.height or metric not in board.columns:
        return None
    rows = board.filter((pl.col("dataset") == dataset) & (pl.col("baseline").cast(pl.Utf8) == "true"))
    ranked = ranked_by_mean(rows, metric)
    return (ranked["model"][0], ranked["variant"][0]) if ranked.height else None


def ranked_by_mean(rows: pl.DataFrame, metric: str) -> pl.DataFrame:
    """(model, variant, mean ``metric``) of ``rows``, best first (exact ties by name, so boards are stable)."""
    return (rows.group_by("model", "variant").agg(pl.col(metric).cast(pl.Float64, strict=False).mean())
            .drop_nulls(metric).sort([metric, "model", "variant"], descending=[True, False, False]))


def compare_with_baseline(own: SavedScores, baseline: SavedScores) -> dict[str, Any]:
    """Per-metric p-value and direction of a run against a baseline run of the same seed."""
    found: dict[str, Any] = {}
    for metric in BASELINE_METRICS:
        if metric not in own.metrics or metric not in baseline.metrics:
            continue
        found[f"pval_{metric}"] = per_query_p_value(own.per_query, baseline.per_query, metric)
        found[f"dir_{metric}"] = int(np.sign(own.metrics[metric] - baseline.metrics[metric]))
    return found


TEST_COLUMNS = [*(f"{kind}_{m}" for m in BASELINE_METRICS for kind in ("pval", "dir")), "compared_to"]


def against_top(board: pl.DataFrame, results_dir: Path, metric: str = "ndcg@10",
                alpha: float = 0.01) -> dict[tuple[str, str], str]:
    """How each (model, variant) of one dataset's board stands against the row with the best mean ``metric``,
    from the saved per-query scores of the seeds both have (paired t-test, as every test here): ``"top"``;
    ``"≈ (p X)"`` where some shared seed cannot separate the two at ``alpha`` (X: the largest p over the shared
    seeds), so the ranking between them is not established; ``"below (p X)"`` where every shared seed separates
    them; ``"–"`` without a shared seed with saved scores. Rows whose means are equal to the top's are
    ``"≈ (p 1)"``."""
    if metric not in board.columns or not board.height:
        return {}
    means = ranked_by_mean(board, metric)
    if not means.height:
        return {}
    top = (means["model"][0], means["variant"][0])
    dataset = board["dataset"][0]
    top_rows = _runs_of(board, dataset, "/".join(top)).to_dicts()
    standing = {top: "top"}
    for model, variant in means.select("model", "variant").iter_rows():
        if (model, variant) == top:
            continue
        rows = _runs_of(board, dataset, f"{model}/{variant}").to_dicts()
        p_values = [p for p in seed_matched_p_values(rows, top_rows, results_dir, metric).values() if p is not None]
        if not p_values:
            standing[(model, variant)] = "–"
            continue
        largest = max(1.0 if np.isnan(p) else p for p in p_values)  # equal scores: no difference at all
        standing[(model, variant)] = f"{'≈' if largest >= alpha else 'below'} (p {largest:.2g})"
    return standing


def baseline_tests(board: pl.DataFrame, results_dir: Path, new_keys: set[tuple[str, str, str, int]]
                   ) -> pl.DataFrame:
    """The board with every zoo row tested against its dataset's best baseline *as the board now stands*, so the
    marks do not depend on the order the runs were made in. A row is (re)tested when it is new, when its
    dataset's best baseline changed, or when that baseline's runs were redone; the others keep their test.
    Tests read the runs' ``SCORE_FILES``; a row whose files (or its baseline's) are gone says so in
    ``compared_to``."""
    updates = []
    for dataset in board["dataset"].unique().sort().to_list():
        rows = board.filter(pl.col("dataset") == dataset)
        best = best_baseline(rows, dataset)
        name = f"{best[0]}/{best[1]}" if best else None
        best_redone = best is not None and any(k[:3] == (dataset, *best) for k in new_keys)
        for row in rows.filter(pl.col("baseline").cast(pl.Utf8) != "true").iter_rows(named=True):
            key = (row["dataset"], row["model"], row["variant"], int(row["seed"]))
            tested_against = str(row.get("compared_to") or "").split(" (")[0] or None
            if key not in new_keys and not best_redone and tested_against == name:
                continue
            found = _test_row(row, best, results_dir) if best else {}
            updates.append({"dataset": key[0], "model": key[1], "variant": key[2], "seed": str(key[3]),
                            **{c: None for c in TEST_COLUMNS}, **found})
    if not updates:
        return board
    fresh = pl.DataFrame(updates, schema={**{k: pl.Utf8 for k in ("dataset", "model", "variant", "seed")},
                                          **{c: pl.Utf8 for c in TEST_COLUMNS}})
    fresh = fresh.with_columns(pl.all().cast(pl.Utf8))
    keys = ["dataset", "model", "variant", "seed"]
    board = board.with_columns([pl.lit(None, pl.Utf8).alias(c) for c in TEST_COLUMNS if c not in board.columns])
    board = board.with_columns(pl.col("seed").cast(pl.Utf8))
    return board.update(fresh, on=keys, include_nulls=True)


def _test_row(row: dict[str, Any], best: tuple[str, str], results_dir: Path) -> dict[str, Any]:
    name = f"{best[0]}/{best[1]}"
    own = run_folder(results_dir, row)
    other = run_folder(results_dir, {**row, "model": best[0], "variant": best[1]})
    saved, baseline = load_saved_scores(own), load_saved_scores(other)
    if saved is None or baseline is None:
        missing = own if saved is None else other
        print(f"warning: {row['dataset']} {row['model']}/{row['variant']} seed {row['seed']}: no significance "
              f"test against the best baseline {name}: the run folder {missing} lacks {', '.join(SCORE_FILES)} "
              "(rerun it)")
        return {"compared_to": f"{name} (run folder missing: not tested)"}
    return {**{k: str(v) for k, v in compare_with_baseline(saved, baseline).items()}, "compared_to": name}


# -- claims ---------------------------------------------------------------------------------------------------
def read_claims(claims_file: str | Path) -> list[dict[str, Any]]:
    """The claims of a YAML file, or of every YAML file in a folder."""
    path = Path(claims_file)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return [claim for file in files for claim in (yaml.safe_load(file.read_text()) or [])]


def check_claims(claims_file: str | Path, board: pl.DataFrame,
                 known: pl.DataFrame | None = None, results_dir: str | Path = "results") -> pl.DataFrame:
    """Test every claim whose runs exist (a YAML file, or a folder of them); one row per claim with the verdict.

    ``known``: an earlier result of this function (claims.csv). A claim whose run folders are gone (they are not
    committed) takes the p-value that result computed from the very same runs: same claim, same seed count and
    the same seed means of A and B on the leaderboard.
    """
    # curve-form claims (a ``curve:`` key) are tested by benchmarks/mechanisms.py on its own runs
    claims = [claim for claim in read_claims(claims_file) if "curve" not in claim]
    known_p = {} if known is None or not known.height else {
        (r["dataset"], r["claim"]): (r["a_mean"], r["b_mean"], r["seeds"], r["p_max"])
        for r in known.iter_rows(named=True)}
    rows = []
    for claim in claims:
        row = _check_claim(claim, board, known_p, Path(results_dir))
        if row is not None:
            rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _runs_of(board: pl.DataFrame, dataset: str, model_variant: str) -> pl.DataFrame:
    model, _, variant = model_variant.partition("/")
    return board.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)
                        & (pl.col("variant") == (variant or "default")))


def _seed_values(rows: pl.DataFrame, key: str) -> dict[int, float]:
    """seed -> the leaderboard's value of ``key`` for one model/variant."""
    values = rows[key].cast(pl.Float64, strict=False).to_list() if key in rows.columns else [None] * rows.height
    return {int(row["seed"]): np.nan if value is None else value
            for row, value in zip(rows.iter_rows(named=True), values, strict=True)}


def run_folder(results_dir: Path, row: dict[str, Any]) -> Path:
    """A board row's run folder: ``<results>/runs/<dataset>/<model>/<variant>/seed<k>``."""
    return Path(results_dir) / "runs" / row["dataset"] / row["model"] / row["variant"] / f"seed{row['seed']}"


def seed_matched_p_values(a_rows: Iterable[dict[str, Any]], b_rows: Iterable[dict[str, Any]], results_dir: Path,
                          metric: str, group: str | None = None) -> dict[int, float | None]:
    """seed -> the paired p-value on ``metric`` (within query ``group``) of the two sides' runs of that seed, for
    every seed both sides have (board rows); None where either run's saved scores are gone. Every reader of "the
    largest p over the seeds" (the board's standing, the claims, the cards) tests seed against seed this way."""
    b_by_seed = {int(row["seed"]): row for row in b_rows}
    found: dict[int, float | None] = {}
    for row in a_rows:
        seed = int(row["seed"])
        if seed not in b_by_seed:
            continue
        a, b = load_saved_scores(run_folder(results_dir, row)), load_saved_scores(run_folder(results_dir, b_by_seed[seed]))
        found[seed] = None if a is None or b is None else per_query_p_value(a.per_query, b.per_query, metric,
                                                                            a.group_units(group))
    return found


def _check_claim(claim: dict[str, Any], board: pl.DataFrame,
                 known_p: dict[tuple[str, str], tuple], results_dir: Path) -> dict[str, Any] | None:
    """The claim's effect from the leaderboard's per-seed values; its p-value from the saved runs.

    A run's metrics live in the leaderboard, its per-query scores in its run folder (``SCORE_FILES``, committed
    since 2026-12-05; older runs lack them). Without them the effect is still known, so a claim that fails on its effect alone gets its verdict; one that
    needs a p-value is reported as untested.
    """
    dataset = claim["dataset"]
    metric, group = claim["metric"], claim.get("group")
    key = f"{metric}[group={group}]" if group else metric
    a_rows, b_rows = _runs_of(board, dataset, claim["a"]), _runs_of(board, claim.get("b_dataset", dataset), claim["b"])
    a_runs, b_runs = _seed_values(a_rows, key), _seed_values(b_rows, key)
    seeds = sorted(set(a_runs) & set(b_runs))
    if not seeds:
        return None
    a_mean = float(np.mean([a_runs[seed] for seed in seeds]))
    b_mean = float(np.mean([b_runs[seed] for seed in seeds]))
    change = relative_change(a_mean, b_mean)
    same_queries = claim.get("b_dataset", dataset) == dataset
    p_values = (list(seed_matched_p_values(a_rows.to_dicts(), b_rows.to_dicts(), results_dir, metric, group).values())
                if same_queries else [np.nan] * len(seeds))
    p_max = float("nan") if any(p is None for p in p_values) or np.all(np.isnan(p_values)) \
        else float(np.nanmax(p_values))
    if np.isnan(p_max):
        p_max = _known_p_value(known_p.get((dataset, claim["claim"])), a_mean, b_mean, len(seeds))
    return {"dataset": dataset, "claim": claim["claim"], "metric": metric + (f" [{group}]" if group else ""),
            "a": claim["a"] + ("" if "b_dataset" not in claim else f" ({dataset})"),
            "b": claim["b"] + ("" if "b_dataset" not in claim else f" ({claim['b_dataset']})"),
            "a_mean": a_mean, "b_mean": b_mean, "relative_change": change, "p_max": p_max, "seeds": len(seeds),
            "verdict": _recipe_mismatch(a_rows, b_rows) or verdict(claim.get("expect", {}), change, p_max)}


def _recipe_mismatch(a_rows: pl.DataFrame, b_rows: pl.DataFrame) -> str | None:
    """A verdict for a claim whose two sides were trained under different recipes (a board part-way through a
    rerun): their difference would measure the recipe change, not the claim's mechanism."""
    def recipes(rows: pl.DataFrame) -> set[str]:
        if "recipe" not in rows.columns:
            return {"none recorded"}
        return {value or "none recorded" for value in rows["recipe"].cast(pl.Utf8).to_list()}

    a, b = recipes(a_rows), recipes(b_rows)
    if a == b and len(a) == 1:
        return None
    return f"untested (recipes differ: {', '.join(sorted(a))} vs {', '.join(sorted(b))})"


def _known_p_value(known: tuple | None, a_mean: float, b_mean: float, seeds: int) -> float:
    """The earlier p-value if it was computed on the same runs (same means and seed count), else NaN."""
    if known is None:
        return float("nan")
    old_a, old_b, old_seeds, old_p = known
    same_runs = abs(old_a - a_mean) < 1e-9 and abs(old_b - b_mean) < 1e-9 and old_seeds == seeds
    return float(old_p) if same_runs and old_p is not None else float("nan")


def verdict(expect: dict[str, float], change: float, p_max: float) -> str:
    checks = []
    if "min_relative_gain" in expect:
        checks.append(change >= expect["min_relative_gain"])
    if "max_relative_loss" in expect:
        checks.append(change >= -expect["max_relative_loss"])
    if "max_abs_relative_change" in expect:
        checks.append(abs(change) <= expect["max_abs_relative_change"])
    if not all(checks):
        return "no"
    if "not_worse_at_p" in expect:  # a lower mean fails only if it is separable at that level
        if change < 0 and np.isnan(p_max):
            return "untested (runs not saved)"
        checks.append(bool(change >= 0 or p_max >= expect["not_worse_at_p"]))
    if "max_p" in expect:
        if np.isnan(p_max):
            return "untested (runs not saved)"
        checks.append(bool(p_max < expect["max_p"]))
    if not checks:
        return "–"
    return "yes" if all(checks) else "no"
