"""Load a synthetic ESCI-US-sized dataset with ``load_esci`` and report peak memory and wall time.

Writes a pair of parquet files in the exact official schema to a temporary folder: ~1.2M US products with
ESCI-like text lengths (titles ~110 characters, half the products with an HTML description of ~800, most with
~900 characters of bullets) plus 600k es/jp products, all in ONE row group as pandas writes it (the worst
case for a reader), and ~600k judgments over ~30k queries. Then loads them in fresh subprocesses, so that
``ru_maxrss`` is the loader's own peak: once building the prepared dataset (cold: hashing, cleaning, writing
the cache) and once from the cache (warm). The memory held right after ``import retrieval_zoo`` (torch and
friends) is reported apart. Target: peak below 4 GB.

    python benchmarks/esci_scale.py [--products 1200000] [--other-locales 600000] [--judgments 600000]
                                    [--row-group-rows N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
CHUNK_ROWS = 100_000

# Runs inside the subprocess: load, then report this process's own peak resident memory.
MEASURE = """
import json, resource, sys, time
from retrieval_zoo.data.esci import load_esci
import_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
start = time.perf_counter()
ds = load_esci(sys.argv[1], locale="us", version="small")
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_gib": peak_kib / 2**20, "import_gib": import_kib / 2**20,
                  "products_gib": ds.products.estimated_size() / 2**30, "summary": ds.describe(),
                  "dropped": {k: v for k, v in ds.meta["dropped"].items() if v}}))
