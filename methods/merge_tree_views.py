"""The ``merge-tree`` analyzer's views: the loss grid as a contour and a surface, its merge tree
and its persistence diagram (Xie, Geniesse et al. 2024, Fig. 1). A 3-D or 4-D grid is drawn as its
central slice, the plane of the first two directions through the grid's center, with the minima
and saddles that lie on it; its merge tree and diagram are the whole grid's.

Drawn bounded: a noisy imported surface has 10^5 minima and a 1500 x 1500 grid, and a panel is a
few hundred pixels wide, so the contour is drawn at figure resolution and only the most
persistent minima are marked, each figure saying so.
"""
from __future__ import annotations

import numpy as np

from lossatlas.plots import (OKABE_ITO, clipped, colorbar, contour_levels, draw_diagram, finite_or_nan, finite_range,
                             loss_label, metric, no_data, rows)

MAX_DRAWN_MINIMA = 300  # a tree or a map with more branches than this is ink, not information
MAX_DRAWN_GRID = 400  # grid points per axis drawn in a contour (a panel is a few hundred pixels wide)


def loss_limits(result) -> tuple[float, float] | None:
    """The (low, high) of the grid's finite losses: the colour scale panels of several variants share."""
    return finite_range(result.arrays["loss_grid"]) if "loss_grid" in result.arrays else None


def _directions(result) -> tuple[str, str, str | None]:
    """(axis 1, axis 2, unit) of the grid, from the directions it was drawn along: random ones are
    filter-normalized (Li et al. 2018: a step of 1 moves each filter by its own norm), Hessian
    eigenvectors scaled to the parameters' norm, a function's own axes are its parameters."""
    kind = (getattr(result, "params", None) or {}).get("directions")
    if kind == "axes":
        return "θ₁", "θ₂", None
    if kind == "hessian":
        curvature = {"ggn": "GGN", "ef": "Fisher"}.get(result.params.get("curvature"), "Hessian")
        return f"{curvature} eigenvector 1", f"{curvature} eigenvector 2", "× ‖θ‖"
    return "direction 1", "direction 2", "filter-normalized units" if kind == "random" else None


def direction_labels(result) -> tuple[str, str]:
    """The grid's axis labels with their unit (``_directions``)."""
    first, second, unit = _directions(result)
    return tuple(f"{name} ({unit})" if unit else name for name in (first, second))


EXTRA_AXES = ("z", "w")  # the coordinates past the second of a 3-D or 4-D grid


