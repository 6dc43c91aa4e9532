"""The ``loss-barcode`` analyzer (Barannikov et al. 2025): barcode of minima and TO-score.

Minima: for a FunctionSubject, gradient descent from ``n_starts`` seeded uniform starts in
``bounds`` (default theta0 +- 1), deduplicated; for a ModuleSubject, the first ``n_minima``
stored minima (train them first); or explicit parameter vectors via ``minima``. Every pair is
joined by an optimized path (``path="string"``, the paper's gradient flow, default for
functions; ``"polychain"``/``"bezier"``, Garipov et al.'s curves, default for modules; see
lossatlas.samplers.paths for when to use which), the edge weight is the maximum loss along the
path on the full evaluation set (BatchNorm statistics re-estimated at every point), and the
barcode is the 0-dim persistence of that graph. The straight-line maxima give a baseline.
NaN/inf losses on a path make it impassable (the TO-score is then inf): ``n_nonfinite`` counts
them along the optimized paths, ``n_impassable`` (``n_impassable_linear``) the paths (lines) so cut.
"""
from __future__ import annotations

import numpy as np

from lossatlas import memory
from lossatlas.analyzer import Analyzer, diagnostic, measure, view
from lossatlas.params import Interval, Options, Vectors, param, same_as
from lossatlas.plots import draw_barcode, finite_or_nan, legend_or_no_data, loss_label, metric, no_data
from lossatlas.samplers import DescentMinima, GivenMinima, Paths, StoredMinima
from lossatlas.subjects import FunctionSubject
from lossatlas.topology.barcode import barcode_scores, minima_barcode

_SCORES = {
    "to_score": measure("TO-score: bottleneck distance of the barcode to the ideal one, max (death - birth) / 2",
                        higher_is_better=False),
    "wasserstein_1": measure("Wasserstein-1 distance to the ideal barcode", higher_is_better=False),
    "wasserstein_2": measure("Wasserstein-2 distance to the ideal barcode", higher_is_better=False),
    "n_bars": diagnostic("finite bars (and extra essential ones)"),
    "max_bar": measure("longest bar (saddle height above its minimum)", higher_is_better=False),
    "mean_bar": measure("mean bar length", higher_is_better=False),
    "sum_bars": measure("sum of bar lengths", higher_is_better=False),
    "mean_saddle": measure("mean upper end of the finite bars: the loss of the saddle each minimum must cross (NaN "
                           "without finite bars)", higher_is_better=False),
    "max_saddle": measure("highest saddle loss (upper end of a finite bar)", higher_is_better=False),
    "n_zero_bars": diagnostic("zero-length bars dropped"),
    "n_impassable": diagnostic("paths cut by NaN/inf losses"),
}


PATH_SETTINGS = ("n_images", "string_steps", "string_lr", "string_perturbation", "bends", "curve_epochs", "curve_lr",
                  "curve_optimizer", "curve_schedule", "weight_decay", "batch_size", "n_eval", "seed")


def paths_request(analyzer, subject, minima) -> Paths:
    """The optimized paths between ``minima`` under the analyzer's path settings (shared by the
    barcode and the per-minimum bars, so that both read one stored sample)."""
    settings = {name: getattr(analyzer, name) for name in PATH_SETTINGS}
    return Paths(minima=minima, path_kind=path_kind(analyzer.path, subject), **settings)


def path_kind(path: str, subject) -> str:
    """``auto``: the string method for functions, polychains for modules."""
    if path != "auto":
        return path
    return "string" if isinstance(subject, FunctionSubject) else "polychain"


def draw_barcode_view(ax, result) -> None:
    """The barcode of minima, TO-score in the title."""
    draw_barcode(ax, result.arrays.get("bars"))
    ax.set_title(f"barcode: TO-score {metric(result, 'to_score'):.3g}")


def draw_paths(ax, result) -> None:
    """The loss along each optimized path between two minima."""
    ax.set(xlabel="position t along the path", ylabel=loss_label(),
           title="loss along the optimized paths")
    if "path_t" not in result.arrays:
        no_data(ax, "no paths (one minimum)")
        return
    drawn = False
    for (i, j), t, losses in zip(result.arrays["pairs"], result.arrays["path_t"], result.arrays["path_losses"]):
        losses = finite_or_nan(losses)
        if np.isfinite(losses).any():
            ax.plot(t, losses, lw=1, label=f"minima {i}–{j}")
            drawn = True
    legend_or_no_data(ax, drawn, ncol=2)


