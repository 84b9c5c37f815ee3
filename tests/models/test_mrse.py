"""MRSE: the image-feature cache, the expert gate, and end-to-end runs with images, without, and precomputed."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from retrieval_zoo import run_benchmark
from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.models import image_features
from retrieval_zoo.models.image_features import ImageEncoderSpec, cached_image_features, linear_probe_accuracy
from retrieval_zoo.models.mrse import EXPERTS, MRSE, MRSEConfig

FAST = {"trainer": {"max_steps": 3}, "data": {"batch_size": 64, "n_random_negatives": 16}}


@pytest.fixture(autouse=True)
def isolated_feature_cache(tmp_path, monkeypatch):
    """Each test extracts image features into its own folder (and never reads a developer's cache)."""
    monkeypatch.setattr(image_features, "cache_dir", lambda: tmp_path / "cache")


def coloured_images(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Flat pictures of 4 colours with pixel noise, uint8 [n, 3, 32, 32], and their colour labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]])
    pixels = palette[labels][:, :, None, None] + rng.normal(0, 12, (n, 3, 32, 32))
    return torch.as_tensor(np.clip(pixels, 0, 255).astype(np.uint8)), labels


def count_encoder_runs(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = image_features.encode_images

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(image_features, "encode_images", counting)
    return calls


# -- the feature cache ------------------------------------------------------------------------------------
def test_cache_hit_miss_and_invalidation(tmp_path, monkeypatch):
    calls = count_encoder_runs(monkeypatch)
    images, labels = coloured_images()
    spec = ImageEncoderSpec(seed=0)
    first, stats = cached_image_features(images, spec)
    assert not stats.cache_hit and stats.images_per_s > 0 and len(calls) == 1
    assert first.shape[0] == len(images) and stats.cache_mb > 0
    assert stats.path.name.startswith("simshop-vit-tiny__random-init-seed0__")

    again, stats = cached_image_features(images, spec)  # hit: the encoder does not run
    assert stats.cache_hit and len(calls) == 1
    np.testing.assert_array_equal(first, again)

    other_seed, stats = cached_image_features(images, ImageEncoderSpec(seed=1))  # another encoder: miss
    assert not stats.cache_hit and len(calls) == 2 and not np.allclose(first, other_seed)
    _, stats = cached_image_features(images[:-1], spec)  # other images: miss
    assert not stats.cache_hit and len(calls) == 3
    _, stats = cached_image_features(images, ImageEncoderSpec(name="simshop-rn-tiny"))  # other config: miss
    assert not stats.cache_hit and len(calls) == 4

    # a checkpoint on disk: keyed by its content, so overwriting it invalidates the cache
    checkpoint = tmp_path / "tower.pt"
    torch.save(image_features.build_clip(ImageEncoderSpec(seed=5)).state_dict(), checkpoint)
    with_checkpoint = ImageEncoderSpec(checkpoint=str(checkpoint))
    _, stats = cached_image_features(images, with_checkpoint)
    assert not stats.cache_hit and "random-init" not in stats.path.name and len(calls) == 5
    _, stats = cached_image_features(images, with_checkpoint)
    assert stats.cache_hit and len(calls) == 5
    torch.save(image_features.build_clip(ImageEncoderSpec(seed=6)).state_dict(), checkpoint)
    _, stats = cached_image_features(images, with_checkpoint)
    assert not stats.cache_hit and len(calls) == 6


def test_frozen_random_tower_features_carry_colour():
    images, labels = coloured_images(n=80)
    features, _ = cached_image_features(images, ImageEncoderSpec())
    assert linear_probe_accuracy(features, labels) > 0.9
    assert linear_probe_accuracy(np.random.default_rng(0).normal(size=features.shape), labels) < 0.6


# -- the gate ---------------------------------------------------------------------------------------------
def test_gate_weights_sum_to_one_and_skip_missing_experts(label_dataset):
    model = MRSE(MRSEConfig(n_buckets=1000))
    fields = model.required_fields  # a text-only dataset: no images, no users
    datamodule = RetrievalDataModule(label_dataset, fields)
    datamodule.setup()
    model.prepare(datamodule)
    items = datamodule.catalog.gather(torch.arange(10))
    queries = datamodule.units.gather(torch.arange(10))
    for weights in (model.expert_weights(items, "item"), model.expert_weights(queries, "query")):
        assert weights.shape == (10, len(EXPERTS))
        torch.testing.assert_close(weights.sum(1), torch.ones(10))
        assert (weights[:, EXPERTS.index("vbert")] == 0).all()  # no images: VBert is skipped
    features = torch.randn(len(datamodule.catalog), 16)
    datamodule.catalog.add("item_image_features", features)
    model.prepare(datamodule)
    weights = model.expert_weights(datamodule.catalog.gather(torch.arange(10)), "item")
    torch.testing.assert_close(weights.sum(1), torch.ones(10))
    assert (weights > 0).all()


def test_experts_handle_an_empty_text():
    from retrieval_zoo.models.mrse import Experts

    experts = Experts(width=16, heads=2, vbert_layers=1, lightbert_layers=2, n_buckets=100, pretrained_tokens=False)
    tokens, hashed = torch.tensor([[5, 6, 0], [0, 0, 0]]), torch.tensor([[3, 4], [0, 0]])
    for visual in (torch.randn(2, 16), None):
        outputs = experts(tokens, hashed, visual)
        assert outputs.shape == (2, 3, 16) and torch.isfinite(outputs).all()


# -- the user profile -------------------------------------------------------------------------------------
def test_profile_null_slot_lets_attention_choose_nothing():
    from retrieval_zoo.models.mrse import UserProfile

    torch.manual_seed(0)
    items, anchor = torch.randn(3, 4, 8), torch.randn(3, 8)
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])
    plain, null = UserProfile(8, 4, "attention"), UserProfile(8, 4, "attention", null_slot=True)
    null.load_state_dict(plain.state_dict())
    # padding is never attended: changing a padded item changes nothing
    moved = items.clone()
    moved[0, 2:] += 100.0
    torch.testing.assert_close(null(moved, mask, anchor), null(items, mask, anchor))
    # an empty history gives the zero vector either way
    assert (plain(items, mask, anchor)[1] == 0).all() and (null(items, mask, anchor)[1] == 0).all()
    # with the null slot the pooled vector is the plain one shrunk by the share the null slot takes:
    # softmax over [0, s_1..s_n] puts 1 / (1 + sum exp s) on "nothing"
    scores = (null.key(items) @ null.query(anchor).unsqueeze(-1)).squeeze(-1) / math.sqrt(8)
    kept = 1 - 1 / (1 + scores.exp().masked_fill(~mask, 0).sum(1))
    torch.testing.assert_close(null(items, mask, anchor), kept[:, None] * plain(items, mask, anchor))