def central_slice(result) -> tuple[tuple[int, ...], str]:
    """The indices along the grid's axes past the second of its central slice (the points nearest
    0; the middle index where the coordinates do not fit the grid) and its name ("z = 0"), or
    ((), "") for a 2-D grid."""
    shape = np.shape(result.arrays.get("loss_grid", []))
    index, names = [], []
    for axis, size in zip(EXTRA_AXES, shape[2:]):
        values = np.asarray(result.arrays.get(axis, []), dtype=float).ravel()
        if len(values) == size and size and np.isfinite(values).all():
            index.append(int(np.argmin(np.abs(values))))
            names.append(f"{axis} = {values[index[-1]]:.3g}")
        else:
            index.append(size // 2)
            names.append(f"{axis} index {size // 2}")
    return tuple(index), ", ".join(names)


def _slice_title(result) -> str:
    """The panel title's note on a 3-D or 4-D grid's slice ("" for a 2-D grid)."""
    _, name = central_slice(result)
    return f"\ncentral slice {name} of the {np.ndim(result.arrays['loss_grid'])}-D grid" if name else ""


def _grid(result, clip_quantile):
    """(shown loss, x, y), or None where no 2x2 patch of the grid could be drawn; of a 3-D or 4-D
    grid its central slice."""
    loss = np.asarray(result.arrays["loss_grid"], dtype=float)
    x, y = np.asarray(result.arrays["x"], dtype=float), np.asarray(result.arrays["y"], dtype=float)
    if loss.ndim > 2 and min(loss.shape[2:]) > 0:
        loss = loss[(slice(None), slice(None), *central_slice(result)[0])]
    if loss.ndim != 2 or min(loss.shape) < 2 or loss.shape != (len(x), len(y)):
        return None
    shown = clipped(loss, clip_quantile)
    return (shown, x, y) if np.isfinite(shown).any() else None


def _on_slice(result, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (i, j) grid indices of those flat ``vertices`` that lie on the drawn slice."""
    shape = np.shape(result.arrays["loss_grid"])
    index = np.unravel_index(vertices, shape)
    keep = np.ones(len(vertices), dtype=bool)
    for axis_index, at in zip(index[2:], central_slice(result)[0]):
        keep &= axis_index == at
    return index[0][keep], index[1][keep]


def _grid_or_no_data(ax, result, clip_quantile):
    """The grid to draw, or None after saying on ``ax`` that there is nothing to draw."""
    grid = _grid(result, clip_quantile)
    if grid is None:
        no_data(ax)
    return grid


def draw_contour(ax, result, clip_quantile: float | None = None, limits: tuple | None = None) -> None:
    """Filled contour of the loss grid, minima (white) and saddles (red x). ``limits`` (low, high):
    one colour scale shared with other panels (``comparison_figure``), logarithmic where it spans
    more than ``lossatlas.plots.LOG_RANGE``."""
    from matplotlib.ticker import MaxNLocator

    xlabel, ylabel = direction_labels(result)
    ax.set(xlabel=xlabel, ylabel=ylabel,
           title=f"contour: {metric(result, 'n_minima'):g} minima, {metric(result, 'n_saddles'):g} saddles"
                 + _slice_title(result))
    ax.xaxis.set_major_locator(MaxNLocator(3))  # tick labels that do not run into each other in a narrow panel
    grid = _grid_or_no_data(ax, result, clip_quantile)
    if grid is None:
        return
    shown, x, y = grid
    levels, norm = contour_levels(shown if limits is None else limits)
    step = max(1, -(-max(shown.shape) // MAX_DRAWN_GRID))  # finer than the figure's pixels: drawn every step-th
    contour = ax.contourf(x[::step], y[::step], np.clip(shown[::step, ::step], levels[0], levels[-1]).T,
                          levels=levels, norm=norm, cmap="viridis")
    colorbar(ax, contour, loss_label())
    values = np.asarray(result.arrays["loss_grid"], dtype=float).ravel()
    pairs = rows(result.arrays.get("pair_vertices"), 2, np.int64)
    merges = rows(result.arrays.get("saddles"), 3, np.int64)
    pair_vertices, saddle_rows, n_minima = _most_persistent(values, pairs, merges)
    minima, saddles = pair_vertices[:, 0], saddle_rows[:, 0]
    marked = False
    for vertices, style in ((minima, dict(c="white", edgecolors="k", label="minima")),
                            (saddles, dict(c=OKABE_ITO["vermillion"], marker="x", label="saddles"))):
        i, j = _on_slice(result, vertices)
        if len(i):
            ax.scatter(x[i], y[j], s=30 if len(i) < 100 else 8, zorder=3, **style)
            marked = True
    notes = ([f"grid drawn at 1 of every {step} points an axis"] if step > 1 else []) + \
        ([f"the {len(minima)} most persistent of {n_minima} minima marked"] if len(minima) < n_minima else [])
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=6, color="white", va="bottom")
    name = next((k for k in ("path_xy", "path_xyz", "path_xyzw") if k in result.arrays), None)
    path = rows(result.arrays.get(name), len(name) - 5 if name else 2)[:, :2]  # 3-D, 4-D: on the plane of PC 1, 2
    if len(path):  # PCA directions: the training path, initialisation (star) to the minimum (Li et al. 2018 §7)
        explained = finite_or_nan(result.arrays.get("explained_variance", [np.nan, np.nan]))
        ax.plot(path[:, 0], path[:, 1], color=OKABE_ITO["orange"], lw=1, marker=".", ms=3, zorder=4,
                label="training path")
        ax.scatter(path[:1, 0], path[:1, 1], marker="*", s=60, c=OKABE_ITO["orange"], zorder=5)
        ax.set(xlabel=f"PC 1 ({100 * explained[0]:.1f}% of variance; × path extent)",
               ylabel=f"PC 2 ({100 * explained[1]:.1f}%; × path extent)")
    if marked or len(path):
        ax.legend(loc="upper right")


def draw_surface(ax3d, result, clip_quantile: float | None = None, limits: tuple | None = None) -> None:
    """The loss grid as a 3-D surface (``ax3d`` must be a 3-D axes); four ticks an axis so that
    they do not run into each other; ``limits`` as for ``draw_contour``."""
    from matplotlib.ticker import MaxNLocator

    first, second, unit = _directions(result)
    ax3d.set(xlabel=first.replace("eigenvector", "eigvec."), ylabel=second.replace("eigenvector", "eigvec."),
             zlabel="loss",
             title=f"surface, loss {metric(result, 'loss_min'):.3g} to {metric(result, 'loss_max'):.3g}"
                   + (f"\n(axes in {unit})" if unit else "")  # the loss and its unit: on the colour bar
                   + _slice_title(result))
    for axis in (ax3d.xaxis, ax3d.yaxis, ax3d.zaxis):
        axis.set_major_locator(MaxNLocator(4))
    ax3d.tick_params(labelsize=6, pad=0)
    ax3d.xaxis.labelpad = ax3d.yaxis.labelpad = 0
    ax3d.zaxis.labelpad = 4  # clear of the z tick labels
    ax3d.set_box_aspect(None, zoom=0.85)  # room for the axis labels inside the panel
    grid = _grid_or_no_data(ax3d, result, clip_quantile)
    if grid is None:
        return
    shown, x, y = grid
    xx, yy = np.meshgrid(x, y, indexing="ij")
    levels, norm = contour_levels(shown if limits is None else limits)
    surface = ax3d.plot_surface(xx, yy, np.ma.masked_invalid(shown), cmap="viridis", norm=norm, linewidth=0)
    colorbar(ax3d, surface, loss_label(), shrink=0.6, pad=0.15)
    if limits is not None:
        ax3d.set_zlim(levels[0], levels[-1])


def draw_merge_tree(ax, result) -> None:
    """The merge tree with leaves at the minima's losses, saddles in red."""
    ax.set_title(f"merge tree: {metric(result, 'n_saddles'):g} saddles")
    loss = np.asarray(result.arrays["loss_grid"], dtype=float).ravel()
    pair_vertices, saddles, n_minima = _most_persistent(loss, rows(result.arrays.get("pair_vertices"), 2, np.int64),
                                                        rows(result.arrays.get("saddles"), 3, np.int64))
    _draw_tree(ax, loss, pair_vertices, saddles)
    if len(pair_vertices) < n_minima:
        ax.set_xlabel(f"{len(pair_vertices)} most persistent of {n_minima} minima")


def draw_persistence(ax, result) -> None:
    """The persistence diagram of the merge tree's (minimum, saddle) pairs."""
    draw_diagram(ax, result.arrays.get("pairs"))
    ax.set_title(f"persistence: average {metric(result, 'average_persistence'):.3g}")


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

    ax.set(xticks=[], xlabel="minima (in merge order)", ylabel=loss_label())
    values = finite_or_nan(values)
    top = {int(m): (float(i), float(values[m])) for i, m in enumerate(_leaf_order(pair_vertices, saddles))}
    if not top or not np.isfinite([p[1] for p in top.values()]).any():
        no_data(ax)
        return
    ax.scatter([p[0] for p in top.values()], [p[1] for p in top.values()], c=OKABE_ITO["blue"], s=12, zorder=3,
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
        ax.scatter(*np.array(joints).T, c=OKABE_ITO["vermillion"], s=10, zorder=3, label="saddles")
    ax.legend(loc="best")


def _leaf_order(pair_vertices: np.ndarray, saddles: np.ndarray) -> list[int]:
    """Leaves ordered so that every merge joins neighbouring blocks (no crossing branches)."""
    blocks = {int(m): [int(m)] for m in pair_vertices[:, 0]}
    for _, survivor, dying in saddles.tolist():
        if survivor in blocks and dying in blocks and survivor != dying:
            blocks[survivor] = blocks[survivor] + blocks.pop(dying)
    return [leaf for block in blocks.values() for leaf in block]
