"""Dose-response curves: each paper mechanism's gain over its own ablation as its signal is turned up (issue 20).

A single-point claim on simshop's default world cannot say whether a failing mechanism is broken or the world
too easy. A curve can: at the null point (the knob that switches the signal off) the mechanism must gain
nothing, and where the signal is strong it must gain, capturing a measured share of the headroom that an
estimate of the best re-ranking gives. ``benchmarks/mechanisms.yaml`` is the plan (curves, points, seeds, world
size); this script

1. runs the missing (point, variant, seed) runs through the leaderboard machinery into the plan's results folder
   (``plan.run_dataset_plan``: resumable, keyed by config hash);
2. per point and metric: the mechanism's and the control's means over seeds, the gain (relative to the
   control), its 95% interval (paired t over the test searches, each search's value averaged over seeds), the
   largest ranx paired-t p-value over seeds, and the headroom estimate (see ``HEADROOMS``) with the share of it
   the gain captures;
3. writes results/mechanisms.md (a table per curve), one PNG per curve next to the runs, and tests the
   curve-form claims of ``benchmarks/claims`` (entries with a ``curve:`` key).

The report reads, per run folder, only files that are committed with the board (``CURVE_FILES`` and the score
files, see .gitignore): each is derived from the ranked run right after its point is run. So the report is
rebuilt from a fresh clone (``--report-only``), and a plan stopped part-way keeps every point it finished.

    python benchmarks/mechanisms.py                      # run what is missing, then report
    python benchmarks/mechanisms.py --report-only        # tables, PNGs and claims from the runs on disk
    python benchmarks/mechanisms.py --curves mgdspr_personalisation --seeds 1
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from scipy import stats

from retrieval_zoo import atomic_files
from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.evaluation import evaluate_run, per_query_p_value, relative_change
from retrieval_zoo.models.registry import load_config
from retrieval_zoo.plan import finished_runs, run_dataset_plan
from retrieval_zoo.reports import markdown_table
from retrieval_zoo.runner import config_hash, dataset_identity
from retrieval_zoo.runs import targets_of
from retrieval_zoo.significance import read_claims

sys.path.insert(0, str(Path(__file__).parent))  # the headroom scripts beside this one
import personalisation_headroom  # noqa: E402
import text_ceiling  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- the plan -------------------------------------------------------------------------------------------------
def read_mechanisms_plan(path: str | Path) -> dict:
    plan = yaml.safe_load(Path(path).read_text()) or {}
    for name, curve in (plan.get("curves") or {}).items():
        missing = {"model", "mechanism", "control", "knob", "points", "null_point", "strongest_point", "metrics",
                   "headroom"} - set(curve)
        if missing:
            raise SystemExit(f"error: {path}: curve {name} lacks {sorted(missing)}")
        if curve["headroom"] not in HEADROOMS:
            raise SystemExit(f"error: {path}: curve {name} has headroom {curve['headroom']!r}; "
                             f"choose one of {sorted(HEADROOMS)}")
        if {curve["null_point"], curve["strongest_point"]} - set(curve["points"]):
            raise SystemExit(f"error: {path}: curve {name}'s null and strongest points must be among its points")
    return plan


def point_spec(plan: dict, curve: dict, value: float) -> str:
    """The simshop spec of one point: the knob at ``value`` plus the plan's world size."""
    settings = {curve["knob"]: value, **(plan.get("world") or {})}
    return "simshop:" + ",".join(f"{key}={settings[key]}" for key in settings)


def run_curve(plan: dict, curve: dict, results_dir: Path, seeds: int, resume: bool) -> None:
    """Run the curve's missing runs, point by point; each point's report files (``CURVE_FILES``) are derived as
    soon as its runs are done, so an interrupted plan keeps what it finished."""
    for value in curve["points"]:
        for role in ("mechanism", "control"):
            run = {"model": curve["model"], "variant": curve[role], "seeds": seeds, "set": curve.get("set")}
            run_dataset_plan(point_spec(plan, curve, value), [run], seeds, results_dir, wandb="disabled",
                             resume=resume)
            keep_report_files(plan, curve, value, results_dir, role)


