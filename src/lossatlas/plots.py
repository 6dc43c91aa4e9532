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
  ``comparison_figure`` (one view, variants side by side); ``save_figure`` (reproducible PNG
  and PDF; SVG too where ``VECTOR_FORMATS`` asks) under ``style``; ``file_stem(s)`` for figure file names;
* what makes a figure printable: one-column and two-column widths (``COLUMN``, ``PAGE``), the
  Okabe-Ito colours (``OKABE_ITO``, the style's colour cycle: told apart with every common colour
  vision deficiency), ``colorbar`` (readable ticks on a log scale), and the loss's name and unit
  (``loss_label``), which a report sets from its subjects (``losses_named``) so that every loss axis
  says what it measures.
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


COLUMN, PAGE = 3.5, 7.1  # inches: one column and the full width of a two-column paper
MAX_PANELS = 12  # panels a figure holds at most: more go to further figures (legible at print size)
# Okabe & Ito 2008: eight colours told apart with every common colour vision deficiency, the style's cycle
OKABE_ITO = {"blue": "#0072B2", "vermillion": "#D55E00", "green": "#009E73", "orange": "#E69F00",
             "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000"}

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


_loss = ("loss", None)  # (name, unit) of the loss being drawn: set by losses_named


@contextlib.contextmanager
def losses_named(name: str = "loss", unit: str | None = None):
    """Draw with the loss called ``name`` in ``unit`` (``loss_quantity``): the report sets it per
    figure from the subjects' loss functions, so drawers label loss axes without knowing them."""
    global _loss
    before, _loss = _loss, (name, unit)
    try:
        yield
    finally:
        _loss = before


def loss_label(what: str = "loss") -> str:
    """An axis label for a loss value: "loss (cross-entropy, nats)", "birth (MSE)"; ``what`` names
    what the value is (a loss, a birth, a saddle's loss)."""
    name, unit = _loss
    if name == what:
        return f"{what} ({unit})" if unit else what
    return f"{what} ({name}, {unit})" if unit else f"{what} ({name})"


def loss_quantity(config: dict | None) -> tuple[str, str | None]:
    """(name, unit) of a subject's loss from its stored config (``Store.subject_config``): a
    cross-entropy is in nats (torch's natural log); a squared error's unit is its targets' squared,
    which the config does not say; a plain function's value is f(θ). Unknown losses: plain "loss"."""
    config = config or {}
    loss, problem = str(config.get("loss_fn", "")).lower(), str(config.get("problem", "")).lower()
    if config.get("kind") == "function":
        return "f(θ)", None
    if "pinn" in problem:
        return "PINN MSE", None  # residual, initial and boundary terms
    if any(key in loss for key in ("crossentropy", "cross_entropy", "causallm", "sequenceclassification")):
        return "cross-entropy", "nats"
    if "nll" in loss:
        return "negative log-likelihood", "nats"
    if "mse" in loss:
        return "MSE", None
    if "l1loss" in loss or "l1_loss" in loss:
        return "mean absolute error", None
    return "loss", None


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
        ax.legend(**legend)
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
    """A persistence diagram of (birth, death) ``points``, losses both; essential pairs (death
    +inf) as vermillion triangles above the rest. Points with a non-finite birth or a NaN death are
    left out."""
    ax.set(xlabel=loss_label("birth"), ylabel=loss_label("death"))
    points = rows(points, 2)
    points = points[np.isfinite(points[:, 0]) & (np.isfinite(points[:, 1]) | (points[:, 1] == np.inf))]
    if not len(points):
        no_data(ax)
        return
    finite = np.isfinite(points[:, 1])
    low = points[:, 0].min()
    top = points[finite, 1].max() if finite.any() else points[:, 0].max() + 1
    ax.scatter(points[finite, 0], points[finite, 1], s=12 if finite.sum() < 1000 else 4, label="pairs",
               c=OKABE_ITO["blue"], rasterized=bool(finite.sum() > 5000))  # 10^5 vector markers: megabytes
    ax.scatter(points[~finite, 0], np.full((~finite).sum(), top * 1.05 if top > 0 else top + 1), marker="^",
               c=OKABE_ITO["vermillion"], s=18, label="essential (death = ∞)")
    ax.plot([low, top], [low, top], c="gray", lw=0.8)
    ax.legend(loc="lower right")


