"""Every analyzer's figures, drawn here and nowhere else (matplotlib, imported lazily).

Three layers, so analyzers and benchmark reports share one drawing of each thing:

* axes-level drawers ``draw_<view>(ax, result)``: one view of a Result on a given Axes, with a
  short title carrying the view's key metrics; they never raise on NaN/inf values or empty
  arrays (stored results of diverged or degenerate runs must still make a report) and write
  "no finite values" where nothing can be drawn;
* each analyzer names the drawers it contributes in its ``views`` (name -> drawer), and the
  report lays out any analyzer's views without knowing them (3-D drawers say
  ``projection = "3d"``);
* composers: ``panel_figure`` (many views, e.g. one variant), ``comparison_figure`` (one view,
  variants side by side) and ``save_figure`` (reproducible PNG + PDF).
"""
from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path

import numpy as np

NO_DATA = "no finite values"
STYLE = Path(__file__).with_name("lossatlas.mplstyle")
LOG_RANGE = 100.0  # a shared loss scale spanning more than this factor is drawn on a log colour scale


FIGURE_QUALITIES = ("full", "draft", "none")
_draft = False  # set by style("draft"): save_figure then writes a 100-dpi PNG and no PDF


@contextlib.contextmanager
def style(quality: str = "full"):
    """Draw under lossatlas's one style file (fonts, 300-dpi PNG, TrueType in PDF). ``draft``:
    100-dpi PNGs only -- for smoke runs and tests, where saving full figures takes most of the time."""
    global _draft
    import matplotlib.pyplot as plt

    before = _draft
    with plt.style.context(STYLE):
        _draft = quality == "draft"
        try:
            yield
        finally:
            _draft = before


# -- helpers -------------------------------------------------------------------------------------

def _metric(result, name: str) -> float:
    """A metric or NaN: hand-built or older results may lack one, and a title must not fail."""
    try:
        return float(result.metrics.get(name, float("nan")))
    except (TypeError, ValueError):
        return float("nan")


def _rows(array, width: int, dtype=float) -> np.ndarray:
    """``array`` as (n, width), so an empty ``np.empty(0)`` or a missing array reads as zero rows."""
    return np.asarray(array if array is not None else [], dtype=dtype).reshape(-1, width)