def test_profile_can_be_kept_out_of_the_gate():
    from retrieval_zoo.models.mrse import GatedFusion

    torch.manual_seed(0)
    fusion = GatedFusion(3, 8, 16, "gate", 1.0)
    outputs, available = torch.randn(2, 3, 8), torch.tensor([True, True, True])
    profile = torch.randn(2, 8)
    torch.nn.init.normal_(fusion.context.weight)  # the model zero-initialises it; any weights will do here
    with_profile = fusion(outputs, available, profile)[1]
    kept_out = fusion(outputs, available, profile, gate_context=torch.zeros_like(profile))[1]
    no_profile = fusion(outputs, available, torch.zeros_like(profile))[1]
    torch.testing.assert_close(kept_out, no_profile)  # the gate ignores the profile
    assert not torch.allclose(with_profile, no_profile)
    # while the profile still moves the vector through the additive path
    moved = fusion(outputs, available, profile, gate_context=torch.zeros_like(profile))[0]
    assert not torch.allclose(moved, fusion(outputs, available, torch.zeros_like(profile))[0])


def tiny_text_mrse(**model_keys):
    """An MRSE attached to simshop-tiny (users, no images), its additive profile path opened, and 32 searches."""
    from retrieval_zoo.data import load_dataset
    from retrieval_zoo.data.features import dataset_fields
    from retrieval_zoo.models import build_model, load_config
    from retrieval_zoo.runner import data_settings

    tiny = load_dataset("simshop-tiny")
    config = load_config("mrse", overrides={"model": {"use_image": False, "n_buckets": 1000, **model_keys}})
    module = build_model(config)
    fields = module.required_fields | (module.optional_fields & dataset_fields(tiny))
    datamodule = RetrievalDataModule(tiny, fields, data_settings(config["data"]), seed=0)
    module.attach(datamodule)
    torch.nn.init.normal_(module.model.query_tower.fusion.context.weight)  # zero at init: open the additive path
    batch = datamodule.units.gather(torch.arange(32))
    assert (batch["hist_realtime"] >= 0).any()
    return module.model, batch


@pytest.mark.parametrize("path", ["both", "gate", "additive"])
def test_profile_path_decides_where_the_profile_enters(path):
    model, batch = tiny_text_mrse(profile_path=path)
    model.eval()
    tower = model.query_tower
    without_history = {k: v for k, v in batch.items() if not k.startswith("hist_")}
    with torch.no_grad():
        vectors, weights = model.encode_queries_with_weights(batch)
        plain_weights = model.encode_queries_with_weights(without_history)[1]
        torch.nn.init.zeros_(tower.fusion.context.weight)  # close the additive path again
        closed = model.encode_queries(batch)
    assert (not torch.allclose(weights, plain_weights)) == (path != "additive")  # the gate reads the profile
    assert (not torch.allclose(vectors, closed)) == (path != "gate")  # the profile is added to the vector
    with pytest.raises(ValueError, match="profile_path"):
        MRSE(MRSEConfig(profile_path="everywhere"))


