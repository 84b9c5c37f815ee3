"""The sentence-feature cache (issue 21, part 3): built in chunks, resumed after an interrupt with identical
vectors, checked for staleness, float16 storage upcast per batch, entries of the old one-file layout still read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retrieval_zoo.data import feature_cache, text
from retrieval_zoo.data.features import FeatureTable

TEXTS = [f"product {i} {'red ' * (i % 5)}shoe size {i % 13}" for i in range(300)]


class Interrupted(KeyboardInterrupt):
    """What Ctrl-C raises, at a chosen chunk."""


@pytest.fixture
def small_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(feature_cache, "CHUNK_ROWS", 64)  # 300 texts: 5 chunks
    return tmp_path / "cache" / "sentence_features"


def count_encoded(monkeypatch, encoder: str, stop_after: int | None = None) -> list[int]:
    """Wrap the encoder's ``encode`` to count texts per call; raise ``Interrupted`` once ``stop_after`` calls
    have been answered."""
    model = text.sentence_transformer(encoder)
    original = model.encode
    calls: list[int] = []

    def encode(texts, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise Interrupted
        calls.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(model, "encode", encode)
    return calls


def test_an_interrupted_build_resumes_where_it_stopped_and_gives_identical_vectors(
        tiny_encoder, small_chunks, monkeypatch, capsys):
    encoder = str(tiny_encoder)
    calls = count_encoded(monkeypatch, encoder, stop_after=3)
    with pytest.raises(Interrupted):
        text.sentence_features(TEXTS, encoder=encoder)
    (entry,) = small_chunks.iterdir()
    assert len(list((entry / "chunks").glob("*.npy"))) == 3 and not (entry / "features.npy").exists()
    assert calls == [64, 64, 64]

    monkeypatch.undo()  # a fresh process: the real encode, nothing patched but the cache place and chunk size
    monkeypatch.setattr(text, "cache_dir", lambda: small_chunks.parent)
    monkeypatch.setattr(feature_cache, "CHUNK_ROWS", 64)
    resumed_calls = count_encoded(monkeypatch, encoder)
    resumed = text.sentence_features(TEXTS, encoder=encoder)
    assert resumed_calls == [64, 44]  # only the two chunks the interrupt left
    assert not (entry / "chunks").exists() and json.loads((entry / "manifest.json").read_text())["complete"]

    # an uninterrupted build in another cache (the same chunks: a batch's padding moves the last float bit)
    monkeypatch.setattr(text, "cache_dir", lambda: small_chunks.parent / "uninterrupted")
    np.testing.assert_array_equal(resumed, text.sentence_features(TEXTS, encoder=encoder))


def test_a_second_call_reads_the_cache_and_says_so(small_chunks, monkeypatch, capsys):
    monkeypatch.setattr(feature_cache, "ANNOUNCE_ROWS", 100)
    encode_calls = []

    def encode(rows):
        encode_calls.append(len(rows))
        return np.ones((len(rows), 4), dtype=np.float32) * np.asarray(rows, dtype=np.float32)[:, None]

    folder = small_chunks / "entry"
    first = feature_cache.cached_features(folder, 300, "enc", encode, progress=False)
    second = feature_cache.cached_features(folder, 300, "enc", encode, progress=False)
    assert encode_calls == [64, 64, 64, 64, 44]
    np.testing.assert_array_equal(first, second)
    assert second[299, 0] == 299.0 and isinstance(second, np.memmap)
    assert "300 rows read from the cache" in capsys.readouterr().out


def test_writes_to_the_returned_matrix_never_reach_the_file(small_chunks):
    folder = small_chunks / "entry"
    features = feature_cache.cached_features(folder, 10, "enc", lambda rows: np.ones((len(rows), 3)))
    features[0, 0] = 5.0
    assert feature_cache.cached_features(folder, 10, "enc", lambda rows: 1 / 0)[0, 0] == 1.0


@pytest.mark.parametrize("damage", ["truncated", "other_rows"])
def test_a_stale_or_damaged_entry_is_said_and_rebuilt(small_chunks, capsys, damage):
    folder = small_chunks / "entry"
    feature_cache.cached_features(folder, 100, "enc", lambda rows: np.zeros((len(rows), 3)))
    if damage == "truncated":
        path = folder / "features.npy"
        path.write_bytes(path.read_bytes()[:200])
    else:  # a manifest for another request (e.g. written by another version)
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "rows": 99}))
    rebuilt = feature_cache.cached_features(folder, 100, "enc", lambda rows: np.full((len(rows), 3), 2.0))
    assert rebuilt.shape == (100, 3) and float(rebuilt[50, 1]) == 2.0
    assert "is stale" in capsys.readouterr().out


def test_float16_storage_is_upcast_when_a_batch_is_gathered(tiny_encoder, small_chunks):
    encoder = str(tiny_encoder)
    full = text.sentence_features(TEXTS, encoder=encoder)
    half = text.sentence_features(TEXTS, encoder=encoder, dtype="float16")
    assert full.dtype == np.float32 and half.dtype == np.float16
    assert len(list(small_chunks.glob("*/features.npy"))) == 2  # two entries: a dtype never reads the other's
    np.testing.assert_allclose(half.astype(np.float32), full, atol=2e-3)
    table = FeatureTable()
    table.add("item_sentence", half)
    batch = table.gather(torch.tensor([0, 5]))["item_sentence"]
    assert batch.dtype == torch.float32
    np.testing.assert_array_equal(batch.numpy(), half[[0, 5]].astype(np.float32))


def test_an_unknown_dtype_is_one_line(small_chunks):
    with pytest.raises(ValueError, match="must be one of float32, float16"):
        feature_cache.cached_features(small_chunks / "x", 3, "enc", lambda rows: None, dtype="bfloat16")


def test_an_entry_of_the_one_file_layout_is_still_read(small_chunks):
    small_chunks.mkdir(parents=True)
    np.save(small_chunks / "abc.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    features = feature_cache.cached_features(small_chunks / "abc", 3, "enc", lambda rows: 1 / 0)
    assert features.tolist() == [[0, 1], [2, 3], [4, 5]]


def test_a_catalogue_within_one_chunk_gets_exactly_one_encode_calls_vectors(tiny_encoder, tmp_path, monkeypatch):
    # the encoder sorts a call's texts by length into batches: chunk bounds inside a catalogue would move bits,
    # and the vectors every board row was made with came from one call over the whole text list (at 256 texts
    # per batch before 2026-12-06: within 1.6e-7 of today's text.SENTENCE_BATCH, tests/test_encode_batch.py)
    monkeypatch.setattr(text, "cache_dir", lambda: tmp_path)
    encoder = str(tiny_encoder)
    one_call = text.sentence_transformer(encoder).encode(TEXTS, batch_size=text.SENTENCE_BATCH,
                                                         convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_array_equal(text.sentence_features(TEXTS, encoder=encoder), one_call.astype(np.float32))


def test_a_read_only_lookup_never_encodes_nor_starts_an_entry(tiny_encoder, small_chunks, monkeypatch):
    encoder = str(tiny_encoder)
    calls = count_encoded(monkeypatch, encoder)
    assert text.cached_sentence_features(TEXTS, encoder=encoder) is None
    assert calls == [] and not small_chunks.exists()  # no folder, no manifest a later build would have to judge
    built = text.sentence_features(TEXTS, encoder=encoder)
    np.testing.assert_array_equal(text.cached_sentence_features(TEXTS, encoder=encoder), built)
    assert text.cached_sentence_features(TEXTS, encoder=encoder, dtype="float16") is None  # another entry


def test_caching_a_variants_features_ahead_lets_its_run_start_from_the_cache(
        tiny_encoder, small_chunks, monkeypatch, label_dataset):
    """``data --features light_two_tower/pretrained`` (runner.cache_sentence_features) encodes exactly what that
    run's inputs read: the run's data module then encodes nothing."""
    from retrieval_zoo.data.datamodule import RetrievalDataModule
    from retrieval_zoo.models.registry import build_model, load_config
    from retrieval_zoo.runner import cache_sentence_features, data_settings

    overrides = [f"model.encoder={tiny_encoder}"]
    said = cache_sentence_features("light_two_tower", label_dataset, "pretrained", overrides)
    assert f"item sentence features ({label_dataset.products.height}, " in said and "query sentence" in said
    assert "nothing to cache" in cache_sentence_features("bm25", label_dataset)

    calls = count_encoded(monkeypatch, str(tiny_encoder))
    config = load_config("light_two_tower", "pretrained", overrides)
    module = build_model(config)
    datamodule = RetrievalDataModule(label_dataset, set(module.required_fields),
                                     data_settings(config["data"], str(tiny_encoder)))
    datamodule.setup()
    assert calls == [] and datamodule.catalog.tensors["item_sentence"].shape[0] == label_dataset.products.height
