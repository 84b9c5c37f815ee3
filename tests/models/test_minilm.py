"""The MiniLM baselines and the fine-tuned query side of pretrained starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval_zoo.data import text
from retrieval_zoo.models.minilm import (
    MiniLMEncoder,
    MiniLMFineTuned,
    MiniLMFineTunedConfig,
    QuerySentenceTuning,
    freeze_lower_layers,
)

QUERIES = ["aa battery", "android tablet with keyboard", "usb c cable"]


def _query_batch(texts: list[str]) -> dict[str, torch.Tensor]:
    return {"query_tokens": torch.as_tensor(text.tokenize(texts, 16).astype(np.int64)),
            "query_sentence": torch.as_tensor(text.sentence_features(texts))}


def test_the_encoder_matches_sentence_transformers_on_short_queries():
    encoder = MiniLMEncoder(text.sentence_transformer()[0].auto_model, "query_tokens").eval()
    with torch.no_grad():
        ours = encoder(_query_batch(QUERIES))
    torch.testing.assert_close(ours, _query_batch(QUERIES)["query_sentence"], atol=1e-5, rtol=0)


def test_padding_to_the_longest_text_in_the_batch_changes_nothing():
    encoder = MiniLMEncoder(text.sentence_transformer()[0].auto_model, "query_tokens").eval()
    batch = _query_batch(QUERIES)
    padded = {"query_tokens": torch.nn.functional.pad(batch["query_tokens"], (0, 20))}
    with torch.no_grad():
        torch.testing.assert_close(encoder(batch), encoder(padded), atol=1e-6, rtol=0)


def test_lower_layers_freeze_and_the_top_ones_train():
    tuned = MiniLMFineTuned(MiniLMFineTunedConfig(trainable_layers=2))
    bert = tuned.query_tower.bert
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for layer in bert.encoder.layer[:4] for p in layer.parameters())
    assert all(p.requires_grad for layer in bert.encoder.layer[4:] for p in layer.parameters())
    assert tuned.required_fields == {"query_text", "item_sentence"}  # items keep their frozen vectors
    with pytest.raises(ValueError, match="trainable_layers"):
        freeze_lower_layers(bert, 7)


def test_query_tuning_is_the_cached_vector_before_any_step_and_moves_with_training():
    tuning = QuerySentenceTuning(trainable_layers=1).eval()
    batch = _query_batch(QUERIES)
    assert torch.equal(tuning(batch), batch["query_sentence"])  # tuned - original is exactly 0 at the start
    tuning.train()
    assert tuning.tuned.training and not tuning.original.training  # the original never drops out
    tuning(batch).sum().backward()
    top = tuning.tuned.bert.encoder.layer[-1]
    assert all(p.grad is not None for p in top.parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in tuning.original.parameters())