"""


def word_corpus(rng: np.random.Generator, n_chars: int = 20_000_000) -> str:
    """Random words from a Zipf-like vocabulary: text that compresses roughly like product text."""
    syllables = ["ka", "lo", "mi", "ter", "pro", "max", "ultra", "so", "vi", "ne", "ra", "tech", "on", "al"]
    vocabulary = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(20_000)]
    ranks = np.minimum(rng.zipf(1.3, size=n_chars // 6), len(vocabulary)) - 1
    return " ".join(vocabulary[r] for r in ranks)[:n_chars]


def text_slices(rng: np.random.Generator, corpus: str, lengths: np.ndarray) -> list[str]:
    starts = rng.integers(0, len(corpus) - int(lengths.max()) - 1, size=len(lengths))
    return [corpus[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)]


def optional_texts(rng, corpus, n, present, mean, wrap) -> list[str | None]:
    lengths = np.clip(rng.lognormal(np.log(mean), 0.6, size=n), 5, 8 * mean).astype(int)
    texts = text_slices(rng, corpus, lengths)
    keep = rng.random(n) < present
    return [wrap(t) if k else None for t, k in zip(texts, keep, strict=True)]


def html_description(text: str) -> str:
    entity = " &amp; " if len(text) % 5 == 0 else " "  # a fifth of the descriptions hold an entity
    return f"<p>{text[:300]}<br>{entity}{text[300:]}</p>"


def products_chunk(rng, corpus, ids: list[str], locale: str) -> pa.Table:
    n = len(ids)
    return pa.table({
        "product_id": ids,
        "product_title": text_slices(rng, corpus, np.clip(rng.normal(110, 45, size=n), 10, 400).astype(int)),
        "product_description": optional_texts(rng, corpus, n, 0.5, 800, html_description),
        "product_bullet_point": optional_texts(rng, corpus, n, 0.85, 900, lambda t: t.replace(" ka ", "\n")),
        "product_brand": text_slices(rng, corpus, rng.integers(3, 15, size=n)),
        "product_color": text_slices(rng, corpus, rng.integers(3, 10, size=n)),
        "product_locale": [locale] * n,
    })


def write_products(path: Path, n_us: int, n_other: int, row_group_rows: int | None, rng, corpus) -> list[str]:
    """US products, then es/jp ones (reusing US ids, as the real file does), in ``row_group_rows`` groups."""
    ids = [f"B{i:09d}" for i in range(n_us)]
    chunks = [products_chunk(rng, corpus, ids[s : s + CHUNK_ROWS], "us") for s in range(0, n_us, CHUNK_ROWS)]
    for s in range(0, n_other, CHUNK_ROWS):
        other_ids = ids[s : s + min(CHUNK_ROWS, n_other - s)]
        chunks.append(products_chunk(rng, corpus, other_ids, "es" if (s // CHUNK_ROWS) % 2 else "jp"))
    table = pa.concat_tables(chunks)
    pq.write_table(table, path, compression="snappy", row_group_size=row_group_rows or table.num_rows)
    return ids


def write_examples(path: Path, n_judgments: int, product_ids: list[str], rng: np.random.Generator, corpus: str):
    per_query = 20
    n_queries = n_judgments // per_query
    query_ids = np.repeat(np.arange(n_queries), per_query)
    query_texts = text_slices(rng, corpus, rng.integers(8, 45, size=n_queries))
    products = rng.integers(0, len(product_ids), size=len(query_ids))
    test = rng.random(n_queries) < 0.3
    pq.write_table(pa.table({
        "example_id": np.arange(len(query_ids), dtype=np.int64),
        "query": [query_texts[q] for q in query_ids.tolist()],
        "query_id": query_ids.astype(np.int64),
        "product_id": [product_ids[p] for p in products.tolist()],
        "product_locale": ["us"] * len(query_ids),
        "esci_label": rng.choice(np.array(["E", "S", "C", "I"]), size=len(query_ids), p=[0.65, 0.22, 0.03, 0.10]),
        "small_version": np.ones(len(query_ids), dtype=np.int64),
        "large_version": np.ones(len(query_ids), dtype=np.int64),
        "split": np.where(test[query_ids], "test", "train"),
    }), path)


def measure(raw: Path, cache: Path) -> dict:
    env = {"RETRIEVAL_ZOO_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(raw)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"load failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def generate(raw: Path, args: argparse.Namespace) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    corpus = word_corpus(rng)
    ids = write_products(raw / PRODUCTS_FILE, args.products, args.other_locales, args.row_group_rows, rng, corpus)
    write_examples(raw / EXAMPLES_FILE, args.judgments, ids, rng, corpus)
    record_sums(raw)


def record_sums(raw: Path) -> None:
    """The generated files' own sums, so the loader verifies them instead of warning on every load that the
    official sums (which synthetic files cannot match) do not list them."""
    from retrieval_zoo.data.checks import cached_sha256

    lines = [f"{cached_sha256(raw / name)}  {name}" for name in (PRODUCTS_FILE, EXAMPLES_FILE)]
    (raw / "SHA256SUMS").write_text("# synthetic benchmark files, as generated\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1_200_000)
    parser.add_argument("--other-locales", type=int, default=600_000, help="es/jp products in the same file")
    parser.add_argument("--judgments", type=int, default=600_000)
    parser.add_argument("--row-group-rows", type=int, help="rows per row group (default: one row group)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them (default: a temp dir)")
    parser.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_into:
        return generate(args.generate_into, args)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        raw, cache = root / "raw", root / "cache"
        start = time.perf_counter()
        # Generate in a child: Linux carries a parent's peak RSS into ru_maxrss of the children it forks, so
        # the measuring children must be forked from this small process, not from the 3 GB generator.
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--generate-into", str(raw)], check=True)
        sizes = {p.name: round(p.stat().st_size / 2**20) for p in raw.iterdir()}
        print(f"generated in {time.perf_counter() - start:.0f} s: {sizes} MiB")
        for run in ("cold (build + cache)", "warm (from cache)"):
            result = measure(raw, cache)
            print(f"{run}: {result['seconds']:.1f} s, peak {result['peak_gib']:.2f} GiB "
                  f"({result['import_gib']:.2f} GiB of it held right after the import; products table "
                  f"{result['products_gib']:.2f} GiB); {result['summary']}"
                  + (f"; dropped {result['dropped']}" if result["dropped"] else ""))


if __name__ == "__main__":
    main()
