"""The model cards' result tables (``docs/models/*.md``), made from the board so that they cannot drift from it.

Each table sits between two marker lines, ``<!-- NAME: made by ... -->`` and ``<!-- /NAME -->``:

- ``icecat-table`` (every card, the same table): the zoo's rows on Icecat against the start every ``pretrained``
  variant shares (zero-shot MiniLM) and BM25, mean ± sd over the board's seeds, with each row's largest p-value
  over its seeds against that start's run of the same seed (ranx's paired t-test over the 135 queries, from the
  per-query scores committed with the board's runs), its selected epoch and its training time (model
  selection's checks included, and apart), as means over the seeds;
- ``simshop-table``, ``simshop-nopref-table``, ``simshop-alltext-table``: the card's rows of that board section,
  mean ± sd over seeds, with the columns the card's claims read;
- ``claims-table``: the card's claims (``benchmarks/claims/<model>.yaml``, curve claims aside) as
  ``results/claims.csv`` last tested them.

A board row rerun (a new recipe, another host) or a claim re-tested changes a table; this script rewrites them,
and ``--check`` (run by the tests) fails while a card still shows an older board.

    python benchmarks/card_tables.py            # rewrite the tables in place
    python benchmarks/card_tables.py --check    # exit 1 naming each stale card and table
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from retrieval_zoo.reports import aggregate, mean_sd, read_leaderboard
from retrieval_zoo.significance import read_claims, seed_matched_p_values

REPO = Path(__file__).resolve().parents[1]
CARDS = ("mgdspr", "mmse", "mrse")
DATASET = "icecat"
START = ("minilm_zeroshot", "default")
ROWS = (  # (model, variant, the row's name in the cards)
    ("bm25", "default", "bm25"),
    ("minilm_zeroshot", "default", "minilm_zeroshot (the start)"),
    ("minilm_finetune", "default", "minilm_finetune (query side, top 2 layers)"),
    ("light_two_tower", "pretrained", "light_two_tower/pretrained"),
    ("mgdspr", "pretrained", "mgdspr/pretrained"),
    ("mmse", "pretrained", "mmse/pretrained"),
    ("mrse", "pretrained", "mrse/pretrained"),
    ("mgdspr", "default", "mgdspr/default (from scratch)"),
    ("mmse", "default", "mmse/default (from scratch)"),
    ("mrse", "default", "mrse/default (from scratch)"),
)
ICECAT = "icecat-table"
HEADER = ("| run | ndcg@10 | recall@100 | max p over seeds vs start (ndcg@10) | seeds | best epoch (mean of folds) "
          "| epochs | train s (of which selection) |\n|---|---|---|---|---|---|---|---|")


def begin_marker(name: str, source: str = "results/leaderboard.csv") -> str:
    return f"<!-- {name}: made by `python benchmarks/card_tables.py` from {source}; do not edit -->"


def end_marker(name: str) -> str:
    return f"<!-- /{name} -->"


BEGIN, END = begin_marker(ICECAT), end_marker(ICECAT)


# -- the Icecat table (5-fold CV, every seed on the board) -------------------------------------------------------
def board_rows(results_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """(model, variant) -> the board's Icecat rows of it, one per seed, in seed order."""
    board = read_leaderboard(results_dir).filter(pl.col("dataset") == DATASET).sort("seed")
    rows: dict[tuple[str, str], list[dict]] = {}
    for row in board.iter_rows(named=True):
        rows.setdefault((row["model"], row["variant"]), []).append(row)
    missing = [f"{model}/{variant}" for model, variant, _ in ROWS if (model, variant) not in rows]
    if missing:
        raise SystemExit(f"error: the {DATASET} board has no row for {', '.join(missing)}; "
                         f"run `make leaderboard` first")
    return rows


def max_p_against_start(results_dir: Path, seeds: list[dict], start: dict[int, dict]) -> float | None:
    """The largest p over the row's seeds, each against the start's run of the same seed (as the claims read
    it: a gain holds only where every seed separates it); None where the start lacks one of those seeds or a run's
    saved scores are gone."""
    p_values = seed_matched_p_values(seeds, start.values(), results_dir, "ndcg@10")
    if len(p_values) < len(seeds) or None in p_values.values():
        return None
    return max(p_values.values())


