"""A BEIR-format folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) as a canonical dataset.

The layout, the label rule and an example command are in ``datasets/beir/README.md``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from retrieval_zoo.data.checks import (
    blank,
    decode_csv_bytes,
    drop_duplicates,
    drop_unknown,
    require_columns,
    require_data_file,
)
from retrieval_zoo.data.dataset import LABELS, DatasetError, ProductSearchDataset
from retrieval_zoo.data.local import (
    GAINS,
    SPLIT_ALIASES,
    _count,
    _json,
    _one_line,
    _reasons,
    drop_blank_and_duplicate_rows,
    load_summary,
    read_json_object,
)

SOURCE = "the dataset's BEIR zip (https://github.com/beir-cellar/beir)"
README = "datasets/beir/README.md"
TITLE_WORDS = 12  # an empty title becomes the first words of the text
# qrels score -> E/S/C/I; a negative score (e.g. Touché's -2) is I under every named scale.
LABEL_SCALES = {
    "0-1": {"1": "E", "0": "I"},
    "0-2": {"2": "E", "1": "S", "0": "I"},
    "0-3": {"3": "E", "2": "S", "1": "C", "0": "I"},
    "0-4": {"4": "E", "3": "E", "2": "S", "1": "C", "0": "I"},
}
AUTO_SCALE = {1: "0-1", 2: "0-2", 3: "0-3", 4: "0-4"}  # labels=auto: by the highest score in the qrels files
SCALES_HELP = (
    "labels=auto (default: the scale below whose top is the highest score found), "
    "0-1 (1->E 0->I), 0-2 (2->E 1->S 0->I), 0-3 (3->E 2->S 1->C 0->I), 0-4 (4,3->E 2->S 1->C 0->I), "
    'or a mapping in the folder\'s meta.json, e.g. {"label_scale": {"2": "E", "1": "S", "0": "I"}}'
)
SPLIT_ORDER = ("test", "valid", "train")  # a query judged in several splits is kept in the first of these
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
QUERY_COLUMNS = ("query_id", "query", "split", "group")


def load_beir(path: str | Path, labels: str | None = None, name: str | None = None) -> ProductSearchDataset:
    """Load a BEIR folder: ``corpus.jsonl`` -> products, ``queries.jsonl`` + ``qrels/*.tsv`` -> queries and
    judgments.

    Products: product_id = ``_id``, title = ``title`` (or the first ``TITLE_WORDS`` words of ``text`` when the
    title is empty), description = ``text``; other corpus fields are ignored. Queries: query = ``text``; the
    split is the qrels file's (train, dev -> valid, test); a query judged in several files is kept in the first
    of test, valid, train (held out, never trained on) with all its judgments; for a pair judged in several
    files the score of that split wins. Labels: ``labels`` (or ``meta.json``'s ``label_scale``) names a scale
    of ``LABEL_SCALES`` or ``auto`` (default); a score outside it is an error. Unjudged pairs are unknown
    (``fully_judged=False``).

    Bad rows (blank ids, texts or scores, duplicates, qrels naming unknown queries or documents, queries without
    judgments) are dropped and counted in ``meta["dropped"]``, with one printed summary line.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"BEIR folder {folder} not found; it needs corpus.jsonl, queries.jsonl and "
                           f"qrels/<split>.tsv (see {README})")
    user_meta = read_meta(folder)
    dataset_name = name or user_meta.pop("name", None) or f"beir-{folder.name}"
    scale = labels if labels is not None else user_meta.get("label_scale", "auto")
    if isinstance(scale, str):
        scale = scale.strip().lower()
        if scale != "auto" and scale not in LABEL_SCALES:
            raise DatasetError(f"unknown labels={scale!r}; expected {SCALES_HELP}")
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    products = read_corpus(folder / "corpus.jsonl", repaired)
    queries = read_queries(folder / "queries.jsonl", repaired)
    qrels = read_qrels(folder, repaired)
    scale, aliases = resolve_scale(scale, qrels)
    named = isinstance(scale, str)
    judgments = qrels.with_columns(label=to_label(pl.col("score"), aliases, negative_is_i=named))
    products, queries, judgments, conflicts = combine(products, queries, judgments, dropped)
    require_usable(queries, judgments, dropped, qrels.height)
    titles_from_text = int(products["title_from_text"].sum())
    products = products.drop("title_from_text")
    mapping = ", ".join(f"{k}->{v}" for k, v in aliases.items())
    meta = {
        "label_source": "labels",
        "fully_judged": False,
        "protocol": f"BEIR folder {folder.name}: the qrels files' query splits (train, dev->valid, test; "
                    f"a query judged in several is held out in the first of test, valid, train); "
                    f"catalogue = all {products.height:,} documents in corpus.jsonl; labels from the qrels "
                    f"scores",
        "label_mapping": f"BEIR qrels score -> label: {mapping}{', negative->I' if named else ''} "
                         f"(labels={scale if named else _json(scale)}); {GAINS}",
    } | {k: v for k, v in user_meta.items() if k != "label_scale"} | {
        "label_scale": scale,
        "titles_from_text": titles_from_text,
        "queries_in_several_splits": conflicts,
        "dropped": dropped,
        "repaired": repaired,
        "source": str(folder.resolve()),
    }
    dataset = ProductSearchDataset(name=dataset_name,
                                   products=products, queries=queries.select(*QUERY_COLUMNS),
                                   judgments=judgments, meta=meta)
    summary = [part for part in [load_summary(dropped, repaired)] if part]
    if conflicts:
        summary.append(f"{_count(conflicts, 'query')} judged in several splits (kept in test > valid > train)")
    if summary:
        print(f"beir:path={path}: {'; '.join(summary)}", flush=True)
    return dataset


# -- meta.json (optional) -----------------------------------------------------------------------------------
def read_meta(folder: Path) -> dict:
    """The folder's optional meta.json: ``label_scale`` (a scale name or {score: E/S/C/I}), ``name``,
    ``protocol`` and any other keys, merged into ``meta``."""
    file = folder / "meta.json"
    meta = read_json_object(file, example=' such as {"label_scale": "0-2"}')
    for key in ("name", "protocol"):
        if key in meta and not isinstance(meta[key], str):
            raise DatasetError(f"{file}: \"{key}\" is {_json(meta[key])}; expected a string")
    scale = meta.get("label_scale")
    if scale is not None and not isinstance(scale, str | dict):
        raise DatasetError(f"{file}: \"label_scale\" is {_json(scale)}; expected {SCALES_HELP}")
    if isinstance(scale, dict):
        if not scale:
            raise DatasetError(f"{file}: \"label_scale\" is an empty object; expected {SCALES_HELP}")
        bad = {k: v for k, v in scale.items() if not isinstance(v, str) or v.strip().upper() not in LABELS}
        if bad:
            raise DatasetError(f"{file}: \"label_scale\" maps {_json(bad)}; each score must map to one of "
                               f"\"E\", \"S\", \"C\", \"I\"")
        meta["label_scale"] = {str(k).strip(): v.strip().upper() for k, v in scale.items()}
    return meta


# -- files --------------------------------------------------------------------------------------------------
def read_jsonl(file: Path, fields: dict[str, str], repaired: dict[str, int]) -> pl.DataFrame:
    """The ``fields`` of each JSON line as text columns (numbers become text, a missing field null); blank lines
    are skipped; a line that is not a JSON object is an error naming the file and the line."""
    require_data_file(file, source_url=SOURCE, fix_hint=f"see {README}")
    raw, repaired[f"non_utf8_lines_{file.name}"] = decode_csv_bytes(file)
    try:
        frame = pl.read_ndjson(io.BytesIO(raw), schema=dict.fromkeys(fields, pl.Utf8))
    except pl.exceptions.PolarsError as error:
        raise DatasetError(f"{file}: {locate_json_problem(raw) or _one_line(error)}; fix or remove that line "
                           f"(each line must be one JSON object, see {README})") from error
    if frame.height and frame["_id"].null_count() == frame.height:
        raise DatasetError(f"{file}: no line has an \"_id\" field; expected lines like "
                           f"{{{', '.join(f'{json.dumps(k)}: ...' for k in fields)}}}")
    return frame.rename(fields)


def locate_json_problem(raw: bytes) -> str | None:
    """The first line that is not a JSON object, as ``line N: ...``; None when every line parses."""
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return f"line {number}: not valid JSON ({_one_line(error)})"
        if not isinstance(value, dict):
            return f"line {number}: expected a JSON object, found {type(value).__name__}"
    return None


def read_corpus(file: Path, repaired: dict[str, int]) -> pl.DataFrame:
    corpus = read_jsonl(file, {"_id": "product_id", "title": "title", "text": "description"}, repaired)
    words = pl.col("description").fill_null("").str.extract_all(r"\S+")
    first_words = words.list.head(TITLE_WORDS).list.join(" ")
    fallback = blank("title")
    return corpus.with_columns(
        product_id=pl.col("product_id").str.strip_chars(),
        title=pl.when(fallback).then(first_words).otherwise(pl.col("title").str.strip_chars()),
        description=pl.col("description").fill_null(""),
        title_from_text=fallback & ~blank("description"),
        bullets=pl.lit(""), brand=pl.lit(""), color=pl.lit(""), category=pl.lit(""),
        shop_id=pl.lit(None, dtype=pl.Utf8),
    )


def read_queries(file: Path, repaired: dict[str, int]) -> pl.DataFrame:
    queries = read_jsonl(file, {"_id": "query_id", "text": "query"}, repaired)
    return queries.with_columns(pl.col("query_id").str.strip_chars(), group=pl.lit(None, dtype=pl.Utf8))


def read_qrels(folder: Path, repaired: dict[str, int]) -> pl.DataFrame:
    """Every ``qrels/<split>.tsv`` stacked, with its split and integer score (a blank score is null)."""
    qrels_dir = folder / "qrels"
    files = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not files:
        raise DatasetError(f"{qrels_dir}: no qrels/<split>.tsv files (train.tsv, dev.tsv, test.tsv); "
                           f"download them with the corpus from {SOURCE}")
    frames = []
    for file in files:
        split = SPLIT_ALIASES.get(file.stem.lower())
        if split is None:
            raise DatasetError(f"{file}: unknown split {file.stem!r}; name qrels files train.tsv, dev.tsv or "
                               f"test.tsv (or move the file out of qrels/)")
        require_data_file(file, source_url=SOURCE)
        raw, repaired[f"non_utf8_lines_{file.name}"] = decode_csv_bytes(file)
        try:
            frame = pl.read_csv(raw, separator="\t", quote_char=None, infer_schema=False)
        except pl.exceptions.NoDataError as error:
            raise DatasetError(f"{file}: empty file; it needs the header query-id<TAB>corpus-id<TAB>score"
                               ) from error
        except pl.exceptions.PolarsError as error:
            raise DatasetError(f"{file}: cannot parse the TSV ({_one_line(str(error).splitlines()[0])}); "
                               f"expected query-id<TAB>corpus-id<TAB>score lines") from error
        require_columns(frame.schema, dict.fromkeys(QRELS_COLUMNS, (pl.Utf8,)), file=f"qrels/{file.name}")
        frame = frame.select(
            query_id=pl.col("query-id").str.strip_chars(), product_id=pl.col("corpus-id").str.strip_chars(),
            score=pl.col("score").str.strip_chars(), split=pl.lit(split),
            line=pl.int_range(2, pl.len() + 2),
        ).filter(~(blank("query_id") & blank("product_id") & blank("score")))
        score = pl.col("score").cast(pl.Float64, strict=False)
        bad = frame.filter(~blank("score") & (score.is_null() | (score != score.round()) | score.is_infinite()))
        if bad.height:
            line, value = bad.row(0, named=True)["line"], bad.row(0, named=True)["score"]
            raise DatasetError(f"{file}: {_count(bad.height, 'row')} with a score that is not an integer "
                               f"(first: line {line}, {value!r}); BEIR scores are integers such as 0/1 or 0-3")
        score = pl.when(blank("score")).then(None).otherwise(score.cast(pl.Int64))
        frames.append(frame.with_columns(score=score))
    return pl.concat(frames)


# -- labels -------------------------------------------------------------------------------------------------
def resolve_scale(scale: str | dict, qrels: pl.DataFrame) -> tuple[str | dict, dict[str, str]]:
    """(the scale used, {score as text: E/S/C/I}); a score the scale does not cover is an error."""
    scores = qrels["score"].drop_nulls()
    if scale == "auto":
        top = max(int(scores.max()) if scores.len() else 1, 1)
        if top not in AUTO_SCALE:
            raise DatasetError(f"qrels scores go up to {top}; labels=auto knows scales up to 4: choose "
                               f"{SCALES_HELP}")
        scale = AUTO_SCALE[top]
    aliases = LABEL_SCALES[scale] if isinstance(scale, str) else scale
    outside = sorted({s for s in scores.unique().to_list()
                      if str(s) not in aliases and not (isinstance(scale, str) and s < 0)})
    if outside:
        counts = qrels.filter(pl.col("score").is_not_null())["score"].value_counts(sort=True)
        found = ", ".join(f"{s} x{n}" for s, n in counts.iter_rows())
        named = scale if isinstance(scale, str) else _json(scale)
        raise DatasetError(f"qrels: scores {outside} are outside labels={named} (scores found: {found}); "
                           f"choose {SCALES_HELP}")
    return scale, aliases


def to_label(score: pl.Expr, aliases: dict[str, str], *, negative_is_i: bool) -> pl.Expr:
    """E/S/C/I for an integer score column (null stays null: a blank score, dropped later)."""
    label = score.cast(pl.Utf8).replace_strict(aliases, default=None, return_dtype=pl.Utf8)
    return pl.when(score < 0).then(pl.lit("I")).otherwise(label) if negative_is_i else label


# -- rows -----------------------------------------------------------------------------------------------------
def combine(products: pl.DataFrame, queries: pl.DataFrame, judgments: pl.DataFrame, dropped: dict[str, int]
            ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, int]:
    """Bad rows dropped and counted (local.py's keys); each query gets the split of its qrels file, the first of
    ``SPLIT_ORDER`` when several. Returns (products, queries, judgments, queries judged in several splits)."""
    products, queries, judgments = drop_blank_and_duplicate_rows(products, queries, judgments, dropped)
    rank = pl.col("split").replace_strict({s: i for i, s in enumerate(SPLIT_ORDER)}, return_dtype=pl.Int8)
    judgments = judgments.sort(rank, maintain_order=True)  # the held-out split's score wins for a repeated pair
    judged = judgments.select("query_id", "product_id", "split")
    judgments, dropped["duplicate_judgment"] = drop_duplicates(judgments, ["query_id", "product_id"])
    judgments, dropped["judgment_unknown_query"] = drop_unknown(judgments, "query_id", queries["query_id"])
    judgments, dropped["judgment_unknown_product"] = drop_unknown(judgments, "product_id",
                                                                  products["product_id"])
    judged = judged.join(judgments.select("query_id", "product_id"), on=["query_id", "product_id"], how="semi")
    splits = judged.group_by("query_id", maintain_order=True).agg(  # sorted by SPLIT_ORDER: first = held out
        split=pl.col("split").first(), n_splits=pl.col("split").n_unique())
    queries, dropped["query_without_judgments"] = drop_unknown(queries, "query_id", splits["query_id"])
    queries = queries.join(splits.select("query_id", "split"), on="query_id", how="left")
    return products, queries, judgments.select("query_id", "product_id", "label"), int(
        (splits["n_splits"] > 1).sum())


def require_usable(queries: pl.DataFrame, judgments: pl.DataFrame, dropped: dict[str, int], rows: int) -> None:
    """An error now, with the counts, rather than an empty result row later in the run."""
    if judgments.is_empty():
        raise DatasetError(f"no judgment left: all {rows} qrels rows were dropped "
                           f"({_reasons(dropped, 'judgment')}); check that their query-id/corpus-id values are "
                           f"_id values of queries.jsonl and corpus.jsonl")
    test = queries.filter(pl.col("split") == "test")
    if test.is_empty():
        raise DatasetError(f"no test query: no judged query is in qrels/test.tsv (dropped queries: "
                           f"{_reasons(dropped, 'query') or 'none'}); BEIR evaluates on qrels/test.tsv")
    test_judgments = judgments.join(test.select("query_id"), on="query_id", how="semi")
    if not (test_judgments["label"] != "I").any():
        raise DatasetError(f"no test query has a relevant judgment: {_count(test.height, 'test query')}, all "
                           f"{_count(test_judgments.height, 'judgment')} I; metrics would be undefined: check "
                           f"labels= ({SCALES_HELP})")
