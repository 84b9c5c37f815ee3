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


# -- any encoder (issue 22, part 3): model.encoder = a local sentence-transformers folder ------------------
FAST = ["trainer.limit_val_batches=1", "data.eval_batch_size=256"]


def test_zero_shot_runs_on_another_encoder_and_the_board_names_it(tiny_encoder, tmp_path):
    import polars as pl

    from retrieval_zoo.runner import run_benchmark

    [result] = run_benchmark("minilm_zeroshot", "simshop-tiny", overrides=[*FAST, f"model.encoder={tiny_encoder}"],
                             results_dir=tmp_path, wandb="disabled", progress=False, print_table=False)
    assert 0.0 <= result.metrics["ndcg@10"] <= 1.0
    assert result.row()["encoder"] == str(tiny_encoder)
    assert pl.read_csv(tmp_path / "leaderboard.csv")["encoder"].to_list() == [str(tiny_encoder)]
    assert str(tiny_encoder) in (tmp_path / "leaderboard.md").read_text()


def test_fine_tuning_takes_the_encoders_transformer_tokenizer_and_width(tiny_encoder):
    from retrieval_zoo.models.registry import build_model, load_config

    module = build_model(load_config("minilm_finetune", "shared", [f"model.encoder={tiny_encoder}"]))
    # 60 ids: the tiny vocabulary spells words letter by letter, and the whole query must be read
    ids = torch.as_tensor(text.tokenize(QUERIES, 60, str(tiny_encoder)).astype(np.int64))
    with torch.no_grad():
        vectors = module.model.query_tower.eval()({"query_tokens": ids})
    expected = text.sentence_features(QUERIES, encoder=str(tiny_encoder))
    assert vectors.shape == (3, 48)  # the tiny encoder's width, not MiniLM's 384
    torch.testing.assert_close(vectors, torch.as_tensor(expected), atol=1e-5, rtol=0)


def test_a_missing_encoder_is_one_error_line_naming_the_key(tmp_path, capsys):
    from retrieval_zoo.__main__ import main

    code = main(["bench", "--model", "minilm_zeroshot", "--dataset", "simshop-tiny", "--set",
                 f"model.encoder={tmp_path / 'no-such-model'}", "--results", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: model.encoder=") and "local folder" in err[0] and "Hugging Face cache" in err[0]
    assert not (tmp_path / "leaderboard.csv").exists()


def test_the_shared_tower_encodes_the_catalogue_longest_first_and_returns_it_in_catalogue_order(tiny_encoder):
    from retrieval_zoo.data.datamodule import RetrievalDataModule
    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.models.registry import build_model, load_config
    from retrieval_zoo.runner import data_settings

    config = load_config("minilm_finetune", "shared", [f"model.encoder={tiny_encoder}"])
    module = build_model(config)
    datamodule = RetrievalDataModule(load_dataset("simshop-tiny"), set(module.required_fields),
                                     data_settings(config["data"], str(tiny_encoder)), seed=0)
    module.attach(datamodule)
    order = module.model.catalogue_order(module.catalog)
    lengths = (module.catalog.tensors["item_tokens"] != text.PAD_ID).sum(1).numpy()
    assert sorted(order.tolist()) == list(range(len(lengths))) and (np.diff(lengths[order]) <= 0).all()
    by_length = module.encode_catalog(batch_size=64, progress=False)
    module.model.catalogue_order = lambda catalog: None  # the same model, catalogue order
    in_order = module.encode_catalog(batch_size=64, progress=False)
    np.testing.assert_allclose(by_length, in_order, atol=1e-5, rtol=0)  # only the padding differs
