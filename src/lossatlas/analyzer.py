"""The analyzer contract: a new landscape metric is one class in one module.

An analyzer declares, once, everything the framework needs:

* its parameters, as annotated class attributes with a default and a constraint
  (``k: int = param(2, Interval(int, 1))``); the class becomes a frozen keyword-only dataclass,
  so listing, validating, cloning and round-tripping parameters to TOML are mechanical;
* ``scope``: "minimum" (one result per trained minimum, chosen by its ``minimum`` parameter) or
  "subject" (one result from all minima of a subject, e.g. the loss barcode);
* ``metrics``: name -> ``Metric`` (description, higher_is_better, kind "measure" or "diagnostic"),
  so reports compare measures and leave bookkeeping out;
* ``views``: name -> ``view(draw, ...)``, the figures it contributes to reports, declared like
  its metrics: ``draw(ax, result)`` draws on the axes it is given (in the analyzer's own module,
  with ``lossatlas.plots``'s shared helpers), and the declaration says how reports lay it out
  (``projection="3d"``; what side-by-side panels share: ``shared="y"``, ``"xy"``, or ``"colour"``
  with ``limits_of(result)`` reading a result's colour range). A bare ``draw`` is ``view(draw)``;
* ``requests(subject)``: the samples it needs (``lossatlas.samplers``), produced by the driver;
* ``compute(subject, samples)``: pure, samples in, (metrics, arrays) out;
* ``memory(subject)``: its peak bytes (``lossatlas.memory``), counted from what ``compute`` and its
  samples allocate, so that a run refuses before any work what cannot fit.

``lossatlas.analyze`` runs it; nothing else is needed for its figures and metrics to appear in
reports. An analyzer that looks at one point (theta0 or a stored minimum) subclasses
``lossatlas.point_analyzer.PointAnalyzer``, which declares that part once.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from . import memory as memory_module
from .errors import ConfigError
from .memory import Memory
from .params import check_known, constraints_of, validate_fields

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # only type checkers need it: without it the class is the same
    try:
        from typing_extensions import dataclass_transform
    except ImportError:
        def dataclass_transform(**_):
            return lambda cls: cls

SCOPES = ("minimum", "subject")
KINDS = ("measure", "diagnostic")
PROJECTIONS = (None, "3d")
SHARED = (None, "y", "xy", "colour")


@dataclass(frozen=True)
class Metric:
    """What a metric means: ``higher_is_better`` (None: no preferred direction) and ``kind``
    ("measure": a landscape property worth comparing; "diagnostic": bookkeeping such as counts
    of Hessian-vector products, kept out of comparisons)."""

    description: str
    higher_is_better: bool | None = None
    kind: str = "measure"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(description: str, higher_is_better: bool | None = None) -> Metric:
    return Metric(description, higher_is_better, "measure")


def diagnostic(description: str) -> Metric:
    return Metric(description, None, "diagnostic")


@dataclass(frozen=True)
class View:
    """One figure of a result: ``draw(ax, result)`` draws it on the axes it is given, never raising
    on NaN/inf or empty arrays (a diverged run must still make a report). The rest tells the
    composers (``lossatlas.plots.panel_figure``, ``comparison_figure``) how to lay it out without
    knowing it: ``projection`` ("3d": a 3-D axes); ``shared``, what the panels of several variants
    side by side share so that they can be compared -- "y" (one y range) or "xy" (one x and y
    range), the union of the panels' own, or "colour": one colour scale, the union of every
    panel's ``limits_of(result)`` ((low, high), or None where a result has none), handed to
    ``draw`` as ``limits=(low, high)``."""

    draw: Callable
    projection: str | None = None
    shared: str | None = None
    limits_of: Callable | None = None

    def __post_init__(self):
        name = getattr(self.draw, "__name__", repr(self.draw))
        if not callable(self.draw):
            raise TypeError(f"A view draws with a callable draw(ax, result); got {self.draw!r}.")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"View {name}: projection must be one of {PROJECTIONS}; got {self.projection!r}.")
        if self.shared not in SHARED:
            raise ValueError(f"View {name}: shared must be one of {SHARED}; got {self.shared!r}.")
        if (self.shared == "colour") != (self.limits_of is not None):
            raise ValueError(f"View {name}: a shared colour scale is read from each result by limits_of(result), "
                             "so shared='colour' and limits_of go together.")

    def __call__(self, ax, result, **options):
        return self.draw(ax, result, **options)


def view(draw: Callable, projection: str | None = None, shared: str | None = None,
         limits_of: Callable | None = None) -> View:
    """Declare a view in an analyzer's ``views`` (see ``View``)."""
    return View(draw, projection, shared, limits_of)


def as_view(declared) -> View:
    """A ``View`` as declared, or a bare drawer as ``view(draw)``; a drawer's ``projection``,
    ``shared`` and ``limits_of`` attributes (the older way to declare them) are kept."""
    if isinstance(declared, View):
        return declared
    shared, limits_of = getattr(declared, "shared", None), getattr(declared, "limits_of", None)
    if shared == "colour" and limits_of is None:  # the older way read a "loss_grid" it cannot know of
        warnings.warn(f"The view {getattr(declared, '__name__', declared)!r} asks for a shared colour scale without "
                      "saying where to read it: declare it as view(draw, shared='colour', limits_of=...). Drawn "
                      "with a colour scale of its own.", DeprecationWarning, stacklevel=3)
        shared = None
    return view(declared, getattr(declared, "projection", None), shared, limits_of)