def keep_report_files(plan: dict, curve: dict, value: float, results_dir: Path, role: str) -> None:
    """Derive the ``CURVE_FILES`` of one variant's finished runs at one point while their ranked runs exist:
    the curve metrics' per-unit values, and for the control its headroom estimate."""
    spec = point_spec(plan, curve, value)
    data = point_data(spec)
    folders = current_folders(results_dir, spec, data, curve["model"], curve[role], curve.get("set"))
    for folder in folders.values():
        curve_scores(folder, curve["metrics"])
    if role == "control" and folders and curve["headroom"] in CACHED_HEADROOMS:
        HEADROOMS[curve["headroom"]](folders, data, curve["metrics"], curve.get("group"))


# -- the runs of a point ----------------------------------------------------------------------------------------
def current_folders(results_dir: Path, spec: str, data, model: str, variant: str,
                    overrides: dict | None = None) -> dict[int, Path]:
    """seed -> run folder of the board rows made with the plan's config (the variant plus the curve's ``set``) on
    this point's data (others ignored)."""
    identity = dataset_identity(spec, data)
    wanted = config_hash(load_config(model, variant, overrides), identity.fingerprint, identity.label_data)
    made = finished_runs(results_dir, identity.key, identity.fingerprint, identity.label_data)
    return {seed: results_dir / "runs" / identity.key / model / variant / f"seed{seed}"
            for (m, v, seed), found in made.items() if (m, v) == (model, variant) and found == wanted}


@lru_cache(maxsize=64)
def saved(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, object]:
    """(ranked run, units, evaluation targets) of a run folder, read once (the ranked run stays local: see
    ``CURVE_FILES``)."""
    if not (folder / "run.parquet").exists():
        raise SystemExit(f"error: {folder} has neither its ranked run nor its {' / '.join(CURVE_FILES)}; delete the "
                         "folder and rerun `python benchmarks/mechanisms.py` to make it again")
    return pl.read_parquet(folder / "run.parquet"), units_of(folder), targets_of(folder)


@lru_cache(maxsize=256)
def units_of(folder: Path) -> pl.DataFrame:
    """The run's test units (unit_id, query_id, group), read once: every metric, seed and estimate asks again."""
    return pl.read_parquet(folder / "units.parquet")


@lru_cache(maxsize=16)
def point_data(spec: str):
    """A point's dataset, built once per report (its runs' files and its table both need it)."""
    return load_dataset(spec)


# What the report reads from a run folder, kept with the board (.gitignore) so that the report can be rebuilt
# from a fresh clone: the ranked runs (~1.5 MB each, 90 runs at 3 seeds) are not committed, and a curve's
# seeds take hours of CPU. Each file is derived from the ranked run once, right after its point is run.
CURVE_FILES = ("curve_scores.parquet", "headroom.json")


def curve_scores(folder: Path, metrics: list[str]) -> pl.DataFrame:
    """(unit_id, metric, value) of every test unit of the run, for at least ``metrics``: from
    ``curve_scores.parquet``; a metric it lacks is computed from the ranked run and added to it."""
    path = folder / "curve_scores.parquet"
    scores = pl.read_parquet(path) if path.exists() else pl.DataFrame(
        schema={"unit_id": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64})
    missing = sorted(set(metrics) - set(scores["metric"].unique()))
    if not missing:
        return scores
    run, _, targets = saved(folder)
    _, table = evaluate_run(targets, run, missing)
    scores = pl.concat([scores, table.select("unit_id", "metric", "value")]).sort("metric", "unit_id")
    with atomic_files.replacing(path) as tmp:
        scores.write_parquet(tmp)
    return scores


