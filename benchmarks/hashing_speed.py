"""Hashed n-grams: the repository's ``hashed_ngrams`` (data/text.py) vs scikit-learn's ``HashingVectorizer``.

Both sides turn the same titles into the same units, the lower-cased whitespace words plus the letter trigrams
of each ``#word#``, hashed into the same number of buckets, in the same process and run:

- repo: ``text.hashed_ngrams(titles, buckets, max_length)``: blake2b-64 of each unit (memoised per unit and
  per word within a call),
  ids 1..buckets-1 in text order, int64 [n, max_length] (what the models read);
- sklearn builtin: ``HashingVectorizer(analyzer="word", token_pattern=r"\\S+")`` + ``HashingVectorizer(
  analyzer="char_wb", ngram_range=(3, 3))`` summed (``char_wb`` pads a word with spaces where the repo uses
  ``#``: the same trigrams), murmurhash3 in C; a sparse count matrix, then turned into the same padded
  id matrix (ids in bucket order, repeats merged: a bag, not a sequence);
- sklearn callable: one ``HashingVectorizer`` whose analyzer is the repo's own unit list (``"w:" + word`` and
  ``text.letter_ngrams``), then the same padded id matrix.

sklearn's ids differ from the repo's (murmurhash3 vs blake2b): fine for timing, but switching would change
every hashed id, hence every model that reads them and every recorded result. Prints items/s for each side
and the ratio sklearn / repo (median of ``--repeats``; above 1 means sklearn is faster). No timed tests.

    python benchmarks/hashing_speed.py [--items 100000] [--text simshop|synthetic|both] [--repeats 3]

``simshop``: titles re-drawn from the words of simshop's catalogue titles (its default preset: 6,000 titles,
a small vocabulary, so memoisation helps the repo); ``synthetic``: titles of a Zipf-distributed vocabulary of
``--vocab`` made-up words (a large marketplace's long tail, where memoisation helps less).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from retrieval_zoo.data import text

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))


def simshop_titles(n: int, seed: int) -> list[str]:
    """``n`` titles with the length and word distribution of simshop's catalogue titles."""
    from retrieval_zoo.data.registry import load_dataset

    titles = load_dataset("simshop").products["title"].to_list()
    words = np.array([word for title in titles for word in title.split()])
    lengths = np.array([len(title.split()) for title in titles])
    rng = np.random.default_rng(seed)
    picked = rng.choice(lengths, size=n)
    return [" ".join(words[rng.integers(0, len(words), size=k)]) for k in picked]


def synthetic_titles(n: int, seed: int, vocab: int, mean_words: int = 12) -> list[str]:
    """``n`` titles of made-up words (3-10 letters), word frequencies Zipf over a ``vocab``-word vocabulary."""
    rng = np.random.default_rng(seed)
    vocabulary = ["".join(rng.choice(LETTERS, size=rng.integers(3, 11))).capitalize() for _ in range(vocab)]
    weights = 1.0 / np.arange(1, vocab + 1)
    weights /= weights.sum()
    lengths = np.clip(rng.poisson(mean_words, size=n), 1, None)
    ids = rng.choice(vocab, size=int(lengths.sum()), p=weights)
    ends = np.cumsum(lengths)
    return [" ".join(vocabulary[i] for i in ids[end - k : end]) for k, end in zip(lengths, ends, strict=True)]


def repo_units(title: str) -> list[str]:
    """The units ``hashed_ngrams`` hashes, in its order."""
    return [unit for word in title.lower().split() for unit in ["w:" + word, *text.letter_ngrams(word, 3)]]


def padded_ids(counts, max_length: int) -> np.ndarray:
    """A CSR count matrix as the models' input: each row's first ``max_length`` buckets + 1 (0 = padding)."""
    counts.sort_indices()
    lengths = np.minimum(np.diff(counts.indptr), max_length)
    ids = np.zeros((counts.shape[0], max_length), dtype=np.int64)
    rows = np.repeat(np.arange(counts.shape[0]), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[rows, cols] = counts.indices[counts.indptr[rows] + cols] + 1
    return ids


def sklearn_sides(buckets: int, max_length: int):
    from sklearn.feature_extraction.text import HashingVectorizer

    common = dict(n_features=buckets - 1, alternate_sign=False, norm=None, lowercase=True, dtype=np.float32)
    words = HashingVectorizer(analyzer="word", token_pattern=r"(?u)\S+", **common)
    trigrams = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 3), **common)
    same_units = HashingVectorizer(analyzer=repo_units, **common)

    def builtin(titles: list[str]) -> np.ndarray:
        return padded_ids((words.transform(titles) + trigrams.transform(titles)).tocsr(), max_length)

    def callable_analyzer(titles: list[str]) -> np.ndarray:
        return padded_ids(same_units.transform(titles), max_length)

    def builtin_units(title: str) -> list[str]:  # for the check that both sides hash the same units
        return (["w:" + w for w in words.build_analyzer()(title)]
                + [g.replace(" ", "#") for g in trigrams.build_analyzer()(title)])

    return builtin, callable_analyzer, builtin_units


def timed(function, titles: list[str], repeats: int) -> float:
    """Median items/s over ``repeats`` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(titles)
        seconds.append(time.perf_counter() - start)
    return len(titles) / statistics.median(seconds)


def measure(name: str, titles: list[str], args, sides) -> None:
    units = sum(len(repo_units(t)) for t in titles)
    print(f"\n{name}: {len(titles):,} titles, {units / len(titles):.1f} units per title, "
          f"{len({u for t in titles[:20000] for u in repo_units(t)}):,} distinct units in the first 20,000")
    repo = timed(lambda ts: text.hashed_ngrams(ts, args.buckets, args.max_length), titles, args.repeats)
    print(f"  repo hashed_ngrams (blake2b, memoised)      {repo:>12,.0f} items/s")
    if sides is None:
        return
    builtin, callable_analyzer, builtin_units = sides
    mismatched = [t for t in titles[:1000] if sorted(builtin_units(t)) != sorted(repo_units(t))]
    if mismatched:
        print(f"  warning: sklearn's builtin analyzers give other units for {len(mismatched)} of 1,000 titles, "
              f"e.g. {mismatched[0]!r}")
    for label, function in (("sklearn builtin word + char_wb(3)", builtin),
                            ("sklearn, the repo's units as analyzer", callable_analyzer)):
        rate = timed(function, titles, args.repeats)
        print(f"  {label:<42} {rate:>12,.0f} items/s   sklearn / repo = {rate / repo:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--text", choices=("simshop", "synthetic", "both"), default="both")
    parser.add_argument("--vocab", type=int, default=200_000, help="synthetic vocabulary size")
    parser.add_argument("--buckets", type=int, default=200_000, help="data.features.hashed_buckets")
    parser.add_argument("--max-length", type=int, default=64, help="data.features.hashed_max_grams")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        sides = sklearn_sides(args.buckets, args.max_length)
    except ImportError:
        print("scikit-learn is not installed (pip install -e '.[dev]'): measuring the repository's hashing only",
              file=sys.stderr)
        sides = None
    if args.text in ("simshop", "both"):
        measure("simshop-like titles", simshop_titles(args.items, args.seed), args, sides)
    if args.text in ("synthetic", "both"):
        measure(f"synthetic titles (Zipf over {args.vocab:,} words)",
                synthetic_titles(args.items, args.seed, args.vocab), args, sides)


if __name__ == "__main__":
    main()
