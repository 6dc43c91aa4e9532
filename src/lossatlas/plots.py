"""Figures shared by analyzers and reports (matplotlib, imported lazily)."""
from __future__ import annotations

import numpy as np


def _clipped(loss: np.ndarray, clip_quantile: float | None) -> np.ndarray:
    """Outlier clipping to "zoom" into small-scale structure (seed 001, Fig. 1 right)."""
    finite = loss[np.isfinite(loss)]
    if clip_quantile is None or not len(finite):
        return np.where(np.isfinite(loss), loss, np.nan)
    return np.clip(np.where(np.isfinite(loss), loss, np.nan), None, np.quantile(finite, clip_quantile))


def merge_tree_figure(result, clip_quantile: float | None = None):
    import matplotlib.pyplot as plt

    loss, x, y = result.arrays["loss_grid"], result.arrays["x"], result.arrays["y"]
    figure, (ax_map, ax_tree, ax_diagram) = plt.subplots(1, 3, figsize=(13, 4))
    shown = _clipped(loss, clip_quantile)
    contour = ax_map.contourf(x, y, shown.T, levels=30, cmap="viridis")
    figure.colorbar(contour, ax=ax_map, label="loss")
    shape = loss.shape
    minima = np.unravel_index(result.arrays["pair_vertices"][:, 0], shape)
    ax_map.scatter(x[minima[0]], y[minima[1]], c="white", edgecolors="k", s=30, label="minima", zorder=3)
    if len(result.arrays["saddles"]):
        saddles = np.unravel_index(result.arrays["saddles"][:, 0], shape)
        ax_map.scatter(x[saddles[0]], y[saddles[1]], c="red", marker="x", s=30, label="saddles", zorder=3)
    ax_map.set(xlabel="direction 1", ylabel="direction 2", title=f"{result.subject}")
    ax_map.legend(loc="upper right", fontsize=7)
    draw_merge_tree(ax_tree, loss.ravel(), result.arrays["pair_vertices"], result.arrays["saddles"])
    draw_diagram(ax_diagram, result.arrays["pairs"])
    ax_tree.set_title(f"merge tree: {int(result.metrics['n_saddles'])} saddles")
    ax_diagram.set_title(f"average persistence {result.metrics['average_persistence']:.3g}")
    figure.tight_layout()
    return figure


def draw_merge_tree(ax, values: np.ndarray, pair_vertices: np.ndarray, saddles: np.ndarray) -> None:
    """Leaves at their loss, each saddle joining two branches at its loss; x by merge order."""
    top = {int(m): (float(i), float(values[m])) for i, m in enumerate(_leaf_order(pair_vertices, saddles))}
    ax.scatter([p[0] for p in top.values()], [p[1] for p in top.values()], c="tab:blue", s=12, zorder=3)
    for saddle, survivor, dying in saddles.tolist():
        (xa, ya), (xb, yb) = top[survivor], top[dying]
        height = float(values[saddle])
        xs = 0.5 * (xa + xb)
        ax.plot([xa, xa, xs], [ya, height, height], c="k", lw=0.8)
        ax.plot([xb, xb, xs], [yb, height, height], c="k", lw=0.8)
        ax.scatter([xs], [height], c="tab:red", s=10, zorder=3)
        top[survivor] = (xs, height)
    ax.set(xticks=[], ylabel="loss")


def _leaf_order(pair_vertices: np.ndarray, saddles: np.ndarray) -> list[int]:
    """Leaves ordered so that every merge joins neighbouring blocks (no crossing branches)."""
    blocks = {int(m): [int(m)] for m in pair_vertices[:, 0]}
    for _, survivor, dying in saddles.tolist():
        blocks[survivor] = blocks[survivor] + blocks.pop(dying)
    return [leaf for block in blocks.values() for leaf in block]


def draw_diagram(ax, pairs: np.ndarray) -> None:
    finite = np.isfinite(pairs[:, 1])
    top = pairs[finite, 1].max() if finite.any() else (pairs[:, 0].max() + 1 if len(pairs) else 1.0)
    low = pairs[:, 0].min() if len(pairs) else 0.0
    ax.scatter(pairs[finite, 0], pairs[finite, 1], s=14, label="pairs")
    ax.scatter(pairs[~finite, 0], np.full((~finite).sum(), top * 1.05 if top > 0 else top + 1), marker="^",
               c="tab:red", s=20, label="essential (inf)")
    ax.plot([low, top], [low, top], c="gray", lw=0.8)
    ax.set(xlabel="birth (minimum)", ylabel="death (saddle)")
    ax.legend(fontsize=7)


def surface_figure(result, clip_quantile: float | None = None):
    """The loss grid as a 3-D surface."""
    import matplotlib.pyplot as plt

    loss, x, y = result.arrays["loss_grid"], result.arrays["x"], result.arrays["y"]
    figure = plt.figure(figsize=(5, 4))
    ax = figure.add_subplot(projection="3d")
    xx, yy = np.meshgrid(x, y, indexing="ij")
    ax.plot_surface(xx, yy, _clipped(loss, clip_quantile), cmap="viridis", linewidth=0)
    ax.set(xlabel="direction 1", ylabel="direction 2", zlabel="loss", title=result.subject)
    return figure


def draw_barcode(ax, bars: np.ndarray) -> None:
    """One vertical segment per minimum, from its loss to its death (seed 002, Figs 2, 4, 7)."""
    finite = np.isfinite(bars[:, 1])
    top = bars[finite, 1].max() if finite.any() else bars[:, 0].max() + 1.0
    span = top - bars[:, 0].min() if len(bars) else 1.0
    for index, (birth, death) in enumerate(bars):
        end = death if np.isfinite(death) else top + 0.15 * span
        ax.plot([index, index], [birth, end], lw=4, solid_capstyle="butt", c="tab:blue" if np.isfinite(death) else "tab:red")
        if not np.isfinite(death):
            ax.annotate("", (index, end + 0.05 * span), (index, end), arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.set(xlabel="minimum", ylabel="loss", xticks=range(len(bars)))
