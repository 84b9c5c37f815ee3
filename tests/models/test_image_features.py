"""Frozen image features (models/image_features.py): the tiny open_clip towers (built without weights), the
preprocessing, what the cache key depends on, the brief catalogue pre-training and the linear probe.

(The cache's hit / miss behaviour end to end is exercised in test_mrse.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval_zoo.models import image_features
from retrieval_zoo.models.image_features import (
    TINY_CONFIGS,
    ImageEncoderSpec,
    build_clip,
    cache_key,
    cached_image_features,
    content_hash,
    encode_images,
    linear_probe_accuracy,
    model_config,
    preprocess,
)


@pytest.fixture(scope="module")
def clip():
    return build_clip(ImageEncoderSpec(seed=0))


def images(n: int = 6, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# -- towers ---------------------------------------------------------------------------------------------------
def test_tiny_configs_are_registered_with_open_clip():
    assert model_config("simshop-vit-tiny") == TINY_CONFIGS["simshop-vit-tiny"]
    assert model_config("simshop-rn-tiny")["vision_cfg"]["layers"] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown open_clip model 'no-such-tower'.*simshop-vit-tiny"):
        model_config("no-such-tower")


def test_a_random_tower_depends_on_its_seed_only_and_leaves_the_global_rng_alone(clip):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    same = build_clip(ImageEncoderSpec(seed=0))
    assert torch.equal(torch.rand(3), expected_next)  # fork_rng: the caller's random stream is unchanged
    other = build_clip(ImageEncoderSpec(seed=1))
    first = dict(clip.visual.named_parameters())
    assert all(torch.equal(p, first[name]) for name, p in same.visual.named_parameters())
    assert any(not torch.equal(p, first[name]) for name, p in other.visual.named_parameters())


def test_a_missing_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_clip(ImageEncoderSpec(checkpoint=str(tmp_path / "nothing.pt")))


# -- preprocessing and extraction ----------------------------------------------------------------------------
def test_preprocess_normalises_as_clip_and_resizes():
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    white = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = preprocess(white, 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    for channel in range(3):
        expected = (1.0 - OPENAI_DATASET_MEAN[channel]) / OPENAI_DATASET_STD[channel]
        assert torch.allclose(x[:, channel], torch.tensor(expected), atol=1e-6)
    resized = preprocess(torch.full((1, 3, 16, 16), 255, dtype=torch.uint8), 32)
    assert resized.shape == (1, 3, 32, 32)
    torch.testing.assert_close(resized, x[:1])  # a flat picture stays flat; bicubic overshoot is clamped


def test_token_stats_append_the_patch_token_mean_and_std(clip):
    pictures = images()
    pooled = encode_images(clip.visual, pictures, batch_size=4)
    with_stats = encode_images(clip.visual, pictures, batch_size=4, token_stats=True)
    width = TINY_CONFIGS["simshop-vit-tiny"]["vision_cfg"]["width"]
    assert pooled.dtype == np.float32 and pooled.shape == (6, 128)
    assert with_stats.shape == (6, 128 + 2 * width)
    np.testing.assert_allclose(with_stats[:, :128], pooled, atol=1e-5)
    assert clip.visual.output_tokens is False  # switched back after the pass


def test_extraction_does_not_depend_on_the_batch_size(clip):
    pictures = images(n=5)
    np.testing.assert_allclose(encode_images(clip.visual, pictures, 2, True),
                               encode_images(clip.visual, pictures, 5, True), atol=1e-5)


# -- the cache key --------------------------------------------------------------------------------------------
def test_content_hash_sees_values_shape_and_dtype():
    a = np.arange(6, dtype=np.uint8)
    assert content_hash(a) == content_hash(torch.arange(6, dtype=torch.uint8))  # numpy or torch: same bytes
    assert content_hash(a) != content_hash(a.reshape(2, 3))
    assert content_hash(a) != content_hash(a.astype(np.int64))
    b = a.copy()
    b[5] = 7
    assert content_hash(a) != content_hash(b)
    assert content_hash(a, b) != content_hash(b, a)


def test_cache_key_names_what_the_features_depend_on(tmp_path):
    pictures, titles = images(), torch.tensor([[1, 2], [3, 0], [4, 5], [6, 0], [7, 8], [9, 0]])
    spec = ImageEncoderSpec(seed=3)
    key = cache_key(spec, pictures, titles)
    name, weights, recipe, data = key.split("__")
    assert (name, weights) == ("simshop-vit-tiny", "random-init-seed3")
    assert len(recipe) == 10 and data == content_hash(pictures)[:16]
    assert cache_key(spec, pictures, titles + 1) == key  # no pre-training: the titles play no part
    assert cache_key(ImageEncoderSpec(seed=3, token_stats=False), pictures).split("__")[2] != recipe
    assert cache_key(ImageEncoderSpec(seed=3, batch_size=7), pictures) == key  # batching changes nothing

    trained = ImageEncoderSpec(seed=3, pretrain_epochs=2)
    trained_key = cache_key(trained, pictures, titles)
    assert trained_key.split("__")[1] == "random-init-seed3-clip2ep"
    assert cache_key(trained, pictures, titles + 1) != trained_key  # now the titles are training data
    assert cache_key(ImageEncoderSpec(seed=3, pretrain_epochs=2, pretrain_lr=1e-2), pictures, titles) != trained_key

    checkpoint = tmp_path / "tower.pt"
    checkpoint.write_bytes(b"weights")
    with_checkpoint = cache_key(ImageEncoderSpec(checkpoint=str(checkpoint), pretrain_epochs=2), pictures, titles)
    assert with_checkpoint.split("__")[1] == image_features.checkpoint_hash(str(checkpoint))[:16]  # no -clip


def test_pre_training_needs_title_tokens(tmp_path):
    with pytest.raises(ValueError, match="title tokens"):
        cached_image_features(images(), ImageEncoderSpec(pretrain_epochs=1), root=tmp_path)


def test_brief_pre_training_moves_the_tower_and_is_cached_under_its_own_key(tmp_path):
    pictures = images(n=8)
    titles = torch.tensor([[1 + i % 4, 5] for i in range(8)])
    spec = ImageEncoderSpec(seed=0, pretrain_epochs=1, pretrain_batch_size=4, token_stats=False)
    trained, stats = cached_image_features(pictures, spec, titles, root=tmp_path)
    frozen, _ = cached_image_features(pictures, ImageEncoderSpec(seed=0, token_stats=False), root=tmp_path)
    assert not stats.cache_hit and stats.path.parent == tmp_path and "-clip1ep" in stats.path.name
    assert trained.shape == frozen.shape == (8, 128) and not np.allclose(trained, frozen, atol=1e-4)
    again, stats = cached_image_features(pictures, spec, titles, root=tmp_path)
    assert stats.cache_hit
    np.testing.assert_array_equal(again, trained)


class Interrupted(KeyboardInterrupt):
    """What Ctrl-C raises, at a chosen chunk."""


def test_an_interrupted_extraction_resumes_and_gives_the_vectors_of_an_uninterrupted_one(tmp_path, monkeypatch):
    from retrieval_zoo.data import feature_cache

    monkeypatch.setattr(feature_cache, "CHUNK_ROWS", 8)  # 20 images in batches of 4: chunks of 8, 8 and 4
    pictures, spec = images(n=20), ImageEncoderSpec(seed=0, batch_size=4)
    whole, _ = cached_image_features(pictures, spec, root=tmp_path / "whole")
    original, calls = image_features.encode_images, []

    def encode_then_stop(visual, chunk, *args):
        if len(calls) == 2:
            raise Interrupted
        calls.append(len(chunk))
        return original(visual, chunk, *args)

    monkeypatch.setattr(image_features, "encode_images", encode_then_stop)
    with pytest.raises(Interrupted):
        cached_image_features(pictures, spec, root=tmp_path / "resumed")
    monkeypatch.setattr(image_features, "encode_images", original)
    resumed, stats = cached_image_features(pictures, spec, root=tmp_path / "resumed")
    assert calls == [8, 8] and not stats.cache_hit  # the third chunk was encoded by the second call
    np.testing.assert_array_equal(resumed, whole)
    assert cached_image_features(pictures, spec, root=tmp_path / "resumed")[1].cache_hit


def test_an_entry_of_the_one_matrix_layout_is_still_read(tmp_path, monkeypatch):
    import json

    pictures, spec = images(n=4), ImageEncoderSpec(seed=0)
    folder = tmp_path / image_features.cache_key(spec, pictures)
    folder.mkdir()
    np.save(folder / "features.npy", np.arange(8, dtype=np.float32).reshape(4, 2))
    (folder / "meta.json").write_text(json.dumps({"images_per_s": 12.5}))
    monkeypatch.setattr(image_features, "encode_images", lambda *args: 1 / 0)
    features, stats = cached_image_features(pictures, spec, root=tmp_path)
    assert stats.cache_hit and stats.images_per_s == 12.5 and features.tolist()[3] == [6.0, 7.0]


# -- the linear probe -----------------------------------------------------------------------------------------
def test_linear_probe_on_separable_and_uninformative_features():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 4
    separable = np.eye(4)[labels] * 5 + rng.normal(0, 0.1, (200, 4))
    assert linear_probe_accuracy(separable, labels) == 1.0
    assert linear_probe_accuracy(separable, labels.astype(str).tolist()) == 1.0  # any label type
    noise = rng.normal(size=(200, 4))
    assert linear_probe_accuracy(noise, labels) < 0.5
    assert linear_probe_accuracy(noise, labels, seed=1) == linear_probe_accuracy(noise, labels, seed=1)