def unit_values(folder: Path, metric: str, group: str | None) -> pl.DataFrame:
    """(unit_id, value) of ``metric`` for the run's test units (of ``group`` only, when given)."""
    values = curve_scores(folder, [metric]).filter(pl.col("metric") == metric).select("unit_id", "value")
    if group is not None:
        values = values.filter(pl.col("unit_id").is_in(group_units(folder, group).implode()))
    return values


def group_units(folder: Path, group: str) -> pl.Series:
    return units_of(folder).filter(pl.col("group") == group)["unit_id"]


def seed_mean(folders: dict[int, Path], metric: str, group: str | None) -> pl.DataFrame:
    """(unit_id, value): each unit's value averaged over the seeds."""
    frames = [unit_values(folder, metric, group) for folder in folders.values()]
    return pl.concat(frames).group_by("unit_id").agg(pl.col("value").mean()).sort("unit_id")


def gain_interval(mechanism: pl.DataFrame, control: pl.DataFrame) -> tuple[float, float]:
    """95% interval of the mean paired difference over units (Student t)."""
    differences = mechanism.join(control, on="unit_id", suffix="_control").select(
        pl.col("value") - pl.col("value_control"))["value"].to_numpy()
    if len(differences) < 2:
        return float("nan"), float("nan")
    low, high = stats.t.interval(0.95, len(differences) - 1, loc=differences.mean(), scale=stats.sem(differences))
    return float(low), float(high)


def largest_p(mechanism: dict[int, Path], control: dict[int, Path], metric: str, group: str | None) -> float:
    """The largest paired p-value over the seeds both variants have (a gain must hold in every seed): ranx's
    paired t-test over the units' values (``evaluation.per_query_p_value``, what ``ranx.compare`` gives)."""
    p_values = []
    for seed in sorted(set(mechanism) & set(control)):
        units = None if group is None else group_units(control[seed], group)
        p_values.append(per_query_p_value(curve_scores(mechanism[seed], [metric]),
                                          curve_scores(control[seed], [metric]), metric, units))
    return float(max(p_values)) if p_values else float("nan")


# -- headroom estimates (each: metric -> {estimate name: absolute gain over the control}) ---------------------------
def personalisation_headroom_of(control: dict[int, Path], data, metrics: list[str], group: str | None) -> dict:
    """Best gain over the re-ranking weights of the control's runs re-ranked by the history and oracle tastes."""
    return mean_over_runs(control, "personalisation", data, metrics, group, personalisation_headroom_of_run)


def personalisation_headroom_of_run(folder: Path, data, metrics: list[str], group: str | None) -> dict:
    module = personalisation_headroom
    attributes = module.parse_attributes(module.TEXT_ATTRIBUTES)
    run, _, targets = saved(folder)
    base, _ = evaluate_run(targets, run, metrics)
    found: dict[str, dict[str, float]] = {metric: {} for metric in metrics}
    for name, affinity in (("history", module.history_affinity(run, data, attributes)),
                           ("oracle", module.oracle_affinity(run, data))):
        scored = module.with_affinity(run, affinity)
        reranked = [evaluate_run(targets, module.rerank(scored, weight), metrics)[0] for weight in module.WEIGHTS]
        for metric in metrics:
            found[metric][name] = max(means[metric] for means in reranked) - base[metric]
    return found


def mean_over_runs(control: dict[int, Path], kind: str, data, metrics: list[str], group: str | None,
                   of_run) -> dict:
    """metric -> estimate name -> the mean over the control's runs of ``of_run``'s estimate, each run's read
    from its ``headroom.json`` when it holds this (kind, metrics, group), else computed and added to it."""
    per_run = [cached_headroom(folder, kind, data, metrics, group, of_run) for folder in control.values()]
    return {metric: {name: float(np.mean([run[metric][name] for run in per_run])) for name in per_run[0][metric]}
            for metric in metrics}


def cached_headroom(folder: Path, kind: str, data, metrics: list[str], group: str | None, of_run) -> dict:
    path = folder / "headroom.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    key = f"{kind}|{','.join(metrics)}|{group}"
    if key not in stored:
        stored[key] = of_run(folder, data, metrics, group)
        atomic_files.write_text(path, json.dumps(stored, indent=1, sort_keys=True) + "\n")
    return stored[key]


