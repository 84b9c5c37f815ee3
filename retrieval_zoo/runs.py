"""Saved runs in the formats IR tools read: each run folder holds ``run.trec`` (TREC run format) and
``qrels.parquet`` (the judgments it was scored with, one frame per kind: ``graded`` ESCI gains 100/10/1/0,
``exact``, ``exact_sub`` and on behaviour data ``personal``).

``load_run(run_dir)`` returns ranx ``Qrels`` and ``Run`` objects ready for ``ranx.compare`` / ``ranx.fuse``
(as ranx's own users build them), and ``write_trec_qrels`` writes the judgments as a TREC qrels file for
trec_eval, pytrec_eval or BEIR-style tooling.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from ranx import Qrels, Run

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
