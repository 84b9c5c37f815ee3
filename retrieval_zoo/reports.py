"""The leaderboard: per-seed rows in results/leaderboard.csv, mean +- sd tables in results/leaderboard.md.

One table per dataset, stating its protocol. Rows are models and their ablation variants; a query-level
significance test (ranx, paired t-test) compares each zoo model with the best baseline on that dataset and
marks the cell (see ``SIGNIFICANCE_NOTE``). Claims (benchmarks/claims/*.yaml: pairs of variants and the metric
a paper's claim is about) are tested the same way and listed under their dataset. Both files are written to
a temporary file and renamed; ``store.commit`` changes the board and the run folders it names as one step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrieval_zoo import atomic_files, store
from retrieval_zoo.evaluation import HEADLINE_METRICS

KEYS = ["dataset", "model", "variant", "seed"]
HASH_COLUMNS = ("config_hash", "dataset_fingerprint")
# The training recipe every row is made with (the runner writes it into each row); bumped whenever a change to
# training, data or models moves results, so the board marks rows made under an earlier recipe until rerun.
RECIPE = "2026-12-04"
COST_COLUMNS = ["params", "train_seconds", "train_pairs_per_s", "encode_items_per_s", "query_latency_ms",
                "index", "index_mb"]
SIGNIFICANCE_ALPHA = 0.01
SIGNIFICANCE_NOTE = (f"▲/▼: better/worse than the best baseline (by NDCG@10) at p < {SIGNIFICANCE_ALPHA} "
                     "in every seed (ranx paired t-test over queries, seed-matched runs); ≈: not separable. "
                     "`vs top`: each row against the row with the best mean NDCG@10, zoo and baselines alike, by "
                     f"the same test: ≈ where some shared seed cannot separate them at p < {SIGNIFICANCE_ALPHA} "
                     "(so which of the two ranks higher is not established), below where every seed does; the "
                     "largest p over the shared seeds in brackets.")


GROUP_METRIC = "recall@100"  # the per-group table of each dataset section
# the training budget each row used: epochs run, the epoch selected on valid (0 = the untrained start), fit seconds
BUDGET_COLUMNS = {"epochs_trained": "epochs", "best_epoch": "best epoch", "train_seconds": "train s"}
EXTRA_COST_COLUMNS = {"image_features_per_s": "image feats/s (one-off)", "image_cache_mb": "image cache MB"}


def leaderboard_path(results_dir: Path) -> Path:
    return Path(results_dir) / "leaderboard.csv"


def read_leaderboard(results_dir: str | Path = "results") -> pl.DataFrame:
    """All per-seed rows as a polars DataFrame (empty when there is none yet)."""
    path = leaderboard_path(Path(results_dir))
    if not path.exists():
        return pl.DataFrame(schema={k: pl.Utf8 for k in KEYS})
    return _read_board_csv(path)


def _read_board_csv(source: Path | bytes) -> pl.DataFrame:
    # hex digests that happen to be all digits must stay text (leading zeros, the hash comparisons of --resume)
    return pl.read_csv(source, infer_schema_length=None, schema_overrides=dict.fromkeys(HASH_COLUMNS, pl.Utf8))


def write_board(results_dir: Path, rows: list[dict[str, Any]], protocols: dict[str, str]) -> pl.DataFrame:
    """Replace the board rows of these (dataset, model, variant, seed), test the zoo rows against the best
    baseline as the board now stands (``significance.baseline_tests``: the marks do not depend on run order),
    save the protocols and rebuild the markdown. Called by ``store.commit`` under the board lock."""
    results_dir = Path(results_dir)
    new = pl.DataFrame(rows, infer_schema_length=None)
    old = read_leaderboard(results_dir)
    if old.height:
        old = old.join(new.select(KEYS).with_columns(pl.col("seed").cast(old.schema["seed"])), on=KEYS, how="anti")
        board = pl.concat([_stringify(old), _stringify(new)], how="diagonal_relaxed")
    else:
        board = _stringify(new)
    from retrieval_zoo.significance import baseline_tests

    new_keys = {(str(r["dataset"]), str(r["model"]), str(r["variant"]), int(r["seed"])) for r in rows}
    board = canonical(as_read_back(baseline_tests(canonical(board), results_dir, new_keys)))
    atomic_files.write_text(leaderboard_path(results_dir), board.write_csv())
    _save_protocols(results_dir, protocols)
    write_markdown(results_dir, board)
    return board


def adopt_runs(probe_dir: Path, board_dir: Path, dataset: str, seeds: list[int]) -> list[str]:
    """Put a probe's ``dataset`` runs of ``seeds`` on the board: their folders and rows, as one store commit
    (rows of the same model, variant and seed are replaced). The folders are hard-linked where the two share a
    disk (a pretrained Icecat run holds 1.4-2.4 GB of fold weights) and copied elsewhere; the probe's folder is
    left as it is. Used once a registered rule has adopted the probe's recipe (README)."""
    rows = read_leaderboard(probe_dir).filter((pl.col("dataset") == dataset) & pl.col("seed").is_in(seeds)).to_dicts()
    if not rows:
        raise ValueError(f"{probe_dir} holds no {dataset} runs of seeds {seeds}; run the probe first")
    protocols = json.loads(_protocols_path(probe_dir).read_text())
    staging = store.new_staging(board_dir)
    try:
        finals = []
        for row in rows:
            final = board_dir / row["run_dir"]
            shutil.copytree(probe_dir / row["run_dir"], store.staged_path(staging, board_dir, final),
                            copy_function=_link_or_copy)
            finals.append(final)
        store.commit(board_dir, staging, finals, rows, {dataset: protocols[dataset]}, write_board)
    except BaseException:
        store.abandon(board_dir, staging)
        raise
    return [row["run_dir"] for row in rows]


