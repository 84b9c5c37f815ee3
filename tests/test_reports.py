"""The leaderboard markdown (per-group table and one-off cost columns, from the CSV alone) and adopting a probe's
runs onto a board."""

from __future__ import annotations

import json

import polars as pl
import pytest

from retrieval_zoo.reports import (
    RECIPE,
    adopt_or_refuse,
    adopt_runs,
    leaderboard_path,
    markdown_table,
    read_leaderboard,
    write_board,
    write_markdown,
    write_probe_report,
)


def board(rows: list[dict]) -> pl.DataFrame:
    base = {"dataset": "shop", "baseline": "false", "ndcg@10": "0.5", "recall@100": "0.6", "params": "10",
            "recipe": RECIPE}
    return pl.DataFrame([{**base, **row} for row in rows]).cast(pl.Utf8)


def test_groups_get_their_own_table_with_seed_means(tmp_path):
    rows = [{"model": "m", "variant": "default", "seed": str(s), "recall@100[group=colour]": str(0.5 + 0.1 * s),
             "recall@100[group=broad]": "0.2"} for s in range(2)]
    frame = board(rows)
    frame.write_csv(leaderboard_path(tmp_path))
    text = write_markdown(tmp_path, frame)
    assert "| model | variant | broad | colour |" in text
    assert "| m | default | 0.2000 ± 0.0000 | 0.5500 ± 0.0707 |" in text


def test_one_off_image_costs_are_shown_only_where_a_row_has_them(tmp_path):
    frame = board([{"model": "with_images", "variant": "default", "seed": "0", "image_features_per_s": "96.3",
                    "image_cache_mb": "14.7"},
                   {"model": "text", "variant": "default", "seed": "0", "image_features_per_s": None,
                    "image_cache_mb": None}])
    text = write_markdown(tmp_path, frame)
    assert "image feats/s (one-off) | image cache MB |" in text
    assert "| 96.3 | 14.7 |" in text
    without = write_markdown(tmp_path, frame.drop("image_features_per_s", "image_cache_mb"))
    assert "image feats/s" not in without and "per query group" not in without


def test_baselines_are_labelled_whether_the_board_is_fresh_or_read_back_from_csv(tmp_path):
    frame = board([{"model": "bm25", "variant": "default", "seed": "0", "baseline": "true"},
                   {"model": "mine", "variant": "default", "seed": "0"}])
    frame.write_csv(leaderboard_path(tmp_path))
    for text in (write_markdown(tmp_path, frame), write_markdown(tmp_path)):  # in memory, then from the csv
        assert "| bm25 (baseline) | default |" in text
        assert "| mine | default |" in text


def test_rows_made_under_an_earlier_recipe_are_marked_until_rerun(tmp_path):
    frame = board([{"model": "fresh", "variant": "default", "seed": "0"},
                   {"model": "old", "variant": "default", "seed": "0", "recipe": "2026-01-01"},
                   {"model": "old", "variant": "default", "seed": "1", "recipe": RECIPE}])
    text = write_markdown(tmp_path, frame)
    assert "| fresh | default |" in text
    assert "| old † | default |" in text  # one seed from an earlier recipe is enough to mark the row
    assert "† made under an earlier training recipe" in text
    assert "†" not in write_markdown(tmp_path, frame.filter(pl.col("model") == "fresh"))


def test_a_rows_text_on_the_board_does_not_depend_on_which_commit_wrote_it_last(tmp_path):
    def row(seed: int, epochs: float | int) -> dict:
        return {"dataset": "d", "model": "bm25", "variant": "default", "seed": seed, "baseline": True,
                "ndcg@10": 0.5, "epochs_trained": epochs, "recipe": RECIPE}

    def line_of_seed(seed: int) -> str:
        return next(line for line in leaderboard_path(tmp_path).read_text().splitlines()
                    if line.startswith(f"d,bm25,default,{seed},"))

    write_board(tmp_path, [row(0, 5.6)], {})  # a fold mean: the column reads back as decimals
    write_board(tmp_path, [row(1, 9)], {})  # a whole number of epochs, new in this commit
    written = line_of_seed(1)
    write_board(tmp_path, [row(2, 7.5)], {})  # the next commit reads seed 1 back from the csv
    assert line_of_seed(1) == written
    assert ",9.0," in written