# Type checkers then see each subclass's keyword-only, frozen constructor. ``param`` is not named a
# field specifier: checkers read a specifier's default only from a ``default=`` keyword, and
# ``param(2, ...)`` passes it first, so every parameter would look required; as a plain default
# value it reads right.
@dataclass_transform(kw_only_default=True, frozen_default=True)
class Analyzer:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    scope: ClassVar[str] = "minimum"
    metrics: ClassVar[dict[str, Metric]] = {}
    views: ClassVar[dict[str, View]] = {}  # a bare draw(ax, result) is taken as view(draw)
    smoke_params: ClassVar[dict] = {}  # fast settings for conformance checks and smoke runs
    smoke_minima: ClassVar[int] = 0  # trained minima the conformance checks store first (for analyzers that read them)
    version: ClassVar[int] = 1  # raise it when a metric's definition changes: stored results are then recomputed
    references: ClassVar[tuple[str, ...]] = ()  # the papers it follows, as short citations (the docs list them)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.views = {name: as_view(declared) for name, declared in cls.views.items()}
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    def __post_init__(self):
        validate_fields(self, type(self).__name__)
        self.check()

    # -- parameters ------------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict:
        """Parameter names and defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def constraints(cls) -> dict:
        return constraints_of(cls)

    @classmethod
    def from_params(cls, params: dict) -> "Analyzer":
        """Check names, constraints and cross-parameter rules before any work, then construct."""
        check_known(f"method {cls.name!r}", params, cls.defaults())
        return cls(**params)

    def get_params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check(self) -> None:
        """Rules across parameters (each parameter's own constraint is already checked)."""

    def check_subject(self, subject) -> None:
        """Rules that need the subject, checked before any work (``lossatlas run`` checks them for
        every subject of a benchmark before training its first minimum): by default, those of
        every requested sample (e.g. directions="axes" needs a 2-parameter subject). An imported
        surface (values on a grid, no model) takes only analyzers that read its grid."""
        requests = self.requests(subject)
        if getattr(subject, "surface", None) is not None and not any(r.kind == "surface" for r in requests.values()):
            raise ConfigError(f"{subject.name!r} is an imported surface: it holds loss values on a grid, not a model; "
                              f"{self.name} needs the model, and only grid analyzers (merge-tree) apply to it.")
        for request in requests.values():
            request.check_all(subject)

    def memory(self, subject) -> Memory:
        """Peak bytes of this method on ``subject``, refused before any work when they cannot fit
        (``lossatlas.memory``). Declare it from what ``compute`` allocates; this default, for
        analyzers that do not, counts every requested sample, four float64 parameter vectors and
        one gradient pass."""
        own = memory_module.gradient(subject) + Memory(host=memory_module.vectors(subject, 4))
        return own + memory_module.requested(self, subject)

    # -- to implement ----------------------------------------------------------------------------
    def requests(self, subject) -> dict:
        """name -> a sample request (``lossatlas.samplers``); the driver produces them first."""
        return {}

    def compute(self, subject, samples: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(metrics, arrays) from the samples alone: the same samples give the same output."""
        raise NotImplementedError

    # -- drawing ---------------------------------------------------------------------------------
    @classmethod
    def info(cls) -> dict:
        """What the report needs without this class: recorded with every result."""
        return {"scope": cls.scope, "views": {name: v.projection == "3d" for name, v in cls.views.items()},
                "metrics": {name: metric.to_dict() for name, metric in cls.metrics.items()}}

    def plot(self, result, ax=None, view: str | None = None):
        """Draw a stored ``result`` of this analyzer with its declared views (``views``).

        With ``ax`` (a matplotlib Axes): ``view`` (default: the first declared) is drawn on it, and
        its Figure returned; a 3-D view (``projection="3d"``) needs a 3-D Axes. Without ``ax``: a new
        Figure with ``view``, or every view side by side, titled with the subject. An unknown
        ``view`` is a ConfigError naming the views there are::

            result = lossatlas.analyze(store, subject, "merge-tree")
            MergeTreeAnalyzer().plot(result, ax=ax, view="contour")
        """
        if not self.views:
            raise NotImplementedError(f"{type(self).__name__} declares no views.")
        if view is not None and view not in self.views:
            raise ConfigError(f"{type(self).__name__} has no view {view!r}; its views: {list(self.views)}.")
        if ax is not None:
            name = view or next(iter(self.views))
            self.views[name].draw(ax, result)
            return ax.figure
        import matplotlib.pyplot as plt

        names = [view] if view else list(self.views)
        figure = plt.figure(figsize=(4.2 * len(names), 3.8), layout="constrained")
        for index, name in enumerate(names):
            axis = figure.add_subplot(1, len(names), index + 1, projection=self.views[name].projection)
            self.views[name].draw(axis, result)
        figure.suptitle(result.subject)
        return figure

