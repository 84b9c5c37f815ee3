"""Image-colour world: a product's colour is shown only in its picture, and half of the queries name a colour.

The mechanism: MRSE's image expert (Shopee, arXiv 2408.14968, section 3.1: VBert reads the picture's visual token
next to the text; section 3.2: a gate weighs the experts per input). Text-only retrieval cannot answer a query
whose intent only the picture carries; the image expert can, and the gate should lean on it for such queries.

**Rule.** Every product has a type (``TYPES``, each drawn with its own simshop silhouette), a colour
(``COLOURS``) and a material (``MATERIALS``). The title is "<material> <type>" plus one filler word: it never
names the colour, which only the 32 x 32 picture shows (drawn by simshop's renderer, plain print, random
background, placement, lighting and pixel noise). There are ``per_cell`` products of every (type, colour,
material). Queries are "<colour> <type>" (group ``image_attr``) and "<material> <type>" (group ``text_attr``);
a product is Exact for a query when its type and the named attribute match (fully judged: every other pair is
Irrelevant). Queries are split along diagonals of the (type, attribute) grid, after a seeded shuffle of both
axes, so every colour and every material is trained with several types and each test query is a combination
never trained on: a colour query of a test (type, colour) pair has ``n_materials * per_cell`` Exact products.

**Levels** (at the defaults: 8 types x 8 colours x 4 materials x 2 = 512 products). A colour query has 8 Exact
products (<= 10, so recall@10 can reach 1) among the 64 products of its type. A model that reads the type from
the text but knows nothing of colour ranks the type's 64 products in an order unrelated to colour, so its
expected recall@10 is 10 / 64 = 0.156 (``chance_colour_recall``), with a standard deviation of the mean over
the 16 test colour queries of 0.030 (hypergeometric). Over the whole catalogue, chance is 10 / 512 = 0.02.

**Knob.** ``colour_in_image=False`` removes the signal: each picture is drawn in a colour chosen at random,
independently of the colour the judgments use, so nothing anywhere tells colours apart and even the full
model must stay at chance on colour queries.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from retrieval_zoo.data.dataset import SCHEMA, ProductSearchDataset
from retrieval_zoo.data.simshop.config import SimShopConfig
from retrieval_zoo.data.simshop.images import render_images
from retrieval_zoo.data.simshop.vocabulary import COLORS, FILLER_WORDS, STYLES, TYPE_INDEX

# Types with distinct silhouettes (simshop shapes), so the picture tells them apart too.
TYPES = ("mug", "vase", "backpack", "dress", "cap", "tent", "wallet", "cushion", "table lamp", "frying pan")
# Colours far apart in RGB (simshop's palette); none is a word of any title.
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "black", "white", "pink", "brown")
MATERIALS = ("cotton", "leather", "wool", "linen", "bamboo", "velvet")
IMAGE_SIZE = 32  # simshop's picture size (SimShopConfig.image_size)
GROUPS = {"colour": "image_attr", "material": "text_attr"}
# Of the (type, attribute) grid's diagonals (type + attribute mod n_attributes), these go to test and valid.
TEST_DIAGONALS = {"colour": (0, 1), "material": (0,)}
VALID_DIAGONALS = {"colour": (2,), "material": (1,)}


def chance_colour_recall(n_type: int, n_exact: int, k: int = 10, n_queries: int = 1) -> tuple[float, float]:
    """(mean, standard deviation of the mean over ``n_queries``) of recall@k for a colour query when the ``k``
    retrieved items are drawn at random from the ``n_type`` products of the right type, ``n_exact`` of them
    Exact: the number of hits is hypergeometric."""
    k = min(k, n_type)
    mean_hits = k * n_exact / n_type
    var_hits = mean_hits * (1 - n_exact / n_type) * (n_type - k) / max(n_type - 1, 1)
    return mean_hits / n_exact, math.sqrt(var_hits / n_queries) / n_exact


def build(seed: int = 0, n_types: int = 8, n_colours: int = 8, n_materials: int = 4, per_cell: int = 2,
          colour_in_image: bool = True) -> ProductSearchDataset:
    """The image-colour world (rule, levels and knob in the module docstring); deterministic from ``seed``."""
    if not (n_types <= len(TYPES) and 3 < n_colours <= len(COLOURS) and 1 < n_materials <= len(MATERIALS)):
        raise ValueError(f"at most {len(TYPES)} types, 4..{len(COLOURS)} colours, 2..{len(MATERIALS)} materials")
    rng = np.random.default_rng(seed)
    products = _products(rng, n_types, n_colours, n_materials, per_cell)
    shown = products["latent_colour"].to_numpy().copy()
    if not colour_in_image:
        shown = rng.choice(COLOURS[:n_colours], size=len(shown))
    images = _pictures(seed, products["latent_type"].to_list(), list(shown))
    queries = _queries(rng, n_types, n_colours, n_materials)
    judgments = _judgments(products, queries)
    meta = {"protocol": f"image-colour world: (type, attribute) grid split by diagonals (seed {seed})",
            "fully_judged": True, "image_size": IMAGE_SIZE,
            "world": {"n_types": n_types, "n_colours": n_colours, "n_materials": n_materials,
                      "per_cell": per_cell, "colour_in_image": colour_in_image, "seed": seed}}
    name = f"image-colour-s{seed}" + ("" if colour_in_image else "-nocolour")
    return ProductSearchDataset(name=name, products=products, queries=queries, judgments=judgments,
                                images=images, meta=meta)


def _products(rng: np.random.Generator, n_types: int, n_colours: int, n_materials: int,
              per_cell: int) -> pl.DataFrame:
    """``per_cell`` products per (type, colour, material), in a seeded random order: row order and product ids
    then say nothing about colour (faiss ties rank by product id)."""
    grid = [(t, c, m) for t in TYPES[:n_types] for c in COLOURS[:n_colours] for m in MATERIALS[:n_materials]
            for _ in range(per_cell)]
    grid = [grid[i] for i in rng.permutation(len(grid))]
    n = len(grid)
    fillers = rng.choice(FILLER_WORDS, size=n)
    return pl.DataFrame({
        "product_id": [f"p{i:04d}" for i in range(n)],
        "title": [f"{m} {t} {f}" for (t, _, m), f in zip(grid, fillers, strict=True)],
        "description": [""] * n, "bullets": [""] * n, "brand": [""] * n,
        "color": [""] * n,  # the colour is in the picture only
        "category": [f"Shop > {t}" for t, _, _ in grid], "shop_id": [None] * n,
        "latent_type": [t for t, _, _ in grid], "latent_colour": [c for _, c, _ in grid],
        "latent_material": [m for _, _, m in grid],
    }, schema_overrides={"shop_id": pl.Utf8})


def _pictures(seed: int, types: list[str], colours: list[str]) -> np.ndarray:
    """simshop pictures, uint8 [n, 32, 32, 3]: the type's silhouette filled with the colour, plain print."""
    catalogue = {"type": np.array([TYPE_INDEX[t] for t in types]),
                 "color": np.array([COLORS.index(c) for c in colours]),
                 "style": np.full(len(types), STYLES.index("plain"))}
    return render_images(SimShopConfig(image_size=IMAGE_SIZE, seed=seed), catalogue)


