"""The ``merge-tree`` analyzer (Xie, Geniesse et al. 2024): number of saddles and average
persistence of the sublevel-set merge tree of a loss grid, and Landscaper's SMAD (Chen, Hadler et
al. 2026) of the same grid.

The grid is a plane by default, or a 3-D or 4-D grid (``dimensions``, as Landscaper's grids in N
dimensions). It lies along random filter-normalized directions, the top Hessian eigenvectors (of
the generalized Gauss-Newton matrix or the empirical Fisher instead by ``curvature``, see the
``hessian`` analyzer), the principal components of the training path, or the coordinate axes of
a subject with as many parameters, around a minimum or theta0. It is read as one of five
representations (``triangulated_grid``, the default: the grid as TTK triangulates it, which is
what the paper computed on, and in 3-D or 4-D the Freudenthal triangulation; ``image``: pixels or
voxels, joined to every neighbour sharing a corner like a cubical complex; ``delaunay``,
``gabriel``, ``knn``: graphs over the sample coordinates). Pairs with persistence
at or below max(``threshold``, ``relative_threshold`` x loss range) are removed first, as TTK's
simplification does. NaN/inf losses count as +inf and are reported in ``n_nonfinite``.

``average_persistence`` is the paper's (§2): the mean distance of the merge tree's persistence
pairs (its branches) to the diagonal, (death - birth) / sqrt(2), the global minimum paired with
the grid maximum as in TTK's diagram. That pair makes it depend on the loss range;
``average_persistence_finite`` leaves it out.

``smad`` is Landscaper 1.3.1's ``LossLandscape.smad()`` (``lossatlas.topology.smad``): on the graph
Landscaper builds, which on a grid joins axis neighbours only, whatever ``representation`` says,
and before any simplification (Landscaper has none).

An imported surface (``lossatlas import-surface``: a loss-landscape file or a numpy grid) is
analyzed on its own 2-D grid; the grid settings (directions, resolution, span) do not apply to it.
Its views (contour, surface, merge tree, persistence diagram; of a 3-D or 4-D grid the contour and
surface show its central slice) are drawn in ``merge_tree_views``.
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.errors import ConfigError
from lossatlas.memory import Memory
from lossatlas.params import Interval, Options, param, same_as
from lossatlas.point_analyzer import PointAnalyzer
from lossatlas.samplers import Grid, Trajectory, grid_points
from lossatlas.samplers.grid import AXES
from lossatlas.surfaces import StoredSurface, SurfaceSubject
from lossatlas.topology import REPRESENTATIONS, grid_edges, merge_tree, representation_edges, smad
from lossatlas.topology import ttk_backend

from .merge_tree_views import draw_contour, draw_merge_tree, draw_persistence, draw_surface, loss_limits


class MergeTreeAnalyzer(PointAnalyzer):
    name = "merge-tree"
    description = ("Merge tree of a loss grid (2-D, 3-D or 4-D): number of saddles, average persistence (Xie, "
                   "Geniesse et al. 2024), and Landscaper's SMAD (Chen, Hadler et al. 2025).")
    scope = "minimum"
    metrics = {
        "n_minima": measure("local minima of the grid after simplification", higher_is_better=False),
        "n_saddles": measure("saddles of the merge tree after simplification", higher_is_better=False),
        "average_persistence": measure("Xie, Geniesse et al. 2024: mean distance to the diagonal, (death - birth)"
                                       "/sqrt(2), of the merge tree's (minimum, saddle) pairs, the global minimum "
                                       "paired with the grid maximum as in TTK's diagram"),
        "average_persistence_finite": measure("mean distance to the diagonal of the finite (minimum, saddle) pairs "
                                              "(0 without any)"),
        "smad": measure("Chen, Hadler et al. 2025 (Landscaper 1.3.1, LossLandscape.smad()): saddle-minimum average "
                        "distance, the mean loss rise from each local minimum to its neighbour in the contour tree "
                        "(the first saddle above it), on Landscaper's graph of the grid (axis neighbours), "
                        "unsimplified; 0 for one minimum and one maximum. Larger: fewer shallow minima, a smoother "
                        "landscape", higher_is_better=True),
        "n_nonfinite": diagnostic("grid points with a NaN/inf loss (counted as +inf)"),
        "threshold_used": diagnostic("persistence threshold of the simplification"),
        "direction_cosine": diagnostic("cosine between the two grid directions (of more: the pair's farthest from 0)"),
        "loss_min": diagnostic("lowest finite loss on the grid"),
        "loss_max": diagnostic("highest finite loss on the grid"),
    }
    views = {"contour": view(draw_contour, shared="colour", limits_of=loss_limits),
             "surface": view(draw_surface, projection="3d", shared="colour", limits_of=loss_limits),
             "merge_tree": view(draw_merge_tree, shared="y"), "persistence": view(draw_persistence, shared="xy")}
    smoke_params = {"directions": "axes", "at": "theta0", "span": 5.0, "resolution": 41}
    version = 3  # 2: average persistence per Xie, Geniesse et al. (distance to the diagonal); 3: SMAD
    references = ("Xie, Geniesse et al. 2024, Evaluating Loss Landscapes from a Topology Perspective",
                  "Chen, Hadler et al. 2025, Landscaper 1.3.1 (software, doi:10.5281/zenodo.15874987)")
    keyless_defaults = {"curvature": "hessian", "dimensions": 2}  # results stored before these existed keep their keys

    directions: str = same_as(Grid, "directions")
    resolution: int = same_as(Grid, "resolution")
    span: float = param(1.0, Interval(float, 0, None, closed="neither"))
    span_y: float | None = param(None, Interval(float, 0, None, closed="neither", allow_none=True),
                                 "None: the same as span")
    seed: int = same_as(Grid, "seed")
    include_bn: bool = same_as(Grid, "include_bn")
    bn: str = same_as(Grid, "bn")
    representation: str = param("triangulated_grid", Options(REPRESENTATIONS))
    knn_k: int = param(8, Interval(int, 1), "k of the kNN representation")
    threshold: float = param(0.0, Interval(float, 0))
    relative_threshold: float = param(0.0, Interval(float, 0, 1))
    backend: str = param("native", Options(("native", "ttk")))
    curvature: str = same_as(Grid, "curvature")
    dimensions: int = same_as(Grid, "dimensions")

    def check(self):
        if self.curvature != "hessian" and self.directions != "hessian":
            raise ConfigError(f"curvature={self.curvature!r} chooses the matrix of Hessian directions; "
                              f"directions={self.directions!r} has none. Use directions='hessian'.")
        if self.backend == "ttk" and self.representation != "triangulated_grid":
            raise ConfigError(f"The TTK backend computes on its own triangulation of the grid "
                              f"(representation='triangulated_grid'); {self.representation!r} needs backend='native'.")
        if self.backend == "ttk" and self.dimensions != 2:
            raise ConfigError(f"The TTK backend reads 2-D grids; dimensions={self.dimensions} needs backend='native'.")
        if self.backend == "ttk" and not ttk_backend.available():
            raise ConfigError("backend='ttk' needs topologytoolkit and vtk, which install only through conda: "
                              "conda install -c conda-forge topologytoolkit. Use backend='native' otherwise.")

    def requests(self, subject):
        if isinstance(subject, SurfaceSubject):  # an imported surface: its own grid, the grid settings unused
            if self.dimensions != 2:
                raise ConfigError(f"{subject.name!r} is an imported 2-D surface; dimensions={self.dimensions} asks for "
                                  "a grid to sample. Leave dimensions at 2 for it.")
            return {"grid": StoredSurface()}
        span_y = self.span if self.span_y is None else self.span_y
        return {"grid": Grid(point=self.point(), directions=self.directions,
                             resolution=self.resolution, span_x=float(self.span), span_y=float(span_y),
                             seed=self.seed, include_bn=self.include_bn, bn=self.bn, curvature=self.curvature,
                             dimensions=self.dimensions,
                             trajectory=Trajectory(minimum=self.minimum) if self.directions == "pca" else None)}

    def memory(self, subject):
        """The grid's (``Grid.memory``; an imported surface is in memory already), then its merge
        tree: int64 edge pairs (up to four a point in 2-D), their sorted keys, scipy's sparse copies
        and the spanning tree -- under 1 KiB a grid point, and as many times more as a point has
        more neighbours than the 8 of a 2-D image (26 in 3-D). SMAD's two merge trees, on the axis
        neighbours alone, come after it and need less."""
        if isinstance(subject, SurfaceSubject):
            return Memory(host=1024 * subject.grid_loss.size)
        per_point = 1024 * max(1, (3**self.dimensions - 1) // 8)
        return self.requests(subject)["grid"].memory(subject) + Memory(
            host=per_point * self.resolution**self.dimensions, lower="resolution")

    def work(self, subject):
        """Its work (``lossatlas.planning``) is its samples': the merge tree of a grid takes no measurable time."""
        return {}

    def compute(self, subject, samples):
        grid = samples["grid"]
        loss = grid["loss"]
        values = loss.ravel()
        if self.backend == "ttk":
            tree = ttk_backend.merge_tree_ttk(loss, self.representation)
        else:
            edges = representation_edges(self.representation, grid_points(grid), loss.shape, self.knn_k)
            tree = merge_tree(values, edges)
            del edges  # SMAD's graph next: one at a time
        finite = values[np.isfinite(values)]
        value_range = float(finite.max() - finite.min()) if len(finite) else 0.0
        cut = max(self.threshold, self.relative_threshold * value_range)
        simple = tree.simplified(cut)
        metrics = {
            "n_minima": simple.n_minima,
            "n_saddles": simple.n_saddles,
            "average_persistence": simple.average_persistence(close_at=float(finite.max()) if len(finite)
                                                              else None),
            "average_persistence_finite": simple.average_persistence(),
            "smad": smad(values, grid_edges(loss.shape, "none")),
            "n_nonfinite": tree.n_nonfinite,
            "threshold_used": cut,
            "direction_cosine": float(grid["cosine"]),
            "loss_min": float(finite.min()) if len(finite) else float("nan"),
            "loss_max": float(finite.max()) if len(finite) else float("nan"),
        }
        arrays = {"pairs": simple.pairs, "pair_vertices": simple.pair_vertices, "saddles": simple.saddles,
                  "loss_grid": loss, **{axis: grid[axis] for axis in AXES if axis in grid.data}}
        if "accuracy" in grid.data:
            arrays["accuracy_grid"] = grid["accuracy"]
        if "path" in grid.data:  # PCA directions: the training path on the grid's plane (Li et al. 2018 §7)
            arrays["path_" + "".join(AXES[: loss.ndim])] = grid["path"]
            arrays["explained_variance"] = grid["explained_variance"]
        return metrics, arrays
