"""simshop's configuration: the :class:`SimShopConfig` knobs, the presets, spec overrides and the seeding.

Not a stage of its own: every stage reads its knobs from the config and draws from its own random stream
(:func:`stage_rng`, :func:`stage_random`), so that "every table is drawn from one seed, so the same
:class:`SimShopConfig` always gives identical frames and images", and changing one stage's draws leaves the
others' untouched. :func:`config_hash` keys the disk cache on the full config and :data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import random
import typing
import zlib
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.simshop.vocabulary import PRODUCT_TYPES

# Bump whenever the generator's output changes, so cached datasets of an older version are not reused.
GENERATOR_VERSION = 2


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


PRESETS: dict[str, SimShopConfig] = {
    "tiny": SimShopConfig(n_products=300, n_users=60, n_days=15, searches_per_day=100),
    "default": SimShopConfig(),
    "nopref": SimShopConfig(preference_strength=0.0),
    "alltext": SimShopConfig(image_only_share=0.0),
}


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



def stage_rng(config: SimShopConfig, stage: str) -> np.random.Generator:
    """An independent stream per stage, so changing one stage's draws leaves the others' untouched."""
    return np.random.default_rng([config.seed, zlib.crc32(stage.encode())])


def stage_random(config: SimShopConfig, stage: str) -> random.Random:
    """Python's Random for string-level choices (faster than numpy per item); seeded from a string = stable."""
    return random.Random(f"simshop-{config.seed}-{stage}")
