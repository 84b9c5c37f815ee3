"""Pretrained starts: a tower joined to frozen sentence features starts exactly as zero-shot MiniLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retrieval_zoo.data import text
from retrieval_zoo.models.components import PretrainedStart, SentenceAdapter, shared_projection
from retrieval_zoo.models.light_two_tower import LightTwoTower, LightTwoTowerConfig


def _sentences(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, text.pretrained_dim(), generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_shared_projection_is_orthonormal_and_the_identity_at_full_width():
    projection = shared_projection(128)
    torch.testing.assert_close(projection @ projection.T, torch.eye(128), atol=1e-5, rtol=0)
    assert torch.equal(shared_projection(text.pretrained_dim()), torch.eye(text.pretrained_dim()))


def test_two_independent_adapters_start_in_one_space():
    query_side, item_side = SentenceAdapter(128), SentenceAdapter(128)  # built separately, as two towers do
    queries, items = _sentences(5, 1), _sentences(7, 2)
    projection = shared_projection(128)
    torch.testing.assert_close(query_side(queries) @ item_side(items).T,
                               (queries @ projection.T) @ (items @ projection.T).T)


def test_the_gate_hides_the_towers_own_part_at_the_start_and_is_trained():
    start = PretrainedStart(16)
    own = torch.randn(4, 16, requires_grad=True)
    sentences = _sentences(4, 3)
    out = start(own, sentences)
    torch.testing.assert_close(out, start.adapter(sentences))
    out.pow(2).sum().backward()
    assert start.gate.grad is not None and start.gate.grad.abs() > 0  # the gate opens from the first step


def test_light_two_tower_pretrained_starts_as_zero_shot_minilm():
    model = LightTwoTower(LightTwoTowerConfig(dim=text.pretrained_dim(), hidden=8, n_buckets=50, pretrained_sentence=True))
    queries, items = _sentences(3, 4), _sentences(6, 5)
    batch = {"query_hashed": torch.randint(1, 50, (3, 5)), "query_sentence": queries}
    inputs = {"item_hashed": torch.randint(1, 50, (6, 5)), "item_sentence": items}
    scores = model.encode_queries(batch) @ model.encode_items(inputs).T
    torch.testing.assert_close(scores, queries @ items.T)  # cosine of the frozen MiniLM vectors


def test_mrse_pretrained_starts_as_zero_shot_minilm():
    from retrieval_zoo.models.mrse import MRSE, MRSEConfig

    model = MRSE(MRSEConfig(dim=text.pretrained_dim(), width=8, n_buckets=50, n_categories=5, use_image=False,
                            use_profile=False, pretrained_sentence=True))
    assert {"query_sentence", "item_sentence"} <= model.required_fields
    queries, items = _sentences(3, 6), _sentences(6, 7)
    batch = {"query_tokens": torch.randint(1, 100, (3, 5)), "query_hashed": torch.randint(1, 50, (3, 5)),
             "query_sentence": queries}
    inputs = {"item_tokens": torch.randint(1, 100, (6, 5)), "item_hashed": torch.randint(1, 50, (6, 5)),
              "item_category": torch.randint(0, 5, (6,)), "item_sentence": items}
    scores = model.encode_queries(batch) @ model.encode_items(inputs).T
    torch.testing.assert_close(scores, queries @ items.T)


# -- any encoder (issue 22, part 3): the pretrained starts read model.encoder, at its width ---------------
@pytest.mark.parametrize("model", ["light_two_tower", "mgdspr", "mmse", "mrse"])
def test_every_pretrained_start_takes_the_encoders_width_and_table(model, tiny_encoder):
    from retrieval_zoo.models.components import TokenEmbedding, uses_encoder
    from retrieval_zoo.models.registry import build_model, load_config

    module = build_model(load_config(model, "pretrained", [f"model.encoder={tiny_encoder}"]))
    adapters = [m for m in module.modules() if isinstance(m, SentenceAdapter)]
    assert adapters and all(a.skip.in_features == 48 for a in adapters)  # 48: the tiny encoder, not 384
    for table in (m.table for m in module.modules() if isinstance(m, TokenEmbedding) and m.pretrained):
        assert table.weight.shape == (text.vocab_size(str(tiny_encoder)), 48)
    assert uses_encoder(module)
    assert text.pretrained_dim() == 384  # the encoder was active only while the model was built


def test_a_pretrained_start_runs_end_to_end_on_another_encoder(tiny_encoder, tmp_path):
    from retrieval_zoo.runner import run_benchmark

    overrides = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "data.eval_batch_size=256",
                 f"model.encoder={tiny_encoder}"]
    [result] = run_benchmark("light_two_tower", "simshop-tiny", variant="pretrained", overrides=overrides,
                             results_dir=tmp_path, wandb="disabled", progress=False, print_table=False)
    assert 0.0 <= result.metrics["ndcg@10"] <= 1.0
    assert result.row()["encoder"] == str(tiny_encoder)
    [plain] = run_benchmark("light_two_tower", "simshop-tiny", overrides=overrides[:3], results_dir=tmp_path,
                            wandb="disabled", progress=False, print_table=False)
    assert plain.row()["encoder"] is None  # no pretrained start: the row names no encoder


# -- the loss scale of a pretrained start ---------------------------------------------------------------------
@pytest.mark.parametrize("model", ["light_two_tower", "mgdspr", "mmse", "mrse"])
def test_each_pretrained_variants_softmax_is_sharp_on_its_unit_vector_start(model):
    """A pretrained start scores with MiniLM's unit vectors, so logits are cosines in [-1, 1]. At the shipped loss
    temperature a batch the start already separates perfectly (each query's positive at cosine 1, the other 255 at
    0) must cost little: at MGDSPR's paper tau = 2, chosen for unnormalised from-scratch vectors, it costs ~log(256)
    and the softmax weighs a hard negative about as much as an easy one."""
    import math

    from retrieval_zoo.losses import build_loss
    from retrieval_zoo.losses.softmax import softmax_cross_entropy
    from retrieval_zoo.models.registry import load_config

    loss = build_loss(**load_config(model, variant="pretrained")["loss"])
    separated = softmax_cross_entropy(torch.eye(256), torch.arange(256), loss.temperature)
    assert separated < 0.1 * math.log(256), (model, loss.temperature, float(separated))


def test_training_one_pretrained_token_table_leaves_the_next_models_start_as_minilms():
    """The cached MiniLM table is handed out as a copy: ``nn.Embedding.from_pretrained`` trains the tensor it is
    given in place, so a shared one made every later fold, seed or row in a process start from a trained table."""
    from retrieval_zoo.models.components import TokenEmbedding, pretrained_token_table

    original = pretrained_token_table()
    trained = TokenEmbedding(384, pretrained=True)
    optimiser = torch.optim.SGD(trained.parameters(), lr=1.0)
    trained.table(torch.tensor([[101, 2054, 102]])).sum().backward()
    optimiser.step()
    assert not torch.equal(trained.table.weight, original)  # the step moved the first model's table
    assert torch.equal(TokenEmbedding(384, pretrained=True).table.weight, original)
