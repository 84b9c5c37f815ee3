"""Datasets in one canonical schema (dataset.py), registered here explicitly by name."""

from __future__ import annotations

from functools import partial

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.registry import list_datasets, load_dataset, register_dataset
from retrieval_zoo.data.simshop import load_simshop

register_dataset("simshop", partial(load_simshop, "default"),
                 "simulated shop (default size): text, images, users, multi-stage behaviour")
register_dataset("simshop-tiny", partial(load_simshop, "tiny"), "simshop, tiny preset for tests")
register_dataset("simshop-nopref", partial(load_simshop, "nopref"),
                 "simshop with preference strength 0: the user's history carries no signal")
register_dataset("simshop-alltext", partial(load_simshop, "alltext"),
                 "simshop with every attribute in the text (no image-only attributes)")

__all__ = ["DatasetError", "ProductSearchDataset", "list_datasets", "load_dataset", "register_dataset"]