def probe_markdown(title: str, intro: str, rows: list[dict[str, Any]], decision: str) -> str:
    """A probe's report: its title, what it ran, one table line per row (floats to 4 places, None as "–",
    booleans as yes / no) and the registered rule's verdict."""
    headers = list(rows[0]) if rows else ["row"]
    table = markdown_table(headers, ([_probe_cell(row.get(key)) for key in headers] for row in rows))
    return "\n".join([f"# {title}", intro, "", *table, "", f"Rule: {decision}."]) + "\n"


def _probe_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_probe_report(folder: Path, name: str, rows: list[dict[str, Any]], text: str) -> None:
    """A probe's report: ``<name>.md`` and, when it has rows, ``<name>.csv``, each written whole."""
    folder.mkdir(parents=True, exist_ok=True)
    if rows:
        atomic_files.write_text(folder / f"{name}.csv", pl.DataFrame(rows).write_csv())
    atomic_files.write_text(folder / f"{name}.md", text)


def adopt_or_refuse(probe_dir: Path, board_dir: Path, dataset: str, seeds: list[int], refusal: str | None) -> None:
    """A probe script's ``--adopt``: exit with ``refusal`` (the registered rule's reason) when there is one, else
    put the probe's runs on the board (``adopt_runs``) and say which."""
    if refusal:
        raise SystemExit(f"error: --adopt refused: {refusal}")
    try:
        adopted = adopt_runs(probe_dir, board_dir, dataset, seeds)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    for folder in adopted:
        print(f"adopted: {folder}")


