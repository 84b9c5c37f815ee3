"""simshop stage 7, **Judgments**: ESCI labels from the searches' ground-truth intents.

From the design notes: every (query, product) pair gets an ESCI label from the query's ground-truth intent:
E = right type and every named attribute; S = right type with an attribute that differs, or a substitute type;
C = a complementary type; I = otherwise. Only E/S/C rows are written (``meta["fully_judged"] = True``).
Colour and style are judged on the true values, including those only the image shows.

The generator computes the label matrix before stage 6, whose click model reads the labels of the exposed
items as their relevance.
"""

from __future__ import annotations

import numpy as np

from retrieval_zoo.data.simshop.searches import ATTRIBUTES, BROAD
from retrieval_zoo.data.simshop.vocabulary import MID_CATEGORIES, PRODUCT_TYPES, TYPE_INDEX, TYPE_MID

LABELS = ("E", "S", "C", "I")
EXACT, SUBSTITUTE, COMPLEMENT, IRRELEVANT = range(4)  # label codes, indices into LABELS


def _type_relations() -> tuple[np.ndarray, np.ndarray]:
    """Substitutes (symmetric: sneakers can replace running shoes and vice versa) and complements (as listed:
    socks complete running shoes; keeping them one-way keeps the judged sets, and the file, small)."""
    n = len(PRODUCT_TYPES)
    substitute, complement = np.zeros((n, n), dtype=bool), np.zeros((n, n), dtype=bool)
    for i, product_type in enumerate(PRODUCT_TYPES):
        for other in product_type.substitutes:
            substitute[i, TYPE_INDEX[other]] = substitute[TYPE_INDEX[other], i] = True
        for other in product_type.complements:
            complement[i, TYPE_INDEX[other]] = True
    return substitute, complement & ~substitute


def label_matrix(intents: dict[str, np.ndarray], catalogue: dict[str, np.ndarray]) -> np.ndarray:
    """ESCI label codes (E=0, S=1, C=2, I=3) for every (intent, product) pair, computed in chunks."""
    substitute, complement = _type_relations()
    in_mid = TYPE_MID[None, :] == np.arange(len(MID_CATEGORIES))[:, None]
    # A broad intent (a mid category) treats types outside the category like the category's own relations.
    mid_substitute = (in_mid.astype(int) @ substitute > 0) & ~in_mid
    mid_complement = (in_mid.astype(int) @ complement > 0) & ~in_mid & ~mid_substitute
    n_intents, n_products = len(intents["mid"]), len(catalogue["type"])
    labels = np.full((n_intents, n_products), IRRELEVANT, dtype=np.int8)
    ptype = catalogue["type"][None, :]
    for start in range(0, n_intents, 512):
        rows = slice(start, start + 512)
        it = {name: values[rows, None] for name, values in intents.items()}
        broad = it["specificity"] == BROAD
        same_type = ptype == it["type"]
        attributes_match = np.ones((len(it["mid"]), n_products), dtype=bool)
        for name in ATTRIBUTES:
            attributes_match &= (it[name] < 0) | (catalogue[name][None, :] == it[name])
        exact = np.where(broad, TYPE_MID[ptype] == it["mid"], same_type & attributes_match)
        substitutes = np.where(broad, mid_substitute[it["mid"], ptype],
                               (same_type & ~attributes_match) | substitute[np.maximum(it["type"], 0), ptype])
        complements = np.where(broad, mid_complement[it["mid"], ptype], complement[np.maximum(it["type"], 0), ptype])
        block = labels[rows]
        block[complements] = COMPLEMENT
        block[substitutes] = SUBSTITUTE
        block[exact] = EXACT
    return labels
