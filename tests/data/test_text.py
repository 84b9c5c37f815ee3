"""Text inputs (data/text.py): WordPiece ids from the packaged MiniLM tokenizer, DSSM letter-n-gram hashing, and
the content-keyed cache of frozen sentence features (with a stand-in encoder: no model is loaded here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from retrieval_zoo.data import text


def bucket(gram: str, n_buckets: int) -> int:
    """The documented hashing, written out independently: blake2b-64 (little endian), ids 1 .. n_buckets - 1."""
    return 1 + int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little") % (n_buckets - 1)


# -- the pretrained tokenizer -------------------------------------------------------------------------------
def test_packaged_model_has_a_tokenizer_and_the_bert_vocabulary():
    assert (Path(text.pretrained_model_path()) / "tokenizer.json").is_file()
    assert text.vocab_size() == 30522
    assert text.PAD_ID == 0 and text.pretrained_dim() == 384


def test_tokenize_pads_right_truncates_and_adds_no_special_tokens():
    ids = text.tokenize(["red shoe", "Wireless Headphones with a very long name"], 4)
    assert ids.dtype == np.int32 and ids.shape == (2, 4)
    red_shoe = text.wordpiece_tokenizer().encode("red shoe", add_special_tokens=False).ids
    assert len(red_shoe) == 2
    assert ids[0].tolist() == red_shoe + [text.PAD_ID, text.PAD_ID]
    assert (ids[1] != text.PAD_ID).all()  # long text: cut at max_length, no padding
    assert not np.isin(ids, [101, 102]).any()  # no [CLS] / [SEP]
    # lower-cased vocabulary: case does not change the ids
    assert text.tokenize(["RED SHOE"], 4).tolist() == text.tokenize(["red shoe"], 4).tolist()


def test_tokenize_empty_text_is_all_padding():
    assert text.tokenize([""], 3).tolist() == [[0, 0, 0]]


# -- hashed letter n-grams ----------------------------------------------------------------------------------
def test_hashed_ngrams_by_hand():
    ids = text.hashed_ngrams(["Red shoe"], n_buckets=1000, max_length=12)
    grams = ["w:red", "#re", "red", "ed#", "w:shoe", "#sh", "sho", "hoe", "oe#"]
    assert ids.dtype == np.int64 and ids.shape == (1, 12)
    assert ids[0].tolist() == [bucket(g, 1000) for g in grams] + [0, 0, 0]


def test_hashed_ngrams_short_word_truncation_and_range():
    # a one-letter word has one trigram: '#a#'
    assert text.hashed_ngrams(["a"], 50, 4)[0].tolist() == [bucket("w:a", 50), bucket("#a#", 50), 0, 0]
    ids = text.hashed_ngrams(["the quick brown fox jumps"], 7, 5)
    assert (ids >= 1).all() and (ids <= 6).all()  # 0 stays padding; every slot filled (truncated at 5)
    assert text.hashed_ngrams([""], 7, 3).tolist() == [[0, 0, 0]]


def test_hashed_ngrams_are_case_insensitive_and_shared_between_texts():
    a, b = text.hashed_ngrams(["Shoe", "red shoe"], 100_000, 10)
    assert a[:5].tolist() == b[4:9].tolist()  # 'shoe' gives the same five ids wherever it appears


# -- cached sentence features -------------------------------------------------------------------------------
class FakeEncoder:
    """Stands in for the SentenceTransformer: one 384-d vector per text (its length in column 0); counts calls."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        assert kwargs["normalize_embeddings"] is True
        out = np.zeros((len(texts), text.pretrained_dim()), dtype=np.float64)
        out[:, 0] = [len(t) for t in texts]
        return out


