"""Saved runs round-trip through standard formats: a TREC run file and the qrels, loaded as ranx objects that
``ranx.compare`` takes without hand fixes and that reproduce the run's own metrics."""

from __future__ import annotations

import pytest
from ranx import Qrels, compare, evaluate

import retrieval_zoo as rz
from retrieval_zoo.runs import write_trec_qrels


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    fields = rz.run_benchmark("bm25", "simshop-tiny", seeds=1, results_dir=results, wandb="disabled",
                              progress=False, print_table=False)
    titles = rz.run_benchmark("bm25", "simshop-tiny", seeds=1, overrides=["model.fields=[title]"],
                              results_dir=results / "titles", wandb="disabled", progress=False, print_table=False)
    return fields[0], titles[0]


def test_a_loaded_run_reproduces_the_runs_metrics_and_ranx_compare_takes_two(two_runs):
    first, second = two_runs
    qrels, run = rz.load_run(first.run_dir)
    assert evaluate(qrels, run, "ndcg@10") == pytest.approx(first.metrics["ndcg@10"], abs=1e-12)
    _, other = rz.load_run(second.run_dir, name="bm25 over titles")
    report = compare(qrels, [run, other], ["ndcg@10", "recall@100"], stat_test="student")
    assert set(report.comparisons) and 0.0 <= report.comparisons[(run.name, other.name)]["ndcg@10"]["p_value"] <= 1


def test_the_trec_files_are_what_trec_tools_read(two_runs, tmp_path):
    first, _ = two_runs
    line = (first.run_dir / "run.trec").read_text().splitlines()[0].split(" ")
    assert len(line) == 6 and line[1] == "Q0" and line[3] == "1"
    path = write_trec_qrels(first.run_dir, tmp_path / "qrels.trec")
    qrels = Qrels.from_file(str(path), kind="trec")
    assert evaluate(qrels, rz.load_run(first.run_dir)[1], "ndcg@10") == pytest.approx(first.metrics["ndcg@10"])


def test_unknown_judgment_kinds_are_named(two_runs):
    with pytest.raises(ValueError, match="kind must be one of graded, exact"):
        rz.load_run(two_runs[0].run_dir, kind="clicks")


# -- the MTEB-style export (issue 22, part 2) ----------------------------------------------------------------
def test_the_mteb_export_reads_back_with_the_runs_ndcg_as_main_score(two_runs, tmp_path):
    import json

    from retrieval_zoo.__main__ import main

    first, _ = two_runs
    out = tmp_path / "simshop-tiny.json"
    assert main(["export-mteb", str(first.run_dir), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"dataset_revision", "task_name", "mteb_version", "scores", "evaluation_time"} <= set(result)
    [entry] = result["scores"]["test"]
    assert entry["hf_subset"] == "default" and entry["languages"] == ["eng-Latn"]
    assert entry["main_score"] == entry["ndcg_at_10"] == pytest.approx(first.metrics["ndcg@10"], abs=1e-6)
    # MTEB's recall counts every judged-relevant item (gain > 0), not the board's recall@100 definition
    assert 0.0 <= entry["recall_at_10"] <= entry["recall_at_100"] <= 1.0
    assert {f"{m}_at_{k}" for m in ("ndcg", "map", "mrr", "recall", "precision") for k in (1, 10, 1000)} <= set(entry)
    assert result["task_name"] == "simshop-tiny"