def _link_or_copy(source: str, target: str) -> None:
    # a hard link is safe: the store renames folders and never rewrites a file in place
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def markdown_table(headers: list[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """The lines of a markdown (GitHub) table: ``headers``, the separator, one line per row of formatted cells.
    Every report of the repo writes its tables through this, each formatting its own cells."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(row) + " |" for row in rows)]


def canonical(board: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by their key, the key columns first and the rest by name: equal boards are equal bytes."""
    return board.select(*KEYS, *sorted(c for c in board.columns if c not in KEYS)).sort(KEYS)


def flat_row(result) -> dict[str, Any]:
    row = result.row()
    return {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in row.items()}


def as_read_back(board: pl.DataFrame) -> pl.DataFrame:
    """The board's text as reading it back and writing it again would give it: a new row's whole numbers in a column
    the board holds as decimals (an epoch count beside Icecat's fold means) become "9.0" now, not at the next
    commit, so the bytes of a row do not depend on whether it was the last one written."""
    return _stringify(_read_board_csv(board.write_csv().encode()))


def _stringify(frame: pl.DataFrame) -> pl.DataFrame:
    # mixed runs may type a column differently (int vs float vs null); csv is text anyway
    return frame.with_columns(pl.all().cast(pl.Utf8))


def _protocols_path(results_dir: Path) -> Path:
    return results_dir / "protocols.json"


def _save_protocols(results_dir: Path, protocols: dict[str, str]) -> None:
    path = _protocols_path(results_dir)
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update(protocols)
    atomic_files.write_json(path, known)


# -- markdown -----------------------------------------------------------------------------------------------
def aggregate(board: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    """Mean and sd over seeds of each metric per (dataset, model, variant)."""
    present = [m for m in metrics if m in board.columns]
    numeric = board.with_columns([pl.col(m).cast(pl.Float64, strict=False) for m in present])
    return numeric.group_by("dataset", "model", "variant").agg(
        pl.len().alias("seeds"),
        *[pl.col(m).mean().alias(m) for m in present],
        *[pl.col(m).std().alias(f"{m}_sd") for m in present],
    ).sort("dataset", "model", "variant")


def write_markdown(results_dir: Path, board: pl.DataFrame | None = None) -> str:
    results_dir = Path(results_dir)
    board = read_leaderboard(results_dir) if board is None else board
    protocols = json.loads(_protocols_path(results_dir).read_text()) if _protocols_path(results_dir).exists() else {}
    claims = _read_claims(results_dir)
    lines = ["# retrieval_zoo leaderboard", "",
             "Generated by `make leaderboard` (or any `make bench`) from results/leaderboard.csv; "
             "mean ± sd over seeds. Metrics: see `retrieval_zoo/evaluation.py` (recall = Exact items, "
             "recall_es = Exact or Substitute, rel@10 = share of the top 10 that is Exact or Substitute, "
             "p_recall = held-out ordered items of the user's search). `config`: the hash of the resolved "
             "config, recipe and dataset content the seeds were made with (`make leaderboard ARGS=--resume` "
             "reruns a row whose hash is not the plan's).", "", SIGNIFICANCE_NOTE, ""]
    for dataset in board["dataset"].unique().sort().to_list():
        lines += _dataset_section(board.filter(pl.col("dataset") == dataset), dataset, protocols.get(dataset, ""),
                                  claims, results_dir)
    text = "\n".join(lines) + "\n"
    atomic_files.write_text(results_dir / "leaderboard.md", text)
    return text


def _dataset_section(board: pl.DataFrame, dataset: str, protocol: str, claims: pl.DataFrame | None,
                     results_dir: Path) -> list[str]:
    metrics = [m for m in HEADLINE_METRICS + ["recall@500", "rerank_ndcg"] if _has_values(board, m)]
    # one-off costs some models report (MRSE's image-feature extraction), shown where a row has them
    extra = [c for c in EXTRA_COST_COLUMNS if _has_values(board, c)]
    # the sentence-transformers model a row's pretrained part read (model.encoder), where some row has one
    encoder = "encoder" in board.columns and board["encoder"].drop_nulls().len() > 0
    budget = [c for c in BUDGET_COLUMNS if _has_values(board, c)]
    table = aggregate(board, metrics + [*budget, "train_pairs_per_s", "encode_items_per_s", "query_latency_ms", *extra])
    # the flag as text, as significance.py reads it: a csv read back types it bool, a fresh board as "true"
    flag = [pl.col("baseline").cast(pl.Utf8).first()] if "baseline" in board.columns else []
    firsts = board.group_by("dataset", "model", "variant").agg(
        *flag,
        *[pl.col(c).first() for c in ["params", "index", "index_mb", "compared_to"] if c in board.columns],
        *([pl.col("encoder").drop_nulls().unique().sort().str.join(" ")] if encoder else []),
        *([pl.col("config_hash").drop_nulls().unique().sort().str.join(" ").alias("config")]
          if "config_hash" in board.columns else []),
        *[_significance_marker(board, m).alias(f"sig_{m}") for m in metrics])
    table = table.join(firsts, on=["dataset", "model", "variant"], how="left")
    stale = _stale_rows(board)
    from retrieval_zoo.significance import against_top

    standing = against_top(board, results_dir, alpha=SIGNIFICANCE_ALPHA) if "ndcg@10" in metrics else {}
    seeds = sorted(set(board["seed"].to_list()))
    lines = [f"## {dataset}", "", f"Protocol: {protocol or 'see the run folders'}; seeds: {', '.join(map(str, seeds))}.",
             ""]
    for caption, plot in _plot_dataset(board, dataset, results_dir):
        lines += [f"![{dataset}: {caption}]({plot.name})", ""]
    header = ["model", "variant", *metrics, *(BUDGET_COLUMNS[c] for c in budget), "params", "train pairs/s",
              "items/s", "latency ms", "index", "index MB", *(EXTRA_COST_COLUMNS[c] for c in extra),
              *(["encoder"] if encoder else []), "config", *(["vs top"] if standing else [])]

    def cells(row: dict[str, Any]) -> list[str]:
        return [row["model"] + (" (baseline)" if row.get("baseline") == "true" else "")
                + (" †" if (row["model"], row["variant"]) in stale else ""), row["variant"],
                *(mean_sd(row.get(metric), row.get(f"{metric}_sd")) + _marker(row, metric) for metric in metrics),
                *(_num(row.get(c), 1) for c in budget),
                _count(row.get("params")), _num(row.get("train_pairs_per_s"), 0), _num(row.get("encode_items_per_s"), 0),
                _num(row.get("query_latency_ms"), 2), str(row.get("index") or "–"), str(row.get("index_mb") or "–"),
                *(_num(row.get(c), 1) for c in extra), *([row.get("encoder") or "–"] if encoder else []),
                row.get("config") or "–", *([standing.get((row["model"], row["variant"]), "–")] if standing else [])]

    lines += markdown_table(header, (cells(row) for row in table.iter_rows(named=True)))
    lines.append("")
    if stale:
        lines += [f"† made under an earlier training recipe than the current one ({RECIPE}: model selection on "
                  "valid, one epoch budget, graded positives, mined negatives, the composed item text); not "
                  "comparable with the other rows until rerun (`make leaderboard`).", ""]
    lines += _untested_note(board)
    lines += _group_section(board)
    if claims is not None and claims.height and dataset in claims["dataset"].to_list():
        lines += _claims_section(claims.filter(pl.col("dataset") == dataset))
    return lines


def _has_values(board: pl.DataFrame, column: str) -> bool:
    """Whether some row of ``board`` has a number in ``column`` (the CSV holds every column as text)."""
    return column in board.columns and board[column].cast(pl.Float64, strict=False).drop_nulls().len() > 0


def _group_section(board: pl.DataFrame, metric: str = GROUP_METRIC) -> list[str]:
    """``metric`` per query group (e.g. simshop's image_attr / text_attr / broad), one row per model/variant."""
    prefix = f"{metric}[group="
    columns = sorted(c for c in board.columns if c.startswith(prefix) and _has_values(board, c))
    if not columns:
        return []
    table = aggregate(board, columns)
    groups = [c[len(prefix):-1] for c in columns]
    rows = ([row["model"], row["variant"], *(mean_sd(row[c], row[f"{c}_sd"]) for c in columns)]
            for row in table.iter_rows(named=True))
    return [f"{metric} per query group (mean ± sd over seeds):", "",
            *markdown_table(["model", "variant", *groups], rows), ""]


def _significance_marker(board: pl.DataFrame, metric: str) -> pl.Expr:
    """▲/▼ when every seed's p-value is below alpha in one direction, ≈ when tested but not separable."""
    if f"pval_{metric}" not in board.columns or f"dir_{metric}" not in board.columns:
        return pl.lit(None, pl.Utf8)
    p = pl.col(f"pval_{metric}").cast(pl.Float64, strict=False)
    direction = pl.col(f"dir_{metric}").cast(pl.Float64, strict=False)
    significant = (p < SIGNIFICANCE_ALPHA).all()
    return (pl.when(p.is_null().all()).then(pl.lit(None, pl.Utf8))
            .when(significant & (direction > 0).all()).then(pl.lit("▲"))
            .when(significant & (direction < 0).all()).then(pl.lit("▼"))
            .otherwise(pl.lit("≈")))


def _plot_dataset(board: pl.DataFrame, dataset: str, results_dir: Path) -> list[tuple[str, Path]]:
    """The dataset's plots next to the markdown (``plots.dataset_plots``: leaderboard, quality vs cost, per
    query group, recall@K): (caption, path) of each one written."""
    from retrieval_zoo.plots import dataset_plots

    return dataset_plots(board, dataset, results_dir)


def _marker(row: dict[str, Any], metric: str) -> str:
    sig = row.get(f"sig_{metric}")
    return f" {sig}" if sig else ""


def mean_sd(mean: Any, sd: Any) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    if sd is None or (isinstance(sd, float) and np.isnan(sd)):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {sd:.4f}"


def _untested_note(board: pl.DataFrame) -> list[str]:
    """Say which zoo rows carry no ▲/▼/≈ because they could not be tested (their saved scores are gone)."""
    if "compared_to" not in board.columns:
        return []
    untested = board.filter(pl.col("compared_to").cast(pl.Utf8).str.contains("not tested"))
    if not untested.height:
        return []
    names = sorted(set(zip(untested["model"].to_list(), untested["variant"].to_list(), strict=True)))
    baseline = untested["compared_to"].cast(pl.Utf8)[0].split(" (")[0]
    return [f"Not tested against {baseline} (no mark): {', '.join(f'{m}/{v}' for m, v in names)}; their run "
            "folders predate the committed per-query scores (results/runs/**/per_query.parquet). Rerun them to "
            "test.", ""]


def _stale_rows(board: pl.DataFrame) -> set[tuple[str, str]]:
    """(model, variant) of the rows any of whose seeds was made under an earlier recipe (or none recorded)."""
    recipe = pl.col("recipe").cast(pl.Utf8) if "recipe" in board.columns else pl.lit(None, pl.Utf8)
    old = board.filter(recipe.is_null() | (recipe != RECIPE))
    return set(zip(old["model"].to_list(), old["variant"].to_list(), strict=True))


def _num(value: Any, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:,.{digits}f}"


def _count(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{number / 1e6:.2f}M" if number >= 1e5 else f"{number:,.0f}"


def _read_claims(results_dir: Path) -> pl.DataFrame | None:
    path = results_dir / "claims.csv"
    return pl.read_csv(path, infer_schema_length=None) if path.exists() else None


def _claims_section(claims: pl.DataFrame) -> list[str]:
    lines = ["Claims checked (benchmarks/claims/*.yaml):", "",
             "| claim | metric | A | B | A mean | B mean | change | max p over seeds | holds |", "|---|---|---|---|---|---|---|---|---|"]
    for row in claims.iter_rows(named=True):
        lines.append(
            f"| {row['claim']} | {row['metric']} | {row['a']} | {row['b']} | {row['a_mean']:.4f} | {row['b_mean']:.4f} "
            f"| {100 * row['relative_change']:+.1f}% | {row['p_max']:.2g} | {row['verdict']} |"
        )
    lines.append("")
    return lines


# -- terminal -------------------------------------------------------------------------------------------------
def format_results(results: list) -> str:
    """The metrics of a bench call as a terminal table (one row per seed, then the mean)."""
    if not results:
        return "(no results)"
    metrics = [m for m in HEADLINE_METRICS + ["recall@500"] if m in results[0].metrics]
    rows = [{"model": r.model, "variant": r.variant, "seed": str(r.seed), **{m: r.metrics.get(m) for m in metrics},
             "train_s": r.costs.get("train_seconds"), "total_s": r.costs.get("total_seconds")} for r in results]
    frame = pl.DataFrame(rows)
    if len(results) > 1:
        mean = {"model": results[0].model, "variant": results[0].variant, "seed": "mean",
                **{m: float(np.mean([r.metrics.get(m, np.nan) for r in results])) for m in metrics},
                "train_s": None, "total_s": None}
        frame = pl.concat([frame, pl.DataFrame([mean])], how="diagonal_relaxed")
    with pl.Config(tbl_rows=100, tbl_cols=30, float_precision=4, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, tbl_width_chars=200):
        return f"{results[0].dataset}: {results[0].model}/{results[0].variant}\n{frame}"