def text_ceiling_headroom_of(control: dict[int, Path], data, metrics: list[str], group: str | None) -> dict:
    """ndcg@10 that text cannot reach: 1 - the text-only ceiling, averaged over the group's test units."""
    units = units_of(next(iter(control.values())))
    if group is not None:
        units = units.filter(pl.col("group") == group)
    per_unit = units.join(text_ceiling.ceilings(data, units).drop("group"), on="query_id")
    gap = float(1.0 - per_unit["ceiling"].drop_nans().mean()) if per_unit.height else float("nan")
    return {metric: {"text ceiling gap": gap if metric == "ndcg@10" else float("nan")} for metric in metrics}


def label_oracle_headroom_of(control: dict[int, Path], data, metrics: list[str], group: str | None) -> dict:
    """The control's retrieved items re-ranked by their true gain (then by score): what a perfect re-ranker of
    the same candidates would add; an upper bound, not an estimate of what a loss can learn."""
    return mean_over_runs(control, "label_oracle", data, metrics, group, label_oracle_headroom_of_run)


def label_oracle_headroom_of_run(folder: Path, data, metrics: list[str], group: str | None) -> dict:
    from retrieval_zoo.evaluation import GAINS

    run, units, targets = saved(folder)
    labelled = (run.join(units.select(pl.col("unit_id").alias("q_id"), "query_id"), on="q_id")
                .join(data.judgments.rename({"product_id": "doc_id"}), on=["query_id", "doc_id"], how="left")
                .with_columns(pl.col("label").fill_null("I").replace_strict(GAINS, return_dtype=pl.Float64)
                              .alias("gain")))
    oracle = labelled.select("q_id", "doc_id", (pl.col("gain") * 1e3 + pl.col("score").rank().over("q_id")
                                                / pl.len().over("q_id")).alias("score"))
    base, _ = evaluate_run(targets, run, metrics)
    best, _ = evaluate_run(targets, oracle, metrics)
    found = {}
    for metric in metrics:
        key = f"{metric}[group={group}]" if group else metric
        found[metric] = {"label oracle": best.get(key, best[metric]) - base.get(key, base[metric])}
    return found


HEADROOMS = {"personalisation": personalisation_headroom_of, "text_ceiling": text_ceiling_headroom_of,
             "label_oracle": label_oracle_headroom_of}
CACHED_HEADROOMS = {"personalisation", "label_oracle"}  # those that read the ranked run (headroom.json keeps them)


