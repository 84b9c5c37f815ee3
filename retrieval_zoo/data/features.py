"""Model inputs as tensors: the item catalogue and the query units (searches or queries), built once per run.

Models declare the *fields* they need (``required_fields``) and may use (``optional_fields``); only those are
built. Every table is a dict of tensors sharing the first dimension, so a batch is a gather by index.

Fields and the tensors they produce (item tensors: [n_items, ...], unit tensors: [n_units, ...]):

=====================  ===========================================================================
field                  tensors
=====================  ===========================================================================
item_text              item_tokens int64 [N, item_max_tokens]: subword ids of the item text by the encoder's
                       tokenizer (0 = pad)
item_hashed            item_hashed int64 [N, hashed_max_grams]: hashed word + letter-trigram ids
item_sentence          item_sentence float32 [N, W]: frozen item-text embedding of ``model.encoder`` (W = its
                       width: 384 for the default all-MiniLM-L6-v2)
item_category          item_category int64 [N]: leaf-category id (0 = unknown)
item_brand             item_brand int64 [N] (0 = unknown)
item_shop              item_shop int64 [N] (0 = unknown)
item_image             item_image uint8 [N, 3, H, W]
item_image_features    item_image_features float32 [N, D] (precomputed, e.g. SQID CLIP)
query_text             query_tokens int64 [M, query_max_tokens]
query_hashed           query_hashed int64 [M, hashed_max_grams]
query_sentence         query_sentence float32 [M, W]
user                   user_index int64 [M] (0 = unknown user)
user_history           hist_realtime [M, 50], hist_short [M, 100], hist_long [M, 100] item indices
                       (-1 = padding, oldest first), hist_long_action [M, 100] (1 click, 2 order, 3 collect)
query_history          hist_query_tokens int64 [M, 10, query_max_tokens]: the user's previous queries
stages                 (training batches only) stage_items / stage_levels, see datamodule.py
=====================  ===========================================================================

The types above are what a batch holds (``FeatureTable.gather``). The catalogue stores its id tables as int32
and float16 sentence features when asked (``sentence_dtype``), widened per batch: half the memory at 1.2M items.

The *item text* every item-side text feature reads (and BM25 and the mined hard negatives, see negatives.py) is
one string per product composed by ``compose_item_texts`` from the columns of ``item_text`` (a setting: column
-> word budget, in order). Titles alone miss what shoppers type and sellers put elsewhere (the brand, the
product type in the category, materials in the description); the budgets keep a long description from
crowding the title out of a fixed token budget. Rules:

- fields in the setting's order, each cut to its first ``budget`` whitespace words (0 = field unused);
- ``category`` is its path as words, the '>' separators dropped, cut from the top when over budget
  ("Electronics > Phone Accessories > Charger" at budget 3 -> "Phone Accessories Charger"): the leaf names the
  product type and the upper levels the words of broad queries ("clothing", "shoes"); measured on simshop,
  the leaf alone cost BM25 0.009 NDCG@10 against the whole path;
- lone bullet marks ("-", "*", "•" standing as words) are dropped, whitespace is collapsed, fields are joined by one space (no
  punctuation, so hashed words and BM25 terms stay clean);
- an empty field is skipped, and so is a field whose words already appear, in order and case-insensitively,
  in the text composed so far: a brand the title names, a description that repeats the title;
- a product whose composed text is empty (only possible when ``title`` is not used) falls back to its title.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import torch

from retrieval_zoo.data import feature_cache, text
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset

ITEM_FIELDS = {"item_text", "item_hashed", "item_sentence", "item_category", "item_brand", "item_shop",
               "item_image", "item_image_features"}
QUERY_FIELDS = {"query_text", "query_hashed", "query_sentence", "user", "user_history", "query_history"}
BATCH_FIELDS = {"stages"}
ALL_FIELDS = ITEM_FIELDS | QUERY_FIELDS | BATCH_FIELDS
HISTORY_ACTIONS = {"click": 1, "order": 2, "collect": 3}
# product columns the item text may read (dataset.py's text columns), and the default word budgets
ITEM_TEXT_COLUMNS = ("title", "brand", "category", "description", "bullets", "color")
DEFAULT_ITEM_TEXT = {"title": 32, "brand": 4, "category": 6, "description": 24, "bullets": 0, "color": 0}
BULLET_MARKS = {"-", "*", "•"}
# the free-text product columns that hold most of a catalogue's memory (ESCI, 1.2M products: bullets 0.95 GiB,
# description 0.54 GiB of 1.64 in polars); a run releases those it does not read (``without_unread_text``)
LONG_TEXT_COLUMNS = ("description", "bullets")


@dataclass
class FeatureSettings:
    """Sizes of the built inputs (the ``data`` section of a model config may override each)."""

    item_max_tokens: int = 64
    query_max_tokens: int = 16
    hashed_buckets: int = 200_000
    hashed_max_grams: int = 64
    realtime_length: int = 50
    short_term_days: float = 10.0
    short_term_length: int = 100
    long_term_days: float = 30.0
    long_term_length: int = 100
    query_history_length: int = 10
    item_text: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_ITEM_TEXT))
    # storage of the cached frozen sentence vectors (float32, or float16 for half the memory; feature_cache.py)
    sentence_dtype: str = "float32"
    # not a data.features key: filled from model.encoder (runner.data_settings), so the tokens and sentence
    # vectors come from the encoder the model was built with
    encoder: str = text.DEFAULT_ENCODER

    def __post_init__(self) -> None:
        check_item_text(self.item_text)
        if self.sentence_dtype not in feature_cache.DTYPES:
            raise DatasetError(f"data.features.sentence_dtype={self.sentence_dtype!r} must be one of "
                               f"{', '.join(feature_cache.DTYPES)}, e.g. --set data.features.sentence_dtype=float16")


@dataclass
class FeatureTable:
    """Named tensors that share their first dimension; a batch is ``gather(indices)``."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def add(self, name: str, values: np.ndarray | torch.Tensor) -> None:
        tensor = torch.as_tensor(values)
        if self.tensors and len(tensor) != len(self):
            raise ValueError(f"feature '{name}' has {len(tensor)} rows, the table has {len(self)}")
        self.tensors[name] = tensor

    def gather(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        # compact storage is widened per batch: half-precision sentence features (``sentence_dtype``) to float32,
        # the catalogue's int32 id tables to int64; models see the types of the module docstring while the whole
        # tables stay at half the memory
        return {name: _widened(tensor[indices]) for name, tensor in self.tensors.items()}


def _widened(batch: torch.Tensor) -> torch.Tensor:
    if batch.dtype == torch.float16:
        return batch.float()
    return batch.long() if batch.dtype == torch.int32 else batch


@dataclass
class ItemCatalog(FeatureTable):
    """Every product of the dataset, row i = products row i."""

    product_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)  # for display
    texts: list[str] = field(default_factory=list)   # the composed item text every text feature reads

    def add(self, name: str, values: np.ndarray | torch.Tensor) -> None:
        """Id tables are stored as int32 (``gather`` widens each batch to int64): a 1.2M-product catalogue's
        token and n-gram ids take half the memory (MMSE at full ESCI size: ~0.9 GB less)."""
        tensor = torch.as_tensor(values)
        if tensor.dtype == torch.int64 and tensor.numel() and tensor.min() >= -(2**31) and tensor.max() < 2**31:
            tensor = tensor.int()
        super().add(name, tensor)


