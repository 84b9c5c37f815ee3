"""The leaderboard plots of one dataset, written next to results/leaderboard.md and linked from its section.

Four kinds, each skipped where the board has nothing for it:

* ``leaderboard_<dataset>.png``: NDCG@10 / Recall@100 / rel@10 per model/variant (mean, sd over seeds as error
  bars), rows sorted by NDCG@10, each axis zoomed to the data (the differences between rows are what matters,
  so it does not start at 0); baselines drawn as hollow squares, the best baseline as a dashed line.
* ``pareto_<dataset>.png``: NDCG@10 against training seconds and against query latency (log x), the Pareto
  front (no other row is both cheaper and better) marked and named.
* ``groups_<dataset>.png``: Recall@100 per query group (the ``recall@100[group=...]`` columns).
* ``recall_at_k_<dataset>.png``: Recall@K for K = 10, 100, 500, absolute and as the difference to the best
  baseline at each K.

Output is deterministic: sorted rows, figure sizes from the row count only, fixed dpi, matplotlib's default
style and no Software/date metadata, so identical boards give identical PNG bytes. Each PNG carries a hash of
its inputs (the dataset's rows, this file, the matplotlib version) in a text chunk; a plot whose hash matches
the file already there is not redrawn nor rewritten (a commit redraws only the dataset it changed).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrieval_zoo import atomic_files

LEADERBOARD_METRICS = ["ndcg@10", "recall@100", "rel@10"]
SORT_METRIC = "ndcg@10"
PARETO_METRIC = "ndcg@10"
COSTS = {"train_seconds": "training seconds (mean over seeds)", "query_latency_ms": "query latency ms (mean)"}
GROUP_METRIC = "recall@100"
RECALL_KS = [10, 100, 500]
DPI = 100
HASH_KEY = "Source-Hash"
KEYS = ["dataset", "model", "variant"]
BASELINE_COLOR = "0.35"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]
# the plots in the order the markdown shows them: file prefix, caption (renderers: ``RENDERERS``)
KINDS: list[tuple[str, str]] = [
    ("leaderboard", "headline metrics, mean ± sd over seeds"),
    ("pareto", "quality vs cost, Pareto front"),
    ("groups", f"{GROUP_METRIC} per query group"),
    ("recall_at_k", "recall@K curves"),
]


# -- entry point ----------------------------------------------------------------------------------------------
def dataset_plots(board: pl.DataFrame, dataset: str, out_dir: Path) -> list[tuple[str, Path]]:
    """Write every plot ``board`` (all rows, every column as text) has data for on ``dataset`` into ``out_dir``;
    remove those of its kinds it has none for. Returns (caption, path) of the plots written, in ``KINDS`` order."""
    out_dir = Path(out_dir)
    rows = board.filter(pl.col("dataset").cast(pl.Utf8) == dataset) if "dataset" in board.columns else board
    table = summarise(rows)
    digest = _inputs_hash(rows, dataset)
    made = []
    for prefix, caption in KINDS:
        path = out_dir / f"{prefix}_{dataset}.png"
        if table.height and _png_text(path).get(HASH_KEY) == f"{prefix}:{digest}":
            path.with_suffix(".tmp.png").unlink(missing_ok=True)
            made.append((caption, path))
            continue
        with _style():
            figure = RENDERERS[prefix](table, dataset) if table.height else None
            if figure is None:
                path.unlink(missing_ok=True)
                continue
            _save(figure, path, f"{prefix}:{digest}")
        made.append((caption, path))
    return made


# -- the data -------------------------------------------------------------------------------------------------
def summarise(rows: pl.DataFrame) -> pl.DataFrame:
    """Mean and ``_sd`` over seeds of every plotted column per (dataset, model, variant), with ``label``,
    ``is_baseline`` and ``seeds``; sorted by ``SORT_METRIC`` (best first), then by label."""
    from retrieval_zoo.reports import aggregate

    if not rows.height:
        return pl.DataFrame()
    columns = [*LEADERBOARD_METRICS, *COSTS, *(f"recall@{k}" for k in RECALL_KS), *group_columns(rows)]
    present = list(dict.fromkeys(c for c in columns if _has_values(rows, c)))
    table = aggregate(rows, present)
    if "baseline" in rows.columns:
        flags = rows.group_by(KEYS).agg(
            (pl.col("baseline").cast(pl.Utf8).str.to_lowercase() == "true").any().alias("is_baseline"))
        table = table.join(flags, on=KEYS, how="left").with_columns(pl.col("is_baseline").fill_null(False))
    else:
        table = table.with_columns(pl.lit(False).alias("is_baseline"))
    label = pl.when(pl.col("variant") == "default").then(pl.col("model")).otherwise(
        pl.col("model") + "/" + pl.col("variant"))
    table = table.with_columns(label.alias("label"))
    order = [c for c in (SORT_METRIC, GROUP_METRIC) if c in table.columns]
    return table.sort([*order, "label"], descending=[*([True] * len(order)), False], nulls_last=True)


def group_columns(rows: pl.DataFrame, metric: str = GROUP_METRIC) -> list[str]:
    prefix = f"{metric}[group="
    return sorted(c for c in rows.columns if c.startswith(prefix) and c.endswith("]") and _has_values(rows, c))


def pareto_front(costs: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the rows no other row beats (lower or equal cost and higher quality), cheapest first."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -quality[i]))
    front, best = [], -math.inf
    for i in order:
        if quality[i] > best:
            front.append(i)
            best = quality[i]
    return np.asarray(front, dtype=int)


def low_outlier_cut(values: np.ndarray, share: float = 0.5, ratio: float = 0.5) -> float:
    """The value below which rows are left off a zoomed axis (shown as arrows at its edge with their value):
    where one gap between the sorted values is over ``share`` of their whole span and the value below it is
    under ``ratio`` times the value above (e.g. untrained rows near 0 below a cluster around 0.6), with at
    least max(2, a third of the rows) above it; -inf (keep every row) otherwise."""
    ordered = np.sort(values[~np.isnan(values)])[::-1]
    if ordered.size < 3 or ordered[0] == ordered[-1] or ordered[-1] < 0:
        return -math.inf
    gaps = ordered[:-1] - ordered[1:]
    at = int(np.argmax(gaps))
    if (gaps[at] > share * (ordered[0] - ordered[-1]) and ordered[at + 1] < ratio * ordered[at]
            and at + 1 >= max(2, math.ceil(ordered.size / 3))):
        return float(ordered[at])
    return -math.inf


def zoomed_limits(low: np.ndarray, high: np.ndarray, margin: float = 0.08) -> tuple[float, float]:
    """Axis limits around [min(low), max(high)] with a margin, not down to 0 (clipped at 0 when the data is
    non-negative, so a wide spread still ends at 0)."""
    lo, hi = float(np.nanmin(low)), float(np.nanmax(high))
    span = max(hi - lo, 0.02 * max(abs(hi), 1e-9), 1e-6)
    lo_lim, hi_lim = lo - margin * span, hi + margin * span
    if lo >= 0 and lo_lim < 0:
        lo_lim = 0.0
    return lo_lim, hi_lim


# -- renderers: each returns a Figure or None (nothing to show) -------------------------------------------------
def render_leaderboard(table: pl.DataFrame, dataset: str):
    metrics = [m for m in LEADERBOARD_METRICS if _column(table, m) is not None]
    if not metrics:
        return None
    rows = table.filter(pl.any_horizontal(*(pl.col(m).is_not_null() for m in metrics)))
    labels = rows["label"].to_list()
    fig, axes = _figure(1, len(metrics), labels, panel_width=3.3)
    for axis, metric in zip(axes, metrics, strict=True):
        _dot_panel(axis, rows, metric, metric)
    _style_row_labels(axes[0], rows)
    _legend_markers(fig, rows, best_line=True)
    fig.suptitle(f"{dataset}: mean ± sd over seeds ({_seeds_text(rows)}); sorted by {SORT_METRIC}; "
                 "axes zoomed to the data, not from 0", fontsize=10)
    return fig


def render_pareto(table: pl.DataFrame, dataset: str):
    if _column(table, PARETO_METRIC) is None:
        return None
    # a cost panel needs some row with a cost above 0 (a board of untrained rows only has no trade-off to show)
    panels = [c for c in COSTS if _column(table, c) is not None
              and table.filter(pl.col(c).is_not_null() & pl.col(PARETO_METRIC).is_not_null()
                               & (pl.col(c) > 0)).height]
    if not panels:
        return None
    fig = _new_figure((5.2 * len(panels) + 1.6, 5.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = _model_colors(table)
    names = []
    for axis, cost in zip(axes, panels, strict=True):
        rows = table.filter(pl.col(cost).is_not_null() & pl.col(PARETO_METRIC).is_not_null()).sort("label")
        x = rows[cost].to_numpy().astype(float)
        y = rows[PARETO_METRIC].to_numpy().astype(float)
        positive = x[x > 0]
        floor = 10.0 ** (math.floor(math.log10(positive.min())) - 1)  # where the rows costing 0 are drawn
        shown = np.where(x > 0, x, floor)
        front = pareto_front(x, y)
        on_front = np.zeros(len(x), dtype=bool)
        on_front[front] = True
        for i, row in enumerate(rows.iter_rows(named=True)):
            marker = "s" if row["is_baseline"] else "o"
            color = colors[row["model"]]
            axis.scatter([shown[i]], [y[i]], s=48 if on_front[i] else 26, marker=marker,
                         facecolors="none" if row["is_baseline"] else color, edgecolors=color,
                         linewidths=1.4 if on_front[i] else 0.9, alpha=1.0 if on_front[i] else 0.55, zorder=3)
        fx, fy = shown[front], y[front]
        xmax = shown.max() * 3
        axis.step([*fx, xmax], [*fy, fy[-1]], where="post", color="black", lw=1.0, ls="-", alpha=0.7, zorder=2,
                  label="Pareto front")
        names.append((axis, fx, fy, [rows["label"][int(i)] for i in front], shown, y))
        axis.set_xscale("log")
        axis.set_xlim(floor / 1.6 if (x <= 0).any() else shown.min() / 2, xmax)
        axis.set_ylim(*zoomed_limits(y, y, margin=0.12))
        from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

        # plain numbers at 1, 2, 5 x 10^k (or 1 x 10^k over many decades); no labels on minor ticks
        lo_x, hi_x = axis.get_xlim()
        subs = (1.0, 2.0, 5.0) if math.log10(hi_x / lo_x) < 2.5 else (1.0,)
        ticks = [t for t in LogLocator(subs=subs).tick_values(lo_x, hi_x) if lo_x <= t <= hi_x]
        if (x <= 0).any():  # the rows costing 0 sit at ``floor``, labelled 0, left of a dotted line
            ticks = [floor, *(t for t in ticks if t > floor * 5)]
            axis.axvline(floor * 1.8, color="0.7", lw=0.8, ls=":", zorder=1)
        axis.xaxis.set_major_locator(FixedLocator(ticks))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos, f=floor: "0" if v == f else f"{v:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(COSTS[cost] + ("; 0 = untrained" if cost == "train_seconds" and (x <= 0).any() else ""))
        axis.set_ylabel(f"{PARETO_METRIC} (mean over seeds)")
        axis.grid(True, which="major", color="0.9", lw=0.6)
        axis.set_axisbelow(True)
    _legend_models(fig, table, colors, front=True)
    fig.suptitle(f"{dataset}: {PARETO_METRIC} against cost (log x); front rows named", fontsize=10)
    fig.draw_without_rendering()  # settle the layout, so the names are placed where the points end up
    for job in names:
        _label_points(*job)
    return fig


def render_groups(table: pl.DataFrame, dataset: str):
    columns = [c for c in group_columns(table) if _column(table, c) is not None]
    if not columns:
        return None
    rows = table.filter(pl.any_horizontal(*(pl.col(c).is_not_null() for c in columns)))
    if GROUP_METRIC in rows.columns:
        rows = rows.sort([GROUP_METRIC, "label"], descending=[True, False], nulls_last=True)
    prefix = f"{GROUP_METRIC}[group="
    labels = rows["label"].to_list()
    fig, axes = _figure(1, len(columns), labels, panel_width=3.0)
    for axis, column in zip(axes, columns, strict=True):
        _dot_panel(axis, rows, column, f"group {column[len(prefix):-1]}")
    _style_row_labels(axes[0], rows)
    _legend_markers(fig, rows, best_line=True)
    fig.suptitle(f"{dataset}: {GROUP_METRIC} per query group, mean ± sd over seeds; rows sorted by overall "
                 f"{GROUP_METRIC}; each axis zoomed", fontsize=10)
    return fig


def render_recall_at_k(table: pl.DataFrame, dataset: str):
    ks = [k for k in RECALL_KS if _column(table, f"recall@{k}") is not None]
    if len(ks) < 2:
        return None
    columns = [f"recall@{k}" for k in ks]
    rows = table.filter(pl.all_horizontal(*(pl.col(c).is_not_null() for c in columns)))
    if not rows.height:
        return None
    order = "recall@100" if "recall@100" in columns else columns[-1]
    rows = rows.sort([order, "label"], descending=[True, False])
    values = rows.select(columns).to_numpy().astype(float)
    baselines = rows["is_baseline"].to_numpy()
    reference = values[baselines].max(axis=0) if baselines.any() else values.max(axis=0)
    reference_name = "best baseline" if baselines.any() else "best row"
    colors = _model_colors(table)
    fig = _new_figure((12.5, max(4.6, 0.22 * rows.height + 1.6)))
    absolute, relative = fig.subplots(1, 2, width_ratios=[1, 1.6])
    styles = _variant_styles(rows)
    for i, row in enumerate(rows.iter_rows(named=True)):
        line, marker = styles[row["label"]]
        kwargs = {"color": colors[row["model"]], "ls": line, "marker": marker, "ms": 4, "lw": 1.2,
                  "mfc": "none" if row["is_baseline"] else colors[row["model"]]}
        absolute.plot(ks, values[i], label=row["label"] + (" (baseline)" if row["is_baseline"] else ""), **kwargs)
        relative.plot(ks, values[i] - reference, **kwargs)
    relative.axhline(0.0, color="black", lw=0.8, ls="--")
    for axis in (absolute, relative):
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.minorticks_off()
        axis.set_xlim(ks[0] / 1.3, ks[-1] * 1.3)
        axis.set_xlabel("K")
        axis.grid(True, color="0.9", lw=0.6)
        axis.set_axisbelow(True)
    absolute.set_ylabel("recall@K (mean over seeds)")
    absolute.set_title("recall@K")
    relative.set_ylabel(f"recall@K minus the {reference_name} at that K")
    relative.set_title(f"difference to the {reference_name} (zoomed)")
    deltas = values - reference
    relative.set_ylim(*zoomed_limits(deltas, deltas, margin=0.1))
    fig.legend(*absolute.get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False,
               title=f"sorted by {order}", title_fontsize=8)
    fig.suptitle(f"{dataset}: recall@K, K = {', '.join(map(str, ks))} (log x); dashed/hollow = baseline",
                 fontsize=10)
    return fig


# -- drawing helpers ------------------------------------------------------------------------------------------
def _style():
    """matplotlib's default style whatever the user's matplotlibrc says (the same bytes on every machine)."""
    import matplotlib.style

    return matplotlib.style.context("default")


def _new_figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _figure(n_rows: int, n_cols: int, labels: list[str], panel_width: float):
    longest = max((len(label) for label in labels), default=10)
    size = (0.075 * longest + 0.6 + panel_width * n_cols, 0.27 * len(labels) + 1.5)
    fig = _new_figure(size)
    axes = fig.subplots(n_rows, n_cols, sharey=True, squeeze=False)[0]
    return fig, list(axes)


def _dot_panel(axis, rows: pl.DataFrame, column: str, title: str) -> None:
    """Mean ± sd per row as a dot with a horizontal error bar, the axis zoomed to the data."""
    mean = rows[column].to_numpy().astype(float)
    sd_column = f"{column}_sd"
    sd = rows[sd_column].fill_nan(None).fill_null(0.0).to_numpy().astype(float) if sd_column in rows.columns \
        else np.zeros(len(mean))
    colors = _model_colors(rows)
    for i, row in enumerate(rows.iter_rows(named=True)):
        if np.isnan(mean[i]):
            continue
        color = colors[row["model"]]
        axis.errorbar([mean[i]], [i], xerr=[sd[i]], fmt="s" if row["is_baseline"] else "o", ms=5.5,
                      color=color, mfc="none" if row["is_baseline"] else color, mew=1.3, elinewidth=1.1,
                      capsize=2.5, zorder=3)
    baseline = mean[rows["is_baseline"].to_numpy() & ~np.isnan(mean)]
    if baseline.size:
        axis.axvline(baseline.max(), color=BASELINE_COLOR, ls="--", lw=0.9, zorder=2)
    ok = ~np.isnan(mean)
    cut = low_outlier_cut(mean[ok])
    inside = ok & (mean >= cut)
    lo, hi = zoomed_limits(mean[inside] - sd[inside], mean[inside] + sd[inside])
    axis.set_xlim(lo, hi)
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(nbins=6))
    for i in np.flatnonzero(ok & ~inside):  # far below the rest: an arrow at the left edge with the value
        axis.annotate(f"◀ {mean[i]:.3f}", (lo, i), xytext=(2, 0), textcoords="offset points", ha="left",
                      va="center", fontsize=7.5, color=colors[rows["model"][int(i)]], zorder=4,
                      annotation_clip=False)
    axis.set_ylim(len(mean) - 0.5, -0.5)  # best on top
    axis.set_yticks(range(len(mean)), rows["label"].to_list())
    axis.set_title(title, fontsize=10)
    axis.grid(True, axis="x", color="0.88", lw=0.6)
    axis.grid(True, axis="y", color="0.95", lw=0.5)
    axis.set_axisbelow(True)
    axis.tick_params(axis="y", length=0, labelsize=8.5)
    axis.tick_params(axis="x", labelsize=8)


def _style_row_labels(axis, rows: pl.DataFrame) -> None:
    for tick, is_baseline in zip(axis.get_yticklabels(), rows["is_baseline"].to_list(), strict=True):
        if is_baseline:
            tick.set_color(BASELINE_COLOR)
            tick.set_fontstyle("italic")


def _legend_markers(fig, rows: pl.DataFrame, best_line: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="none", color="0.2", label="zoo model (colour = model)"),
               Line2D([], [], marker="s", ls="none", color=BASELINE_COLOR, mfc="none", label="baseline (italic)")]
    if best_line and rows["is_baseline"].any():
        handles.append(Line2D([], [], ls="--", color=BASELINE_COLOR, label="best baseline"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)


def _legend_models(fig, table: pl.DataFrame, colors: dict[str, str], front: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="none", color=colors[m], label=m) for m in sorted(colors)]
    handles.append(Line2D([], [], marker="s", ls="none", color=BASELINE_COLOR, mfc="none", label="baseline"))
    if front:
        handles.append(Line2D([], [], color="black", lw=1.0, label="Pareto front"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=8, frameon=False)


def _label_points(axis, x: np.ndarray, y: np.ndarray, labels: list[str], every_x: np.ndarray,
                  every_y: np.ndarray, fontsize: float = 7.5) -> None:
    """Name the front points (x, y), each where its name covers the fewest other points (``every_x``,
    ``every_y``: all the panel's points) and names already placed: left of the point first (a Pareto front
    leaves the cheaper side of a point empty at its height and above), then above or below it."""
    to_points = 72.0 / axis.figure.dpi
    box = axis.get_window_extent()
    width, height = box.width * to_points, box.height * to_points

    def where(xs, ys):
        pixels = axis.transData.transform(np.column_stack([xs, ys]))
        return (pixels[:, 0] - box.x0) * to_points, (pixels[:, 1] - box.y0) * to_points

    px, py = where(x, y)
    ox, oy = where(every_x, every_y)
    line = 1.2 * fontsize
    candidates = [(-7.0, 0.0, "right"), (-5.0, 9.0, "right"), (5.0, 9.0, "left"), (5.0, -9.0, "left"),
                  (-5.0, -9.0, "right")]
    placed: list[tuple[float, float, float, float]] = []
    for i in sorted(range(len(px)), key=lambda j: (-y[j], x[j])):
        text_width = 0.58 * fontsize * len(labels[i])
        scored = []
        for k, (dx, dy, align) in enumerate(candidates):
            x0 = px[i] + dx - (text_width if align == "right" else 0.0)
            x1, y0 = x0 + text_width, py[i] + dy - line / 2
            y1 = y0 + line
            covered = int(np.sum((ox >= x0 - 3) & (ox <= x1 + 3) & (oy >= y0 - 3) & (oy <= y1 + 3)
                                 & ~((ox == px[i]) & (oy == py[i]))))
            crossed = sum(1 for a0, a1, b0, b1 in placed if x0 < a1 and a0 < x1 and y0 < b1 and b0 < y1)
            outside = x0 < 0 or x1 > width or y0 < 0 or y1 > height
            scored.append((covered + 3 * crossed + 4 * outside, k, (x0, x1, y0, y1)))
        _, k, extent = min(scored)
        placed.append(extent)
        dx, dy, align = candidates[k]
        note = axis.annotate(labels[i], (x[i], y[i]), xytext=(dx, dy), textcoords="offset points",
                             fontsize=fontsize, ha=align, va="center", color="0.1", zorder=2.5,  # under markers
                             bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        note.set_in_layout(False)  # the layout was settled before the names


def _model_colors(table: pl.DataFrame) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(set(table["model"].to_list())))}


def _variant_styles(rows: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """(line style, marker) per label: dashed for baselines; within a model each variant its own marker."""
    markers = ["o", "^", "v", "D", "P", "X", "*", "<", ">", "h"]
    styles: dict[str, tuple[str, str]] = {}
    for model in sorted(set(rows["model"].to_list())):
        mine = rows.filter(pl.col("model") == model).sort("label")
        for j, row in enumerate(mine.iter_rows(named=True)):
            line = "--" if row["is_baseline"] else "-"
            styles[row["label"]] = (line, "s" if row["is_baseline"] else markers[j % len(markers)])
    return styles


def _seeds_text(rows: pl.DataFrame) -> str:
    counts = sorted(set(rows["seeds"].to_list())) if "seeds" in rows.columns else []
    return "seeds: " + "/".join(map(str, counts)) if counts else "seeds: ?"


def _column(table: pl.DataFrame, column: str) -> pl.Series | None:
    if column not in table.columns:
        return None
    series = table[column].cast(pl.Float64, strict=False)
    return series if series.drop_nulls().drop_nans().len() else None


def _has_values(rows: pl.DataFrame, column: str) -> bool:
    return column in rows.columns and rows[column].cast(pl.Float64, strict=False).drop_nulls().len() > 0


# -- files ----------------------------------------------------------------------------------------------------
def _inputs_hash(rows: pl.DataFrame, dataset: str) -> str:
    """The rows a dataset's plots are drawn from, this file and the matplotlib version, hashed."""
    import matplotlib

    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update(f"{matplotlib.__version__}\0{dataset}\0".encode())
    if rows.height:
        cols = [c for c in ("model", "variant", "seed", "baseline") if c in rows.columns]
        data = sorted(c for c in rows.columns if c in (*LEADERBOARD_METRICS, *COSTS)
                      or c.startswith(("recall@", f"{GROUP_METRIC}[group=")))
        frame = rows.select([pl.col(c).cast(pl.Utf8) for c in (*cols, *data)]).sort(cols)
        digest.update(frame.write_csv().encode())
    return digest.hexdigest()[:32]


def render_png(figure, source_hash: str = "") -> bytes:
    buffer = io.BytesIO()
    metadata = {"Software": None, **({HASH_KEY: source_hash} if source_hash else {})}
    figure.savefig(buffer, format="png", dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def _save(figure, path: Path, source_hash: str) -> None:
    data = render_png(figure, source_hash)
    if path.exists() and path.read_bytes() == data:
        return
    atomic_files.write_bytes(path, data)


def _png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG, read with Pillow (matplotlib's own image library); empty when there is no such
    file or it is not an image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}))
    except OSError:  # missing, unreadable or not an image (UnidentifiedImageError is an OSError)
        return {}


RENDERERS: dict[str, Callable[[pl.DataFrame, str], Any]] = {
    "leaderboard": render_leaderboard, "pareto": render_pareto, "groups": render_groups,
    "recall_at_k": render_recall_at_k}
