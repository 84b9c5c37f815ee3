"""The BEIR-folder loader: a small folder in the exact BEIR format, graded labels, broken folders, a bm25 run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import retrieval_zoo
from retrieval_zoo.data import load_dataset
from retrieval_zoo.data.beir import TITLE_WORDS, load_beir
from retrieval_zoo.data.dataset import DatasetError

TOPICS = ["alpine tent", "espresso grinder", "trail shoe", "desk lamp", "usb cable", "office chair",
          "ceramic mug", "hiking backpack", "wool sweater", "phone case", "kitchen knife", "yoga mat",
          "water bottle", "rain jacket", "gaming mouse"]


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[tuple]]) -> Path:
    """The BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv with the query-id/corpus-id/score header."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(query) + "\n" for query in queries))
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, row)) for row in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def small_beir(folder: Path) -> Path:
    """60 documents (4 per topic; every 4th has an empty title), 15 queries (one per topic): 9 test, 3 dev,
    3 train; each query judges its topic's first two documents 1 and one other topic's document 0."""
    corpus = [{"_id": f"d{t * 4 + k}", "title": "" if k == 3 else f"{TOPICS[t]} model {k}",
               "text": f"A {TOPICS[t]} with extra detail number {k}, sold in our shop since {2000 + t}.",
               "metadata": {"url": f"https://example.com/{t}/{k}"}}
              for t in range(len(TOPICS)) for k in range(4)]
    queries = [{"_id": f"q{t}", "text": f"best {TOPICS[t]}", "metadata": {}} for t in range(len(TOPICS))]
    split_of = ["test"] * 9 + ["dev"] * 3 + ["train"] * 3
    qrels: dict[str, list[tuple]] = {"train": [], "dev": [], "test": []}
    for t, split in enumerate(split_of):
        qrels[split] += [(f"q{t}", f"d{t * 4}", 1), (f"q{t}", f"d{t * 4 + 1}", 1),
                         (f"q{t}", f"d{(t + 1) % len(TOPICS) * 4}", 0)]
    return write_beir(folder, corpus, queries, qrels)


@pytest.fixture
def folder(tmp_path) -> Path:
    return small_beir(tmp_path / "mini")


def label_of(ds, query_id: str, product_id: str) -> str:
    rows = ds.judgments.filter((ds.judgments["query_id"] == query_id) & (ds.judgments["product_id"] == product_id))
    return rows["label"].item()