# -- tables ------------------------------------------------------------------------------------------------------
def curve_table(plan: dict, curve: dict, results_dir: Path) -> pl.DataFrame:
    """One row per (point, metric) whose runs exist; points without runs are left out (and listed by the report)."""
    rows = [row for value in curve["points"] for row in point_rows(plan, curve, value, results_dir)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def point_rows(plan: dict, curve: dict, value: float, results_dir: Path) -> list[dict]:
    """The curve table's rows of one point (one per metric; none when the point has no seed of both variants)."""
    group = curve.get("group")
    spec = point_spec(plan, curve, value)
    data = point_data(spec)
    mechanism = current_folders(results_dir, spec, data, curve["model"], curve["mechanism"], curve.get("set"))
    control = current_folders(results_dir, spec, data, curve["model"], curve["control"], curve.get("set"))
    seeds = sorted(set(mechanism) & set(control))
    if not seeds:
        return []
    mechanism, control = {s: mechanism[s] for s in seeds}, {s: control[s] for s in seeds}
    headroom = HEADROOMS[curve["headroom"]](control, data, curve["metrics"], group)
    rows = []
    for metric in curve["metrics"]:
        a, b = seed_mean(mechanism, metric, group), seed_mean(control, metric, group)
        a_mean, b_mean = float(a["value"].mean()), float(b["value"].mean())
        low, high = gain_interval(a, b)
        estimates = headroom[metric]
        first = next(iter(estimates.values()))
        rows.append({"knob": float(value), "metric": metric, "seeds": len(seeds), "units": a.height,
                     "mechanism": a_mean, "control": b_mean, "gain": a_mean - b_mean,
                     "relative_gain": relative_change(a_mean, b_mean), "gain_low": low, "gain_high": high,
                     "p_max": largest_p(mechanism, control, metric, group),
                     **{f"headroom: {name}": estimate for name, estimate in estimates.items()},
                     "headroom_share": (a_mean - b_mean) / first if first and first > 0 else float("nan")})
    return rows


def point_row(table: pl.DataFrame, metric: str, knob: float) -> dict | None:
    """The curve table's row of ``metric`` at ``knob`` (None: that point has not been run)."""
    if not table.height:
        return None
    rows = table.filter((pl.col("metric") == metric) & (pl.col("knob") == float(knob)))
    return rows.row(0, named=True) if rows.height else None


def check_curve_claim(claim: dict, table: pl.DataFrame, curve: dict) -> dict:
    """The curve form: no gain at the null point (p >= max_p or |change| < null_max_abs_change), a gain at
    p < max_p at the strongest point capturing at least min_headroom_share of the headroom estimate."""
    expect = claim.get("expect", {})
    null = point_row(table, claim["metric"], curve["null_point"])
    strong = point_row(table, claim["metric"], curve["strongest_point"])
    result = {"claim": claim["claim"], "curve": claim["curve"], "metric": claim["metric"]}
    if null is None or strong is None:
        return {**result, "null_change": None, "null_p": None, "strongest_change": None, "strongest_p": None,
                "headroom_share": None, "verdict": "untested (points not run)"}
    max_p = expect.get("max_p", 0.01)
    null_ok = null["p_max"] >= max_p or abs(null["relative_gain"]) < expect.get("null_max_abs_change", 0.01)
    strong_ok = strong["gain"] > 0 and strong["p_max"] < max_p and \
        strong["headroom_share"] >= expect.get("min_headroom_share", 0.5)
    return {**result, "null_change": null["relative_gain"], "null_p": null["p_max"],
            "strongest_change": strong["relative_gain"], "strongest_p": strong["p_max"],
            "headroom_share": strong["headroom_share"],
            "verdict": "yes" if null_ok and strong_ok else "no" + ("" if null_ok else " (gain at the null point)")
            + ("" if strong_ok else " (too little gain where the signal is strongest)")}


# -- the report ------------------------------------------------------------------------------------------------
def plot_curve(name: str, curve: dict, table: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = curve["metrics"]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        rows = table.filter(pl.col("metric") == metric).sort("knob")
        knob = rows["knob"].to_numpy()
        gain = rows["gain"].to_numpy()
        error = np.vstack([gain - rows["gain_low"].to_numpy(), rows["gain_high"].to_numpy() - gain])
        axis.errorbar(knob, gain, yerr=error, marker="o", capsize=3,
                      label=f"{curve['mechanism']} - {curve['control']} (95% CI)")
        for column in [c for c in rows.columns if c.startswith("headroom: ")]:
            if rows[column].is_not_nan().any():
                axis.plot(knob, rows[column].to_numpy(), linestyle="--", marker="x", label=column)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel(curve["knob"])
        axis.set_ylabel(f"gain in {metric}" + (f" [{curve['group']}]" if curve.get("group") else ""))
        axis.legend(fontsize=7)
    figure.suptitle(curve.get("title", name), fontsize=10)
    figure.tight_layout()
    with atomic_files.replacing(path) as tmp:
        figure.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(figure)


def markdown(plan: dict, tables: dict[str, pl.DataFrame], claims: pl.DataFrame, results_dir: Path) -> str:
    lines = ["# Mechanism curves (issue 20)", "",
             "Generated by `python benchmarks/mechanisms.py` from `benchmarks/mechanisms.yaml`; do not edit. Each "
             "row: the mechanism's variant against its own ablation on simshop at one setting of the knob that "
             f"switches its signal (world: {plan.get('world')}). gain = mechanism - control (absolute); the 95% "
             "interval is a paired t over the test searches (each search's value averaged over the seeds); p = "
             "the largest ranx paired-t p-value over the seeds; headroom = an estimate of what re-ranking the "
             "control with the signal could add (absolute), and share = gain / the first headroom estimate.", ""]
    for name, curve in plan["curves"].items():
        table = tables.get(name, pl.DataFrame())
        lines += [f"## {curve.get('title', name)}", "",
                  f"`{curve['model']}/{curve['mechanism']}` vs `{curve['model']}/{curve['control']}`, knob "
                  f"`{curve['knob']}` (null point {curve['null_point']}, strongest {curve['strongest_point']}), "
                  f"group {curve.get('group') or 'all'}.", ""]
        done = set(table["knob"].to_list()) if table.height else set()
        missing = [value for value in curve["points"] if float(value) not in done]
        if table.height:
            lines += markdown_table(table.columns,
                                    ([_cell(value) for value in row] for row in table.sort("metric", "knob").iter_rows()))
            lines += ["", f"![{name}](mechanisms/{name}.png)", ""]
        if missing:
            lines += [f"Points not run yet: {', '.join(map(str, missing))} "
                      f"(`python benchmarks/mechanisms.py --curves {name}`).", ""]
    lines += ["## Curve-form claims (benchmarks/claims, entries with `curve:`)", ""]
    if claims.height:
        lines += markdown_table(claims.columns, ([_cell(value) for value in row] for row in claims.iter_rows()))
    else:
        lines.append("No curve-form claim has its runs yet.")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(plan: dict, results_dir: Path, claims_path: Path, out: Path) -> pl.DataFrame:
    tables = {name: curve_table(plan, curve, results_dir) for name, curve in plan["curves"].items()}
    for curve in plan["curves"].values():  # a plan stopped between a point's two variants: keep the first's files
        for value in curve["points"]:
            for role in ("mechanism", "control"):
                keep_report_files(plan, curve, value, results_dir, role)
    results_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if table.height:
            plot_curve(name, plan["curves"][name], table, results_dir / f"{name}.png")
            table.write_csv(results_dir / f"{name}.csv")
    claims = [claim for claim in read_claims(claims_path) if "curve" in claim] if claims_path.exists() else []
    verdicts = pl.DataFrame([check_curve_claim(c, tables.get(c["curve"], pl.DataFrame()), plan["curves"][c["curve"]])
                             for c in claims if c["curve"] in plan["curves"]])
    text = markdown(plan, tables, verdicts, results_dir)
    atomic_files.write_text(out, text)
    if verdicts.height:
        verdicts.write_csv(results_dir / "curve_claims.csv")  # claims.csv is the board's own (reports.py)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "benchmarks" / "mechanisms.yaml")
    parser.add_argument("--curves", help="comma-separated curve names (default: every curve of the plan)")
    parser.add_argument("--seeds", type=int, help="seeds per point and variant (default: the plan's)")
    parser.add_argument("--report-only", action="store_true", help="no training: report the runs on disk")
    parser.add_argument("--claims", type=Path, default=ROOT / "benchmarks" / "claims")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "mechanisms.md")
    args = parser.parse_args()
    plan = read_mechanisms_plan(args.plan)
    results_dir = ROOT / plan.get("results", "results/mechanisms")
    names = args.curves.split(",") if args.curves else list(plan["curves"])
    unknown = sorted(set(names) - set(plan["curves"]))
    if unknown:
        raise SystemExit(f"error: unknown curve(s) {unknown}; the plan has {', '.join(plan['curves'])}")
    if not args.report_only:
        for name in names:
            run_curve(plan, plan["curves"][name], results_dir, args.seeds or int(plan.get("seeds", 3)), resume=True)
    print(write_report(plan, results_dir, args.claims, args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