def draw_barcode(ax, intervals: np.ndarray) -> None:
    """A barcode of minima: one vertical segment per (loss, death) interval (Barannikov et al.
    2025, Figs 2, 4, 7); an infinite death is a vermillion bar with an arrow. Intervals with a NaN
    end are left out."""
    ax.set(xlabel="minimum (index)", ylabel=loss_label())
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
        color = OKABE_ITO["blue"] if np.isfinite(death) else OKABE_ITO["vermillion"]
        ax.plot([index, index], [birth, end], lw=4, solid_capstyle="butt", c=color)
        if not np.isfinite(death):
            ax.annotate("", (index, end + 0.05 * span), (index, end),
                        arrowprops={"arrowstyle": "->", "color": OKABE_ITO["vermillion"]})
    step = max(1, len(intervals) // 10)  # at most ~10 tick labels
    ax.set(xticks=range(0, len(intervals), step), xlim=(-0.6, len(intervals) - 0.4))
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.3 * (high - low))  # headroom: the legend above the bars
    ax.legend(handles=_bar_handles(finite), loc="upper center")


def _bar_handles(finite: np.ndarray) -> list:
    """Legend entries for the kinds of bar a barcode drew."""
    from matplotlib.lines import Line2D

    kinds = [("minimum to its saddle", OKABE_ITO["blue"], finite.any()),
             ("lowest minimum (never merges)", OKABE_ITO["vermillion"], (~finite).any())]
    return [Line2D([], [], c=colour, lw=4, label=label) for label, colour, drawn in kinds if drawn]


def plain_log_labels(axis) -> None:
    """Plain numbers (0.2, 0.5, 30) on a log ``axis`` (``ax.yaxis``), at the ticks matplotlib would
    label: a loss between 0.1 and 0.6 reads as such, not as 2e-01 or 10^-1 alone."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


def colorbar(ax, mappable, label: str, **options):
    """A colour bar beside ``ax`` (an axes, or a list of them sharing it); on a log scale with
    ticks at powers of ten (matplotlib labels a contour's log bar at its odd level values otherwise)."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, MaxNLocator

    figure = (ax[0] if isinstance(ax, list) else ax).figure
    bar = figure.colorbar(mappable, ax=ax, label=label, **options)
    if isinstance(mappable.norm, LogNorm):
        bar.ax.yaxis.set_major_locator(LogLocator())
        bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation())
        bar.ax.yaxis.set_minor_locator(LogLocator(subs="auto"))
    else:
        bar.ax.yaxis.set_major_locator(MaxNLocator(6))  # not a tick at each of a contour's 31 levels
    return bar


# -- figures -------------------------------------------------------------------------------------------

def _grid(n: int, ncols: int) -> tuple[int, int, float]:
    """(rows, columns, width in inches) of ``n`` panels in rows of at most ``ncols``: one panel
    is one paper column wide, more share the two-column width."""
    ncols = max(1, min(ncols, n))
    return max(1, math.ceil(n / ncols)), ncols, COLUMN if ncols == 1 else PAGE


def panel_figure(title: str, panels: list, ncols: int = 2):
    """One figure, one subplot per ``(panel_title, view, result)`` in rows of ``ncols``, two paper
    columns wide; each subplot's title starts with its panel title. For e.g. every view of one
    benchmark variant (``pages`` splits many views over several figures). ``view``: an analyzer's
    ``View`` (a 3-D one gets a 3-D axes) or a bare ``draw(ax, result)``."""
    import matplotlib.pyplot as plt

    nrows, ncols, width = _grid(len(panels), ncols)
    figure = plt.figure(figsize=(width, 2.25 * nrows + 0.3), layout="constrained")
    for index, (label, view, result) in enumerate(panels):
        ax = figure.add_subplot(nrows, ncols, index + 1, projection=getattr(view, "projection", None))
        view(ax, result)
        prefix_title(ax, label, "\n")
    figure.suptitle(title)
    return figure


def pages(items: list, size: int = MAX_PANELS) -> list[list]:
    """``items`` in runs of at most ``size``, as even as can be (17 as 6, 6, 5, not 8, 8, 1): the
    panels of one figure each."""
    count = max(1, math.ceil(len(items) / size))
    step = math.ceil(len(items) / count) if items else 1
    return [items[i:i + step] for i in range(0, len(items), step)] or [[]]