def _queries(rng: np.random.Generator, n_types: int, n_colours: int, n_materials: int) -> pl.DataFrame:
    """Every "<colour> <type>" and "<material> <type>", split by diagonals of the shuffled grid."""
    type_rank = rng.permutation(n_types)
    rows = []
    for kind, values in (("colour", COLOURS[:n_colours]), ("material", MATERIALS[:n_materials])):
        value_rank = rng.permutation(len(values))
        for t, type_name in enumerate(TYPES[:n_types]):
            for v, value in enumerate(values):
                diagonal = (type_rank[t] + value_rank[v]) % len(values)
                split = ("test" if diagonal in TEST_DIAGONALS[kind]
                         else "valid" if diagonal in VALID_DIAGONALS[kind] else "train")
                rows.append((f"{kind[0]}-{value}-{type_name}".replace(" ", "_"), f"{value} {type_name}", split,
                             GROUPS[kind]))
    return pl.DataFrame(rows, schema=SCHEMA["queries"], orient="row")


def _judgments(products: pl.DataFrame, queries: pl.DataFrame) -> pl.DataFrame:
    """E for every product whose type and named attribute match the query; nothing else (fully judged)."""
    facts = products.select("product_id", pl.col("latent_type").alias("type"),
                            pl.concat_list("latent_colour", "latent_material").alias("value")).explode("value")
    wanted = queries.select("query_id", pl.col("query").str.splitn(" ", 2).struct.rename_fields(["value", "type"])
                            ).unnest("query")
    return (wanted.join(facts, on=["type", "value"]).select("query_id", "product_id", pl.lit("E").alias("label"))
            .sort("query_id", "product_id"))