@pytest.fixture
def fake_encoder(tmp_path, monkeypatch):
    encoder = FakeEncoder()
    monkeypatch.setattr(text, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(text, "sentence_transformer", lambda *args, **kwargs: encoder)
    return encoder


def test_sentence_features_are_cached_by_content(fake_encoder, tmp_path):
    first = text.sentence_features(["red shoe", "mug"])
    assert first.dtype == np.float32 and first.shape == (2, 384)
    assert first[:, 0].tolist() == [8.0, 3.0]
    again = text.sentence_features(["red shoe", "mug"])
    assert len(fake_encoder.calls) == 1  # the second call read the cache
    np.testing.assert_array_equal(first, again)
    cached = list((tmp_path / "sentence_features").glob("*/features.npy"))
    assert len(cached) == 1 and not list((tmp_path / "sentence_features").rglob("*.tmp*"))
    assert not (cached[0].parent / "chunks").exists()  # joined and cleaned up


def test_changed_or_reordered_texts_miss_the_cache(fake_encoder):
    text.sentence_features(["red shoe", "mug"])
    text.sentence_features(["mug", "red shoe"])
    # the separator keeps ["ab", "c"] and ["a", "bc"] apart
    text.sentence_features(["ab", "c"])
    text.sentence_features(["a", "bc"])
    assert len(fake_encoder.calls) == 4


# -- hashed text units shared with MGDSPR -------------------------------------------------------------------
def test_words_and_letter_ngrams():
    assert text.words_of("USB-C cable, 2m!") == ["usb", "c", "cable", "2m"]  # punctuation splits words
    assert text.letter_ngrams("ab", 3) == ["#ab", "ab#"]
    assert text.letter_ngrams("a", 5) == ["#a#"]  # too short for one n-gram: one gram
    assert text.char_ngrams_of("Hi, yo", 2) == ["#h", "hi", "i#", "#y", "yo", "o#"]


def test_unit_hasher_by_hand_salted_and_padded():
    plain, salted = text.UnitHasher(97), text.UnitHasher(97, salt="word:")
    assert plain("shoe") == bucket("shoe", 97)
    assert salted("shoe") == bucket("word:shoe", 97)
    ids = plain.encode([["a", "b", "c"], []], max_length=2)
    assert ids.dtype == np.int64 and ids.tolist() == [[bucket("a", 97), bucket("b", 97)], [0, 0]]


# -- any encoder (issue 22, part 3) --------------------------------------------------------------------------
def test_two_encoders_never_share_cached_vectors(tiny_encoder, save_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(text, "cache_dir", lambda: tmp_path / "cache")
    other = save_encoder(tmp_path / "other", seed=1)  # same architecture and vocabulary, other weights
    keys = {text.encoder_identity(e) for e in (text.DEFAULT_ENCODER, str(tiny_encoder), str(other))}
    assert len(keys) == 3 and text.PRETRAINED_NAME in keys  # the default keeps its old key: old caches stay valid
    first = text.sentence_features(["red shoe", "mug"], encoder=str(tiny_encoder))
    second = text.sentence_features(["red shoe", "mug"], encoder=str(other))
    assert first.shape == second.shape == (2, 48) and not np.allclose(first, second)
    assert len(list((tmp_path / "cache" / "sentence_features").glob("*/features.npy"))) == 2
    np.testing.assert_array_equal(text.sentence_features(["red shoe", "mug"], encoder=str(tiny_encoder)), first)


def test_an_encoder_that_is_nowhere_offline_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(text.EncoderError) as error:
        text.resolve_encoder("no-such-org/no-such-model")
    message = str(error.value)
    assert "\n" not in message and message.startswith("model.encoder='no-such-org/no-such-model'")
    assert "local folder" in message and "Hugging Face cache" in message
    assert text.resolve_encoder(str(tmp_path)) == str(tmp_path.resolve())  # a folder is taken as it is


def test_the_active_encoder_keys_its_own_cache_whatever_was_asked_before(tiny_encoder):
    assert text.encoder_identity() == text.PRETRAINED_NAME  # outside any build: the packaged default
    with text.using_encoder(str(tiny_encoder)):
        assert text.encoder_identity() == text.encoder_identity(str(tiny_encoder)) != text.PRETRAINED_NAME
    assert text.encoder_identity() == text.PRETRAINED_NAME


def test_hashing_takes_one_text_at_a_time_and_stops_at_the_budget():
    # a 1.2M-product catalogue's unit lists (hundreds of strings per product) must never exist at once
    def units_of(text_):
        for position, word in enumerate(text_.split()):
            if position == 3:
                raise AssertionError("a unit past the budget was made")
            yield word

    ids = text.UnitHasher(97).encode_texts(["a b c d e", "x"], units_of, max_length=3)
    assert ids.shape == (2, 3) and ids[1, 1:].tolist() == [0, 0]
    assert text.hashed_ngrams(["Red shoe"] * 3, 1000, 4).tolist() == [text.hashed_ngrams(["Red shoe"], 1000, 4)[0].tolist()] * 3


def test_tokenizing_in_bounded_calls_gives_the_ids_of_one_call(monkeypatch):
    texts = [f"usb c cable {i} metres" for i in range(50)]
    whole = text.tokenize(texts, 8)
    monkeypatch.setattr(text, "TOKENIZE_CHUNK", 7)
    assert (text.tokenize(texts, 8) == whole).all()


def test_word_memoised_hashing_gives_the_ids_of_hashing_every_unit():
    """``encode_words`` (what hashed_ngrams uses) equals ``encode_texts`` over the flattened units, whatever the
    truncation point, repeated words, empty texts or a memo cleared mid-catalogue."""
    def units_of_word(word):
        return ["w:" + word, *text.letter_ngrams(word, 3)]

    def flat_units(text_):
        return (unit for word in text_.lower().split() for unit in units_of_word(word))

    texts = ["Red shoe red SHOE", "", "a bb ccc dddd", "trail running shoe waterproof trail", "x " * 40]
    for max_length in (1, 4, 5, 9, 64):
        for cached in (1_000_000, 2):
            expected = text.UnitHasher(997).encode_texts(texts, flat_units, max_length)
            got = text.UnitHasher(997).encode_words(texts, units_of_word, max_length, max_cached_words=cached)
            assert got.tolist() == expected.tolist(), (max_length, cached)
