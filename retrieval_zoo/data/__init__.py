"""Datasets in one canonical schema (dataset.py), registered here explicitly by name."""

from __future__ import annotations

from functools import partial

from retrieval_zoo.data.beir import load_beir
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.esci import load_esci
from retrieval_zoo.data.icecat import load_icecat
from retrieval_zoo.data.local import load_local
from retrieval_zoo.data.registry import list_datasets, load_dataset, register_dataset
from retrieval_zoo.data.simshop import load_simshop
from retrieval_zoo.data.sqid import load_sqid

register_dataset("simshop", partial(load_simshop, "default"),
                 "simulated shop (default size): text, images, users, multi-stage behaviour")
register_dataset("simshop-tiny", partial(load_simshop, "tiny"), "simshop, tiny preset for tests")
register_dataset("simshop-nopref", partial(load_simshop, "nopref"),
                 "simshop with preference strength 0: the user's history carries no signal")
register_dataset("simshop-alltext", partial(load_simshop, "alltext"),
                 "simshop with every attribute in the text (no image-only attributes)")
register_dataset("icecat", load_icecat,
                 "Icecat products + Chorus human judgments (real; 5-fold query-level cross-validation)")
register_dataset("esci", load_esci, "Amazon Shopping Queries (ESCI), from the official parquet files")
register_dataset("sqid", load_sqid, "Shopping Queries Image Dataset: ESCI test queries + CLIP features")
register_dataset("local", load_local, "your own catalogue/queries/judgments: local:path=DIR")
register_dataset("beir", load_beir,
                 "a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/*.tsv): beir:path=DIR")

__all__ = ["DatasetError", "ProductSearchDataset", "list_datasets", "load_dataset", "register_dataset"]
