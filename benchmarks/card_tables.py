"""The Icecat table of the model cards (``docs/models/*.md``), made from the board so that it cannot drift from it.

Each card holds the same table between two marker lines: the zoo's rows on Icecat against the start every
``pretrained`` variant shares (zero-shot MiniLM) and BM25, with each row's p-value against that start (ranx's
paired t-test over the 135 queries, from the per-query scores committed with the board's runs), its selected
epoch and its training time (model selection's checks included, and apart). A board row rerun (a new recipe,
another host) changes the table; this script rewrites it, and ``--check`` (run by the tests) fails while a card
still shows an older board.

    python benchmarks/card_tables.py            # rewrite the tables in place
    python benchmarks/card_tables.py --check    # exit 1 naming each stale card
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import polars as pl

from retrieval_zoo.evaluation import per_query_p_value
from retrieval_zoo.reports import read_leaderboard

REPO = Path(__file__).resolve().parents[1]
CARDS = ("mgdspr", "mmse", "mrse")
DATASET, SEED = "icecat", 0
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
BEGIN = "<!-- icecat-table: made by `python benchmarks/card_tables.py` from results/leaderboard.csv; do not edit -->"
END = "<!-- /icecat-table -->"
HEADER = ("| run | ndcg@10 | recall@100 | p vs start (ndcg@10) | best epoch (mean of folds) | epochs "
          "| train s (of which selection) |\n|---|---|---|---|---|---|---|")


def board_rows(results_dir: Path) -> dict[tuple[str, str], dict]:
    board = read_leaderboard(results_dir).filter((pl.col("dataset") == DATASET) & (pl.col("seed") == SEED))
    rows = {(row["model"], row["variant"]): row for row in board.iter_rows(named=True)}
    missing = [f"{model}/{variant}" for model, variant, _ in ROWS if (model, variant) not in rows]
    if missing:
        raise SystemExit(f"error: the {DATASET} board has no seed-{SEED} row for {', '.join(missing)}; "
                         f"run `make leaderboard` first")
    return rows


def per_query_scores(results_dir: Path, row: dict) -> pl.DataFrame:
    return pl.read_parquet(results_dir / row["run_dir"] / "per_query.parquet")


def table(results_dir: Path) -> str:
    rows = board_rows(results_dir)
    start_scores = per_query_scores(results_dir, rows[START])
    lines = [HEADER]
    for model, variant, name in ROWS:
        row = rows[(model, variant)]
        p = None if (model, variant) == START else per_query_p_value(
            per_query_scores(results_dir, row), start_scores, "ndcg@10")
        trained = bool(row["train_seconds"])
        cells = [name, f"{row['ndcg@10']:.4f}", f"{row['recall@100']:.4f}", p_text(p),
                 f"{row['best_epoch']:.1f}" if trained else "–", f"{row['epochs_trained']:.1f}" if trained else "–",
                 f"{row['train_seconds']:,.0f} ({row['validation_seconds']:,.0f})" if trained else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def p_text(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def refreshed(card_text: str, new_table: str, card: str) -> str:
    """The card with the text between its markers replaced by ``new_table``."""
    if card_text.count(BEGIN) != 1 or card_text.count(END) != 1:
        raise SystemExit(f"error: {card} must hold the marker lines once each:\n{BEGIN}\n{END}")
    head, rest = card_text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{new_table}\n{END}{tail}"


def card_path(name: str) -> Path:
    return REPO / "docs" / "models" / f"{name}.md"


def stale_cards(results_dir: Path) -> list[str]:
    new_table = table(results_dir)
    cards = {name: card_path(name).read_text() for name in CARDS}
    return [name for name, text in cards.items() if refreshed(text, new_table, name) != text]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the board's folder")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a card is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_cards(args.results)
        if stale:
            raise SystemExit(f"stale Icecat table in docs/models/{{{','.join(stale)}}}.md: "
                             f"run `python benchmarks/card_tables.py`")
        print("every card's Icecat table matches the board")
        return
    new_table = table(args.results)
    for name in CARDS:
        path = card_path(name)
        path.write_text(refreshed(path.read_text(), new_table, name))
        print(f"written: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
