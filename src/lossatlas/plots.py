"""Drawing helpers every analyzer's views share (matplotlib, imported lazily), public for plugins.

An analyzer owns its figures: it declares them in its ``views`` (``lossatlas.analyzer.view``) and
draws them in its own module, ``draw(ax, result)`` on the axes it is given. This module holds what
those drawers and the reports share, and knows no analyzer's arrays:

* NaN-safe pieces for drawers, which must never raise on NaN/inf values or empty arrays (stored
  results of diverged or degenerate runs must still make a report): ``metric`` (a title's number,
  NaN when missing), ``rows``, ``finite_or_nan``, ``finite_range``, ``clipped``,
  ``contour_levels``, and ``no_data``, which writes "no finite values" where nothing can be drawn;
* drawing primitives used by several analyzers: ``draw_diagram`` (a persistence diagram) and
  ``draw_barcode``;
* composers, which lay out any analyzer's views without knowing them, from what each ``View``
  declares (its projection, what panels share): ``panel_figure`` (many views, e.g. one variant),
  ``comparison_figure`` (one view, variants side by side); ``save_figure`` (reproducible PNG +
  PDF) under ``style``; ``file_stem(s)`` for figure file names.
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


# -- NaN-safe pieces for drawers ---------------------------------------------------------------------

def metric(result, name: str) -> float:
    """A metric or NaN: hand-built or older results may lack one, and a title must not fail."""
    try:
        return float(result.metrics.get(name, float("nan")))
    except (TypeError, ValueError):
        return float("nan")


def rows(array, width: int, dtype=float) -> np.ndarray:
    """``array`` as (n, width), so an empty ``np.empty(0)`` or a missing array reads as zero rows."""
    return np.asarray(array if array is not None else [], dtype=dtype).reshape(-1, width)


def finite_or_nan(values) -> np.ndarray:
    """``values`` as floats, NaN where they are not finite (matplotlib leaves NaN blank)."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def finite_range(values) -> tuple[float, float] | None:
    """(lowest, highest) of the finite ``values``, or None without any: what a view's
    ``limits_of`` returns, so that side-by-side panels share one scale."""
    values = np.asarray(values if values is not None else [], dtype=float)
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if len(finite) else None