def seed_mean(seeds: list[dict], metric: str) -> float:
    return sum(float(row[metric]) for row in seeds) / len(seeds)


def mean_and_sd(seeds: list[dict], metric: str) -> str:
    spread = statistics.stdev(float(row[metric]) for row in seeds) if len(seeds) > 1 else None
    return mean_sd(seed_mean(seeds, metric), spread)


def table(results_dir: Path) -> str:
    rows = board_rows(results_dir)
    start = {int(row["seed"]): row for row in rows[START]}
    lines = [HEADER]
    for model, variant, name in ROWS:
        seeds = rows[(model, variant)]
        p = None if (model, variant) == START else max_p_against_start(results_dir, seeds, start)
        trained = bool(seed_mean(seeds, "train_seconds"))
        cells = [name, mean_and_sd(seeds, "ndcg@10"), mean_and_sd(seeds, "recall@100"), p_text(p),
                 str(len(seeds)),
                 f"{seed_mean(seeds, 'best_epoch'):.1f}" if trained else "–",
                 f"{seed_mean(seeds, 'epochs_trained'):.1f}" if trained else "–",
                 f"{seed_mean(seeds, 'train_seconds'):,.0f} ({seed_mean(seeds, 'validation_seconds'):,.0f})"
                 if trained else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def p_text(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


# -- a board section, mean ± sd over seeds ---------------------------------------------------------------------
BASELINES = ("bm25/default", "minilm_zeroshot/default", "minilm_finetune/default", "light_two_tower/default",
             "light_two_tower/pretrained")
PERSONAL = ("recall@100", "ndcg@10", "rel@10", "p_recall@100")
IMAGE_GROUPS = ("recall@100", "recall@100[group=image_attr]", "recall@100[group=text_attr]",
                "recall@100[group=broad]", "recall@10[group=image_attr]", "ndcg@10")


@dataclass(frozen=True)
class BoardTable:
    """One dataset's rows of the board (``model/variant``), each metric as mean ± sd over seeds, then the mean
    epochs trained and training seconds (model selection included) of a seed."""

    dataset: str
    rows: tuple[str, ...]
    metrics: tuple[str, ...]
    source: str = "results/leaderboard.csv"

    @property
    def name(self) -> str:
        return f"{self.dataset}-table"

    def render(self, results_dir: Path) -> str:
        board = read_leaderboard(results_dir).filter(pl.col("dataset") == self.dataset)
        means = aggregate(board, [*self.metrics, "epochs_trained", "train_seconds"])
        found = {f"{row['model']}/{row['variant']}": row for row in means.iter_rows(named=True)}
        missing = [name for name in self.rows if name not in found]
        if missing:
            raise SystemExit(f"error: the {self.dataset} board has no row for {', '.join(missing)}; "
                             f"run `make leaderboard` first")
        lines = ["| model/variant | " + " | ".join(self.metrics) + " | seeds | epochs (mean) | train s (mean) |",
                 "|---" * (len(self.metrics) + 4) + "|"]
        for name in self.rows:
            row = found[name]
            cells = [name, *(mean_sd(row[m], row[f"{m}_sd"]) for m in self.metrics), str(row["seeds"]),
                     number(row["epochs_trained"], 1), number(row["train_seconds"], 0)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def number(value: float | None, digits: int) -> str:
    return "–" if value is None or math.isnan(value) or value == 0 else f"{value:,.{digits}f}"


# -- a card's claims -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimsTable:
    """The claims of ``benchmarks/claims/<model>.yaml`` (not the curve ones, which results/mechanisms.md
    reports) with their last verdicts from ``results/claims.csv``; a claim never tested says so."""

    model: str
    name: str = "claims-table"
    source: str = "results/claims.csv"

    def render(self, results_dir: Path) -> str:
        claims = [c for c in read_claims(REPO / "benchmarks" / "claims" / f"{self.model}.yaml") if "curve" not in c]
        path = results_dir / "claims.csv"
        tested = pl.read_csv(path, infer_schema_length=None) if path.exists() else pl.DataFrame(
            schema={"dataset": pl.Utf8, "claim": pl.Utf8})
        verdicts = {(row["dataset"], row["claim"]): row for row in tested.iter_rows(named=True)}
        lines = ["| claim | dataset | metric | A vs B | A | B | change | max p over seeds | holds |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for claim in claims:
            row = verdicts.get((claim["dataset"], claim["claim"]))
            metric = claim["metric"] + (f" [{claim['group']}]" if claim.get("group") else "")
            head = [claim["claim"], claim["dataset"], metric, f"{claim['a']} vs {claim['b']}"]
            if row is None:
                lines.append("| " + " | ".join([*head, "–", "–", "–", "–", "not tested yet"]) + " |")
                continue
            lines.append("| " + " | ".join([*head, f"{row['a_mean']:.4f}", f"{row['b_mean']:.4f}",
                                            f"{100 * row['relative_change']:+.1f}%", p_text(row["p_max"]),
                                            str(row["verdict"])]) + " |")
        return "\n".join(lines)


# -- which card holds which table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class IcecatTable:
    name: str = ICECAT
    source: str = "results/leaderboard.csv"

    def render(self, results_dir: Path) -> str:
        return table(results_dir)


MGDSPR_LADDER = tuple(f"mgdspr/{v}" for v in ("base", "mgs", "behaviour", "fusion", "tau", "default", "no_user",
                                              "residual_fusion", "residual_fusion_no_user"))
CARD_TABLES = {
    "mgdspr": (IcecatTable(), BoardTable("simshop", (*BASELINES, *MGDSPR_LADDER), PERSONAL),
               BoardTable("simshop-nopref", ("bm25/default", "mgdspr/default", "mgdspr/no_user"), PERSONAL),
               ClaimsTable("mgdspr")),
    "mmse": (IcecatTable(), BoardTable("simshop", (*BASELINES, *(f"mmse/{v}" for v in (
        "default", "retrieval_only", "single_level", "single_head", "pretrained"))), PERSONAL),
             ClaimsTable("mmse")),
    "mrse": (IcecatTable(), BoardTable("simshop", (*BASELINES, *(f"mrse/{v}" for v in (
        "default", "text_only", "no_profile", "profile_both", "concat", "softmax_only"))), IMAGE_GROUPS),
             BoardTable("simshop-alltext", ("bm25/default", "mrse/default", "mrse/text_only"), IMAGE_GROUPS),
             ClaimsTable("mrse")),
}


def refreshed(card_text: str, new_table: str, card: str, name: str = ICECAT,
              source: str = "results/leaderboard.csv") -> str:
    """The card with the text between its ``name`` markers replaced by ``new_table``."""
    begin, end = begin_marker(name, source), end_marker(name)
    if card_text.count(begin) != 1 or card_text.count(end) != 1:
        raise SystemExit(f"error: {card} must hold the marker lines once each:\n{begin}\n{end}")
    head, rest = card_text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{new_table}\n{end}{tail}"


def refreshed_card(card: str, text: str, results_dir: Path) -> tuple[str, list[str]]:
    """The card with every one of its tables made again, and the names of those that changed."""
    changed = []
    for spec in CARD_TABLES[card]:
        new = refreshed(text, spec.render(results_dir), card, spec.name, spec.source)
        if new != text:
            changed.append(spec.name)
        text = new
    return text, changed


def card_path(name: str) -> Path:
    return REPO / "docs" / "models" / f"{name}.md"


def stale_cards(results_dir: Path) -> list[str]:
    """``card: table`` for every table a card shows differently from the board."""
    stale = []
    for name in CARDS:
        _, changed = refreshed_card(name, card_path(name).read_text(), results_dir)
        stale += [f"{name}: {table_name}" for table_name in changed]
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the board's folder")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a card is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_cards(args.results)
        if stale:
            raise SystemExit(f"stale tables in docs/models ({'; '.join(stale)}): "
                             f"run `python benchmarks/card_tables.py`")
        print("every card's tables match the board")
        return
    # every card is made before any is written, so a missing row or marker leaves all of them as they were
    made = {name: refreshed_card(name, card_path(name).read_text(), args.results) for name in CARDS}
    for name, (text, changed) in made.items():
        card_path(name).write_text(text)
        print(f"written: {card_path(name).relative_to(REPO)} ({', '.join(changed) or 'unchanged'})")


if __name__ == "__main__":
    main()