@dataclass
class QueryUnits(FeatureTable):
    """What a query-side encoding is computed for: one row per search (behaviour data) or per query."""

    unit_ids: list[str] = field(default_factory=list)
    query_ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    splits: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    groups: list[str | None] = field(default_factory=list)
    user_ids: list[str | None] = field(default_factory=list)
    timestamps: np.ndarray | None = None

    def indices_of_split(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def check_fields(dataset: ProductSearchDataset, required: set[str], model_name: str) -> None:
    missing = set(required) - dataset_fields(dataset)
    if missing:
        raise DatasetError(
            f"model '{model_name}' needs {sorted(missing)}, which dataset '{dataset.name}' lacks; "
            f"it offers {sorted(dataset_fields(dataset))}"
        )


def fields_to_build(dataset: ProductSearchDataset, required: set[str], optional: set[str], model_name: str) -> set[str]:
    """The fields a model reads from ``dataset``: every one it requires (checked: a clear error names what is
    missing) and those of its optional fields the dataset offers."""
    check_fields(dataset, required, model_name)
    return set(required) | (set(optional) & dataset_fields(dataset))


def dataset_fields(dataset: ProductSearchDataset) -> set[str]:
    """The fields (see the module docstring) this dataset can provide."""
    available = {"item_text", "item_hashed", "item_sentence", "item_category", "item_brand",
                 "query_text", "query_hashed", "query_sentence", "stages"}
    if dataset.products["shop_id"].null_count() < dataset.products.height:
        available.add("item_shop")
    if dataset.has_behaviour:
        available |= {"user", "user_history", "query_history"}
    if dataset.images is not None:
        available |= {"item_image", "item_image_features"}
    if dataset.image_features is not None:
        available.add("item_image_features")
    return available


# -- the catalogue -------------------------------------------------------------------------------
def build_catalog(dataset: ProductSearchDataset, fields: set[str], settings: FeatureSettings) -> ItemCatalog:
    products = dataset.products
    texts = compose_item_texts(products, settings.item_text)
    catalog = ItemCatalog(product_ids=products["product_id"].to_list(), titles=products["title"].to_list(),
                          texts=texts)
    catalog.add("item_index", torch.arange(products.height))
    if "item_text" in fields:
        catalog.add("item_tokens", text.tokenize(texts, settings.item_max_tokens, settings.encoder))
    if "item_hashed" in fields:
        catalog.add("item_hashed", text.hashed_ngrams(texts, settings.hashed_buckets, settings.hashed_max_grams,
                                                      dtype=np.int32))
    if "item_sentence" in fields:
        # cached by encoder and content: a new text or another encoder re-encodes
        catalog.add("item_sentence", text.sentence_features(texts, encoder=settings.encoder,
                                                            dtype=settings.sentence_dtype))
    for name, column in (("item_category", "category"), ("item_brand", "brand"), ("item_shop", "shop_id")):
        if name in fields:
            catalog.add(name, _categorical_ids(products[column]))
    if "item_image" in fields and dataset.images is not None:
        catalog.add("item_image", np.ascontiguousarray(dataset.images.transpose(0, 3, 1, 2)))
    if "item_image_features" in fields and dataset.image_features is not None:
        catalog.add("item_image_features", _aligned_image_features(dataset))
    return catalog


def check_item_text(budgets: Mapping[str, int]) -> None:
    """One-line errors for an ``item_text`` setting that names unknown columns or has bad budgets."""
    if not isinstance(budgets, Mapping) or not budgets:
        raise DatasetError(f"data.features.item_text must map product columns to word budgets, e.g. "
                           f"{{title: 32, brand: 4}}; got {budgets!r}")
    unknown = [column for column in budgets if column not in ITEM_TEXT_COLUMNS]
    if unknown:
        raise DatasetError(f"data.features.item_text names unknown columns {unknown}; "
                           f"valid columns: {', '.join(ITEM_TEXT_COLUMNS)}")
    bad = {c: b for c, b in budgets.items() if isinstance(b, bool) or not isinstance(b, int) or b < 0}
    if bad:
        raise DatasetError(f"data.features.item_text budgets must be whole numbers >= 0 (0 = unused), got {bad}")
    if not any(budgets.values()):
        raise DatasetError("data.features.item_text uses no column (every budget is 0); give one a budget, "
                           "e.g. title: 32")


def columns_in_text(budgets: Mapping[str, int]) -> set[str]:
    """The product columns an item-text setting reads: those with a word budget above 0."""
    return {column for column, budget in budgets.items() if budget > 0}


def without_unread_text(dataset: ProductSearchDataset, read: set[str]) -> tuple[ProductSearchDataset, list[str]]:
    """The dataset with the long-text columns outside ``read`` emptied (null), and their names.

    A run reads product text only through its item text (and BM25 through its own fields or text choices), so
    results are unchanged, and the run does not hold, through training, a column it never reads: ESCI's bullets
    are 0.95 GiB of a 1.2M-product catalogue that the default item text (bullets: 0) skips. The dataset passed
    in is left as it is (a new one is returned)."""
    unread = [column for column in LONG_TEXT_COLUMNS
              if column not in read and dataset.products[column].null_count() < dataset.products.height]
    if not unread:
        return dataset, []
    emptied = dataset.products.with_columns(pl.lit(None, dtype=pl.Utf8).alias(column) for column in unread)
    return replace(dataset, products=emptied), unread


def compose_item_texts(products: pl.DataFrame, budgets: Mapping[str, int]) -> list[str]:
    """One text per product from the budgeted columns, by the rules in the module docstring."""
    check_item_text(budgets)
    used = [(column, budget) for column, budget in budgets.items() if budget > 0]
    values = [_field_values(products, column, budget) for column, budget in used]
    titles = products["title"].to_list()
    return [
        _compose([(column_values[row], budget) for column_values, (_, budget) in zip(values, used, strict=True)])
        or titles[row]
        for row in range(products.height)
    ]


def _field_values(products: pl.DataFrame, column: str, budget: int) -> list[str]:
    values = products[column].fill_null("")
    if column == "category":  # the path's words, keeping the most specific (last) ones within the budget
        words = values.str.replace_all(">", " ").str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
        values = words.list.tail(budget).list.join(" ")
    return values.to_list()


def _compose(fields: list[tuple[str, int]]) -> str:
    composed = ""
    for value, budget in fields:
        piece = " ".join([word for word in value.split() if word not in BULLET_MARKS][:budget])
        if piece and not _already_said(piece, composed):
            composed = f"{composed} {piece}" if composed else piece
    return composed


def _already_said(piece: str, text: str) -> bool:
    """Whether ``piece`` occurs in ``text`` as whole words (case-insensitive): "HP" is in "HP Pavilion",
    not in "HPC"."""
    piece, text = piece.lower(), text.lower()
    # the plain substring test first: most pieces are new, and it spares compiling a pattern per product
    return piece in text and re.search(rf"(?<!\w){re.escape(piece)}(?!\w)", text) is not None


def _categorical_ids(column: pl.Series) -> np.ndarray:
    """Dense ids 1..k in order of first appearance; null or "" -> 0."""
    values = column.fill_null("").to_list()
    vocabulary: dict[str, int] = {"": 0}
    return np.array([vocabulary.setdefault(v, len(vocabulary)) for v in values], dtype=np.int64)


def _aligned_image_features(dataset: ProductSearchDataset) -> np.ndarray:
    """Image features in catalogue order; products without one get zeros (counted in meta)."""
    frame = dataset.products.select("product_id").join(dataset.image_features, on="product_id", how="left")
    dim = len(dataset.image_features["features"][0])
    missing = frame["features"].null_count()
    dataset.meta.setdefault("dropped", {})["products_without_image_features"] = missing
    filled = frame.with_columns(pl.col("features").fill_null(pl.lit([0.0] * dim, dtype=pl.List(pl.Float32))))
    return np.asarray(filled["features"].to_list(), dtype=np.float32)


# -- the query units -----------------------------------------------------------------------------
def build_units(dataset: ProductSearchDataset, fields: set[str], settings: FeatureSettings,
                catalog: ItemCatalog) -> QueryUnits:
    units = _unit_frame(dataset)
    texts = units["query"].to_list()
    table = QueryUnits(
        unit_ids=units["unit_id"].to_list(), query_ids=units["query_id"].to_list(), texts=texts,
        splits=units["split"].to_numpy().astype(object), groups=units["group"].to_list(),
        user_ids=units["user_id"].to_list(),
        timestamps=units["timestamp"].to_numpy() if dataset.has_behaviour else None,
    )
    table.add("unit_index", torch.arange(units.height))
    if "query_text" in fields:
        table.add("query_tokens", text.tokenize(texts, settings.query_max_tokens, settings.encoder).astype(np.int64))
    if "query_hashed" in fields:
        table.add("query_hashed", text.hashed_ngrams(texts, settings.hashed_buckets, settings.hashed_max_grams))
    if "query_sentence" in fields:
        distinct = sorted(set(texts))
        features = text.sentence_features(distinct, encoder=settings.encoder, dtype=settings.sentence_dtype)
        position = {t: i for i, t in enumerate(distinct)}
        table.add("query_sentence", features[[position[t] for t in texts]])
    if dataset.has_behaviour and fields & {"user", "user_history", "query_history"}:
        _add_behaviour_features(table, dataset, units, fields, settings, catalog)
    return table


def _unit_frame(dataset: ProductSearchDataset) -> pl.DataFrame:
    queries = dataset.queries.select("query_id", "query", "group", "split")
    if not dataset.has_behaviour:
        return queries.with_columns(
            pl.col("query_id").alias("unit_id"), pl.lit(None, pl.Utf8).alias("user_id"),
            pl.lit(None, pl.Float64).alias("timestamp"),
        )
    return dataset.searches.join(queries.drop("split"), on="query_id", how="left").select(
        pl.col("search_id").alias("unit_id"), "query_id", "query", "group", "split", "user_id", "timestamp"
    )


def _add_behaviour_features(table: QueryUnits, dataset: ProductSearchDataset, units: pl.DataFrame,
                            fields: set[str], settings: FeatureSettings, catalog: ItemCatalog) -> None:
    user_ids = sorted(dataset.searches["user_id"].unique().to_list())
    user_index = {u: i + 1 for i, u in enumerate(user_ids)}
    table.add("user_index", np.array([user_index[u] for u in table.user_ids], dtype=np.int64))
    if "user_history" in fields:
        _add_item_histories(table, dataset, settings, catalog)
    if "query_history" in fields:
        _add_query_history(table, units, settings)


def _add_item_histories(table: QueryUnits, dataset: ProductSearchDataset, settings: FeatureSettings,
                        catalog: ItemCatalog) -> None:
    """For each search, the user's click/order/collect actions strictly before it, in three windows."""
    item_position = pl.DataFrame({"product_id": catalog.product_ids, "item": np.arange(len(catalog))})
    actions = (
        dataset.interactions.filter(pl.col("action").is_in(list(HISTORY_ACTIONS)))
        .join(item_position, on="product_id")
        .with_columns(pl.col("action").replace_strict(HISTORY_ACTIONS, return_dtype=pl.Int64).alias("kind"))
        .sort("user_id", "timestamp")
    )
    users = np.array(actions["user_id"].to_list(), dtype=object)
    times = actions["timestamp"].to_numpy()
    items = actions["item"].to_numpy()
    kinds = actions["kind"].to_numpy()
    first, last = _user_ranges(users, table.user_ids)
    # position of the first action at or after the search time, within the user's own range
    end = np.array([lo + np.searchsorted(times[lo:hi], t, side="left")
                    for lo, hi, t in zip(first, last, table.timestamps, strict=True)], dtype=np.int64)
    windows = {
        "hist_realtime": (settings.realtime_length, np.inf),
        "hist_short": (settings.short_term_length, settings.short_term_days),
        "hist_long": (settings.long_term_length, settings.long_term_days),
    }
    for name, (length, days) in windows.items():
        positions, valid = _window(first, end, length)
        valid &= times[positions] >= table.timestamps[:, None] - days
        table.add(name, np.where(valid, items[positions], -1))
        if name == "hist_long":
            table.add("hist_long_action", np.where(valid, kinds[positions], 0))


def _user_ranges(sorted_users: np.ndarray, unit_users: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    for i, user in enumerate(sorted_users):
        starts.setdefault(user, i)
        ends[user] = i + 1
    first = np.array([starts.get(u, 0) for u in unit_users], dtype=np.int64)
    last = np.array([ends.get(u, 0) for u in unit_users], dtype=np.int64)
    return first, last


def _window(first: np.ndarray, end: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` positions before ``end`` (oldest first), and which of them are real."""
    positions = end[:, None] - length + np.arange(length)[None, :]
    valid = positions >= first[:, None]
    return np.clip(positions, 0, None), valid


def _add_query_history(table: QueryUnits, units: pl.DataFrame, settings: FeatureSettings) -> None:
    """Token ids of the user's previous searches (most recent last), padded with empty queries."""
    length = settings.query_history_length
    order = units.with_row_index("row").sort("user_id", "timestamp")
    rows = order["row"].to_numpy()
    users = order["user_id"].to_list()
    tokens = table.tensors.get("query_tokens")
    if tokens is None:
        tokens = torch.as_tensor(text.tokenize(table.texts, settings.query_max_tokens, settings.encoder).astype(np.int64))
    history = torch.zeros((len(table), length, tokens.shape[1]), dtype=torch.int64)
    previous: list[int] = []
    for position, row in enumerate(rows):
        if position == 0 or users[position] != users[position - 1]:
            previous = []
        recent = previous[-length:]
        if recent:
            history[row, length - len(recent):] = tokens[recent]
        previous.append(int(row))
    table.add("hist_query_tokens", history)
