"""MMSE: post-fusion shapes, the served single query vector equals the fused per-head score, end-to-end runs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from retrieval_zoo import run_benchmark
from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.models import build_model, list_models, list_variants, load_config
from retrieval_zoo.models.mmse import MMSE, MMSEConfig

SMALL = {"dim": 16, "hidden": 24, "n_buckets": 1000, "transformer_heads": 2}


def query_batch(batch: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 30000, (batch, 6), generator=generator)
    tokens[0, 3:] = 0  # a short query
    tokens[1] = 0      # an empty query must not give NaN
    return {"query_hashed": torch.randint(1, 5000, (batch, 10), generator=generator),
            "query_tokens": tokens,
            "query_sentence": torch.randn(batch, 384, generator=generator)}


def item_inputs(n: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"item_hashed": torch.randint(0, 5000, (n, 12), generator=generator),
            "item_tokens": torch.randint(0, 30000, (n, 8), generator=generator),
            "item_sentence": torch.randn(n, 384, generator=generator)}


@pytest.mark.parametrize("fusion", ["attention", "softmax"])
def test_post_fusion_shapes_and_weights(fusion):
    model = MMSE(MMSEConfig(**SMALL, fusion=fusion, heads=["hashed", "subword", "transformer", "sentence"]))
    batch = query_batch()
    items = model.encode_items(item_inputs())
    scores, weights = model.head_scores(batch, items)
    assert items.shape == (7, 16)
    assert scores.shape == (5, 4, 7) and weights.shape == (5, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    assert torch.isfinite(scores).all()
    assert scores.abs().max() <= 1 + 1e-5  # every head and every item is L2-normalised: cosines


@pytest.mark.parametrize("fusion", ["attention", "softmax", "none"])
def test_fused_score_equals_the_served_single_vector(fusion):
    torch.manual_seed(0)
    model = MMSE(MMSEConfig(**SMALL, fusion=fusion)).eval()
    batch = query_batch()
    items = model.encode_items(item_inputs())
    served = model.encode_queries(batch) @ items.T          # what the faiss index computes
    assert model.encode_queries(batch).shape == (5, 16)
    torch.testing.assert_close(model.fused_scores(batch, items), served, rtol=1e-5, atol=1e-6)


def test_attention_weights_depend_on_the_query():
    torch.manual_seed(0)
    model = MMSE(MMSEConfig(**SMALL, fusion="attention"))
    _, weights = model.head_scores(query_batch(), model.encode_items(item_inputs()))
    assert not torch.allclose(weights[2], weights[3])
    _, global_weights = MMSE(MMSEConfig(**SMALL, fusion="softmax")).head_scores(query_batch(), torch.randn(3, 16))
    torch.testing.assert_close(global_weights, torch.full((5, 3), 1 / 3))


def test_fields_need_no_user_data_and_follow_the_heads():
    model = MMSE(MMSEConfig(**SMALL))
    assert model.required_fields == {"stages", "query_hashed", "item_hashed", "query_text", "item_text"}
    only_hashed = MMSE(MMSEConfig(**SMALL, heads=["hashed"], item_inputs=["hashed"]))
    assert only_hashed.required_fields == {"stages", "query_hashed", "item_hashed"}
    assert not model.optional_fields
    with pytest.raises(ValueError, match="model.heads"):
        MMSE(MMSEConfig(**SMALL, heads=["words"]))


def test_shared_embeddings_are_one_table():
    shared = MMSE(MMSEConfig(**SMALL, share_embeddings=True))
    assert shared.query_tower.features.hashed_bag is shared.item_tower.features.hashed_bag
    separate = MMSE(MMSEConfig(**SMALL, share_embeddings=False))
    assert separate.query_tower.features.tokens is not separate.item_tower.features.tokens


def test_the_pretrained_start_is_the_sentence_head_alone_and_opens_through_a_learned_share():
    model = MMSE(MMSEConfig(**SMALL, heads=["hashed", "subword", "transformer", "sentence"]))
    batch = query_batch()
    vectors, weights = model.query_tower.head_weights(batch)
    assert torch.equal(weights, torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand_as(weights))
    torch.testing.assert_close(model.encode_queries(batch), vectors[:, 3])
    model.fused_scores(batch, model.encode_items(item_inputs())).logsumexp(1).mean().backward()
    assert model.query_tower.fusion.opening.grad.abs() > 0  # the share opens from the first step


def test_gradients_reach_every_head_and_the_fusion():
    model = MMSE(MMSEConfig(**SMALL, heads=["hashed", "subword", "transformer", "sentence"]))
    with torch.no_grad():
        model.query_tower.fusion.opening.fill_(0.5)  # past the start, where the anchored fusion is one-hot
    batch = query_batch()
    items = model.encode_items(item_inputs())
    loss = model.fused_scores(batch, items).logsumexp(1).mean()
    loss.backward()
    for head in model.query_tower.heads:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.net.parameters())
    assert any(p.grad is not None for p in model.query_tower.fusion.parameters())


def test_config_and_variants_build():
    assert "mmse" in list_models(baselines=False)
    assert list_variants("mmse") == ["default", "retrieval_only", "single_level", "single_head", "pretrained"]
    for variant in ["default", "retrieval_only", "single_level", "single_head"]:
        module = build_model(load_config("mmse", variant))
        assert "stages" in module.required_fields
    assert load_config("mmse", "retrieval_only")["loss"]["beta"] == 0
    assert load_config("mmse", "single_level")["loss"]["ranking"]["level_gains"] == [0.0, 0.0, 1.0, 1.0]
    assert load_config("mmse", "single_head")["model"]["fusion"] == "none"


# -- end to end ----------------------------------------------------------------------------------------------
FAST = ["trainer.max_epochs=1", "model.dim=32", "model.hidden=32", "model.n_buckets=20000",
        "data.batch_size=256", "data.n_random_negatives=64"]


def finite_metrics(result) -> None:
    assert result.metrics and all(math.isfinite(v) for v in result.metrics.values())
    assert 0 <= result.metrics["ndcg@10"] <= 1


def test_end_to_end_on_simshop_tiny(tmp_path):
    results = run_benchmark("mmse", "simshop-tiny", seeds=1, results_dir=tmp_path, wandb="disabled",
                            progress=False, overrides=FAST)
    finite_metrics(results[0])
    assert results[0].costs["train_pairs_per_s"] > 0
    assert (results[0].run_dir / "run.parquet").exists()


def label_only_dataset() -> ProductSearchDataset:
    """12 products of 3 kinds, 6 queries (4 train, 2 test) judged E/S/C/I, no searches and no users."""
    kinds = ["red shoe", "blue shirt", "green lamp"]
    products = pl.DataFrame({
        "product_id": [f"p{i}" for i in range(12)], "title": [f"{kinds[i % 3]} model {i}" for i in range(12)],
        "description": [""] * 12, "bullets": [""] * 12, "brand": ["acme"] * 12, "color": [""] * 12,
        "category": [""] * 12, "shop_id": [None] * 12,
    }, schema_overrides={"shop_id": pl.Utf8})
    queries = pl.DataFrame({"query_id": [f"q{i}" for i in range(6)],
                            "query": ["red shoe", "blue shirt", "green lamp", "shoe", "red shoes", "shirts"],
                            "split": ["train"] * 4 + ["test"] * 2, "group": [None] * 6},
                           schema_overrides={"group": pl.Utf8})
    rows = []
    for q, kind in enumerate([0, 1, 2, 0, 0, 1]):
        for p in range(12):
            label = "E" if p % 3 == kind else ("S" if (p + 1) % 3 == kind else ("C" if p < 6 else "I"))
            rows.append((f"q{q}", f"p{p}", label))
    judgments = pl.DataFrame(rows, schema=["query_id", "product_id", "label"], orient="row")
    return ProductSearchDataset("labels-toy", products, queries, judgments, meta={"fully_judged": True})


def test_runs_on_label_only_data(tmp_path):
    data = label_only_dataset()
    assert not data.has_behaviour
    results = run_benchmark("mmse", data, seeds=1, results_dir=tmp_path, wandb="disabled", progress=False,
                            overrides=[*FAST, "data.batch_size=8", "data.n_random_negatives=4",
                                       "data.stage_list_size=6", "data.stage_random_items=2",
                                       "data.positive_labels=[E, S]"])
    finite_metrics(results[0])
    assert np.isfinite(results[0].metrics["recall@10"])


def test_config_class_has_one_field_per_yaml_key():
    import dataclasses

    from retrieval_zoo.models.registry import own_model_keys

    # model.encoder is the registry's shared key (registry.own_model_keys), not the config class's
    assert {f.name for f in dataclasses.fields(MMSEConfig)} == set(own_model_keys(load_config("mmse")))


def test_the_heads_own_loss_reads_the_fine_tuned_query_side(tiny_encoder):
    """``loss.head_weight`` on ``mmse/pretrained``: each head's vector comes from the tuned query encoder, as the
    fused vector does, so the per-head losses train it too (they read the cached, untuned vectors before)."""
    from retrieval_zoo.data import text

    module = build_model(load_config("mmse", "pretrained", [f"model.encoder={tiny_encoder}", "loss.head_weight=0.5"]))
    tuning = module.model.query_sentence_tuning
    with torch.no_grad():  # a trained query side: the tuned copy no longer equals the original
        for parameter in (p for p in tuning.tuned.parameters() if p.requires_grad):
            parameter.add_(0.05 * torch.randn_like(parameter))
    module.eval()  # no dropout: the two encodings below must be comparable
    generator = torch.Generator().manual_seed(0)
    batch = {"query_hashed": torch.randint(1, 1000, (4, 10), generator=generator),
             "query_tokens": torch.randint(5, text.vocab_size(str(tiny_encoder)), (4, 6), generator=generator),
             "query_sentence": torch.nn.functional.normalize(torch.randn(4, 48, generator=generator), dim=-1)}
    heads = module.encode_query_heads(batch)
    assert not torch.allclose(heads, module.model.query_head_vectors(batch))  # not the cached vectors
    torch.testing.assert_close(heads, module.model.query_head_vectors(module.tuned_query_side(batch)))
    heads.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuning.tuned.parameters() if p.requires_grad)


@pytest.mark.parametrize("variant", ["default", "pretrained"])
def test_the_catalogue_is_encoded_longest_first_with_the_vectors_of_catalogue_order(variant, label_dataset, check_longest_first):
    """Only speed depends on the order (each batch is trimmed to its longest text), so the board's rows stand
    unchanged: the vectors must be bitwise equal, not merely close, at the shipped configs and a trained state."""
    from retrieval_zoo.runner import data_module_for

    config = load_config("mmse", None if variant == "default" else variant, [])
    module = build_model(config)
    datamodule = data_module_for(config, label_dataset, module, seed=0)
    datamodule.setup()
    module.attach(datamodule)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained state: at the start the pretrained item vector is the sentence vector alone
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    check_longest_first(module)
    by_length = module.encode_catalog(batch_size=16, progress=False)
    module.model.catalogue_order = lambda catalog: None  # the same model, catalogue order
    np.testing.assert_array_equal(by_length, module.encode_catalog(batch_size=16, progress=False))
