"""Saved runs in the formats IR tools read: each run folder holds ``run.trec`` (TREC run format) and
``qrels.parquet`` (the judgments it was scored with, one frame per kind: ``graded`` ESCI gains 100/10/1/0,
``exact``, ``exact_sub`` and on behaviour data ``personal``).

``load_run(run_dir)`` returns ranx ``Qrels`` and ``Run`` objects ready for ``ranx.compare`` / ``ranx.fuse``
(as ranx's own users build them), ``write_trec_qrels`` writes the judgments as a TREC qrels file for
trec_eval, pytrec_eval or BEIR-style tooling, and ``export_mteb`` writes the run's scores as the JSON file MTEB
writes for a retrieval task (``python -m retrieval_zoo export-mteb RUN_DIR``), for tools that read MTEB results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from ranx import Qrels, Run, evaluate

from retrieval_zoo.evaluation import EvaluationTargets, ranx_qrels, to_ranx_run

QRELS_KINDS = ("graded", "exact", "exact_sub", "personal")


def load_run(run_dir: str | Path, kind: str = "graded", name: str | None = None) -> tuple[Qrels, Run]:
    """(qrels of ``kind``, the ranked run) of a saved run folder, as ranx objects; the run is called ``name``
    (default: model/variant/seed<k> from the folder), the label ``ranx.compare`` tables show."""
    run_dir = Path(run_dir)
    qrels = _qrels_frame(run_dir, kind)
    ranked = pl.read_csv(run_dir / "run.trec", separator=" ", has_header=False,
                         new_columns=["q_id", "iter", "doc_id", "rank", "score", "tag"],
                         schema_overrides={"q_id": pl.Utf8, "doc_id": pl.Utf8})
    run = to_ranx_run(ranked.select("q_id", "doc_id", "score"), name=name or _run_name(run_dir))
    return ranx_qrels(qrels), run


def write_trec_qrels(run_dir: str | Path, path: str | Path, kind: str = "graded") -> Path:
    """The run's judgments of ``kind`` as a TREC qrels file (``q_id 0 doc_id score``)."""
    frame = _qrels_frame(Path(run_dir), kind)
    frame.select("q_id", pl.lit(0).alias("iter"), "doc_id", "score").write_csv(path, separator=" ",
                                                                               include_header=False)
    return Path(path)


# MTEB's retrieval scores: these measures at these cutoffs, named ``<measure>_at_<k>``, main score nDCG@10
MTEB_MEASURES = {"ndcg": "ndcg", "map": "map", "mrr": "mrr", "recall": "recall", "precision": "precision"}
MTEB_CUTOFFS = (1, 3, 5, 10, 20, 100, 1000)
MTEB_MAIN_SCORE = "ndcg_at_10"


def mteb_scores(run_dir: str | Path) -> dict[str, float]:
    """The run's test scores under MTEB's names, computed by ranx on its graded judgments (ESCI gains, as the
    board's ndcg@10), so ``main_score`` equals the run's ndcg@10."""
    qrels, run = load_run(run_dir, "graded")
    wanted = {f"{name}_at_{k}": f"{ranx_name}@{k}" for name, ranx_name in MTEB_MEASURES.items() for k in MTEB_CUTOFFS}
    values = evaluate(qrels, run, list(wanted.values()), save_results_in_run=False)  # as the runner scores it
    scores = {name: round(float(values[metric]), 6) for name, metric in wanted.items()}
    return {**scores, "main_score": scores[MTEB_MAIN_SCORE]}


def mteb_result(run_dir: str | Path) -> dict[str, Any]:
    """One run as an MTEB retrieval task result: ``scores.test`` holds one entry for the ``default`` subset; the
    task is the dataset, its revision the dataset's content fingerprint (``meta.json``)."""
    meta = json.loads((Path(run_dir) / "meta.json").read_text())
    entry = {**mteb_scores(run_dir), "hf_subset": "default", "languages": ["eng-Latn"]}
    return {"dataset_revision": meta.get("dataset_fingerprint") or None, "task_name": meta["dataset"],
            "mteb_version": None,  # not written by mteb itself
            "scores": {"test": [entry]},
            "evaluation_time": (meta.get("costs") or {}).get("total_seconds"), "kg_co2_emissions": None}


def export_mteb(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``mteb_result(run_dir)`` to ``out`` (default: ``<run_dir>/mteb/<dataset>.json``, MTEB's one file per
    task) and return its path."""
    result = mteb_result(run_dir)
    path = Path(out) if out else Path(run_dir) / "mteb" / f"{result['task_name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def targets_of(run_dir: str | Path) -> EvaluationTargets:
    from retrieval_zoo.significance import saved_targets

    targets = saved_targets(run_dir)
    if targets is None:
        raise FileNotFoundError(f"{run_dir} has no qrels.parquet (made before runs saved their judgments); rerun it")
    return targets


def _qrels_frame(run_dir: Path, kind: str) -> pl.DataFrame:
    if kind not in QRELS_KINDS:
        raise ValueError(f"kind must be one of {', '.join(QRELS_KINDS)}, got {kind!r}")
    qrels = targets_of(run_dir).qrels
    if kind not in qrels:
        raise ValueError(f"{run_dir} has no {kind!r} judgments; it has {', '.join(sorted(qrels))}")
    return qrels[kind].select("q_id", "doc_id", pl.col("score").cast(pl.Int64))


def _run_name(run_dir: Path) -> str:
    parts = run_dir.resolve().parts
    return "/".join(parts[-3:])  # model/variant/seed<k>