class LossBarcode(Analyzer):
    name = "loss-barcode"
    description = "Barcode of minima over optimized paths and the TO-score (Barannikov et al. 2025)."
    scope = "subject"
    metrics = {
        **_SCORES,
        **{f"{name}_linear": type(metric)(f"{metric.description}, over straight lines (baseline)",
                                          metric.higher_is_better, metric.kind) for name, metric in _SCORES.items()},
        "n_minima": diagnostic("minima joined"),
        "n_nonfinite": diagnostic("NaN/inf losses along the optimized paths"),
    }
    views = {"barcode": view(draw_barcode_view, shared="y"), "paths": view(draw_paths, shared="y")}  # one loss axis
    version = 3  # 3: the saddle losses (upper ends of the bars, zero-length ones included) are reported
    references = ("Barannikov et al. 2025, Loss Barcode", "Garipov et al. 2018, curves between minima")
    smoke_params = {"n_starts": 6, "gd_steps": 300, "n_images": 11, "string_steps": 150}

    path: str = param("auto", Options(("auto", "string", "polychain", "bezier")),
                      "auto: string for functions, polychain for modules")
    n_minima: int = param(4, Interval(int, 2), "stored minima to join (modules)")
    n_starts: int = same_as(DescentMinima, "n_starts")
    bounds: list | None = same_as(DescentMinima, "bounds")
    gd_lr: float = same_as(DescentMinima, "gd_lr")
    gd_steps: int = same_as(DescentMinima, "gd_steps")
    n_images: int = same_as(Paths, "n_images")
    string_steps: int = same_as(Paths, "string_steps")
    string_lr: float = same_as(Paths, "string_lr")
    string_perturbation: float = same_as(Paths, "string_perturbation")
    bends: int = same_as(Paths, "bends")
    curve_epochs: int = same_as(Paths, "curve_epochs")
    curve_lr: float = same_as(Paths, "curve_lr")
    curve_optimizer: str = same_as(Paths, "curve_optimizer")
    curve_schedule: str = same_as(Paths, "curve_schedule")
    weight_decay: float = same_as(Paths, "weight_decay")
    batch_size: int = same_as(Paths, "batch_size")
    n_eval: int = same_as(Paths, "n_eval")
    seed: int = same_as(Paths, "seed")
    minima: list | None = param(None, Vectors(), "explicit minima (parameter vectors) instead of finding them")

    def requests(self, subject):
        if self.minima is not None:
            minima = GivenMinima(vectors=tuple(tuple(float(x) for x in m) for m in self.minima))
        elif isinstance(subject, FunctionSubject):
            bounds = None if self.bounds is None else tuple(tuple(b) for b in self.bounds)
            minima = DescentMinima(n_starts=self.n_starts, bounds=bounds, gd_lr=self.gd_lr, gd_steps=self.gd_steps,
                                   seed=self.seed)
        else:
            minima = StoredMinima(n=self.n_minima, at_least=2)
        return {"paths": paths_request(self, subject, minima)}

    def memory(self, subject):
        """The paths between the minima (``Paths.memory``); the barcode itself is K x K."""
        return memory.requested(self, subject)

    def work(self, subject):
        """Its work (``lossatlas.planning``) is its samples': a barcode of K minima takes no measurable time."""
        return {}

    def compute(self, subject, samples):
        paths = samples["paths"]
        minima, values = paths["minima"], paths["vertex_losses"]
        if len(minima) < 2:  # one basin: the ideal barcode
            barcode = minima_barcode(values, np.empty((0, 2)), np.empty(0))
            metrics = {**barcode_scores(barcode), "n_minima": float(len(minima))}
            linear = {f"{k}_linear": v for k, v in metrics.items() if k != "n_minima"}
            return {**metrics, **linear, "n_nonfinite": 0.0}, {"bars": barcode.bars}
        pairs = paths["pairs"]
        edges = paths["path_max"][pairs[:, 0], pairs[:, 1]]
        linear = paths["linear_max"][pairs[:, 0], pairs[:, 1]]
        barcode, baseline = minima_barcode(values, pairs, edges), minima_barcode(values, pairs, linear)
        curves = [row[:n] for row, n in zip(paths["path_losses"], paths["path_lengths"])]
        metrics = {**barcode_scores(barcode), "n_minima": float(len(minima)),
                   "n_nonfinite": float(sum((~np.isfinite(curve)).sum() for curve in curves))}
        metrics.update({f"{k}_linear": v for k, v in barcode_scores(baseline).items()})
        arrays = {"bars": barcode.bars, "bar_minima": barcode.minima, "bars_linear": baseline.bars,
                  "minima_losses": values, "path_max": paths["path_max"], "linear_max": paths["linear_max"],
                  "pairs": pairs, "path_t": paths["path_t"], "path_losses": paths["path_losses"]}
        if subject.dim <= 10_000:
            arrays["minima"] = minima
        return metrics, arrays