def one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(DatasetError, match=match) as error:
        load_beir(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_a_beir_folder_round_trips(folder, capsys):
    ds = load_beir(folder)
    assert (ds.products.height, ds.queries.height, ds.judgments.height) == (60, 15, 45)
    assert ds.name == "beir-mini" and ds.meta["fully_judged"] is False and ds.meta["label_scale"] == "0-1"
    assert "1->E, 0->I" in ds.meta["label_mapping"] and "dev->valid" in ds.meta["protocol"]
    assert ds.queries["split"].value_counts().sort("split").rows() == [("test", 9), ("train", 3), ("valid", 3)]
    assert ds.judgments["label"].value_counts().sort("label").rows() == [("E", 30), ("I", 15)]
    assert label_of(ds, "q0", "d0") == "E" and label_of(ds, "q0", "d4") == "I"
    d0, d3 = (ds.products.filter(ds.products["product_id"] == i).row(0, named=True) for i in ("d0", "d3"))
    assert d0["title"] == "alpine tent model 0" and d0["description"].startswith("A alpine tent with")
    # an empty title becomes the first words of the text; the text stays the description
    assert d3["title"] == " ".join(d3["description"].split()[:TITLE_WORDS]) and len(d3["title"].split()) == 12
    assert ds.meta["titles_from_text"] == 15 and not any(ds.meta["dropped"].values())
    assert capsys.readouterr().out == ""  # nothing dropped: no summary line
    assert load_dataset(f"beir:path={folder}").describe() == ds.describe()


def test_graded_scores_map_by_the_documented_rule(tmp_path):
    corpus = [{"_id": f"d{i}", "title": f"doc {i}", "text": "some text"} for i in range(6)]
    queries = [{"_id": "q1", "text": "graded"}, {"_id": "q2", "text": "train query"}]
    rows = [("q1", f"d{i}", score) for i, score in enumerate([3, 2, 1, 0, -2])]
    folder = write_beir(tmp_path / "graded", corpus, queries, {"test": rows, "train": [("q2", "d5", 1)]})
    auto = load_beir(folder)  # highest score 3: the 0-3 scale; a negative score is I
    assert auto.meta["label_scale"] == "0-3" and "3->E, 2->S, 1->C, 0->I, negative->I" in auto.meta["label_mapping"]
    assert [label_of(auto, "q1", f"d{i}") for i in range(5)] == ["E", "S", "C", "I", "I"]
    four = load_dataset(f"beir:path={folder},labels=0-4")
    assert [label_of(four, "q1", f"d{i}") for i in range(5)] == ["E", "S", "C", "I", "I"]
    assert four.meta["label_scale"] == "0-4"
    error = one_line_error(r"scores \[3\] are outside labels=0-2 \(scores found: .*3 x1", folder, labels="0-2")
    assert "0-3 (3->E 2->S 1->C 0->I)" in error
    one_line_error(r"unknown labels='1-5'", folder, labels="1-5")
    (folder / "meta.json").write_text(json.dumps({"label_scale": {"3": "E", "2": "E", "1": "S", "0": "I",
                                                                  "-2": "I"}, "name": "mine"}))
    mapped = load_beir(folder)
    assert mapped.name == "mine" and "name" not in mapped.meta
    assert [label_of(mapped, "q1", f"d{i}") for i in range(5)] == ["E", "E", "S", "I", "I"]
    (folder / "meta.json").write_text(json.dumps({"label_scale": {"3": "E", "2": "X"}}))
    one_line_error(r"meta.json: \"label_scale\" maps \{\"2\": \"X\"\}", folder)


def test_binary_qrels_with_positives_only_default_to_0_1(tmp_path):
    corpus = [{"_id": 7, "title": "", "text": "  numeric id\tand a tab  "}, {"_id": "x", "title": "t", "text": ""}]
    folder = write_beir(tmp_path / "pos", corpus, [{"_id": 1, "text": "q"}], {"test": [(1, 7, 1)]})
    ds = load_beir(folder)
    assert ds.products["product_id"].to_list() == ["7", "x"] and ds.products["title"][0] == "numeric id and a tab"
    assert ds.judgments.rows() == [("1", "7", "E")] and ds.meta["label_scale"] == "0-1"


def test_a_query_in_several_splits_is_held_out(folder, capsys):
    with (folder / "qrels" / "train.tsv").open("a") as handle:  # q0 (test) and q9 (dev) also judged in train
        handle.write("q0\td0\t0\nq0\td2\t1\nq9\td38\t1\n")
    ds = load_beir(folder)
    split = dict(ds.queries.select("query_id", "split").rows())
    assert split["q0"] == "test" and split["q9"] == "valid" and ds.meta["queries_in_several_splits"] == 2
    assert label_of(ds, "q0", "d0") == "E"  # the pair judged in test and train keeps its test score
    assert label_of(ds, "q0", "d2") == "E"  # q0's train-only judgment joins it in test
    assert ds.meta["dropped"]["duplicate_judgment"] == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "2 queries judged in several splits (kept in test > valid > train)" in out


def test_unknown_ids_and_unjudged_queries_are_dropped_and_counted(folder, capsys):
    with (folder / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q0\tnot-a-doc\t1\nq0\tgone\t1\nq404\td0\t1\nq1\t\t1\nq1\td7\t\n")
    with (folder / "queries.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "q99", "text": "nobody judged me"}) + "\n")
        handle.write(json.dumps({"_id": "q98", "text": "  "}) + "\n")
    with (folder / "corpus.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "d0", "title": "a duplicate", "text": ""}) + "\n\n")
    ds = load_beir(folder)
    dropped = ds.meta["dropped"]
    assert dropped["judgment_unknown_product"] == 2 and dropped["judgment_unknown_query"] == 1
    assert dropped["query_without_judgments"] == 1 and dropped["blank_query"] == 1
    assert dropped["judgment_blank_id"] == 1 and dropped["blank_label"] == 1
    assert dropped["duplicate_product_id"] == 1
    assert (ds.products.height, ds.queries.height, ds.judgments.height) == (60, 15, 45)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"beir:path={folder}: dropped 5 judgments (2 unknown product")
    assert "1 product (duplicate id)" in out and "2 queries (1 blank query, 1 no judgments)" in out


def test_bad_folders_give_one_line_errors(folder, tmp_path):
    one_line_error(r"BEIR folder .*nowhere not found", tmp_path / "nowhere")
    (folder / "queries.jsonl").write_text('{"_id": "q0", "text": "fine"}\n\n{"_id": "q1", "text": broken}\n')
    one_line_error(r"queries.jsonl: line 3: not valid JSON \(Expecting value", folder)
    (folder / "queries.jsonl").write_text('{"_id": "q0", "text": "fine"}\n["a", "list"]\n')
    one_line_error(r"queries.jsonl: line 2: expected a JSON object, found list", folder)
    (folder / "queries.jsonl").write_text('{"id": "q0", "query": "not beir"}\n')
    one_line_error(r"queries.jsonl: no line has an \"_id\" field", folder)
    (folder / "corpus.jsonl").unlink()
    one_line_error(r"corpus.jsonl not found: download it from the dataset's BEIR zip", folder)


def test_bad_qrels_give_one_line_errors(folder):
    test_tsv = folder / "qrels" / "test.tsv"
    good = test_tsv.read_text()
    test_tsv.write_text(good + "q1\td4\thigh\n")
    one_line_error(r"test.tsv: 1 row with a score that is not an integer \(first: line 29, 'high'\)", folder)
    test_tsv.write_text(good.split("\n", 1)[1])  # no header
    one_line_error(r"qrels/test.tsv: missing columns \['query-id', 'corpus-id', 'score'\]", folder)
    test_tsv.write_text(good)
    (folder / "qrels" / "holdout.tsv").write_text(good)
    one_line_error(r"holdout.tsv: unknown split 'holdout'", folder)
    (folder / "qrels" / "holdout.tsv").unlink()
    test_tsv.write_text(good.replace("\t1\n", "\t9\n"))
    one_line_error(r"qrels scores go up to 9; labels=auto knows scales up to 4", folder)
    test_tsv.write_text(good.replace("\t1\n", "\t0\n"))
    one_line_error(r"no test query has a relevant judgment: 9 test queries, all 27 judgments I", folder)
    test_tsv.unlink()
    one_line_error(r"no test query: no judged query is in qrels/test.tsv", folder)
    for split in ("train", "dev"):
        (folder / "qrels" / f"{split}.tsv").unlink()
    one_line_error(r"qrels: no qrels/<split>.tsv files", folder)


def test_bm25_runs_end_to_end_on_a_beir_folder(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))
    [result] = retrieval_zoo.run_benchmark("bm25", f"beir:path={folder}", seeds=1, results_dir=tmp_path / "r",
                                           wandb="disabled", progress=False, print_table=False,
                                           update_leaderboard=False)  # the loader is under test, not the board
    assert result.metrics and all(math.isfinite(value) for value in result.metrics.values())
    assert max(result.metrics.values()) > 0
