"""The ``minimum-bar`` analyzer: each trained minimum's own bar in the loss barcode (Barannikov et al. 2025).

The barcode (``loss-barcode``) is one result per subject: it joins all its minima. Barannikov et
al. 2025 §5 compare minima one by one -- "the upper ends of the bars (saddle losses) are higher
for the minima trained with a small constant learning rate" -- and relate each minimum's segment
to its generalization error. This analyzer reports, at every minimum, its bar from the
optimized paths between the subject's first ``n_minima`` stored minima: the saddle it must cross
to reach a lower minimum (the bar's upper end, multi-hop through the graph of minima) and the
bar's length. For a model, given the barcode's path settings, the two analyzers read one stored
sample (whichever runs first trains the paths); an analytic function's barcode finds its own
minima instead. The lowest minimum has no finite bar: its values are NaN. So the statistics get
one observation per minimum instead of one per subject.
"""
from __future__ import annotations

import numpy as np

from lossatlas import memory
from lossatlas.analyzer import Analyzer, diagnostic, measure, view
from lossatlas.errors import ConfigError
from lossatlas.params import Interval, param, same_as
from lossatlas.plots import OKABE_ITO, draw_barcode, metric, no_data
from lossatlas.samplers import StoredMinima
from lossatlas.samplers.points import Point
from lossatlas.topology.barcode import minima_barcode

from .loss_barcode import LossBarcode, paths_request


def draw_minimum_bar(ax, result) -> None:
    """The bar of every joined minimum (lowest first), this minimum's in orange (Okabe-Ito)."""
    losses, deaths = result.arrays.get("minima_losses"), result.arrays.get("deaths")
    if losses is None or deaths is None:
        no_data(ax)
        return
    draw_barcode(ax, np.stack([losses, deaths], axis=1))
    rank = int(metric(result, "rank")) if np.isfinite(metric(result, "rank")) else -1
    if 0 <= rank < len(losses) and np.isfinite(deaths[rank]):
        own = ax.plot([rank, rank], [losses[rank], deaths[rank]], lw=4, solid_capstyle="butt",
                      c=OKABE_ITO["orange"], label="this minimum's bar")
        legend = ax.get_legend()  # the barcode's own entries, and this one
        ax.legend(handles=[*(legend.legend_handles if legend else []), *own], loc="upper center")
    ax.set_title(f"this minimum's bar: {metric(result, 'bar'):.3g}")


class MinimumBar(Analyzer):
    name = "minimum-bar"
    description = "Each minimum's own bar of the loss barcode: its saddle loss and bar length (Barannikov et al. 2025)."
    scope = "minimum"
    metrics = {
        "saddle": measure("upper end of this minimum's bar: the lowest loss at which a path from it reaches a lower "
                          "minimum, over the optimized paths (its own loss if a path never rises above it; NaN for "
                          "the lowest minimum, which has no finite bar; inf if only NaN/inf paths lead lower)",
                          higher_is_better=False),
        "bar": measure("length of this minimum's bar, saddle minus its loss (NaN for the lowest minimum)",
                       higher_is_better=False),
        "minimum_loss": diagnostic("this minimum's loss, measured as the path points are (BatchNorm re-estimated)"),
        "rank": diagnostic("0 for the lowest of the joined minima, 1 for the next, ..."),
    }
    views = {"bar": view(draw_minimum_bar)}
    smoke_params = {"n_minima": 2, "curve_epochs": 1, "n_eval": 5, "path": "polychain"}
    smoke_minima = 2
    version = 2  # 2: the rank in the barcode's order (BatchNorm re-estimated), inf where only NaN paths lead lower
    references = ("Barannikov et al. 2025, Loss Barcode",)

    minimum: int = param(0, Interval(int, 0), "the stored minimum to report (one of the first n_minima)")
    path: str = same_as(LossBarcode, "path")
    n_minima: int = same_as(LossBarcode, "n_minima")
    n_images: int = same_as(LossBarcode, "n_images")
    string_steps: int = same_as(LossBarcode, "string_steps")
    string_lr: float = same_as(LossBarcode, "string_lr")
    string_perturbation: float = same_as(LossBarcode, "string_perturbation")
    bends: int = same_as(LossBarcode, "bends")
    curve_epochs: int = same_as(LossBarcode, "curve_epochs")
    curve_lr: float = same_as(LossBarcode, "curve_lr")
    curve_optimizer: str = same_as(LossBarcode, "curve_optimizer")
    curve_schedule: str = same_as(LossBarcode, "curve_schedule")
    weight_decay: float = same_as(LossBarcode, "weight_decay")
    batch_size: int = same_as(LossBarcode, "batch_size")
    n_eval: int = same_as(LossBarcode, "n_eval")
    seed: int = same_as(LossBarcode, "seed")

    def check(self):
        if self.minimum >= self.n_minima:
            raise ConfigError(f"minimum-bar: minimum {self.minimum} is not among the n_minima={self.n_minima} minima "
                              "the paths join; raise n_minima.")

    def requests(self, subject):
        return {"paths": paths_request(self, subject, StoredMinima(n=self.n_minima, at_least=2)),
                "point": Point(at="minimum", minimum=self.minimum)}

    def memory(self, subject):
        """The paths between the minima (``Paths.memory``); the barcode itself is K x K."""
        return memory.requested(self, subject)

    def work(self, subject):
        """Its work (``lossatlas.planning``) is its samples': a barcode of K minima takes no measurable time."""
        return {}

    def compute(self, subject, samples):
        paths, theta = samples["paths"], np.asarray(samples["point"]["theta"], dtype=float)
        found = np.flatnonzero((np.asarray(paths["minima"], dtype=float) == theta).all(axis=1))
        if not len(found):
            raise ConfigError(f"minimum {self.minimum} of {subject.name!r} is not among the minima the paths join.")
        k = int(found[0])
        values, pairs = np.asarray(paths["vertex_losses"], dtype=float), paths["pairs"]
        barcode = minima_barcode(values, pairs, paths["path_max"][pairs[:, 0], pairs[:, 1]])
        order = np.lexsort((np.arange(len(values)), values))  # the barcode's order (losses as the paths measure them)
        rank = int(np.flatnonzero(order == k)[0])
        # the lowest minimum has no bar (NaN); another one that no finite path joins to a lower one, an infinite one
        saddle = float(barcode.deaths[k]) if rank > 0 else float("nan")
        return {"saddle": saddle, "bar": saddle - float(values[k]), "minimum_loss": float(values[k]),
                "rank": float(rank)}, {"minima_losses": values, "deaths": barcode.deaths}
