"""The model zoo. Each model is one file and one YAML config, registered here explicitly."""

from __future__ import annotations

from retrieval_zoo.models.base import RetrievalModule, TwoTowerModel
from retrieval_zoo.models.bm25 import BM25Config, BM25Retriever
from retrieval_zoo.models.light_two_tower import LightTwoTower, LightTwoTowerConfig
from retrieval_zoo.models.mgdspr import MGDSPR, MGDSPRConfig
from retrieval_zoo.models.minilm import (
    MiniLMFineTuned,
    MiniLMFineTunedConfig,
    MiniLMZeroShot,
    MiniLMZeroShotConfig,
)
from retrieval_zoo.models.mmse import MMSE, MMSEConfig
from retrieval_zoo.models.mrse import MRSE, MRSEConfig
from retrieval_zoo.models.registry import (
    ConfigError,
    build_model,
    list_models,
    list_variants,
    load_config,
    register_model,
)

# -- baselines ---------------------------------------------------------------------------------------
register_model("bm25", BM25Retriever, "bm25.yaml", "BM25 over the composed item text (bm25s)", baseline=True,
               config_class=BM25Config)
register_model("minilm_zeroshot", MiniLMZeroShot, "minilm_zeroshot.yaml",
               "all-MiniLM-L6-v2 frozen sentence embeddings", baseline=True, config_class=MiniLMZeroShotConfig)
register_model("minilm_finetune", MiniLMFineTuned, "minilm_finetune.yaml",
               "all-MiniLM-L6-v2 fine-tuned two-tower, in-batch softmax", baseline=True,
               config_class=MiniLMFineTunedConfig)
register_model("light_two_tower", LightTwoTower, "light_two_tower.yaml",
               "DSSM-style hashed n-gram two-tower trained from scratch", baseline=True,
               config_class=LightTwoTowerConfig)

# -- the zoo -----------------------------------------------------------------------------------------
register_model("mgdspr", MGDSPR, "mgdspr.yaml", "Taobao MGDSPR: multi-granular query, behaviour attention",
               config_class=MGDSPRConfig)
register_model("mmse", MMSE, "mmse.yaml", "JD MMSE: multi-stage levels, post-fused multi-grained heads",
               config_class=MMSEConfig)
register_model("mrse", MRSE, "mrse.yaml", "Shopee MRSE: text/image lightweight experts, gate, user profile",
               config_class=MRSEConfig)

__all__ = [
    "BM25Retriever", "ConfigError", "RetrievalModule", "TwoTowerModel", "build_model", "list_models",
    "list_variants", "load_config", "register_model",
]
