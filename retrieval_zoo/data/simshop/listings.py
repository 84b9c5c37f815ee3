"""simshop stage 2, **Listings**: each product's title, description and bullet points.

From the design notes: real-listing-like English text: a keyword-stack title (brand, type, synonyms,
attributes, category words, filler, sometimes a misleading type word), a description and bullet points.
For a share ``image_only_share`` of the products, colour and style are *not written anywhere*: the ``color``
and ``style`` columns are empty and no text field names them. Only the image (stage 3) shows them (the case
MRSE is for).
"""

from __future__ import annotations

import random

import numpy as np

from retrieval_zoo.data.simshop.config import SimShopConfig, stage_random
from retrieval_zoo.data.simshop.vocabulary import (
    BRANDS,
    COLORS,
    FILLER_WORDS,
    MATERIALS,
    MID_CATEGORIES,
    PRODUCT_TYPES,
    STYLES,
    TYPE_MID,
    MidCategory,
    ProductType,
)


def write_listings(config: SimShopConfig, catalogue: dict[str, np.ndarray]) -> tuple[list, list, list]:
    rnd = stage_random(config, "listings")
    titles, descriptions, bullets = [], [], []
    for i in range(len(catalogue["type"])):
        product_type = PRODUCT_TYPES[catalogue["type"][i]]
        mid = MID_CATEGORIES[TYPE_MID[catalogue["type"][i]]]
        brand = BRANDS[catalogue["brand"][i]]
        material = MATERIALS[catalogue["material"][i]]
        # Colour and style words only exist for products that say them in text.
        visible = [] if catalogue["image_only"][i] else [COLORS[catalogue["color"][i]], STYLES[catalogue["style"][i]]]
        titles.append(_title(rnd, config, product_type, mid, brand, material, visible))
        descriptions.append(_description(rnd, product_type, mid, brand, material, visible, catalogue["tier"][i]))
        bullets.append(_bullets(rnd, product_type, mid, material, visible))
    return titles, descriptions, bullets


def _title(rnd: random.Random, config: SimShopConfig, product_type: ProductType, mid: MidCategory, brand: str,
           material: str, visible: list[str]) -> str:
    """A keyword stack like real marketplace titles: brand first, then a shuffled heap of selling words."""
    words = [product_type.name, *rnd.sample(product_type.synonyms, rnd.randint(1, len(product_type.synonyms)))]
    words += [material, rnd.choice(mid.adjectives), mid.terms[0]]
    words += rnd.sample(FILLER_WORDS, rnd.randint(1, 3))
    words += visible
    if rnd.random() < config.misleading_rate:
        # Sellers stuff neighbouring product words into titles ("... sneakers socks") to catch more searches.
        related = product_type.complements + product_type.substitutes
        other = rnd.choice(related) if related and rnd.random() < 0.7 else rnd.choice(PRODUCT_TYPES).name
        words.append(other)
    rnd.shuffle(words)
    return " ".join(word.title() if word[0].isalpha() else word for word in [brand, *words])


def _description(rnd: random.Random, product_type: ProductType, mid: MidCategory, brand: str, material: str,
                 visible: list[str], tier: int) -> str:
    adjectives = rnd.sample(mid.adjectives, 2) if len(mid.adjectives) > 1 else list(mid.adjectives) * 2
    sentences = [f"This {product_type.name} from {brand} is made of {material}."]
    if visible:
        color, style = visible
        look = f"in plain {color}" if style == "plain" else f"in {color} with a {style} pattern"
        sentences.append(f"It comes {look}.")
    sentences.append(f"{adjectives[0].capitalize()} and {adjectives[1]}, perfect for {mid.use}.")
    sentences.append(("Great value for money.", "A reliable everyday choice.", "Premium craftsmanship.",
                      "Luxury finish and exclusive design.")[tier])
    return " ".join(sentences)


def _bullets(rnd: random.Random, product_type: ProductType, mid: MidCategory, material: str,
             visible: list[str]) -> str:
    lines = [f"MATERIAL: {material}"]
    if visible:
        lines += [f"COLOUR: {visible[0]}", f"PATTERN: {visible[1]}"]
    lines += [f"FEATURE: {rnd.choice(mid.adjectives)}", f"PACKAGE: 1 x {product_type.name}"]
    return "\n".join(f"- {line}" for line in lines)