def test_a_hash_that_is_all_digits_stays_text_on_the_board(tmp_path):
    from retrieval_zoo.reports import read_leaderboard

    row = {"dataset": "d", "model": "bm25", "variant": "default", "seed": 0, "baseline": True, "ndcg@10": 0.5,
           "recipe": RECIPE, "config_hash": "012345678901", "dataset_fingerprint": "0000111122223333"}
    write_board(tmp_path, [row], {})
    board = read_leaderboard(tmp_path)
    assert board["config_hash"].to_list() == ["012345678901"]
    assert board["dataset_fingerprint"].to_list() == ["0000111122223333"]


def probe_row(model: str, seed: int, ndcg: float, recall: float) -> dict:
    return {"dataset": "icecat", "model": model, "variant": "pretrained", "seed": seed, "baseline": False,
            "ndcg@10": ndcg, "recall@100": recall, "config_hash": "aaaaaaaaaaaa", "recipe": RECIPE,
            "run_dir": f"runs/icecat/{model}/pretrained/seed{seed}"}


def test_adopting_a_probes_runs_puts_their_folders_and_rows_on_the_board_and_leaves_the_probe(tmp_path):
    board_dir, probe_dir = tmp_path / "board", tmp_path / "probe"
    write_board(board_dir, [probe_row("m", 0, 0.6, 0.8)], {"icecat": "old text"})
    write_board(probe_dir, [probe_row("m", 1, 0.62, 0.82), probe_row("m", 2, 0.64, 0.84)],
                {"icecat": "protocol"})
    for seed in (1, 2):
        folder = probe_dir / "runs" / "icecat" / "m" / "pretrained" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"seed": seed}))
    adopted = adopt_runs(probe_dir, board_dir, "icecat", [1, 2])
    assert adopted == ["runs/icecat/m/pretrained/seed1", "runs/icecat/m/pretrained/seed2"]
    board = read_leaderboard(board_dir).sort("seed")
    assert board["seed"].cast(pl.Int64).to_list() == [0, 1, 2]
    assert board["ndcg@10"].cast(pl.Float64).to_list() == pytest.approx([0.6, 0.62, 0.64])
    assert json.loads((board_dir / adopted[1] / "metrics.json").read_text()) == {"seed": 2}
    assert (probe_dir / adopted[1] / "metrics.json").exists()  # linked or copied, not moved
    assert not (board_dir / "runs" / ".staging").exists() or not any((board_dir / "runs" / ".staging").iterdir())
    with pytest.raises(ValueError, match="holds no icecat runs of seeds \\[3\\]"):
        adopt_runs(probe_dir, board_dir, "icecat", [3])


def test_a_markdown_table_is_the_header_the_separator_and_one_line_per_row():
    assert markdown_table(["a", "b"], [["1", "2"], ["3", "x | y"]]) == [
        "| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | x | y |"]  # cells arrive formatted; escaping is theirs
    assert markdown_table(["only"], []) == ["| only |", "|---|"]


def test_a_probes_adopt_is_refused_with_the_rules_reason_or_moves_the_runs(tmp_path, capsys):
    board_dir, probe_dir = tmp_path / "board", tmp_path / "probe"
    write_board(probe_dir, [probe_row("m", 0, 0.62, 0.82)], {"icecat": "protocol"})
    (probe_dir / "runs" / "icecat" / "m" / "pretrained" / "seed0").mkdir(parents=True)
    with pytest.raises(SystemExit, match="--adopt refused: rejected: valid fell"):
        adopt_or_refuse(probe_dir, board_dir, "icecat", [0], "rejected: valid fell")
    assert not (board_dir / "leaderboard.csv").exists()
    adopt_or_refuse(probe_dir, board_dir, "icecat", [0], None)
    assert "adopted: runs/icecat/m/pretrained/seed0" in capsys.readouterr().out
    assert read_leaderboard(board_dir).height == 1


def test_a_probe_report_is_its_markdown_and_its_rows_as_csv(tmp_path):
    write_probe_report(tmp_path / "probe", "icecat", [{"row": "m", "ndcg@10": 0.5}], "# report\n")
    assert (tmp_path / "probe" / "icecat.md").read_text() == "# report\n"
    assert pl.read_csv(tmp_path / "probe" / "icecat.csv")["ndcg@10"].to_list() == [0.5]
    write_probe_report(tmp_path / "empty", "icecat", [], "no rows yet\n")
    assert not (tmp_path / "empty" / "icecat.csv").exists()