def _finite_or_nan(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def _no_data(ax, text: str = NO_DATA) -> None:
    """Centered text in axes coordinates (3-D axes need text2D for that)."""
    place = ax.text2D if hasattr(ax, "text2D") else ax.text
    place(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def prefix_title(ax, label: str, sep: str = ": ") -> None:
    """Put ``label`` (a subject, a variant) in front of the title a drawer set."""
    title = ax.get_title()
    ax.set_title(f"{label}{sep}{title}" if title else label)


def _clipped(loss: np.ndarray, clip_quantile: float | None) -> np.ndarray:
    """Outlier clipping to "zoom" into small-scale structure (Xie, Geniesse et al. 2024, Fig. 1 right); non-finite
    values become NaN, which matplotlib leaves blank."""
    shown = _finite_or_nan(loss)
    finite = shown[np.isfinite(shown)]
    if clip_quantile is None or not len(finite):
        return shown
    return np.clip(shown, None, np.quantile(finite, clip_quantile))


def _grid(result, clip_quantile):
    """(shown loss, x, y), or None where no 2x2 patch of the grid could be drawn."""
    loss = np.asarray(result.arrays["loss_grid"], dtype=float)
    x, y = np.asarray(result.arrays["x"], dtype=float), np.asarray(result.arrays["y"], dtype=float)
    if loss.ndim != 2 or min(loss.shape) < 2 or loss.shape != (len(x), len(y)):
        return None
    shown = _clipped(loss, clip_quantile)
    return (shown, x, y) if np.isfinite(shown).any() else None


def _grid_or_no_data(ax, result, clip_quantile):
    """The grid to draw, or None after saying on ``ax`` that there is nothing to draw."""
    grid = _grid(result, clip_quantile)
    if grid is None:
        _no_data(ax)
    return grid


# -- merge tree ----------------------------------------------------------------------------------

def draw_contour(ax, result, clip_quantile: float | None = None, limits: tuple | None = None) -> None:
    """Merge-tree result: filled contour of the loss grid, minima (white) and saddles (red x).
    ``limits`` (low, high): one colour scale shared with other panels (``comparison_figure``),
    logarithmic where it spans more than ``LOG_RANGE``."""
    ax.set(xlabel="direction 1", ylabel="direction 2",
           title=f"contour: {_metric(result, 'n_minima'):g} minima, {_metric(result, 'n_saddles'):g} saddles")
    grid = _grid_or_no_data(ax, result, clip_quantile)
    if grid is None:
        return
    shown, x, y = grid
    levels, norm = _levels(shown if limits is None else limits)
    step = max(1, -(-max(shown.shape) // MAX_DRAWN_GRID))  # finer than the figure's pixels: drawn every step-th
    contour = ax.contourf(x[::step], y[::step], np.clip(shown[::step, ::step], levels[0], levels[-1]).T,
                          levels=levels, norm=norm, cmap="viridis")
    ax.figure.colorbar(contour, ax=ax, label="loss")
    values = np.asarray(result.arrays["loss_grid"], dtype=float).ravel()
    pairs = _rows(result.arrays.get("pair_vertices"), 2, np.int64)
    merges = _rows(result.arrays.get("saddles"), 3, np.int64)
    pair_vertices, saddle_rows, n_minima = _most_persistent(values, pairs, merges)
    minima, saddles = pair_vertices[:, 0], saddle_rows[:, 0]
    for vertices, style in ((minima, dict(c="white", edgecolors="k", label="minima")),
                            (saddles, dict(c="red", marker="x", label="saddles"))):
        if len(vertices):
            i, j = np.unravel_index(vertices, shown.shape)
            ax.scatter(x[i], y[j], s=30 if len(vertices) < 100 else 8, zorder=3, **style)
    notes = ([f"grid drawn at 1 of every {step} points an axis"] if step > 1 else []) + \
        ([f"the {len(minima)} most persistent of {n_minima} minima marked"] if len(minima) < n_minima else [])
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=6, color="white", va="bottom")
    path = _rows(result.arrays.get("path_xy"), 2)
    if len(path):  # PCA directions: the training path, initialisation (star) to the minimum (Li et al. 2018 §7)
        explained = _finite_or_nan(result.arrays.get("explained_variance", [np.nan, np.nan]))
        ax.plot(path[:, 0], path[:, 1], color="tab:red", lw=1, marker=".", ms=3, zorder=4, label="training path")
        ax.scatter(path[:1, 0], path[:1, 1], marker="*", s=60, c="tab:red", zorder=5)
        ax.set(xlabel=f"PC 1 ({100 * explained[0]:.1f}%)", ylabel=f"PC 2 ({100 * explained[1]:.1f}%)")
    if len(minima) or len(saddles) or len(path):
        ax.legend(loc="upper right", fontsize=7)


def draw_surface(ax3d, result, clip_quantile: float | None = None, limits: tuple | None = None) -> None:
    """Merge-tree result: the loss grid as a 3-D surface (``ax3d`` must be a 3-D axes); four ticks
    an axis so that they do not run into each other; ``limits`` as for ``draw_contour``."""
    from matplotlib.ticker import MaxNLocator

    ax3d.set(xlabel="direction 1", ylabel="direction 2", zlabel="loss",
             title=f"surface: loss {_metric(result, 'loss_min'):.3g} to {_metric(result, 'loss_max'):.3g}")
    for axis in (ax3d.xaxis, ax3d.yaxis, ax3d.zaxis):
        axis.set_major_locator(MaxNLocator(4))
    ax3d.tick_params(labelsize=7, pad=1)
    ax3d.set_box_aspect(None, zoom=0.8)  # room for the axis labels inside the panel
    grid = _grid_or_no_data(ax3d, result, clip_quantile)
    if grid is None:
        return
    shown, x, y = grid
    xx, yy = np.meshgrid(x, y, indexing="ij")
    levels, norm = _levels(shown if limits is None else limits)
    ax3d.plot_surface(xx, yy, np.ma.masked_invalid(shown), cmap="viridis", norm=norm, linewidth=0)
    if limits is not None:
        ax3d.set_zlim(levels[0], levels[-1])


def _levels(values) -> tuple[np.ndarray, object]:
    """Contour levels and colour norm for ``values`` (or a (low, high) pair): 30 levels, on a log
    scale where the positive range spans more than ``LOG_RANGE``."""
    from matplotlib.colors import LogNorm, Normalize

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + (abs(low) or 1.0) * 1e-6
    if low > 0 and high / low > LOG_RANGE:
        return np.geomspace(low, high, 31), LogNorm(low, high)
    return np.linspace(low, high, 31), Normalize(low, high)


def _grid_limits(results) -> tuple[float, float] | None:
    """The (low, high) of every finite loss of the results' grids: a scale shared across panels."""
    values = [np.asarray(r.arrays["loss_grid"], dtype=float) for r in results if "loss_grid" in r.arrays]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.empty(0)
    return (float(finite.min()), float(finite.max())) if len(finite) else None


draw_surface.projection = "3d"
draw_contour.shared = draw_surface.shared = "colour"


def draw_merge_tree(ax, result) -> None:
    """Merge-tree result: the tree with leaves at the minima's losses, saddles in red."""
    ax.set_title(f"merge tree: {_metric(result, 'n_saddles'):g} saddles")
    loss = np.asarray(result.arrays["loss_grid"], dtype=float).ravel()
    pair_vertices, saddles, n_minima = _most_persistent(loss, _rows(result.arrays.get("pair_vertices"), 2, np.int64),
                                                        _rows(result.arrays.get("saddles"), 3, np.int64))
    _draw_tree(ax, loss, pair_vertices, saddles)
    if len(pair_vertices) < n_minima:
        ax.set_xlabel(f"{len(pair_vertices)} most persistent of {n_minima} minima")


MAX_DRAWN_MINIMA = 300  # a tree or a map with more branches than this is ink, not information
MAX_DRAWN_GRID = 400  # grid points per axis drawn in a contour (a panel is a few hundred pixels wide)


def _most_persistent(values: np.ndarray, pair_vertices: np.ndarray, saddles: np.ndarray,
                     limit: int = MAX_DRAWN_MINIMA) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``limit`` most persistent minima and the merges among them, and how many minima there
    were. Closed under merging: by the elder rule a surviving branch outlives the one it absorbs,
    so the survivor of every kept merge is kept too."""
    n = len(pair_vertices)
    if n <= limit:
        return pair_vertices, saddles, n
    deaths = np.where(pair_vertices[:, 1] >= 0, values[np.maximum(pair_vertices[:, 1], 0)], np.inf)
    persistence = np.nan_to_num(deaths - values[pair_vertices[:, 0]], nan=-np.inf)
    kept = pair_vertices[np.sort(np.argsort(-persistence, kind="stable")[:limit])]
    return kept, saddles[np.isin(saddles[:, 2], kept[:, 0])], n


def _draw_tree(ax, values: np.ndarray, pair_vertices: np.ndarray, saddles: np.ndarray) -> None:
    """Leaves at their loss, each saddle joining two branches at its loss; x by merge order."""
    from matplotlib.collections import LineCollection

    ax.set(xticks=[], xlabel="minima (in merge order)", ylabel="loss")
    values = _finite_or_nan(values)
    top = {int(m): (float(i), float(values[m])) for i, m in enumerate(_leaf_order(pair_vertices, saddles))}
    if not top or not np.isfinite([p[1] for p in top.values()]).any():
        _no_data(ax)
        return
    ax.scatter([p[0] for p in top.values()], [p[1] for p in top.values()], c="tab:blue", s=12, zorder=3,
               label="minima")
    joints, branches = [], []
    for saddle, survivor, dying in saddles.tolist():
        if survivor not in top or dying not in top:
            continue  # a saddle whose branches are not in the tree (inconsistent arrays): skip it
        (xa, ya), (xb, yb) = top[survivor], top[dying]
        height = float(values[saddle])
        xs = 0.5 * (xa + xb)
        branches += [[(xa, ya), (xa, height), (xs, height)], [(xb, yb), (xb, height), (xs, height)]]
        joints.append((xs, height))
        top[survivor] = (xs, height)
    if joints:
        ax.add_collection(LineCollection(branches, colors="k", linewidths=0.8))
        ax.scatter(*np.array(joints).T, c="tab:red", s=10, zorder=3, label="saddles")


def _leaf_order(pair_vertices: np.ndarray, saddles: np.ndarray) -> list[int]:
    """Leaves ordered so that every merge joins neighbouring blocks (no crossing branches)."""
    blocks = {int(m): [int(m)] for m in pair_vertices[:, 0]}
    for _, survivor, dying in saddles.tolist():
        if survivor in blocks and dying in blocks and survivor != dying:
            blocks[survivor] = blocks[survivor] + blocks.pop(dying)
    return [leaf for block in blocks.values() for leaf in block]


def draw_persistence(ax, result) -> None:
    """Merge-tree result: the persistence diagram of its (minimum, saddle) pairs."""
    draw_diagram(ax, result.arrays.get("pairs"))
    ax.set_title(f"persistence: average {_metric(result, 'average_persistence'):.3g}")


def draw_diagram(ax, pairs: np.ndarray) -> None:
    """A persistence diagram; essential pairs (death +inf) as red triangles above the rest.
    Pairs with a non-finite birth or a NaN death carry no point and are left out."""
    ax.set(xlabel="birth (minimum)", ylabel="death (saddle)")
    pairs = _rows(pairs, 2)
    pairs = pairs[np.isfinite(pairs[:, 0]) & (np.isfinite(pairs[:, 1]) | (pairs[:, 1] == np.inf))]
    if not len(pairs):
        _no_data(ax)
        return
    finite = np.isfinite(pairs[:, 1])
    low = pairs[:, 0].min()
    top = pairs[finite, 1].max() if finite.any() else pairs[:, 0].max() + 1
    ax.scatter(pairs[finite, 0], pairs[finite, 1], s=14 if finite.sum() < 1000 else 4, label="pairs",
               rasterized=bool(finite.sum() > 5000))  # a vector file of 10^5 markers is megabytes, no clearer
    ax.scatter(pairs[~finite, 0], np.full((~finite).sum(), top * 1.05 if top > 0 else top + 1), marker="^",
               c="tab:red", s=20, label="essential (inf)")
    ax.plot([low, top], [low, top], c="gray", lw=0.8)
    ax.legend(fontsize=7)


# -- loss barcode ----------------------------------------------------------------------------------

def draw_barcode_view(ax, result) -> None:
    """Loss-barcode result: the barcode of minima, TO-score in the title."""
    draw_barcode(ax, result.arrays.get("bars"))
    ax.set_title(f"barcode: TO-score {_metric(result, 'to_score'):.3g}")


def draw_barcode(ax, bars: np.ndarray) -> None:
    """One vertical segment per minimum, from its loss to its death (Barannikov et al. 2025, Figs 2, 4, 7);
    an infinite death is a red bar with an arrow. Bars with a NaN end are left out."""
    ax.set(xlabel="minimum", ylabel="loss")
    bars = _rows(bars, 2)
    bars = bars[np.isfinite(bars[:, 0]) & ~np.isnan(bars[:, 1])]
    if not len(bars):
        _no_data(ax)
        return
    finite = np.isfinite(bars[:, 1])
    top = bars[finite, 1].max() if finite.any() else bars[:, 0].max() + 1.0
    span = (top - bars[:, 0].min()) or 1.0
    for index, (birth, death) in enumerate(bars):
        end = death if np.isfinite(death) else top + 0.15 * span
        color = "tab:blue" if np.isfinite(death) else "tab:red"
        ax.plot([index, index], [birth, end], lw=4, solid_capstyle="butt", c=color)
        if not np.isfinite(death):
            ax.annotate("", (index, end + 0.05 * span), (index, end),
                        arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.set(xticks=range(len(bars)))


def draw_minimum_bar(ax, result) -> None:
    """Minimum-bar result: the bar of every joined minimum (lowest first), this minimum's in orange."""
    losses, deaths = result.arrays.get("minima_losses"), result.arrays.get("deaths")
    if losses is None or deaths is None:
        _no_data(ax)
        return
    draw_barcode(ax, np.stack([losses, deaths], axis=1))
    rank = int(_metric(result, "rank")) if np.isfinite(_metric(result, "rank")) else -1
    if 0 <= rank < len(losses) and np.isfinite(deaths[rank]):
        ax.plot([rank, rank], [losses[rank], deaths[rank]], lw=4, solid_capstyle="butt", c="tab:orange")
    ax.set_title(f"this minimum's bar: {_metric(result, 'bar'):.3g}")


def draw_paths(ax, result) -> None:
    """Loss-barcode result: the loss along each optimized path between two minima."""
    ax.set(xlabel="t along the path", ylabel="loss", title="loss along the optimized paths")
    if "path_t" not in result.arrays:
        _no_data(ax, "no paths (one minimum)")
        return
    drawn = False
    for (i, j), t, losses in zip(result.arrays["pairs"], result.arrays["path_t"], result.arrays["path_losses"]):
        losses = _finite_or_nan(losses)
        if np.isfinite(losses).any():
            ax.plot(t, losses, lw=1, label=f"{i}-{j}")
            drawn = True
    if drawn:
        ax.legend(fontsize=6, ncol=2)
    else:
        _no_data(ax)


# -- jump and retrain --------------------------------------------------------------------------------

def draw_phate(ax, result) -> None:
    """Jump-retrain result: PHATE embedding coloured by log10 loss, each run a line, jumps as stars
    (size ~ step)."""
    ax.set(xticks=[], yticks=[], xlabel="PHATE 1", ylabel="PHATE 2",
           title=f"PHATE: TP0 {_metric(result, 'total_persistence_0_finite'):.3g}, "
                                       f"TP1 {_metric(result, 'total_persistence_1_finite'):.3g} (finite)")
    embedding = _rows(result.arrays.get("embedding"), 2)
    if not np.isfinite(embedding).all(axis=1).any():
        _no_data(ax)
        return
    n = len(embedding)
    losses = np.asarray(result.arrays.get("filtration", result.arrays["losses"]), dtype=float)
    split = (getattr(result, "params", None) or {}).get("loss_split", "train")
    with np.errstate(invalid="ignore", divide="ignore"):
        colors = _finite_or_nan(np.log10(np.maximum(losses, 1e-12)))
    if np.isfinite(colors).any():
        points = ax.scatter(embedding[:, 0], embedding[:, 1], c=colors, s=8, cmap="viridis", zorder=2,
                            plotnonfinite=True)
        ax.figure.colorbar(points, ax=ax, label=f"log10 {split} loss (the filtration)")
    else:
        ax.scatter(embedding[:, 0], embedding[:, 1], c="gray", s=8, zorder=2)
    seeds = np.asarray(result.arrays.get("seeds", np.zeros(n)))
    steps = np.asarray(result.arrays.get("step_sizes", np.zeros(n)), dtype=float)
    epochs = np.asarray(result.arrays.get("epochs", np.ones(n)))
    for seed in np.unique(seeds):
        for step in np.unique(steps):
            run = (seeds == seed) & (steps == step)
            ax.plot(embedding[run, 0], embedding[run, 1], lw=0.6, c=f"C{int(seed) % 10}", zorder=1)
    jumps = epochs == 0
    if jumps.any():
        sizes = 40 + 120 * np.nan_to_num(steps[jumps], nan=0.0, posinf=1.0, neginf=0.0)
        ax.scatter(embedding[jumps, 0], embedding[jumps, 1], marker="*", s=sizes, c="k", zorder=3,
                   label="jumps (size ~ step)")
        ax.legend(fontsize=7)


def draw_diagram_0(ax, result) -> None:
    """Jump-retrain result: the diagram D0 of the loss-filtered kNN graph."""
    draw_diagram(ax, result.arrays.get("diagram_0"))
    ax.set_title(f"D0: total persistence {_metric(result, 'total_persistence_0_finite'):.3g} (finite pairs)")


def draw_diagram_1(ax, result) -> None:
    """Jump-retrain result: the diagram D1 of the loss-filtered kNN graph."""
    draw_diagram(ax, result.arrays.get("diagram_1"))
    ax.set_title(f"D1: total persistence {_metric(result, 'total_persistence_1_finite'):.3g} (finite pairs)")


# -- Hessian -------------------------------------------------------------------------------------------

def draw_density(ax, result) -> None:
    """Hessian result: eigenvalue density on a log axis, the top eigenvalues as dashed red lines."""
    ax.set(xlabel="eigenvalue", ylabel="density (log)",
           title=f"density: top {_metric(result, 'top_eigenvalue'):.3g}, trace {_metric(result, 'trace'):.3g}")
    grid = _finite_or_nan(result.arrays.get("density_grid", []))
    density = _finite_or_nan(result.arrays.get("density", []))
    eigenvalues = _finite_or_nan(result.arrays.get("eigenvalues", [])).ravel()
    shown = np.isfinite(grid) & np.isfinite(density) & (density > 0) if grid.shape == density.shape else [False]
    if np.any(shown):
        ax.semilogy(grid, np.maximum(density, 1e-12), lw=1)  # the floor shows empty bins as drops, not gaps
    else:
        ax.set_yscale("log")
        _no_data(ax)
    for value in eigenvalues[np.isfinite(eigenvalues)]:
        ax.axvline(value, color="tab:red", lw=0.8, ls="--")


# -- lines, neighbourhoods, layers ------------------------------------------------------------------------

def draw_interpolation(ax, result) -> None:
    """Interpolation result: loss along the line from the initialisation and to the partner minimum."""
    ax.set(xlabel="t (0: start, 1: end)", ylabel="loss (log)", yscale="log",
           title=f"lines: barrier {_metric(result, 'barrier'):.3g}")
    t = _finite_or_nan(result.arrays.get("t", []))
    drawn = False
    for name, label in (("init_loss", "initialisation -> minimum"), ("partner_loss", "minimum -> partner")):
        values = _finite_or_nan(result.arrays.get(name, []))
        if values.shape == t.shape and np.isfinite(values).any():
            ax.plot(t, np.maximum(values, 1e-12), lw=1, marker=".", label=label)
            drawn = True
    if drawn:
        ax.legend(fontsize=6)
    else:
        _no_data(ax)


draw_interpolation.shared = "y"


def draw_ascent(ax, result) -> None:
    """Sharpness result: the loss increase reached at each ascent step, per neighbourhood."""
    ax.set(xlabel="ascent step", ylabel="loss increase", title="worst-case neighbours (projected ascent)")
    drawn = False
    for name in ("epsilon", "adaptive_l2", "adaptive_linf"):
        values = _finite_or_nan(result.arrays.get(f"{name}_ascent", []))
        if values.size and np.isfinite(values).any():
            ax.plot(np.arange(values.shape[-1]), np.nanmax(values.reshape(-1, values.shape[-1]), axis=0), lw=1,
                    label=name)
            drawn = True
    if drawn:
        ax.legend(fontsize=6)
    else:
        _no_data(ax)


def draw_layers(ax, result) -> None:
    """Per-layer Hessian result: each block's top eigenvalue and trace, in parameter order."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in result.arrays.get("layer_names", [])]
    tops = _finite_or_nan(result.arrays.get("layer_top_eigenvalue", []))
    traces = _finite_or_nan(result.arrays.get("layer_trace", []))
    ax.set(ylabel="value (symlog)", title="Hessian per layer block")
    if not names or len(tops) != len(names):
        _no_data(ax)
        return
    x = np.arange(len(names))
    ax.bar(x - 0.2, tops, width=0.4, label="top eigenvalue")
    ax.bar(x + 0.2, traces, width=0.4, label="trace")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xticks(x, names, rotation=90, fontsize=5)
    ax.legend(fontsize=6)


def is_3d(draw) -> bool:
    """Whether a drawer needs a 3-D axes (``projection = "3d"`` on it)."""
    return getattr(draw, "projection", None) == "3d"


# -- figures -------------------------------------------------------------------------------------------

def panel_figure(title: str, panels: list, ncols: int = 4):
    """One figure, one subplot per ``(panel_title, drawer, result)`` in rows of ``ncols``; each
    subplot's title starts with its panel title. For e.g. every view of one benchmark variant."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = plt.figure(figsize=(3.6 * ncols, 3.2 * nrows + 0.4), layout="constrained")
    for index, (label, draw, result) in enumerate(panels):
        ax = figure.add_subplot(nrows, ncols, index + 1, projection="3d" if is_3d(draw) else None)
        draw(ax, result)
        prefix_title(ax, label, "\n")
        ax.title.set_fontsize(9)
    figure.suptitle(title)
    return figure


def comparison_figure(title: str, draw, columns: list):
    """One row, one column per ``(column_label, result)``: the same view (drawer) of several
    variants side by side (skip vs no-skip, beta = 1..50). A None result (not computed yet) shows
    so in its column. Panels share their scales, so that they can be compared: one colour scale
    for loss grids (drawers with ``shared = "colour"``; logarithmic over a wide range), one y range
    (``"y"``) or one x and y range (``"xy"``) for the other views that declare it."""
    import matplotlib.pyplot as plt

    n = max(1, len(columns))
    shared = getattr(draw, "shared", None)
    limits = _grid_limits([r for _, r in columns if r is not None]) if shared == "colour" else None
    figure = plt.figure(figsize=(3.6 * n, 3.6), layout="constrained")
    drawn = []
    for index, (label, result) in enumerate(columns):
        ax = figure.add_subplot(1, n, index + 1, projection="3d" if is_3d(draw) else None)
        if result is None:
            ax.set_title(label)
            ax.set(xticks=[], yticks=[])
            _no_data(ax, "not computed")
        else:
            draw(ax, result, limits=limits) if limits is not None else draw(ax, result)
            prefix_title(ax, label, "\n")
            drawn.append(ax)
        ax.title.set_fontsize(9)
    if shared in ("y", "xy"):
        _share_limits(drawn, "y")
    if shared == "xy":
        _share_limits(drawn, "x")
    figure.suptitle(title)
    return figure


def _share_limits(axes: list, which: str) -> None:
    """One range over ``axes`` (those that drew data), the union of their own."""
    drew = [ax for ax in axes if ax.has_data()]
    if len(drew) < 2:
        return
    ranges = [ax.get_ylim() if which == "y" else ax.get_xlim() for ax in drew]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    for ax in drew:
        (ax.set_ylim if which == "y" else ax.set_xlim)(low, high)


def file_stem(text: str) -> str:
    """A label as part of a figure's file name (letters, digits and dots; other runs become '-')."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


_STEM_CHARS = 60  # file names stay far below the 255 bytes file systems allow


def file_stems(labels) -> dict[str, str]:
    """Each label's file stem, one file per label: ``file_stem`` where that is unambiguous, with a
    short hash of the label appended where it is not -- labels that differ only in what
    ``file_stem`` drops ("s_1" and "s-1", "λ" and "μ") or in case (case-insensitive file systems),
    empty stems, and long labels (cut, so the name fits the file system)."""
    import hashlib

    labels = list(dict.fromkeys(str(label) for label in labels))
    plain = {label: file_stem(label) for label in labels}
    count: dict[str, int] = {}
    for stem in plain.values():
        count[stem.lower()] = count.get(stem.lower(), 0) + 1
    stems = {}
    for label, stem in plain.items():
        if stem and count[stem.lower()] == 1 and len(stem) <= _STEM_CHARS:
            stems[label] = stem
        else:
            tag = hashlib.sha1(label.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            stems[label] = f"{stem[:_STEM_CHARS]}-{tag}".lstrip("-")
    return stems


def save_figure(figure, path_without_suffix) -> list[Path]:
    """Write ``<path>.png`` (300 dpi) and ``<path>.pdf`` (vector) and close the figure; under
    ``style("draft")`` a 100-dpi PNG only. Timestamps and the PNG's Software tag are left out so the
    same figure gives the same bytes (diffable reports)."""
    import matplotlib.pyplot as plt

    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")
    try:
        figure.savefig(png, dpi=100 if _draft else 300, metadata={"Software": None})
        if not _draft:
            figure.savefig(pdf, metadata={"CreationDate": None, "ModDate": None})
    finally:
        plt.close(figure)
    return [png] if _draft else [png, pdf]


draw_merge_tree.shared = draw_barcode_view.shared = draw_paths.shared = "y"  # the loss, on one axis
draw_persistence.shared = draw_diagram_0.shared = draw_diagram_1.shared = draw_density.shared = "xy"