def test_concat_turns_a_gate_only_profile_off_and_says_so():
    with pytest.warns(UserWarning, match="profile is off; set profile_path=both"):
        model = MRSE(MRSEConfig(fusion="concat", profile_path="gate", n_buckets=100))
    assert not model.use_profile and "user_history" not in model.optional_fields
    kept = MRSE(MRSEConfig(fusion="concat", profile_path="both", n_buckets=100))  # an additive path: the profile stays
    assert kept.use_profile and "user_history" in kept.optional_fields


def test_towers_hold_no_reference_to_the_model():
    model = MRSE(MRSEConfig(n_buckets=100))
    for tower in (model.query_tower, model.item_tower):
        assert not any(value is model or (isinstance(value, list) and any(v is model for v in value))
                       for value in vars(tower).values())
    # the shared parts are the model's alone: no tower registers them again
    assert not any(name.startswith(("query_tower.experts", "item_tower.experts")) for name in model.state_dict())


def test_config_class_has_one_field_per_yaml_key():
    import dataclasses

    from retrieval_zoo.models import load_config
    from retrieval_zoo.models.registry import own_model_keys

    # model.encoder is the registry's shared key (registry.own_model_keys), not the config class's
    assert {f.name for f in dataclasses.fields(MRSEConfig)} == set(own_model_keys(load_config("mrse")))


@pytest.mark.parametrize("detach", [False, True])
def test_profile_detach_keeps_the_profile_gradient_out_of_the_shared_parts(detach):
    model, batch = tiny_text_mrse(profile_detach=detach)
    model.encode_queries(batch).sum().backward()
    # a query has no category: the category table is reached only through the profile's items
    reached = model.categories.weight.grad is not None and model.categories.weight.grad.abs().sum() > 0
    assert reached != detach
    assert model.query_tower.profile.key.weight.grad.abs().sum() > 0  # the profile itself still learns


# -- end to end -------------------------------------------------------------------------------------------
def finite_metrics(result) -> None:
    assert result.metrics and all(math.isfinite(v) for v in result.metrics.values())


@pytest.mark.slow
def test_end_to_end_on_simshop_tiny_with_images(tmp_path):
    result, = run_benchmark("mrse", "simshop-tiny", seeds=1, results_dir=tmp_path, wandb="disabled",
                            progress=False, overrides=FAST, print_table=False)
    finite_metrics(result)
    assert "recall@100[group=image_attr]" in result.metrics
    assert result.costs["image_features_per_s"] > 0 and result.costs["image_cache_mb"] > 0
    assert not result.costs["image_cache_hit"]


def test_text_only_on_a_dataset_without_images(tmp_path, label_dataset, monkeypatch):
    def no_encoder(*args, **kwargs):
        raise AssertionError("no image encoder may run on a dataset without images")

    monkeypatch.setattr("retrieval_zoo.models.mrse.cached_image_features", no_encoder)
    result, = run_benchmark("mrse", label_dataset, seeds=1, results_dir=tmp_path, wandb="disabled",
                            progress=False, overrides=FAST, print_table=False)
    finite_metrics(result)
    assert "image_features_per_s" not in result.costs


def test_precomputed_image_features_are_used_as_they_are(tmp_path, label_dataset, monkeypatch):
    def no_encoder(*args, **kwargs):
        raise AssertionError("precomputed features must not run an encoder")

    monkeypatch.setattr("retrieval_zoo.models.mrse.cached_image_features", no_encoder)
    products = label_dataset.products
    rng = np.random.default_rng(0)
    table = pl.DataFrame({"product_id": products["product_id"],
                          "features": rng.normal(size=(products.height, 12)).astype(np.float32).tolist()},
                         schema={"product_id": pl.Utf8, "features": pl.List(pl.Float32)})
    dataset = ProductSearchDataset("toy-features", products, label_dataset.queries, label_dataset.judgments,
                                   image_features=table, meta=label_dataset.meta)
    result, = run_benchmark("mrse", dataset, seeds=1, results_dir=tmp_path, wandb="disabled", progress=False,
                            overrides=FAST, print_table=False)
    finite_metrics(result)
    assert result.costs["image_source"] == "precomputed"


def test_the_catalogue_is_encoded_longest_first_and_returned_in_catalogue_order(label_dataset, check_longest_first):
    """Only speed depends on the order: the light BERTs trim each batch to its longest text."""
    from retrieval_zoo.models import build_model, load_config
    from retrieval_zoo.runner import data_module_for

    config = load_config("mrse", "pretrained", [])  # the variant Icecat runs, at its shipped sizes
    module = build_model(config)
    datamodule = data_module_for(config, label_dataset, module, seed=0)
    datamodule.setup()
    module.attach(datamodule)
    check_longest_first(module)
    by_length = module.encode_catalog(batch_size=8, progress=False)
    module.model.catalogue_order = lambda catalog: None  # the same model, catalogue order
    in_order = module.encode_catalog(batch_size=8, progress=False)
    np.testing.assert_allclose(by_length, in_order, atol=1e-6, rtol=0)
