"""The ``merge-tree`` analyzer (seed 001, Xie, Geniesse et al.): number of saddles and average
persistence of the sublevel-set merge tree of a 2-D loss grid.

The grid lies along random filter-normalized directions, the top-2 Hessian eigenvectors, or
the coordinate axes of a 2-parameter subject, around a minimum or theta0. It is read as one
of four representations (``image``: pixels, 8-connected like a cubical complex; ``delaunay``,
``gabriel``, ``knn``: graphs over the sample coordinates). Pairs with persistence at or below
max(``threshold``, ``relative_threshold`` x loss range) are removed first, as TTK's
simplification does. NaN/inf losses count as +inf and are reported in ``n_nonfinite``.
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import Analyzer
from lossatlas.params import Boolean, Interval, Options
from lossatlas.samplers import loss_grid
from lossatlas.topology import REPRESENTATIONS, merge_tree, representation_edges


class MergeTreeAnalyzer(Analyzer):
    name = "merge-tree"
    description = "Merge tree of a 2-D loss grid: number of saddles, average persistence (seed 001)."
    needs = ("grid",)
    constraints = {
        "directions": Options(("random", "hessian", "axes")),
        "resolution": Interval(int, 2),
        "span": Interval(float, 0),
        "span_y": Interval(float, 0, allow_none=True),
        "center": Options(("minimum", "theta0")),
        "minimum": Interval(int, 0),
        "seed": Interval(int, 0),
        "include_bn": Boolean(),
        "bn": Options(("fixed", "recompute")),
        "representation": Options(REPRESENTATIONS),
        "knn_k": Interval(int, 1),
        "threshold": Interval(float, 0),
        "relative_threshold": Interval(float, 0, 1),
        "backend": Options(("native", "ttk")),
    }
    smoke_params = {"directions": "axes", "center": "theta0", "span": 5.0, "resolution": 41}

    def __init__(self, directions: str = "random", resolution: int = 51, span: float = 1.0,
                 span_y: float | None = None, center: str = "minimum", minimum: int = 0, seed: int = 0,
                 include_bn: bool = False, bn: str = "fixed", representation: str = "image", knn_k: int = 8,
                 threshold: float = 0.0, relative_threshold: float = 0.0, backend: str = "native"):
        self.directions = directions
        self.resolution = resolution
        self.span = span
        self.span_y = span_y
        self.center = center
        self.minimum = minimum
        self.seed = seed
        self.include_bn = include_bn
        self.bn = bn
        self.representation = representation
        self.knn_k = knn_k
        self.threshold = threshold
        self.relative_threshold = relative_threshold
        self.backend = backend

    def _grid(self, store, subject, progress=True):
        span = self.span if self.span_y is None else [self.span, self.span_y]
        return loss_grid(store, subject, self.directions, self.resolution, span, self.center, self.minimum,
                         self.seed, self.include_bn, self.bn, progress=progress)

    def produce(self, store, subject):
        self._grid(store, subject)

    def run(self, store, subject):
        grid = self._grid(store, subject, progress=False)
        values = grid.loss.ravel()
        if self.backend == "ttk":
            from lossatlas.topology.ttk_backend import merge_tree_ttk

            tree = merge_tree_ttk(grid.loss, self.representation)
        else:
            edges = representation_edges(self.representation, grid.points(), grid.loss.shape, self.knn_k)
            tree = merge_tree(values, edges)
        finite = values[np.isfinite(values)]
        value_range = float(finite.max() - finite.min()) if len(finite) else 0.0
        cut = max(self.threshold, self.relative_threshold * value_range)
        simple = tree.simplified(cut)
        metrics = {
            "n_minima": simple.n_minima,
            "n_saddles": simple.n_saddles,
            "average_persistence": simple.average_persistence(),
            "average_persistence_closed": simple.average_persistence(close_at=float(finite.max()) if len(finite)
                                                                     else None),
            "n_nonfinite": tree.n_nonfinite,
            "threshold_used": cut,
            "direction_cosine": grid.cosine,
            "loss_min": float(finite.min()) if len(finite) else float("nan"),
            "loss_max": float(finite.max()) if len(finite) else float("nan"),
        }
        arrays = {"pairs": simple.pairs, "pair_vertices": simple.pair_vertices, "saddles": simple.saddles,
                  "loss_grid": grid.loss, "x": grid.x, "y": grid.y}
        if grid.accuracy is not None:
            arrays["accuracy_grid"] = grid.accuracy
        return metrics, arrays

    def plot(self, result, ax=None, clip_quantile: float | None = None):
        """Contour with minima and saddles, the merge tree (heights = loss), the persistence diagram."""
        from lossatlas.plots import merge_tree_figure

        return merge_tree_figure(result, clip_quantile=clip_quantile)
