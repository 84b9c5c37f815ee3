"""simshop: a seeded simulated shop, the benchmark's default dataset and its controlled testbed.

Every table is drawn from one seed, so the same :class:`SimShopConfig` always gives identical frames and images.
The generator is this package, one module per stage; this module runs the stages (:func:`generate_simshop`)
and caches the result on disk (:func:`load_simshop`). The config, presets and per-stage seeding are in
:mod:`.config`; the vocabularies (category tree, brands, colours, styles, price tiers, filler words) are JSON
files in ``vocabularies/``, loaded by :mod:`.vocabulary`; :mod:`.frames` writes the output tables.
The generative process, in the order the code runs it:

1. **Catalogue** (:mod:`.catalogue`). A fixed category tree (top level > mid category > leaf product type,
   e.g. ``Fashion > Shoes > Running Shoes``) with a shape, synonyms, materials, substitutes and complements per
   type. Each product draws a type, a brand of its top category (Zipf popularity, a usual price tier per
   brand), a colour, a style (the print pattern: plain, striped, ...), a material, a price tier, a price and a
   shop.
2. **Listings** (:mod:`.listings`). Real-listing-like English text: a keyword-stack title (brand, type,
   synonyms, attributes, category words, filler, sometimes a misleading type word), a description and bullet
   points. For a share ``image_only_share`` of the products, colour and style are *not written anywhere*: the
   ``color`` and ``style`` columns are empty and no text field names them. Only the image shows them (the case
   MRSE is for).
3. **Images** (:mod:`.images`). A 32 x 32 RGB picture per product, numpy only: a silhouette from the type's
   shape, filled with the colour, printed with the style's pattern, plus a random background, lighting gradient
   and pixel noise.
4. **Users** (:mod:`.users`). Latent taste: favourite colours, style, one brand per top category, a price
   tier, shopping interests over mid categories, an activity level, and ``visual_reliance`` in [0, 1] weighing
   how much the visual attributes (colour, style) versus the textual ones (brand, price tier) drive their
   choices.
5. **Searches** (:mod:`.searches`). Over ``n_days`` days a user issues searches from an intent at one of three
   specificities: broad (a mid category, "shoes"), mid (a type, "running shoes") or specific (a type plus one
   or two attributes of an actual product the user would like, "red striped running shoes"). Visual users name
   colour and style more often. The text gets synonyms, word-order noise and typos. Days split into train,
   valid and test.
6. **Behaviour** (:mod:`.behaviour`). A non-personalised logging policy (a noisy lexical title matcher) shows
   ``exposure_size`` items. Clicks follow a position-biased cascade-free click model: P(click) =
   examination(position) x attractiveness, attractiveness = click_noise + (1 - click_noise) x
   (1 - exp(-relevance x preference)), preference = exp(preference_strength x (affinity - mean affinity)).
   The user's taste therefore decides *which* relevant item is clicked, collected and ordered; with
   ``preference_strength = 0`` their history carries no signal about that choice.
7. **Judgments** (:mod:`.judgments`). Every (query, product) pair gets an ESCI label from the query's
   ground-truth intent: E = right type and every named attribute; S = right type with an attribute that
   differs, or a substitute type; C = a complementary type; I = otherwise. Only E/S/C rows are written
   (``meta["fully_judged"] = True``). The code computes the labels before stage 6, whose clicks read them as
   relevance.

Query split rule: a query text is "test" if any test-day search used it, else "valid" if any valid-day search
did, else "train". Behaviour-based training and evaluation use the per-search split in ``searches.parquet``.

Columns beyond the canonical schema: products get ``product_type, material, style, price_tier, price,
image_only`` and the ground truth ``latent_color, latent_style`` (for analysis and tests only: a model that reads
them is cheating); queries get ``specificity`` and ``intent``; searches get ``specificity``; users carry the
latent taste.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.data.registry import cache_dir
from retrieval_zoo.data.simshop.behaviour import log_exposures, simulate_behaviour
from retrieval_zoo.data.simshop.catalogue import sample_catalogue
from retrieval_zoo.data.simshop.config import PRESETS, SimShopConfig, config_hash, resolve_config
from retrieval_zoo.data.simshop.frames import (
    dataset_meta,
    interactions_frame,
    judgments_frame,
    products_frame,
    queries_frame,
    searches_frame,
    users_frame,
)
from retrieval_zoo.data.simshop.images import render_images
from retrieval_zoo.data.simshop.judgments import label_matrix
from retrieval_zoo.data.simshop.listings import write_listings
from retrieval_zoo.data.simshop.searches import index_intents, sample_searches, search_split, write_queries
from retrieval_zoo.data.simshop.users import sample_users
from retrieval_zoo.data.simshop.vocabulary import COLOR_RGB, COLOR_SYNONYMS, STYLE_SYNONYMS

__all__ = [
    "COLOR_RGB",
    "COLOR_SYNONYMS",
    "PRESETS",
    "STYLE_SYNONYMS",
    "SimShopConfig",
    "generate_simshop",
    "load_simshop",
    "resolve_config",
]


def generate_simshop(config: SimShopConfig, name: str = "simshop") -> ProductSearchDataset:
    """Generate the whole shop; a pure function of ``config`` (same config -> identical frames and images)."""
    catalogue = sample_catalogue(config)
    titles, descriptions, bullets = write_listings(config, catalogue)
    images = render_images(config, catalogue)
    users = sample_users(config)
    searches = sample_searches(config, catalogue, users)
    query_texts, search_query = write_queries(config, searches)
    intents, search_intent, query_intent = index_intents(searches, search_query, len(query_texts))
    labels = label_matrix(intents, catalogue)
    exposed = log_exposures(config, titles, query_texts, search_query)
    behaviour = simulate_behaviour(config, catalogue, users, searches, exposed, labels[search_intent[:, None], exposed])
    split = search_split(config, searches["timestamp"])
    return ProductSearchDataset(
        name=name,
        products=products_frame(catalogue, titles, descriptions, bullets),
        queries=queries_frame(query_texts, query_intent, intents, search_query, split),
        judgments=judgments_frame(labels, query_intent),
        searches=searches_frame(searches, search_query, split),
        interactions=interactions_frame(searches, exposed, behaviour),
        users=users_frame(users),
        images=images,
        meta=dataset_meta(config),
    )


def load_simshop(preset: str = "default", **overrides) -> ProductSearchDataset:
    """Load (generating on first use, then from the disk cache) a simshop preset with optional overrides.

    Overrides may be strings, as they come from a dataset spec ``simshop:preference_strength=0``; they are
    coerced to the field's type. The cache key is a hash of the full config and the generator version.
    """
    config = resolve_config(preset, **overrides)
    name = _dataset_name(preset, overrides)
    folder = cache_dir() / "simshop" / config_hash(config)
    if (folder / "meta.json").exists():
        dataset = ProductSearchDataset.load(folder)
    else:
        dataset = generate_simshop(config, name=name)
        _save_atomically(dataset, folder)
    dataset.name = name
    dataset.meta["preset"] = preset
    return dataset


def _dataset_name(preset: str, overrides: dict) -> str:
    name = "simshop" if preset == "default" else f"simshop-{preset}"
    if overrides:
        name += ":" + ",".join(f"{key}={overrides[key]}" for key in sorted(overrides))
    return name


def _save_atomically(dataset: ProductSearchDataset, folder: Path) -> None:
    """Save under a process-private name, then rename: concurrent first loads never see half a dataset."""
    private = folder.with_name(f"{folder.name}.{os.getpid()}")
    dataset.save(private)
    try:
        private.rename(folder)
    except OSError:  # another process finished first: its copy is identical, keep it
        shutil.rmtree(private, ignore_errors=True)
