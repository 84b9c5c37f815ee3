"""benchmarks/card_tables.py: the model cards' Icecat table is the board's, and a card that drifts from it is caught."""

from __future__ import annotations

import pytest


def test_every_card_shows_the_boards_icecat_table(load_benchmark):
    cards = load_benchmark("card_tables")
    assert cards.stale_cards(cards.REPO / "results") == []


def test_the_table_is_the_boards_rows_with_p_values_against_the_start(load_benchmark):
    cards = load_benchmark("card_tables")
    lines = cards.table(cards.REPO / "results").splitlines()
    assert len(lines) == 2 + len(cards.ROWS)
    start = next(line for line in lines if line.startswith("| minilm_zeroshot"))
    assert start.split(" | ")[3] == "–"  # the start has no p-value against itself
    board = cards.board_rows(cards.REPO / "results")
    for (model, variant, name), line in zip(cards.ROWS, lines[2:], strict=True):
        assert line.startswith(f"| {name} | {board[(model, variant)]['ndcg@10']:.4f} | ")


def test_refreshing_replaces_only_the_marked_table(load_benchmark):
    cards = load_benchmark("card_tables")
    card = f"intro\n{cards.BEGIN}\n| old |\n{cards.END}\noutro\n"
    assert cards.refreshed(card, "| new |", "x") == f"intro\n{cards.BEGIN}\n| new |\n{cards.END}\noutro\n"


def test_a_card_without_its_markers_is_a_one_line_error(load_benchmark):
    cards = load_benchmark("card_tables")
    with pytest.raises(SystemExit, match="must hold the marker lines"):
        cards.refreshed("a card with a hand-written table\n", "| new |", "mrse")


@pytest.mark.parametrize("value, text", [(None, "–"), (float("nan"), "–"), (3e-7, "< 1e-4"), (0.05612, "0.056")])
def test_p_values_are_written_to_two_figures(load_benchmark, value, text):
    assert load_benchmark("card_tables").p_text(value) == text
