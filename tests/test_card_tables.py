"""benchmarks/card_tables.py: the model cards' tables (Icecat, simshop boards, claims) are the board's, and a card that
drifts from it is caught."""

from __future__ import annotations

import shutil

import polars as pl
import pytest


def test_every_card_shows_the_boards_tables(load_benchmark):
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
        seeds = board[(model, variant)]
        mean = sum(row["ndcg@10"] for row in seeds) / len(seeds)
        assert line.startswith(f"| {name} | {mean:.4f}")
        assert line.split(" | ")[4] == str(len(seeds))


def test_the_p_value_is_the_largest_over_the_seeds_each_against_the_starts_same_seed(load_benchmark, tmp_path):
    import json

    from retrieval_zoo.evaluation import per_query_p_value

    cards = load_benchmark("card_tables")

    def run(model: str, seed: int, values: list[float]) -> dict:
        row = {"dataset": "icecat", "model": model, "variant": "default", "seed": seed}
        folder = tmp_path / "runs" / "icecat" / model / "default" / f"seed{seed}"
        folder.mkdir(parents=True)
        units = [f"q{i}" for i in range(len(values))]
        pl.DataFrame({"unit_id": units, "metric": ["ndcg@10"] * len(values),
                      "value": values}).write_parquet(folder / "per_query.parquet")
        pl.DataFrame({"unit_id": units, "group": ["all"] * len(values)}).write_parquet(folder / "units.parquet")
        (folder / "metrics.json").write_text(json.dumps({"ndcg@10": sum(values) / len(values)}))
        return row | {"folder": folder}

    start = {0: run("start", 0, [0.1, 0.2, 0.3, 0.4]), 1: run("start", 1, [0.1, 0.2, 0.3, 0.5])}
    clear, unclear = run("model", 0, [0.5, 0.7, 0.6, 0.9]), run("model", 1, [0.2, 0.1, 0.5, 0.4])

    def p_value(row: dict, reference: dict) -> float:
        return per_query_p_value(*(pl.read_parquet(r["folder"] / "per_query.parquet") for r in (row, reference)),
                                 "ndcg@10")

    p_clear, p_unclear = p_value(clear, start[0]), p_value(unclear, start[1])
    assert p_clear < p_unclear
    assert cards.max_p_against_start(tmp_path, [clear, unclear], start) == p_unclear
    assert cards.max_p_against_start(tmp_path, [run("other", 2, [0.5, 0.5, 0.5, 0.5])], start) is None
    (unclear["folder"] / "units.parquet").unlink()  # a run whose saved scores are gone: no p
    assert cards.max_p_against_start(tmp_path, [clear, unclear], start) is None


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


def test_a_board_table_is_the_seed_mean_and_sd_of_each_row(load_benchmark):
    cards = load_benchmark("card_tables")
    spec = cards.BoardTable("simshop", ("bm25/default", "mrse/default"), ("ndcg@10", "recall@100[group=image_attr]"))
    lines = spec.render(cards.REPO / "results").splitlines()
    board = pl.read_csv(cards.REPO / "results" / "leaderboard.csv", infer_schema_length=0).filter(
        (pl.col("dataset") == "simshop") & (pl.col("model") == "mrse") & (pl.col("variant") == "default"))
    values = board["ndcg@10"].cast(pl.Float64)
    assert lines[0].startswith("| model/variant | ndcg@10 | recall@100[group=image_attr] | seeds |")
    assert lines[3].startswith(f"| mrse/default | {values.mean():.4f} ± {values.std():.4f} | ")
    assert f"| {board.height} |" in lines[3]
    assert lines[2].endswith("| – | – |")  # bm25 trains nothing: no epochs, no training time


def test_a_board_table_naming_a_row_the_board_lacks_is_a_one_line_error(load_benchmark):
    cards = load_benchmark("card_tables")
    with pytest.raises(SystemExit, match="no row for mrse/imaginary; run `make leaderboard`"):
        cards.BoardTable("simshop", ("mrse/imaginary",), ("ndcg@10",)).render(cards.REPO / "results")


def test_the_claims_table_lists_every_claim_of_the_models_file_and_says_which_are_untested(load_benchmark, tmp_path):
    cards = load_benchmark("card_tables")
    claims = pl.read_csv(cards.REPO / "results" / "claims.csv")
    claims.filter(~pl.col("claim").str.contains("vanishes")).write_csv(tmp_path / "claims.csv")
    lines = cards.ClaimsTable("mrse").render(tmp_path).splitlines()[2:]
    assert len(lines) == 6  # the file's six board claims; its curve claim is results/mechanisms.md's
    untested = [line for line in lines if line.endswith("| not tested yet |")]
    assert len(untested) == 2 and all("simshop-alltext" in line for line in untested)
    tested = next(line for line in lines if line.startswith("| images cost at most 2% on broad queries |"))
    row = claims.filter(pl.col("claim") == "images cost at most 2% on broad queries").row(0, named=True)
    assert f"| {row['a_mean']:.4f} | {row['b_mean']:.4f} |" in tested and tested.endswith(f"| {row['verdict']} |")


def test_a_failed_refresh_writes_no_card(load_benchmark, tmp_path, monkeypatch):
    cards = load_benchmark("card_tables")
    for name in cards.CARDS:
        shutil.copy(cards.card_path(name), tmp_path / f"{name}.md")
    broken = (tmp_path / "mrse.md").read_text().replace(cards.end_marker("claims-table"), "")
    (tmp_path / "mrse.md").write_text(broken)
    for name in ("mgdspr", "mmse"):  # stale tables the run would rewrite, were it not stopped by mrse's
        text = (tmp_path / f"{name}.md").read_text()
        (tmp_path / f"{name}.md").write_text(text.replace("| minilm_zeroshot (the start) | ", "| stale | ", 1))
    before = {name: (tmp_path / f"{name}.md").read_text() for name in cards.CARDS}
    monkeypatch.setattr(cards, "card_path", lambda name: tmp_path / f"{name}.md")
    monkeypatch.setattr("sys.argv", ["card_tables.py"])
    with pytest.raises(SystemExit, match="mrse must hold the marker lines"):
        cards.main()
    assert {name: (tmp_path / f"{name}.md").read_text() for name in cards.CARDS} == before