def no_data(ax, text: str = NO_DATA) -> None:
    """Centered text in axes coordinates (3-D axes need text2D for that)."""
    place = ax.text2D if hasattr(ax, "text2D") else ax.text
    place(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def legend_or_no_data(ax, drawn: bool, **legend) -> None:
    """The legend of the lines a view drew, or the no-data text where it drew none (every value
    non-finite or missing)."""
    if drawn:
        ax.legend(fontsize=6, **legend)
    else:
        no_data(ax)


def prefix_title(ax, label: str, sep: str = ": ") -> None:
    """Put ``label`` (a subject, a variant) in front of the title a drawer set."""
    title = ax.get_title()
    ax.set_title(f"{label}{sep}{title}" if title else label)


def clipped(values: np.ndarray, clip_quantile: float | None) -> np.ndarray:
    """Outlier clipping to "zoom" into small-scale structure (Xie, Geniesse et al. 2024, Fig. 1 right); non-finite
    values become NaN, which matplotlib leaves blank."""
    shown = finite_or_nan(values)
    finite = shown[np.isfinite(shown)]
    if clip_quantile is None or not len(finite):
        return shown
    return np.clip(shown, None, np.quantile(finite, clip_quantile))


def contour_levels(values) -> tuple[np.ndarray, object]:
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


# -- primitives several analyzers draw -----------------------------------------------------------------

def draw_diagram(ax, points: np.ndarray) -> None:
    """A persistence diagram of (birth, death) ``points``; essential pairs (death +inf) as red
    triangles above the rest. Points with a non-finite birth or a NaN death are left out."""
    ax.set(xlabel="birth (minimum)", ylabel="death (saddle)")
    points = rows(points, 2)
    points = points[np.isfinite(points[:, 0]) & (np.isfinite(points[:, 1]) | (points[:, 1] == np.inf))]
    if not len(points):
        no_data(ax)
        return
    finite = np.isfinite(points[:, 1])
    low = points[:, 0].min()
    top = points[finite, 1].max() if finite.any() else points[:, 0].max() + 1
    ax.scatter(points[finite, 0], points[finite, 1], s=14 if finite.sum() < 1000 else 4, label="pairs",
               rasterized=bool(finite.sum() > 5000))  # a vector file of 10^5 markers is megabytes, no clearer
    ax.scatter(points[~finite, 0], np.full((~finite).sum(), top * 1.05 if top > 0 else top + 1), marker="^",
               c="tab:red", s=20, label="essential (inf)")
    ax.plot([low, top], [low, top], c="gray", lw=0.8)
    ax.legend(fontsize=7)


def draw_barcode(ax, intervals: np.ndarray) -> None:
    """A barcode of minima: one vertical segment per (loss, death) interval (Barannikov et al.
    2025, Figs 2, 4, 7); an infinite death is a red bar with an arrow. Intervals with a NaN end are
    left out."""
    ax.set(xlabel="minimum", ylabel="loss")
    intervals = rows(intervals, 2)
    intervals = intervals[np.isfinite(intervals[:, 0]) & ~np.isnan(intervals[:, 1])]
    if not len(intervals):
        no_data(ax)
        return
    finite = np.isfinite(intervals[:, 1])
    top = intervals[finite, 1].max() if finite.any() else intervals[:, 0].max() + 1.0
    span = (top - intervals[:, 0].min()) or 1.0
    for index, (birth, death) in enumerate(intervals):
        end = death if np.isfinite(death) else top + 0.15 * span
        color = "tab:blue" if np.isfinite(death) else "tab:red"
        ax.plot([index, index], [birth, end], lw=4, solid_capstyle="butt", c=color)
        if not np.isfinite(death):
            ax.annotate("", (index, end + 0.05 * span), (index, end),
                        arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.set(xticks=range(len(intervals)))


# -- figures -------------------------------------------------------------------------------------------

def panel_figure(title: str, panels: list, ncols: int = 4):
    """One figure, one subplot per ``(panel_title, view, result)`` in rows of ``ncols``; each
    subplot's title starts with its panel title. For e.g. every view of one benchmark variant.
    ``view``: an analyzer's ``View`` (a 3-D one gets a 3-D axes) or a bare ``draw(ax, result)``."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = plt.figure(figsize=(3.6 * ncols, 3.2 * nrows + 0.4), layout="constrained")
    for index, (label, view, result) in enumerate(panels):
        ax = figure.add_subplot(nrows, ncols, index + 1, projection=getattr(view, "projection", None))
        view(ax, result)
        prefix_title(ax, label, "\n")
        ax.title.set_fontsize(9)
    figure.suptitle(title)
    return figure


def comparison_figure(title: str, view, columns: list):
    """One row, one column per ``(column_label, result)``: the same view of several variants side
    by side (skip vs no-skip, beta = 1..50). A None result (not computed yet) shows so in its
    column. Panels share the scales the view declares, so that they can be compared: ``shared =
    "colour"`` one colour scale over every panel's ``limits_of(result)``, handed to the drawer as
    ``limits`` (logarithmic over a wide range, see ``contour_levels``); ``"y"`` one y range,
    ``"xy"`` one x and y range, the union of the panels' own."""
    import matplotlib.pyplot as plt

    n = max(1, len(columns))
    shared, limits_of = getattr(view, "shared", None), getattr(view, "limits_of", None)
    limits = None
    if shared == "colour" and limits_of is not None:
        limits = _union([limits_of(r) for _, r in columns if r is not None])
    figure = plt.figure(figsize=(3.6 * n, 3.6), layout="constrained")
    drawn = []
    for index, (label, result) in enumerate(columns):
        ax = figure.add_subplot(1, n, index + 1, projection=getattr(view, "projection", None))
        if result is None:
            ax.set_title(label)
            ax.set(xticks=[], yticks=[])
            no_data(ax, "not computed")
        else:
            view(ax, result, limits=limits) if limits is not None else view(ax, result)
            prefix_title(ax, label, "\n")
            drawn.append(ax)
        ax.title.set_fontsize(9)
    if shared in ("y", "xy"):
        _share_limits(drawn, "y")
    if shared == "xy":
        _share_limits(drawn, "x")
    figure.suptitle(title)
    return figure


def _union(ranges: list) -> tuple[float, float] | None:
    """The smallest (low, high) holding every given range (None: a panel without one)."""
    ranges = [r for r in ranges if r is not None]
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None


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
