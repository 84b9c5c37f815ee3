"""simshop: a seeded simulated shop, the benchmark's default dataset and its controlled testbed.

Every table is drawn from one seed, so the same :class:`SimShopConfig` always gives identical frames and images.
The generative process, in the order the code runs it:

1. **Catalogue.** A fixed category tree (top level > mid category > leaf product type, e.g.
   ``Fashion > Shoes > Running Shoes``) with a shape, synonyms, materials, substitutes and complements per type.
   Each product draws a type, a brand of its top category (Zipf popularity, a usual price tier per brand),
   a colour, a style (the print pattern: plain, striped, ...), a material, a price tier, a price and a shop.
2. **Listings.** Real-listing-like English text: a keyword-stack title (brand, type, synonyms, attributes,
   category words, filler, sometimes a misleading type word), a description and bullet points.
   For a share ``image_only_share`` of the products, colour and style are *not written anywhere*: the ``color``
   and ``style`` columns are empty and no text field names them. Only the image shows them (the case MRSE is for).
3. **Images.** A 32 x 32 RGB picture per product, numpy only: a silhouette from the type's shape, filled with
   the colour, printed with the style's pattern, plus a random background, lighting gradient and pixel noise.
4. **Users.** Latent taste: favourite colours, style, one brand per top category, a price tier, shopping
   interests over mid categories, an activity level, and ``visual_reliance`` in [0, 1] weighing how much the
   visual attributes (colour, style) versus the textual ones (brand, price tier) drive their choices.
5. **Searches.** Over ``n_days`` days a user issues searches from an intent at one of three specificities:
   broad (a mid category, "shoes"), mid (a type, "running shoes") or specific (a type plus one or two attributes
   of an actual product the user would like, "red striped running shoes"). Visual users name colour and style
   more often. The text gets synonyms, word-order noise and typos. Days split into train, valid and test.
6. **Behaviour.** A non-personalised logging policy (a noisy lexical title matcher) shows ``exposure_size``
   items. Clicks follow a position-biased cascade-free click model: P(click) = examination(position) x
   attractiveness, attractiveness = click_noise + (1 - click_noise) x relevance x preference, preference =
   exp(preference_strength x (affinity - 1)). The user's taste therefore decides *which* relevant item is clicked,
   collected and ordered; with ``preference_strength = 0`` their history carries no signal about that choice.
7. **Judgments.** Every (query, product) pair gets an ESCI label from the query's ground-truth intent:
   E = right type and every named attribute; S = right type with an attribute that differs, or a substitute type;
   C = a complementary type; I = otherwise. Only E/S/C rows are written (``meta["fully_judged"] = True``).

Query split rule: a query text is "test" if any test-day search used it, else "valid" if any valid-day search
did, else "train". Behaviour-based training and evaluation use the per-search split in ``searches.parquet``.

Columns beyond the canonical schema: products get ``product_type, material, style, price_tier, price,
image_only`` and the ground truth ``latent_color, latent_style`` (for analysis and tests only: a model that reads
them is cheating); queries get ``specificity`` and ``intent``; searches get ``specificity``; users carry the
latent taste.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import typing
import zlib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import polars as pl

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.registry import cache_dir

# Bump whenever the generator's output changes, so cached datasets of an older version are not reused.
GENERATOR_VERSION = 2


# ======================================================================================================
# Configuration
# ======================================================================================================
@dataclass(frozen=True)
class SimShopConfig:
    """Knobs of the simulated shop. Every field has a default; presets are in :data:`PRESETS`.

    Attributes:
        n_products: catalogue size (at least one product per product type is guaranteed).
        n_users: number of shoppers.
        n_days: simulated days; the last ``test_days`` are test, the ``valid_days`` before them valid, the rest
            train.
        valid_days: days held out for validation (before the test days).
        test_days: days held out for testing (the last days).
        searches_per_day: searches issued per day, over all users (total = n_days x searches_per_day).
        exposure_size: items the logging policy shows per search (the exposure list).
        image_only_share: share of products whose colour and style appear only in the image, never in text.
        preference_strength: how strongly a user's latent taste drives which relevant item they click and order
            (and which attribute values they name in specific queries). 0 = taste plays no role.
        click_noise: attractiveness floor: the chance that an examined item is clicked whatever its relevance.
        position_bias: examination probability at 0-based position k is 1 / (1 + k) ** position_bias
            (0 = every position is examined).
        typo_rate: probability that a query gets one character-level typo (delete, swap, double, replace).
        word_order_noise: probability that a specific query's words are shuffled.
        synonym_rate: probability that a query names its type or category by a synonym ("trainers").
        broad_share: share of searches with a broad intent (a mid category: "shoes").
        specific_share: share of searches naming a type plus one or two attributes; the rest name a type only.
        misleading_rate: probability that a title carries a misleading keyword of another product type.
        logging_noise: noise of the lexical logging policy, in units of the matched words' mean IDF.
        image_size: side of the square product images, in pixels.
        seed: the random seed; every table and image is a pure function of the config.
    """

    n_products: int = 6000
    n_users: int = 2000
    n_days: int = 43
    valid_days: int = 1
    test_days: int = 2
    searches_per_day: int = 1000
    exposure_size: int = 20
    image_only_share: float = 0.5
    preference_strength: float = 3.0
    click_noise: float = 0.03
    position_bias: float = 1.0
    typo_rate: float = 0.05
    word_order_noise: float = 0.1
    synonym_rate: float = 0.3
    broad_share: float = 0.3
    specific_share: float = 0.35
    misleading_rate: float = 0.15
    logging_noise: float = 0.5
    image_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.n_products < len(PRODUCT_TYPES):
            problems.append(f"n_products must be >= {len(PRODUCT_TYPES)} (one per product type)")
        if self.n_users < 1 or self.searches_per_day < 1 or self.exposure_size < 1:
            problems.append("n_users, searches_per_day and exposure_size must be >= 1")
        if self.valid_days < 0 or self.test_days < 1 or self.n_days < self.valid_days + self.test_days + 1:
            problems.append("need test_days >= 1, valid_days >= 0 and at least one train day")
        for name in ("image_only_share", "click_noise", "typo_rate", "word_order_noise", "synonym_rate",
                     "broad_share", "specific_share", "misleading_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1]")
        if self.broad_share + self.specific_share > 1.0:
            problems.append("broad_share + specific_share must be <= 1")
        if min(self.preference_strength, self.position_bias, self.logging_noise) < 0:
            problems.append("preference_strength, position_bias and logging_noise must be >= 0")
        if self.image_size < 16:
            problems.append("image_size must be >= 16")
        if self.seed < 0:
            problems.append("seed must be >= 0")
        if problems:
            raise DatasetError("invalid simshop config: " + "; ".join(problems))

    @property
    def n_searches(self) -> int:
        return self.n_days * self.searches_per_day

    @property
    def train_days(self) -> int:
        return self.n_days - self.valid_days - self.test_days


# ======================================================================================================
# The shop's vocabulary: category tree, brands, colours, styles
# ======================================================================================================
@dataclass(frozen=True)
class MidCategory:
    name: str
    top: str
    terms: tuple[str, ...]  # how shoppers name the category in a broad query; the first is canonical
    adjectives: tuple[str, ...]  # selling words for titles and descriptions
    use: str
    base_price: float


@dataclass(frozen=True)
class ProductType:
    name: str
    mid: str
    shape: str
    synonyms: tuple[str, ...]
    materials: tuple[str, ...]
    substitutes: tuple[str, ...] = ()
    complements: tuple[str, ...] = ()


MID_CATEGORIES = (
    MidCategory("Shoes", "Fashion", ("shoes", "footwear"), ("breathable", "lightweight", "non slip", "cushioned"),
                "everyday wear, walking and sport", 60.0),
    MidCategory("Bags", "Fashion", ("bags", "bag"), ("waterproof", "large capacity", "durable", "travel"),
                "work, school and travel", 45.0),
    MidCategory("Clothing", "Fashion", ("clothing", "clothes"), ("soft", "slim fit", "oversized", "stretch"),
                "casual days and going out", 35.0),
    MidCategory("Accessories", "Fashion", ("accessories", "fashion accessories"), ("warm", "adjustable", "soft"),
                "completing any outfit", 20.0),
    MidCategory("Kitchen", "Home", ("kitchenware", "kitchen"), ("dishwasher safe", "durable", "leak proof"),
                "cooking, coffee breaks and lunch on the go", 25.0),
    MidCategory("Decor", "Home", ("home decor", "decor"), ("modern", "handmade", "minimalist", "cozy"),
                "living room, bedroom and office", 40.0),
    MidCategory("Bedding", "Home", ("bedding", "bed linen"), ("hypoallergenic", "breathable", "soft"),
                "a good night's sleep", 45.0),
    MidCategory("Fitness", "Sports", ("fitness equipment", "gym equipment"), ("non slip", "portable", "durable"),
                "home workouts and the gym", 30.0),
    MidCategory("Camping", "Sports", ("camping gear", "camping"), ("ultralight", "waterproof", "portable"),
                "hiking, camping and festivals", 70.0),
    MidCategory("Phone Accessories", "Electronics", ("phone accessories", "mobile accessories"),
                ("shockproof", "fast charging", "slim"), "every smartphone user", 18.0),
    MidCategory("Computer Accessories", "Electronics", ("computer accessories", "pc accessories"),
                ("wireless", "ergonomic", "silent"), "home office and gaming", 30.0),
)

PRODUCT_TYPES = (
    # Fashion > Shoes
    ProductType("running shoes", "Shoes", "shoe", ("jogging shoes", "running trainers"),
                ("mesh", "knit", "synthetic"), ("sneakers",), ("socks",)),
    ProductType("sneakers", "Shoes", "shoe", ("trainers", "casual shoes"), ("canvas", "leather", "suede"),
                ("running shoes", "slippers"), ("socks",)),
    ProductType("hiking boots", "Shoes", "boot", ("trekking boots", "walking boots"), ("leather", "suede", "synthetic"),
                ("running shoes",), ("socks", "backpack")),
    ProductType("sandals", "Shoes", "shoe", ("slides", "summer sandals"), ("leather", "rubber", "cork"),
                ("slippers",), ("tote bag",)),
    ProductType("slippers", "Shoes", "shoe", ("house shoes", "indoor slippers"), ("fleece", "wool", "cotton"),
                ("sandals",), ("socks",)),
    ProductType("high heels", "Shoes", "boot", ("pumps", "stilettos"), ("leather", "suede", "satin"),
                ("sandals",), ("handbag", "dress")),
    # Fashion > Bags
    ProductType("backpack", "Bags", "bag", ("rucksack", "daypack"), ("nylon", "canvas", "leather", "polyester"),
                ("gym bag", "tote bag"), ("laptop sleeve", "water bottle")),
    ProductType("tote bag", "Bags", "bag", ("shopper bag", "shoulder bag"), ("canvas", "leather", "cotton"),
                ("handbag",), ("wallet",)),
    ProductType("handbag", "Bags", "bag", ("purse", "clutch"), ("leather", "suede", "satin"), ("tote bag",),
                ("wallet",)),
    ProductType("wallet", "Bags", "wallet", ("card holder", "billfold"), ("leather", "canvas", "nylon"), (),
                ("handbag", "belt")),
    ProductType("suitcase", "Bags", "suitcase", ("luggage", "trolley case"), ("polycarbonate", "nylon", "aluminium"),
                (), ("backpack",)),
    # Fashion > Clothing
    ProductType("t-shirt", "Clothing", "shirt", ("tee", "top"), ("cotton", "polyester", "linen"), ("hoodie",),
                ("jeans", "cap")),
    ProductType("hoodie", "Clothing", "shirt", ("sweatshirt", "pullover"), ("cotton", "fleece", "polyester"),
                ("jacket", "t-shirt"), ("jeans",)),
    ProductType("dress", "Clothing", "dress", ("sundress", "maxi dress"), ("cotton", "linen", "satin"), (),
                ("high heels", "handbag")),
    ProductType("jacket", "Clothing", "shirt", ("coat", "windbreaker"), ("nylon", "wool", "leather"),
                ("hoodie",), ("scarf",)),
    ProductType("jeans", "Clothing", "trousers", ("denim pants", "trousers"), ("denim", "cotton", "stretch denim"),
                (), ("belt", "t-shirt")),
    # Fashion > Accessories
    ProductType("socks", "Accessories", "socks", ("ankle socks", "crew socks"), ("cotton", "wool", "bamboo"),
                (), ("running shoes", "sneakers")),
    ProductType("cap", "Accessories", "cap", ("baseball cap", "hat"), ("cotton", "polyester", "wool"), (),
                ("t-shirt",)),
    ProductType("scarf", "Accessories", "textile", ("shawl", "wrap"), ("wool", "cashmere", "cotton"), (),
                ("jacket",)),
    ProductType("belt", "Accessories", "strap", ("waist belt", "leather belt"), ("leather", "canvas", "nylon"), (),
                ("jeans",)),
    # Home > Kitchen
    ProductType("mug", "Kitchen", "mug", ("coffee mug", "cup"), ("ceramic", "glass", "enamel"), (), ("teapot",)),
    ProductType("teapot", "Kitchen", "teapot", ("tea kettle", "tea pot"), ("ceramic", "cast iron", "glass"), (),
                ("mug",)),
    ProductType("frying pan", "Kitchen", "pan", ("skillet", "saute pan"), ("cast iron", "stainless steel",
                "aluminium"), (), ("lunch box",)),
    ProductType("water bottle", "Kitchen", "bottle", ("drinking bottle", "flask"), ("stainless steel", "plastic",
                "glass"), (), ("lunch box", "gym bag")),
    ProductType("lunch box", "Kitchen", "box", ("bento box", "food container"), ("plastic", "stainless steel",
                "bamboo"), (), ("water bottle",)),
    # Home > Decor
    ProductType("cushion", "Decor", "cushion", ("throw pillow", "cushion cover"), ("cotton", "velvet", "linen"),
                ("pillow",), ("blanket", "rug")),
    ProductType("vase", "Decor", "vase", ("flower vase", "flower pot"), ("ceramic", "glass", "porcelain"), (),
                ("table lamp",)),
    ProductType("table lamp", "Decor", "lamp", ("desk lamp", "bedside lamp"), ("metal", "ceramic", "wood"), (),
                ("vase",)),
    ProductType("rug", "Decor", "textile", ("carpet", "area rug"), ("wool", "jute", "cotton"), (), ("cushion",)),
    ProductType("curtain", "Decor", "textile", ("drapes", "window curtain"), ("polyester", "linen", "velvet"), (),
                ("cushion",)),
    # Home > Bedding
    ProductType("duvet cover", "Bedding", "textile", ("quilt cover", "comforter cover"), ("cotton", "linen",
                "microfiber"), ("blanket",), ("pillow",)),
    ProductType("pillow", "Bedding", "cushion", ("bed pillow", "sleeping pillow"), ("memory foam", "cotton",
                "microfiber"), ("cushion",), ("duvet cover",)),
    ProductType("blanket", "Bedding", "textile", ("fleece blanket", "throw blanket"), ("fleece", "wool", "cotton"),
                ("duvet cover",), ("pillow",)),
    # Sports > Fitness
    ProductType("yoga mat", "Fitness", "textile", ("exercise mat", "workout mat"), ("tpe", "rubber", "cork"), (),
                ("resistance band", "water bottle")),
    ProductType("dumbbell", "Fitness", "dumbbell", ("hand weights", "dumbbells set"), ("cast iron", "neoprene",
                "rubber"), (), ("yoga mat",)),
    ProductType("resistance band", "Fitness", "strap", ("exercise band", "loop band"), ("latex", "fabric"), (),
                ("yoga mat",)),
    ProductType("gym bag", "Fitness", "bag", ("duffel bag", "sports bag"), ("nylon", "polyester", "canvas"),
                ("backpack",), ("water bottle",)),
    # Sports > Camping
    ProductType("tent", "Camping", "tent", ("camping tent", "dome tent"), ("nylon", "polyester", "canvas"), (),
                ("sleeping bag",)),
    ProductType("sleeping bag", "Camping", "sleeping_bag", ("mummy bag", "camping sleeping bag"), ("nylon",
                "polyester", "down"), (), ("tent",)),
    ProductType("camping chair", "Camping", "chair", ("folding chair", "camp chair"), ("aluminium", "steel",
                "nylon"), (), ("tent",)),
    # Electronics > Phone Accessories
    ProductType("phone case", "Phone Accessories", "phone", ("phone cover", "protective case"), ("silicone",
                "leather", "tpu"), (), ("charger",)),
    ProductType("charger", "Phone Accessories", "charger", ("charging adapter", "power adapter"), ("plastic",
                "gan"), (), ("phone case",)),
    ProductType("earphones", "Phone Accessories", "round", ("earbuds", "headphones"), ("plastic", "silicone",
                "metal"), (), ("phone case",)),
    # Electronics > Computer Accessories
    ProductType("laptop sleeve", "Computer Accessories", "wallet", ("laptop case", "laptop bag"), ("neoprene",
                "felt", "leather"), (), ("mouse",)),
    ProductType("mouse", "Computer Accessories", "mouse", ("computer mouse", "wireless mouse"), ("plastic",
                "aluminium"), (), ("mouse pad", "keyboard")),
    ProductType("keyboard", "Computer Accessories", "keyboard", ("mechanical keyboard", "wireless keyboard"),
                ("plastic", "aluminium"), (), ("mouse",)),
    ProductType("mouse pad", "Computer Accessories", "textile", ("mouse mat", "desk mat"), ("rubber", "cloth",
                "leather"), (), ("mouse",)),
)

TOP_CATEGORIES = tuple(dict.fromkeys(mid.top for mid in MID_CATEGORIES))
BRANDS_BY_TOP = {
    "Fashion": ("Nordvik", "Alturo", "Kestrel", "Sollen", "Varro", "Brisa", "Ostara", "Trekka"),
    "Home": ("Casaluna", "Hearthly", "Kitchara", "Dovetail", "Linnea", "Ferro", "Potterly", "Nestwell"),
    "Sports": ("Peakform", "Stridex", "Summitco", "Ironroot", "Flexa", "Campora", "Vantage", "Ridgeway"),
    "Electronics": ("Voltix", "Cablo", "Sonique", "Pixelon", "Keyra", "Ampora", "Zento", "Circuity"),
}
BRANDS = tuple(brand for top in TOP_CATEGORIES for brand in BRANDS_BY_TOP[top])
BRAND_TOP = np.array([TOP_CATEGORIES.index(top) for top in TOP_CATEGORIES for _ in BRANDS_BY_TOP[top]])

# Colour prototypes, far apart in RGB so that a colour is recoverable from the pixels.
COLOR_RGB = {
    "red": (205, 30, 35), "orange": (245, 135, 20), "yellow": (245, 215, 40), "green": (40, 150, 55),
    "teal": (0, 140, 145), "blue": (35, 75, 205), "purple": (120, 45, 160), "pink": (245, 140, 190),
    "brown": (115, 65, 30), "black": (25, 25, 25), "white": (245, 245, 245), "grey": (130, 130, 130),
}
COLORS = tuple(COLOR_RGB)
COLOR_POPULARITY = np.array([9, 6, 6, 8, 5, 11, 6, 7, 6, 14, 12, 10], dtype=float)
COLOR_SYNONYMS = {"grey": ("gray",), "purple": ("violet",), "teal": ("turquoise",)}
STYLES = ("plain", "striped", "polka dot", "checked", "zigzag")
STYLE_POPULARITY = np.array([30, 20, 15, 20, 15], dtype=float)
STYLE_SYNONYMS = {"striped": ("stripe",), "polka dot": ("dotted",), "checked": ("plaid",)}
PRICE_TIERS = ("budget", "standard", "premium", "luxury")
TIER_PRICE_FACTOR = np.array([0.6, 1.0, 1.8, 3.5])
MATERIALS = tuple(dict.fromkeys(m for t in PRODUCT_TYPES for m in t.materials))
LABELS = ("E", "S", "C", "I")
EXACT, SUBSTITUTE, COMPLEMENT, IRRELEVANT = range(4)  # label codes, indices into LABELS

_MID_INDEX = {mid.name: i for i, mid in enumerate(MID_CATEGORIES)}
_TYPE_INDEX = {t.name: i for i, t in enumerate(PRODUCT_TYPES)}
TYPE_MID = np.array([_MID_INDEX[t.mid] for t in PRODUCT_TYPES])
MID_TOP = np.array([TOP_CATEGORIES.index(mid.top) for mid in MID_CATEGORIES])

FILLER_WORDS = ("new", "2024", "hot sale", "gift", "free shipping", "premium quality", "best seller", "trendy",
                "for men", "for women", "unisex", "classic", "everyday", "original")

PROTOCOL = ("simshop: simulated shop; behaviour split by day (train days, then valid, then test); "
            "judgments from ground-truth intents, fully judged (missing pair = I)")


# ======================================================================================================
# Public API
# ======================================================================================================
PRESETS: dict[str, SimShopConfig] = {
    "tiny": SimShopConfig(n_products=300, n_users=60, n_days=15, searches_per_day=100),
    "default": SimShopConfig(),
    "nopref": SimShopConfig(preference_strength=0.0),
    "alltext": SimShopConfig(image_only_share=0.0),
}


def generate_simshop(config: SimShopConfig, name: str = "simshop") -> ProductSearchDataset:
    """Generate the whole shop; a pure function of ``config`` (same config -> identical frames and images)."""
    catalogue = _sample_catalogue(config)
    titles, descriptions, bullets = _write_listings(config, catalogue)
    images = _render_images(config, catalogue)
    users = _sample_users(config)
    searches = _sample_searches(config, catalogue, users)
    query_texts, search_query = _write_queries(config, searches)
    intents, search_intent, query_intent = _index_intents(searches, search_query, len(query_texts))
    labels = _label_matrix(intents, catalogue)
    exposed = _log_exposures(config, titles, query_texts, search_query)
    behaviour = _simulate_behaviour(config, catalogue, users, searches, exposed, labels[search_intent[:, None], exposed])
    split = _search_split(config, searches["timestamp"])
    return ProductSearchDataset(
        name=name,
        products=_products_frame(catalogue, titles, descriptions, bullets),
        queries=_queries_frame(query_texts, query_intent, intents, search_query, split),
        judgments=_judgments_frame(labels, query_intent),
        searches=_searches_frame(searches, search_query, split),
        interactions=_interactions_frame(searches, exposed, behaviour),
        users=_users_frame(users),
        images=images,
        meta=_meta(config),
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


def resolve_config(preset: str = "default", **overrides) -> SimShopConfig:
    """The preset's config with overrides applied (strings coerced); unknown names raise DatasetError."""
    if preset not in PRESETS:
        raise DatasetError(f"unknown simshop preset '{preset}'; valid presets: {', '.join(PRESETS)}")
    types = typing.get_type_hints(SimShopConfig)
    valid = [f.name for f in fields(SimShopConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise DatasetError(f"unknown simshop parameter(s) {unknown}; valid keys: {', '.join(valid)}")
    coerced = {key: _coerce(key, value, types[key]) for key, value in overrides.items()}
    return replace(PRESETS[preset], **coerced)


def config_hash(config: SimShopConfig) -> str:
    payload = json.dumps({"version": GENERATOR_VERSION, **asdict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _coerce(key: str, value: object, field_type: type) -> object:
    if isinstance(value, str):
        text = value.strip()
        try:
            if field_type is int:
                number = float(text)
                if not number.is_integer():
                    raise ValueError(text)
                return int(number)
            return float(text)
        except ValueError:
            raise DatasetError(f"simshop parameter {key}={value!r} is not a valid {field_type.__name__}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"simshop parameter {key}={value!r} must be a {field_type.__name__}")
    if field_type is int and not float(value).is_integer():
        raise DatasetError(f"simshop parameter {key}={value!r} must be an integer")
    return field_type(value)


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


def _meta(config: SimShopConfig) -> dict:
    train, valid = config.train_days, config.train_days + config.valid_days
    return {
        "generator": "simshop",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "seed": config.seed,
        "fully_judged": True,
        "label_source": "behaviour",
        "protocol": PROTOCOL,
        "image_size": config.image_size,
        "split_days": {"train": [0, train], "valid": [train, valid], "test": [valid, config.n_days]},
        "query_split_rule": "test if any test search used the text, else valid if any valid search did, else train",
        "latent_columns": {"products": ["latent_color", "latent_style"]},
    }


def _stage_rng(config: SimShopConfig, stage: str) -> np.random.Generator:
    """An independent stream per stage, so changing one stage's draws leaves the others' untouched."""
    return np.random.default_rng([config.seed, zlib.crc32(stage.encode())])


def _stage_random(config: SimShopConfig, stage: str) -> random.Random:
    """Python's Random for string-level choices (faster than numpy per item); seeded from a string = stable."""
    return random.Random(f"simshop-{config.seed}-{stage}")


# ======================================================================================================
# 1. Catalogue
# ======================================================================================================
def _zipf_weights(n: int, exponent: float = 0.8) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _sample_catalogue(config: SimShopConfig) -> dict[str, np.ndarray]:
    rng = _stage_rng(config, "catalogue")
    n = config.n_products
    # Assortment depth varies a little per type; every type is stocked at least once.
    type_weights = rng.dirichlet(np.full(len(PRODUCT_TYPES), 8.0))
    type_idx = rng.choice(len(PRODUCT_TYPES), size=n, p=type_weights)
    type_idx[: len(PRODUCT_TYPES)] = np.arange(len(PRODUCT_TYPES))
    type_idx = rng.permutation(type_idx)

    brand = _sample_brands(rng, type_idx)
    brand_tier = np.arange(len(BRANDS)) % len(PRICE_TIERS)  # each brand has a usual price tier
    tier = np.where(rng.random(n) < 0.75, brand_tier[brand], rng.integers(len(PRICE_TIERS), size=n))
    base_price = np.array([MID_CATEGORIES[m].base_price for m in TYPE_MID])[type_idx]
    price = np.round(base_price * TIER_PRICE_FACTOR[tier] * rng.lognormal(0.0, 0.25, n)) - 0.01
    return {
        "type": type_idx,
        "brand": brand,
        "color": rng.choice(len(COLORS), size=n, p=COLOR_POPULARITY / COLOR_POPULARITY.sum()),
        "style": rng.choice(len(STYLES), size=n, p=STYLE_POPULARITY / STYLE_POPULARITY.sum()),
        "material": _sample_materials(rng, type_idx),
        "tier": tier,
        "price": np.maximum(price, 0.99),
        "shop": _sample_shops(rng, type_idx),
        "image_only": rng.random(n) < config.image_only_share,
    }


def _sample_brands(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    """Brands of the product's top category, with Zipf popularity (a few big brands, a long tail)."""
    top = MID_TOP[TYPE_MID[type_idx]]
    brand = np.empty(len(type_idx), dtype=np.int64)
    for t in range(len(TOP_CATEGORIES)):
        rows = np.flatnonzero(top == t)
        candidates = _brands_of_top(t)
        brand[rows] = rng.choice(candidates, size=len(rows), p=_zipf_weights(len(candidates)))
    return brand


def _brands_of_top(top: int) -> np.ndarray:
    return np.flatnonzero(np.equal(BRAND_TOP, top))


def _sample_materials(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    material = np.empty(len(type_idx), dtype=np.int64)
    for t, product_type in enumerate(PRODUCT_TYPES):
        rows = np.flatnonzero(type_idx == t)
        options = np.array([MATERIALS.index(m) for m in product_type.materials])
        material[rows] = options[rng.integers(len(options), size=len(rows))]
    return material


def _sample_shops(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    """Shops specialise in one mid category; within it a few big shops hold most listings."""
    shops_per_mid = max(1, len(type_idx) // (40 * len(MID_CATEGORIES)))
    mid = TYPE_MID[type_idx]
    local = rng.choice(shops_per_mid, size=len(type_idx), p=_zipf_weights(shops_per_mid))
    return mid * shops_per_mid + local


# ======================================================================================================
# 2. Listings (title, description, bullets)
# ======================================================================================================
def _write_listings(config: SimShopConfig, catalogue: dict[str, np.ndarray]) -> tuple[list, list, list]:
    rnd = _stage_random(config, "listings")
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


# ======================================================================================================
# 3. Images (numpy only)
# ======================================================================================================
def _ellipse(u, v, cx, cy, rx, ry):
    return ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0


def _rect(u, v, x0, x1, y0, y1):
    return (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)


def _trapezoid(u, v, y0, y1, top_half_width, bottom_half_width):
    t = (v - y0) / (y1 - y0)
    return (t >= 0) & (t <= 1) & (np.abs(u) <= top_half_width + (bottom_half_width - top_half_width) * t)


def _annulus(u, v, cx, cy, r0, r1):
    radius = np.hypot(u - cx, v - cy)
    return (radius >= r0) & (radius <= r1)


# Each shape maps normalised coordinates (u right, v down, both in [-1, 1]) to (body, accent) masks. Every body
# covers the central square |u|, |v| <= 0.3, so the centre of an image always shows the product's colour.
SHAPES = {
    "shoe": lambda u, v: (_ellipse(u, v, 0, 0.12, 0.92, 0.5) | _ellipse(u, v, -0.45, -0.3, 0.38, 0.42),
                          _rect(u, v, -0.9, 0.92, 0.55, 0.7)),
    "boot": lambda u, v: (_rect(u, v, -0.5, 0.35, -0.85, 0.55) | _ellipse(u, v, 0.15, 0.25, 0.75, 0.32),
                          _rect(u, v, -0.55, 0.9, 0.55, 0.7)),
    "bag": lambda u, v: (_rect(u, v, -0.72, 0.72, -0.4, 0.82),
                         _annulus(u, v, 0, -0.4, 0.3, 0.4) & (v < -0.4)),
    "wallet": lambda u, v: (_rect(u, v, -0.82, 0.82, -0.52, 0.52), _rect(u, v, 0.58, 0.76, -0.1, 0.1)),
    "suitcase": lambda u, v: (_rect(u, v, -0.6, 0.6, -0.6, 0.82),
                              (_rect(u, v, -0.22, 0.22, -0.85, -0.6) & ~_rect(u, v, -0.13, 0.13, -0.77, -0.6))
                              | _ellipse(u, v, -0.42, 0.9, 0.09, 0.08) | _ellipse(u, v, 0.42, 0.9, 0.09, 0.08)),
    "shirt": lambda u, v: (_rect(u, v, -0.5, 0.5, -0.7, 0.9) | _rect(u, v, -0.92, 0.92, -0.7, -0.3),
                           _ellipse(u, v, 0, -0.7, 0.2, 0.12)),
    "dress": lambda u, v: (_trapezoid(u, v, -0.75, 0.92, 0.34, 0.82),
                           _rect(u, v, -0.3, -0.2, -0.95, -0.75) | _rect(u, v, 0.2, 0.3, -0.95, -0.75)),
    "trousers": lambda u, v: (_rect(u, v, -0.55, 0.55, -0.72, 0.4) | _rect(u, v, -0.55, -0.06, 0.4, 0.92)
                              | _rect(u, v, 0.06, 0.55, 0.4, 0.92), _rect(u, v, -0.55, 0.55, -0.86, -0.72)),
    "socks": lambda u, v: (_rect(u, v, -0.42, 0.36, -0.72, 0.45) | _ellipse(u, v, 0.2, 0.45, 0.65, 0.3),
                           _rect(u, v, -0.42, 0.36, -0.9, -0.72)),
    "cap": lambda u, v: (_ellipse(u, v, 0, 0.35, 0.74, 0.82) & (v <= 0.36), _rect(u, v, -0.1, 0.98, 0.36, 0.5)),
    "textile": lambda u, v: (_rect(u, v, -0.88, 0.88, -0.62, 0.62),
                             (np.abs(u) > 0.88) & (np.abs(u) < 0.98) & (np.abs(v) < 0.62) & ((v * 10) % 1 < 0.5)),
    "strap": lambda u, v: (_rect(u, v, -0.95, 0.95, -0.36, 0.36),
                           _rect(u, v, 0.55, 0.78, -0.45, 0.45) & ~_rect(u, v, 0.61, 0.72, -0.36, 0.36)),
    "mug": lambda u, v: (_rect(u, v, -0.55, 0.42, -0.62, 0.72), _annulus(u, v, 0.42, 0.05, 0.2, 0.33) & (u > 0.42)),
    "teapot": lambda u, v: (_ellipse(u, v, 0, 0.12, 0.62, 0.6) | _ellipse(u, v, 0, -0.5, 0.25, 0.12),
                            _rect(u, v, -0.95, -0.58, -0.12, 0.04) | (_annulus(u, v, 0.6, 0.1, 0.18, 0.3) & (u > 0.6))),
    "pan": lambda u, v: (_ellipse(u, v, -0.12, 0, 0.64, 0.64), _rect(u, v, 0.5, 1.0, -0.08, 0.08)),
    "bottle": lambda u, v: (_rect(u, v, -0.4, 0.4, -0.5, 0.92) | _rect(u, v, -0.18, 0.18, -0.75, -0.5),
                            _rect(u, v, -0.2, 0.2, -0.95, -0.75)),
    "box": lambda u, v: (_rect(u, v, -0.78, 0.78, -0.4, 0.68), _rect(u, v, -0.82, 0.82, -0.6, -0.42)),
    "cushion": lambda u, v: ((np.abs(u / 0.78) ** 4 + np.abs(v / 0.78) ** 4) <= 1.0,
                             _ellipse(u, v, 0.72, 0.72, 0.08, 0.08) | _ellipse(u, v, -0.72, -0.72, 0.08, 0.08)),
    "vase": lambda u, v: (_ellipse(u, v, 0, 0.2, 0.62, 0.72) | _rect(u, v, -0.22, 0.22, -0.8, -0.3),
                          _rect(u, v, -0.3, 0.3, -0.9, -0.78)),
    "lamp": lambda u, v: (_trapezoid(u, v, -0.85, 0.4, 0.28, 0.64),
                          _rect(u, v, -0.06, 0.06, 0.4, 0.82) | _rect(u, v, -0.4, 0.4, 0.82, 0.94)),
    "tent": lambda u, v: (_trapezoid(u, v, -1.0, 0.8, 0.02, 1.0), _trapezoid(u, v, 0.4, 0.8, 0.02, 0.2)),
    "sleeping_bag": lambda u, v: (_ellipse(u, v, 0, 0.05, 0.56, 0.92), _ellipse(u, v, 0, -0.72, 0.3, 0.14)),
    "chair": lambda u, v: (_rect(u, v, -0.6, 0.6, -0.85, 0.38),
                           _rect(u, v, -0.62, -0.5, 0.38, 0.95) | _rect(u, v, 0.5, 0.62, 0.38, 0.95)),
    "dumbbell": lambda u, v: (_rect(u, v, -0.5, 0.5, -0.36, 0.36) | _rect(u, v, -0.92, -0.52, -0.72, 0.72)
                              | _rect(u, v, 0.52, 0.92, -0.72, 0.72),
                              _rect(u, v, -0.52, -0.5, -0.72, 0.72) | _rect(u, v, 0.5, 0.52, -0.72, 0.72)),
    "phone": lambda u, v: (_rect(u, v, -0.5, 0.5, -0.88, 0.88), _rect(u, v, -0.4, -0.14, -0.78, -0.52)),
    "charger": lambda u, v: (_rect(u, v, -0.52, 0.52, -0.5, 0.52),
                             _rect(u, v, -0.3, -0.18, -0.85, -0.5) | _rect(u, v, 0.18, 0.3, -0.85, -0.5)
                             | _rect(u, v, -0.05, 0.05, 0.52, 0.98)),
    "round": lambda u, v: (_ellipse(u, v, 0, 0.02, 0.64, 0.64), _ellipse(u, v, 0, 0.5, 0.06, 0.06)),
    "mouse": lambda u, v: (_ellipse(u, v, 0, 0.05, 0.54, 0.84), _rect(u, v, -0.05, 0.05, -0.62, -0.38)),
    "keyboard": lambda u, v: (_rect(u, v, -0.95, 0.95, -0.42, 0.42), _rect(u, v, -0.04, 0.04, -0.85, -0.42)),
}
SHAPE_NAMES = tuple(SHAPES)
TYPE_SHAPE = np.array([SHAPE_NAMES.index(t.shape) for t in PRODUCT_TYPES])


IMAGE_CHUNK = 512  # products drawn at once: bounds memory whatever the catalogue size


def _render_images(config: SimShopConfig, catalogue: dict[str, np.ndarray]) -> np.ndarray:
    rng = _stage_rng(config, "images")
    looks = _sample_looks(rng, catalogue)
    n, size = len(catalogue["type"]), config.image_size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, IMAGE_CHUNK):
        rows = slice(start, start + IMAGE_CHUNK)
        images[rows] = _draw({name: values[rows] for name, values in looks.items()}, size, rng)
    return images


def _sample_looks(rng: np.random.Generator, catalogue: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Everything random about a product's picture except pixel noise, one row per product."""
    n = len(catalogue["type"])
    base = np.array(list(COLOR_RGB.values()), dtype=np.float32)[catalogue["color"]]
    base = np.clip(base + rng.normal(0, 6, (n, 3)), 0, 255).astype(np.float32)  # shades vary a little
    # The print is a shade of the colour itself (darker on light colours, lighter on dark ones), so the
    # average colour of the product stays near its prototype.
    luminance = base @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    light = luminance[:, None] > 140
    print_rgb = np.where(light, base * 0.7, base * 0.6 + 200 * 0.4).astype(np.float32)
    return {
        "shape": TYPE_SHAPE[catalogue["type"]],
        "style": catalogue["style"],
        "base": base,
        "print": print_rgb,
        "background": np.clip(rng.uniform(205, 250, (n, 1)) + rng.normal(0, 6, (n, 3)), 0, 255),
        # Placement jitter (shift, zoom) so that no two pictures are pixel-identical; a soft lighting gradient.
        "shift": rng.uniform(-0.05, 0.05, (n, 2)),
        "zoom": rng.uniform(0.95, 1.12, n),
        "lighting": rng.uniform(-0.06, 0.06, (n, 2)),
        "period": rng.uniform(0.32, 0.45, n),
        "phase": rng.uniform(0, 1, n),
        "angle": rng.choice(np.array([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]), n),
    }


def _draw(looks: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(looks["shape"])
    axis = ((np.arange(size) + 0.5) / size) * 2 - 1  # pixel centres in [-1, 1]
    zoom = looks["zoom"][:, None, None]
    u = np.broadcast_to((axis[None, None, :] - looks["shift"][:, 0, None, None]) / zoom, (n, size, size))
    v = np.broadcast_to((axis[None, :, None] - looks["shift"][:, 1, None, None]) / zoom, (n, size, size))

    body, accent, pattern = (np.zeros((n, size, size), dtype=bool) for _ in range(3))
    for s, shape_name in enumerate(SHAPE_NAMES):
        rows = np.flatnonzero(looks["shape"] == s)
        if len(rows):
            body[rows], accent[rows] = SHAPES[shape_name](u[rows], v[rows])
    for s, style in enumerate(STYLES):
        rows = np.flatnonzero(looks["style"] == s)
        if len(rows):
            params = (looks[name][rows, None, None] for name in ("period", "phase", "angle"))
            pattern[rows] = _pattern(style, u[rows], v[rows], *params)

    image = np.where(pattern[..., None], looks["print"][:, None, None], looks["base"][:, None, None])
    image = np.where(body[..., None], image, looks["background"][:, None, None])
    image = np.where((body & _edges(body))[..., None], image * 0.65, image)  # outline the silhouette
    image = np.where(accent[..., None], looks["base"][:, None, None] * 0.4 + 20, image)  # soles, handles: trim
    lighting = 1 + looks["lighting"][:, 0, None, None] * u + looks["lighting"][:, 1, None, None] * v
    image = image * lighting[..., None] + rng.normal(0, 7, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of a mask with a 4-neighbour outside it."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return ~interior


def _pattern(style: str, u: np.ndarray, v: np.ndarray, period: np.ndarray, phase: np.ndarray,
             angle: np.ndarray) -> np.ndarray:
    """Where the print shows. Thin strokes (a third of the area at most) keep the product's colour dominant."""
    x, y = u / period + phase, v / period + phase
    if style == "striped":
        return ((u * np.cos(angle) + v * np.sin(angle)) / period + phase) % 1 < 0.32
    if style == "polka dot":
        return (x % 1 - 0.5) ** 2 + (y % 1 - 0.5) ** 2 < 0.28**2
    if style == "checked":
        return (x % 1 < 0.2) | (y % 1 < 0.2)
    if style == "zigzag":
        return (y + np.abs((u / period) % 1 - 0.5)) % 1 < 0.3
    return np.zeros(u.shape, dtype=bool)  # plain


# ======================================================================================================
# 4. Users
# ======================================================================================================
def _sample_users(config: SimShopConfig) -> dict[str, np.ndarray]:
    rng = _stage_rng(config, "users")
    n = config.n_users
    fav_colors = _top_k_mask(rng, np.log(COLOR_POPULARITY)[None].repeat(n, 0), 2)
    fav_styles = _top_k_mask(rng, np.log(STYLE_POPULARITY)[None].repeat(n, 0), 1)
    fav_brands = np.zeros((n, len(BRANDS)), dtype=bool)
    for t in range(len(TOP_CATEGORIES)):  # one favourite brand per top category, big brands more often
        candidates = _brands_of_top(t)
        fav_brands[np.arange(n), rng.choice(candidates, size=n, p=_zipf_weights(len(candidates), 0.5))] = True
    visual_reliance = rng.beta(0.7, 0.7, n)
    return {
        "fav_colors": fav_colors,
        "fav_styles": fav_styles,
        "fav_brands": fav_brands,
        "tier": rng.choice(len(PRICE_TIERS), size=n, p=[0.3, 0.35, 0.25, 0.1]),
        "visual_reliance": visual_reliance,
        # Users shop a few mid categories again and again: a sparse Dirichlet over them.
        "interests": rng.dirichlet(np.full(len(MID_CATEGORIES), 0.3), size=n),
        "activity": rng.lognormal(0.0, 0.7, n),
    }


def _top_k_mask(rng: np.random.Generator, log_weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct choices per row, weighted (Gumbel top-k)."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    mask = np.zeros(log_weights.shape, dtype=bool)
    np.put_along_axis(mask, np.argsort(-keys, axis=1)[:, :k], True, axis=1)
    return mask


def _affinity(users: dict[str, np.ndarray], catalogue: dict[str, np.ndarray], user: np.ndarray,
              product: np.ndarray) -> np.ndarray:
    """How well a product fits a user's taste, in [0, 1]; visual users weigh colour and style, textual users
    brand and price tier. user and product broadcast against each other."""
    reliance = users["visual_reliance"][user]
    visual = 0.5 * users["fav_colors"][user, catalogue["color"][product]] \
        + 0.5 * users["fav_styles"][user, catalogue["style"][product]]
    textual = 0.6 * users["fav_brands"][user, catalogue["brand"][product]] \
        + 0.4 * (users["tier"][user] == catalogue["tier"][product])
    return reliance * visual + (1 - reliance) * textual


# ======================================================================================================
# 5. Searches: who searches when, and for what intent
# ======================================================================================================
BROAD, MID_SPECIFICITY, SPECIFIC = 0, 1, 2
SPECIFICITIES = ("broad", "mid", "specific")
ATTRIBUTES = ("brand", "color", "style", "material")


def _sample_searches(config: SimShopConfig, catalogue: dict[str, np.ndarray],
                     users: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = _stage_rng(config, "searches")
    n = config.n_searches
    # Leave room at the end of the day so clicks and orders stay in the search's day (and split).
    timestamp = np.sort(np.repeat(np.arange(config.n_days), config.searches_per_day) + rng.uniform(0, 0.99, n))
    user = rng.choice(config.n_users, size=n, p=users["activity"] / users["activity"].sum())
    specificity = rng.choice(3, size=n, p=[config.broad_share, 1 - config.broad_share - config.specific_share,
                                           config.specific_share])
    mid = _gumbel_argmax(rng, np.log(users["interests"][user] + 1e-12))
    # The type follows the assortment: shoppers look for what the shop stocks.
    stock = np.bincount(catalogue["type"], minlength=len(PRODUCT_TYPES)).astype(float)
    type_given_mid = np.where(TYPE_MID[None, :] == np.arange(len(MID_CATEGORIES))[:, None], stock[None, :], 0)
    product_type = _gumbel_argmax(rng, np.log(type_given_mid[mid] + 1e-12))

    intent = {name: np.full(n, -1) for name in ATTRIBUTES}
    specific = np.flatnonzero(specificity == SPECIFIC)
    target = _sample_targets(rng, config, catalogue, users, user[specific], product_type[specific])
    named = _sample_named_attributes(rng, users["visual_reliance"][user[specific]])
    for a, name in enumerate(ATTRIBUTES):
        intent[name][specific] = np.where(named[:, a], catalogue[name][target], -1)
    return {
        "timestamp": timestamp, "user": user, "specificity": specificity, "mid": mid,
        "type": np.where(specificity == BROAD, -1, product_type), **intent,
    }


def _gumbel_argmax(rng: np.random.Generator, log_weights: np.ndarray) -> np.ndarray:
    return np.argmax(log_weights + rng.gumbel(size=log_weights.shape), axis=1)


def _sample_targets(rng: np.random.Generator, config: SimShopConfig, catalogue: dict[str, np.ndarray],
                    users: dict[str, np.ndarray], user: np.ndarray, product_type: np.ndarray) -> np.ndarray:
    """The product a specific query describes: one of the type's products, tilted towards the user's taste.
    Drawing attribute values from a real product guarantees every specific query has an exact match."""
    target = np.empty(len(user), dtype=np.int64)
    for t in range(len(PRODUCT_TYPES)):
        rows = np.flatnonzero(product_type == t)
        if not len(rows):
            continue
        candidates = np.flatnonzero(catalogue["type"] == t)
        taste = config.preference_strength * _affinity(users, catalogue, user[rows, None], candidates[None, :])
        target[rows] = candidates[_gumbel_argmax(rng, taste)]
    return target


def _sample_named_attributes(rng: np.random.Generator, visual_reliance: np.ndarray) -> np.ndarray:
    """Which attributes a specific query names: one, sometimes two; visual users name colour and style."""
    vr = visual_reliance[:, None]
    weights = np.concatenate([1 - vr, vr, 0.6 * vr, 0.6 * (1 - vr)], axis=1) + 0.05  # brand, color, style, material
    keys = np.log(weights) + rng.gumbel(size=weights.shape)
    order = np.argsort(-keys, axis=1)
    named = np.zeros(weights.shape, dtype=bool)
    named[np.arange(len(vr)), order[:, 0]] = True
    second = rng.random(len(vr)) < 0.35
    named[np.flatnonzero(second), order[second, 1]] = True
    return named


def _search_split(config: SimShopConfig, timestamp: np.ndarray) -> np.ndarray:
    day = np.floor(timestamp)
    return np.where(day < config.train_days, "train",
                    np.where(day < config.train_days + config.valid_days, "valid", "test"))


# ======================================================================================================
# Query texts and intents
# ======================================================================================================
def _write_queries(config: SimShopConfig, searches: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Render each search's intent as text; return the distinct texts (first-use order) and each search's."""
    rnd = _stage_random(config, "queries")
    text_index: dict[str, int] = {}
    search_query = np.empty(len(searches["user"]), dtype=np.int64)
    for i in range(len(search_query)):
        text = _query_text(rnd, config, {key: int(values[i]) for key, values in searches.items()
                                         if key not in ("timestamp", "user")})
        search_query[i] = text_index.setdefault(text, len(text_index))
    return list(text_index), search_query


def _query_text(rnd: random.Random, config: SimShopConfig, intent: dict[str, int]) -> str:
    def pick(canonical: str, synonyms: tuple[str, ...]) -> str:
        return rnd.choice(synonyms) if synonyms and rnd.random() < config.synonym_rate else canonical

    if intent["specificity"] == BROAD:
        terms = MID_CATEGORIES[intent["mid"]].terms
        words = [pick(terms[0], terms[1:])]
    else:
        product_type = PRODUCT_TYPES[intent["type"]]
        words = []
        if intent["brand"] >= 0:
            words.append(BRANDS[intent["brand"]].lower())
        if intent["color"] >= 0:
            color = COLORS[intent["color"]]
            words.append(pick(color, COLOR_SYNONYMS.get(color, ())))
        if intent["style"] >= 0:
            style = STYLES[intent["style"]]
            words.append(pick(style, STYLE_SYNONYMS.get(style, ())))
        if intent["material"] >= 0:
            words.append(MATERIALS[intent["material"]])
        words.append(pick(product_type.name, product_type.synonyms))
        if len(words) > 1 and rnd.random() < config.word_order_noise:
            rnd.shuffle(words)
    text = " ".join(words)
    return _add_typo(rnd, text) if rnd.random() < config.typo_rate else text


def _add_typo(rnd: random.Random, text: str) -> str:
    """One keyboard slip in a word of four letters or more: a deletion, a swap, a doubled or a wrong letter."""
    words = text.split(" ")
    long_words = [i for i, word in enumerate(words) if len(word) >= 4]
    if not long_words:
        return text
    i = rnd.choice(long_words)
    word, j = words[i], rnd.randrange(1, len(words[i]) - 1)
    edit = rnd.randrange(4)
    if edit == 0:
        word = word[:j] + word[j + 1:]
    elif edit == 1:
        word = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    elif edit == 2:
        word = word[:j] + word[j] + word[j:]
    else:
        word = word[:j] + rnd.choice("abcdefghijklmnopqrstuvwxyz") + word[j + 1:]
    words[i] = word
    return " ".join(words)


INTENT_FIELDS = ("specificity", "mid", "type", *ATTRIBUTES)


def _index_intents(searches: dict[str, np.ndarray], search_query: np.ndarray,
                   n_queries: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Distinct intents, each search's intent, and each query text's intent (that of its first search: two
    intents render to the same text only through a rare typo collision)."""
    stacked = np.stack([searches[name] for name in INTENT_FIELDS], axis=1)
    unique, search_intent = np.unique(stacked, axis=0, return_inverse=True)
    search_intent = search_intent.reshape(-1)
    first_search = np.full(n_queries, len(search_query))
    np.minimum.at(first_search, search_query, np.arange(len(search_query)))
    intents = {name: unique[:, k] for k, name in enumerate(INTENT_FIELDS)}
    return intents, search_intent, search_intent[first_search]


# ======================================================================================================
# 7. Judgments: ESCI labels from intents
# ======================================================================================================
def _type_relations() -> tuple[np.ndarray, np.ndarray]:
    """Substitutes (symmetric: sneakers can replace running shoes and vice versa) and complements (as listed:
    socks complete running shoes; keeping them one-way keeps the judged sets, and the file, small)."""
    n = len(PRODUCT_TYPES)
    substitute, complement = np.zeros((n, n), dtype=bool), np.zeros((n, n), dtype=bool)
    for i, product_type in enumerate(PRODUCT_TYPES):
        for other in product_type.substitutes:
            substitute[i, _TYPE_INDEX[other]] = substitute[_TYPE_INDEX[other], i] = True
        for other in product_type.complements:
            complement[i, _TYPE_INDEX[other]] = True
    return substitute, complement & ~substitute


def _label_matrix(intents: dict[str, np.ndarray], catalogue: dict[str, np.ndarray]) -> np.ndarray:
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


# ======================================================================================================
# 6. Behaviour: logging policy, clicks, collects, orders
# ======================================================================================================
_TOKEN = re.compile(r"[a-z0-9]+")


def _lexical_tokens(text: str) -> list[str]:
    """Lower-cased words with a crude plural strip; the logging policy's whole linguistics."""
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
            token = token[:-1]
        if token not in tokens:
            tokens.append(token)
    return tokens


def _log_exposures(config: SimShopConfig, titles: list[str], query_texts: list[str],
                   search_query: np.ndarray) -> np.ndarray:
    """The logging policy: rank titles by the IDF of matched query words plus noise; show the top items.

    It is not personalised and reads titles only, so it under-exposes image-only products for colour queries
    and treats every user alike: the biases a learned retriever should overcome."""
    rng = _stage_rng(config, "exposures")
    n_products, k = len(titles), config.exposure_size
    postings: dict[str, list[int]] = {}
    for p, title in enumerate(titles):
        for token in _lexical_tokens(title):
            postings.setdefault(token, []).append(p)
    idf = {token: np.log(n_products / len(rows)) + 0.1 for token, rows in postings.items()}
    index = {token: np.array(rows) for token, rows in postings.items()}

    exposed = np.empty((len(search_query), k), dtype=np.int64)
    order = np.argsort(search_query, kind="stable")
    boundaries = np.flatnonzero(np.diff(search_query[order])) + 1
    for group in np.split(order, boundaries):
        text = query_texts[search_query[group[0]]]
        score = np.zeros(n_products)
        matched = [token for token in _lexical_tokens(text) if token in index]
        for token in matched:
            score[index[token]] += idf[token]
        noise_scale = config.logging_noise * (np.mean([idf[t] for t in matched]) if matched else 1.0)
        exposed[group] = _noisy_top_k(rng, score, len(group), k, noise_scale)
    return exposed


def _noisy_top_k(rng: np.random.Generator, score: np.ndarray, n_lists: int, k: int, noise: float) -> np.ndarray:
    candidates = np.flatnonzero(score > 0)
    if len(candidates) < k:  # too few matches (e.g. a typo): pad with random catalogue items
        others = np.flatnonzero(score <= 0)
        filler = np.argsort(rng.random((n_lists, len(others))), axis=1)[:, : k - len(candidates)]
        candidates_noisy = score[candidates][None, :] + noise * rng.standard_normal((n_lists, len(candidates)))
        ranked = candidates[np.argsort(-candidates_noisy, axis=1)]
        return np.concatenate([ranked, others[filler]], axis=1)
    noisy = score[candidates][None, :] + noise * rng.standard_normal((n_lists, len(candidates)))
    top = np.argpartition(-noisy, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(noisy, top, axis=1), axis=1), axis=1)
    return candidates[top]


CLICK_GAIN = np.array([1.0, 0.25, 0.06, 0.02])  # attractiveness of E, S, C, I before taste
ORDER_RATE = 0.8  # chance of buying when the best clicked item is an exact match the user likes
MEAN_AFFINITY = 0.25  # about the average user-product affinity
COLLECT_RATE = 0.12


def _simulate_behaviour(config: SimShopConfig, catalogue: dict[str, np.ndarray], users: dict[str, np.ndarray],
                        searches: dict[str, np.ndarray], exposed: np.ndarray,
                        label: np.ndarray) -> dict[str, np.ndarray]:
    """Clicks, collects and at most one order per search, all [n_searches, exposure_size] masks like
    ``exposed`` (product indices) and ``label`` (their ESCI codes for the search's intent)."""
    rng = _stage_rng(config, "behaviour")
    n, k = exposed.shape
    relevance = CLICK_GAIN[label]
    # Centred on the population's mean affinity, so taste tilts choices without moving the overall click rate.
    affinity = _affinity(users, catalogue, searches["user"][:, None], exposed)
    preference = np.exp(config.preference_strength * (affinity - MEAN_AFFINITY))
    examination = 1.0 / (1.0 + np.arange(k)) ** config.position_bias
    # A saturating map keeps taste discriminating even for very relevant items (a hard cap at 1 would not).
    attractiveness = config.click_noise + (1 - config.click_noise) * -np.expm1(-relevance * preference)
    clicked = rng.random((n, k)) < examination[None, :] * attractiveness
    collected = clicked & (rng.random((n, k)) < COLLECT_RATE * (0.5 + 0.5 * preference))
    # The order goes to one clicked item, chosen by relevance x taste; buying at all depends on the best one.
    worth = np.where(clicked, relevance * preference, 0.0)
    buys = rng.random(n) < ORDER_RATE * -np.expm1(-2 * worth.max(axis=1))
    choice = np.argmax(np.where(worth > 0, np.log(np.maximum(worth, 1e-12)) + rng.gumbel(size=(n, k)), -np.inf),
                       axis=1)
    ordered = np.zeros((n, k), dtype=bool)
    ordered[np.flatnonzero(buys), choice[buys]] = True
    return {"click": clicked, "collect": collected, "order": ordered}


# ======================================================================================================
# Frames
# ======================================================================================================
def _ids(prefix: str, index: np.ndarray, width: int) -> pl.Series:
    """String ids ("p000042") for integer indices: format each distinct id once, then gather (fast for 1M rows)."""
    index = np.asarray(index, dtype=np.int64)
    distinct = [f"{prefix}{i:0{width}d}" for i in range(int(index.max()) + 1 if len(index) else 0)]
    return pl.Series(distinct, dtype=pl.Utf8).gather(index)


def _products_frame(catalogue: dict[str, np.ndarray], titles: list, descriptions: list, bullets: list) -> pl.DataFrame:
    n = len(titles)
    image_only = catalogue["image_only"]
    color = np.array(COLORS)[catalogue["color"]]
    style = np.array(STYLES)[catalogue["style"]]
    categories = np.array([f"{MID_CATEGORIES[TYPE_MID[t]].top} > {MID_CATEGORIES[TYPE_MID[t]].name} > "
                           f"{PRODUCT_TYPES[t].name.title()}" for t in range(len(PRODUCT_TYPES))])
    return pl.DataFrame({
        "product_id": _ids("p", np.arange(n), 6),
        "title": titles,
        "description": descriptions,
        "bullets": bullets,
        "brand": np.array(BRANDS)[catalogue["brand"]],
        "color": np.where(image_only, "", color),
        "category": categories[catalogue["type"]],
        "shop_id": _ids("shop", catalogue["shop"], 4),
        "product_type": np.array([t.name for t in PRODUCT_TYPES])[catalogue["type"]],
        "material": np.array(MATERIALS)[catalogue["material"]],
        "style": np.where(image_only, "", style),
        "price_tier": np.array(PRICE_TIERS)[catalogue["tier"]],
        "price": catalogue["price"].astype(np.float64),
        "image_only": image_only,
        "latent_color": color,
        "latent_style": style,
    })


def _intent_description(intents: dict[str, np.ndarray], i: int) -> str:
    if intents["specificity"][i] == BROAD:
        return f"category={MID_CATEGORIES[intents['mid'][i]].name}"
    parts = [f"type={PRODUCT_TYPES[intents['type'][i]].name}"]
    vocab = {"brand": BRANDS, "color": COLORS, "style": STYLES, "material": MATERIALS}
    parts += [f"{name}={vocab[name][intents[name][i]]}" for name in ATTRIBUTES if intents[name][i] >= 0]
    return ";".join(parts)


def _query_group(intents: dict[str, np.ndarray]) -> np.ndarray:
    """broad; image_attr when colour or style is named (image-only products show it only in pixels); else
    text_attr (type, brand, material: always written in text)."""
    image_attr = (intents["color"] >= 0) | (intents["style"] >= 0)
    return np.where(intents["specificity"] == BROAD, "broad", np.where(image_attr, "image_attr", "text_attr"))


def _queries_frame(query_texts: list[str], query_intent: np.ndarray, intents: dict[str, np.ndarray],
                   search_query: np.ndarray, search_split: np.ndarray) -> pl.DataFrame:
    n = len(query_texts)
    rank = {"train": 0, "valid": 1, "test": 2}
    latest = np.zeros(n, dtype=np.int64)
    np.maximum.at(latest, search_query, np.vectorize(rank.get)(search_split))
    descriptions = np.array([_intent_description(intents, i) for i in range(len(intents["mid"]))])
    return pl.DataFrame({
        "query_id": _ids("q", np.arange(n), 6),
        "query": query_texts,
        "split": np.array(["train", "valid", "test"])[latest],
        "group": _query_group(intents)[query_intent],
        "specificity": np.array(SPECIFICITIES)[intents["specificity"][query_intent]],
        "intent": descriptions[query_intent],
    })


def _judgments_frame(labels: np.ndarray, query_intent: np.ndarray) -> pl.DataFrame:
    """The E/S/C rows of every query text, copied from its intent's row of the label matrix."""
    intent_rows, products = np.nonzero(labels < IRRELEVANT)  # row-major: grouped by intent, products ascending
    per_intent = np.bincount(intent_rows, minlength=len(labels))
    intent_start = np.concatenate([[0], np.cumsum(per_intent)[:-1]])
    lengths = per_intent[query_intent]
    query = np.repeat(np.arange(len(query_intent)), lengths)
    # Position of each output row inside its intent's block, then its index into the nonzero arrays.
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source = intent_start[query_intent][query] + within
    return pl.DataFrame({
        "query_id": _ids("q", query, 6),
        "product_id": _ids("p", products[source], 6),
        "label": pl.Series(LABELS, dtype=pl.Utf8).gather(labels[intent_rows[source], products[source]]),
    })


def _searches_frame(searches: dict[str, np.ndarray], search_query: np.ndarray, split: np.ndarray) -> pl.DataFrame:
    n = len(search_query)
    return pl.DataFrame({
        "search_id": _ids("s", np.arange(n), 7),
        "query_id": _ids("q", search_query, 6),
        "user_id": _ids("u", searches["user"], 6),
        "timestamp": searches["timestamp"].astype(np.float64),
        "split": split,
        "specificity": np.array(SPECIFICITIES)[searches["specificity"]],
    })


# Actions happen in this order after the search, a few seconds apart (1e-5 day ~ 1 s).
ACTION_DELAY = {"exposure": 0.0, "click": 2e-4, "collect": 1e-3, "order": 2e-3}


def _interactions_frame(searches: dict[str, np.ndarray], exposed: np.ndarray,
                        behaviour: dict[str, np.ndarray]) -> pl.DataFrame:
    n, k = exposed.shape
    masks = {"exposure": np.ones((n, k), dtype=bool), **behaviour}
    columns: dict[str, list[np.ndarray]] = {"search": [], "position": [], "action": [], "timestamp": []}
    for a, (action, mask) in enumerate(masks.items()):
        search, position = np.nonzero(mask)
        columns["search"].append(search)
        columns["position"].append(position)
        columns["action"].append(np.full(len(search), a))
        columns["timestamp"].append(searches["timestamp"][search] + ACTION_DELAY[action] + position * 1e-5)
    search, position, action, timestamp = (np.concatenate(columns[c]) for c in columns)
    order = np.lexsort((position, action, timestamp))
    search, position, action, timestamp = search[order], position[order], action[order], timestamp[order]
    return pl.DataFrame({
        "user_id": _ids("u", searches["user"][search], 6),
        "product_id": _ids("p", exposed[search, position], 6),
        "timestamp": timestamp.astype(np.float64),
        "action": pl.Series(list(masks), dtype=pl.Utf8).gather(action),
        "search_id": _ids("s", search, 7),
        "position": position.astype(np.int32),
    })


def _users_frame(users: dict[str, np.ndarray]) -> pl.DataFrame:
    n = len(users["visual_reliance"])

    def names(mask: np.ndarray, vocab: tuple[str, ...]) -> list[list[str]]:
        return [[vocab[j] for j in np.flatnonzero(row)] for row in mask]

    interests = users["interests"]
    return pl.DataFrame({
        "user_id": _ids("u", np.arange(n), 6),
        "user_type": np.where(users["visual_reliance"] >= 0.5, "visual", "textual"),
        "visual_reliance": users["visual_reliance"].astype(np.float64),
        "favourite_colors": names(users["fav_colors"], COLORS),
        "favourite_styles": names(users["fav_styles"], STYLES),
        "favourite_brands": names(users["fav_brands"], BRANDS),
        "price_tier": np.array(PRICE_TIERS)[users["tier"]],
        "favourite_categories": names(interests >= 0.15, tuple(m.name for m in MID_CATEGORIES)),
        "activity": users["activity"].astype(np.float64),
    }, schema_overrides={"favourite_colors": pl.List(pl.Utf8), "favourite_styles": pl.List(pl.Utf8),
                         "favourite_brands": pl.List(pl.Utf8), "favourite_categories": pl.List(pl.Utf8)})