def comparison_figure(title: str, view, columns: list, ncols: int = 4):
    """The same view of several variants side by side (skip vs no-skip, beta = 1..50), in rows of
    at most ``ncols``, one or two paper columns wide; one panel per ``(column_label, result)``. A
    None result (not computed yet) shows so in its panel. Panels share the scales the view
    declares, so that they can be compared: ``shared = "colour"`` one colour scale over every
    panel's ``limits_of(result)``, handed to the drawer as ``limits`` (logarithmic over a wide
    range, see ``contour_levels``) and shown by one colour bar; ``"y"`` one y range, ``"xy"`` one x
    and y range, the union of the panels' own."""
    import matplotlib.pyplot as plt

    nrows, ncols, width = _grid(max(1, len(columns)), ncols)
    shared, limits_of = getattr(view, "shared", None), getattr(view, "limits_of", None)
    limits = None
    if shared == "colour" and limits_of is not None:
        limits = _union([limits_of(r) for _, r in columns if r is not None])
    height = (2.6 if ncols > 1 else 2.8) * nrows + 0.35
    figure = plt.figure(figsize=(width, height), layout="constrained")
    drawn = []
    for index, (label, result) in enumerate(columns):
        ax = figure.add_subplot(nrows, ncols, index + 1, projection=getattr(view, "projection", None))
        if result is None:
            ax.set_title(label)
            ax.set(xticks=[], yticks=[])
            no_data(ax, "not computed")
        else:
            view(ax, result, limits=limits) if limits is not None else view(ax, result)
            prefix_title(ax, label, "\n")
            drawn.append(ax)
    if shared in ("y", "xy"):
        _share_limits(drawn, "y")
    if shared == "xy":
        _share_limits(drawn, "x")
    if limits is not None:
        _one_colorbar(figure, drawn)
    if ncols > 2:  # narrow panels: what they all say, said once
        _outer_labels(drawn, ncols)
        _one_legend(figure, drawn)
        for ax in figure.axes:
            _wrap_title(ax, 28)
    figure.suptitle(title)
    return figure


def _outer_labels(axes: list, ncols: int) -> None:
    """In a grid of narrow panels of one view: a y label said once on the first column where every
    panel has the same one, and x labels broken over lines to the panel's width."""
    import textwrap

    flat = [ax for ax in axes if ax.name != "3d"]
    if len({ax.get_ylabel() for ax in flat}) == 1:
        for ax in flat:
            if ax.get_subplotspec().colspan.start > 0:
                ax.set_ylabel("")
    for ax in flat:
        ax.set_xlabel("\n".join(textwrap.wrap(ax.get_xlabel(), 26)))


def _one_legend(figure, axes: list) -> None:
    """Panels whose legends name the same entries: one legend under the figure instead."""
    legends = [ax.get_legend() for ax in axes]
    if len(axes) < 2 or any(legend is None for legend in legends):
        return
    if len({tuple(t.get_text() for t in legend.get_texts()) for legend in legends}) != 1:
        return
    handles, labels = legends[0].legend_handles, [t.get_text() for t in legends[0].get_texts()]
    for legend in legends:
        legend.remove()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))


def _wrap_title(ax, width: int) -> None:
    """A title's lines broken to ``width`` characters, at 7 pt: a narrow panel's title must not run
    into its neighbour's."""
    import textwrap

    title = ax.get_title()
    if title:
        ax.set_title("\n".join(part for line in title.split("\n") for part in textwrap.wrap(line, width) or [""]),
                     fontsize=7)


def _one_colorbar(figure, axes: list) -> None:
    """Panels on one colour scale: the drawers' colour bars, all alike, become one beside them all."""
    bars = [cax._colorbar for cax in figure.axes if getattr(cax, "_colorbar", None) is not None]
    if len(axes) < 2 or not bars:
        return
    mappable, label = bars[0].mappable, bars[0].ax.get_ylabel()
    for bar in bars:
        bar.remove()
    colorbar(axes, mappable, label, shrink=0.9)


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


VECTOR_FORMATS = ("pdf",)  # beside a full-quality PNG; add "svg" for editing and the web (~30% more saving time)


def save_figure(figure, path_without_suffix) -> list[Path]:
    """Write ``<path>.png`` (300 dpi) and the vector files of ``VECTOR_FORMATS`` (``<path>.pdf`` for
    a paper, ``<path>.svg`` for editing and the web) and close the figure; under ``style("draft")``
    a 100-dpi PNG only. Timestamps, the PNG's Software tag and the SVG's random ids are left out so
    the same figure gives the same bytes (diffable reports)."""
    import matplotlib.pyplot as plt

    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_name(f"{base.name}.{suffix}") for suffix in ("png", *([] if _draft else VECTOR_FORMATS))]
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}
    try:
        with plt.rc_context({"svg.hashsalt": "lossatlas"}):
            for path in paths:
                suffix = path.suffix[1:]
                figure.savefig(path, dpi=100 if _draft else 300, metadata=metadata.get(suffix))
    finally:
        plt.close(figure)
    return paths


def save_pages(figures, path_without_suffix) -> list[Path]:
    """``save_figure`` of each page of one figure split by ``pages``: the first at the path, the
    next at ``<path>_2``, ``<path>_3`` (the names the report's captions read as pages). ``figures``
    may be a generator, so that one page is held at a time."""
    base = Path(path_without_suffix)
    paths = []
    for index, figure in enumerate(figures):
        paths += save_figure(figure, base.with_name(base.name + (f"_{index + 1}" if index else "")))
    return paths
