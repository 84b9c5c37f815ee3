from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval_zoo.index import (
    build_index,
    chosen_factory,
    exact_search,
    flat_index_bytes,
    index_and_search,
    search,
    serialized_bytes,
)


def test_flat_index_is_exact_inner_product_search():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    result = index_and_search(items, queries, k=10)
    expected = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    np.testing.assert_array_equal(result.indices, expected)
    np.testing.assert_allclose(result.scores, np.take_along_axis(queries @ items.T, expected, 1), rtol=1e-5)
    assert result.index_bytes > 500 * 16 * 4 - 1


def test_k_larger_than_catalogue_is_clipped():
    items = np.eye(4, dtype=np.float32)
    scores, indices = search(build_index(items), items, k=10)
    assert indices.shape == (4, 4)


def test_ivf_and_hnsw_find_most_exact_neighbours():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(4000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    exact = np.argmax(queries @ items.T, axis=1)
    for factory in ("IVF16,Flat", "HNSW16"):
        result = index_and_search(items, queries, k=1, factory=factory, nprobe=8)
        assert (result.indices[:, 0] == exact).mean() > 0.9, factory


def test_ivf_with_too_few_training_vectors_says_what_to_do():
    items = np.random.default_rng(2).normal(size=(100, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="index.factory=Flat"):
        build_index(items, "IVF256,Flat")


def test_unknown_factory_is_a_clear_error():
    with pytest.raises(ValueError, match="faiss cannot build index 'Bogus42'"):
        build_index(np.eye(4, dtype=np.float32), "Bogus42")


def test_an_approximate_index_is_chosen_above_the_configured_catalogue_size():
    section = {"factory": "Flat", "approximate_above": 1000, "approximate_factory": "HNSW32"}
    assert chosen_factory(section, 1000) == "Flat" and chosen_factory(section, 1001) == "HNSW32"
    assert chosen_factory({**section, "approximate_above": None}, 10**9) == "Flat"  # null: always exact
    assert chosen_factory({"factory": "Flat"}, 10**9) == "Flat"  # configs from before the keys


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_the_reported_index_size_is_what_faiss_serialises(factory):
    vectors = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    index = build_index(vectors, factory)
    assert serialized_bytes(index) == faiss.serialize_index(index).nbytes > 500 * 16 * 4


def test_exact_search_returns_what_a_flat_index_returns_bit_for_bit():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(700, 24)).astype(np.float32)
    items[350:360] = items[0]  # ties: the same vector under ten other ids
    queries = np.concatenate([rng.normal(size=(37, 24)).astype(np.float32), items[:5]])
    # 42 queries in batches of 16 (16, 16, 10: under faiss's BLAS threshold of 20 queries) and in one batch (BLAS)
    for batch_size in (16, 4096):
        found = exact_search(items, queries, k=50, batch_size=batch_size)
        expected = search(build_index(items, "Flat"), queries, k=50, batch_size=batch_size)
        np.testing.assert_array_equal(found[0], expected[0])
        np.testing.assert_array_equal(found[1], expected[1])
    result = index_and_search(items, queries, k=50)
    assert result.factory == "Flat" and result.build_seconds == 0.0  # no index built: the array is searched


def test_exact_search_clips_k_to_the_catalogue():
    scores, indices = exact_search(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32), k=10)
    assert indices.shape == (4, 4) and set(indices[0]) == {0, 1, 2, 3}


@pytest.mark.parametrize("n_items, dim", [(0, 8), (1, 3), (500, 16)])
def test_the_flat_size_reported_without_an_index_is_what_faiss_would_serialise(n_items, dim):
    vectors = np.random.default_rng(0).standard_normal((n_items, dim)).astype(np.float32)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    assert flat_index_bytes(n_items, dim) == faiss.serialize_index(index).nbytes
