"""The loss grid sampler (Li et al. 2018; Xie, Geniesse et al. 2024, §3): loss on center + a d1 + b d2,
a plane by default, or a 3-D or 4-D grid along as many directions (``dimensions``, as Landscaper's
grids in N dimensions).

Stored once under ``samples/grid/<key>`` (key: hash of the grid's config) and shared by every
method that needs it. The header holds the directions, the center and the coordinates; the
parts are blocks of points fixed over the whole grid, so a resumed grid computes its missing
blocks exactly as an uninterrupted run does (the same numbers to the bit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import directions as directions_module
from .. import memory
from ..errors import ConfigError
from ..evaluation import EXAMPLE_CHUNK
from ..hessian import CURVATURES, lanczos_products
from ..memory import Memory
from ..params import Boolean, Instance, Interval, Options, param
from ..sampling import Sampler, obtain
from ..store import Part
from .points import Point, Trajectory

AXES = ("x", "y", "z", "w")  # the coordinates' names, one a direction


@dataclass(frozen=True)
class Grid(Sampler):
    """``loss[i, j]`` is the loss at center + x[i] d1 + y[j] d2, x in [-span_x, span_x], y in
    [-span_y, span_y]; with ``dimensions=3`` ``loss[i, j, k]`` adds z[k] d3, z in [-span_x, span_x]
    (and a fourth axis w alike); ``bn="recompute"`` re-estimates BatchNorm statistics at every point.
    ``directions="pca"`` takes the principal components of the minimum's recorded ``trajectory``,
    each scaled to the path's extent along it (span 1: the grid just covers the path; Li et al.
    2018 size their plots to it), and stores the path's coordinates (``path``, within [-1, 1])
    and the explained variance ratios. ``curvature``: the matrix whose top eigenvectors
    ``directions="hessian"`` takes (``lossatlas.hessian``: Hessian, GGN or empirical Fisher)."""

    kind = "grid"
    point: Point = param(Point(), Instance(Point))
    directions: str = param("random", Options(directions_module.KINDS))
    resolution: int = param(51, Interval(int, 2))
    span_x: float = param(1.0, Interval(float, 0, None, closed="neither"))
    span_y: float = param(1.0, Interval(float, 0, None, closed="neither"))
    seed: int = param(0, Interval(int, 0))
    include_bn: bool = param(False, Boolean())
    bn: str = param("fixed", Options(("fixed", "recompute")))
    trajectory: Trajectory | None = param(None, Instance(Trajectory, allow_none=True))
    curvature: str = param("hessian", Options(CURVATURES), "the matrix of Hessian directions: Hessian, generalized "
                           "Gauss-Newton or empirical Fisher (model subjects)")
    dimensions: int = param(2, Interval(int, 2, 4), "directions the grid spans: 2 (a plane), 3 or 4; "
                            "resolution^dimensions points, the axes past the second spanning +-span_x "
                            "(merge-tree: +-span)")

    def own_config(self) -> dict:
        config = super().own_config()
        config.pop("trajectory", None)  # an input when set (its own config), absent otherwise: old keys stay
        for name, default in (("curvature", "hessian"), ("dimensions", 2)):
            if config[name] == default:  # grids stored before the setting existed keep their keys
                config.pop(name)
        return config

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.resolution,) * self.dimensions

    @property
    def points(self) -> int:
        return self.resolution**self.dimensions

    def check(self, subject):
        directions_module.check(subject, self.directions, self.curvature, self.dimensions)
        if self.directions == "pca" and self.point.at != "minimum":
            raise ConfigError("directions='pca' follows a minimum's training trajectory: it needs at='minimum'.")
        if (self.directions == "pca") != (self.trajectory is not None):
            raise ConfigError("directions='pca' takes its directions from a trajectory (and only it does): give "
                              "Grid(trajectory=Trajectory(minimum=...)) with it.")
        size = "x".join([str(self.resolution)] * 2) if self.dimensions == 2 else f"{self.resolution}^{self.dimensions}"
        memory.refuse(f"A {size} grid has {self.points:.3g} points and", self.memory(subject), subject.device)

    def memory(self, subject) -> Memory:
        """The loss and accuracy grids and a block's coordinates (float64 per point), the header's
        directions and center; on the device a block of parameter vectors (``coords @ dirs``, then
        plus the center) and its evaluation; and making the directions (d = ``dimensions``): d seeded
        draws and their normalized copies, or Lanczos for the top d Hessian eigenvectors
        (``top_eigenpairs``: ARPACK's basis of ncv = max(2d + 2, 6) vectors and scipy's copy of it,
        3 work vectors, residual, start, product, d + d Ritz vectors)."""
        points, size, d = self.points, memory.itemsize(subject), self.dimensions
        block = min(points, max(4 * subject.chunk_size, -(-points // 100)))
        grids = Memory(host=points * 8 * 3, lower="resolution")
        blocks = Memory(host=memory.vectors(subject, d + 1), device=memory.vectors(subject, 2 * block + d + 1, size),
                        lower="the subject's chunk_size") + memory.evaluation(subject, block)
        if self.directions == "hessian":
            making = Memory(host=memory.vectors(subject, 2 * max(2 * d + 2, 6) + 6 + 2 * d)) + memory.hvp(subject)
            if self.curvature == "ef":  # and its per-example gradients
                making = making + memory.example_gradients(subject, EXAMPLE_CHUNK)
        else:
            making = Memory(device=memory.vectors(subject, 2 * d + 1, size))
        return grids + blocks + making + super().memory(subject)

    def work(self, subject) -> dict:
        """Its work (``lossatlas.planning``): the grid's points; Hessian directions first take the
        top ``dimensions`` eigenpairs by Lanczos."""
        out = {("points", self.bn == "recompute"): self.points}
        if self.directions == "hessian":
            d = self.dimensions
            out[("product", self.curvature)] = lanczos_products(k=d, ncv=max(2 * d + 2, 6))
        return out

    def prepare(self, subject, inputs):
        dtype = subject.theta0.dtype
        theta = torch.as_tensor(inputs["point"]["theta"], dtype=dtype, device=subject.device)
        buffers = torch.as_tensor(inputs["point"]["buffers"], dtype=dtype, device=subject.device)
        extra = {}
        if self.directions == "pca":
            dirs, explained, path = directions_module.pca_directions(inputs["trajectory"]["trajectory"], theta,
                                                                     self.dimensions)
            extent = np.maximum(np.abs(path).max(axis=0), 1e-12)  # span 1: the grid just covers the path
            dirs = dirs * torch.as_tensor(extent, dtype=dtype, device=subject.device)[:, None]
            extra = {"path": path / extent, "explained_variance": explained}
        else:
            dirs = directions_module.make(self.directions, subject, theta, buffers, self.seed, self.include_bn,
                                          self.curvature, self.dimensions)
        spans = (self.span_x, self.span_y) + (self.span_x,) * (self.dimensions - 2)
        return {**extra, "directions": dirs.cpu().numpy(), "center": theta.cpu().numpy(),
                "center_buffers": buffers.cpu().numpy(),
                **{axis: np.linspace(-span, span, self.resolution) for axis, span in zip(AXES, spans)},
                "cosine": np.array(directions_module.cosine(dirs))}

    def tasks(self, subject, header):
        # Blocks over the whole grid, at least a few vmap chunks, at most ~100 parts per grid;
        # they are also the tasks a Dask executor farms out.
        size = self.points
        block = max(4 * subject.chunk_size, -(-size // 100))
        return [(f"{start:08d}", (start, min(start + block, size))) for start in range(0, size, block)]

    def run(self, subject, header, progress, task) -> Part:
        index = np.unravel_index(np.arange(*task), self.shape)
        on = {"dtype": subject.theta0.dtype, "device": subject.device}  # the block's points are made on the device
        center = torch.as_tensor(header["center"], **on)
        dirs = torch.as_tensor(header["directions"], **on)
        buffers = torch.as_tensor(header["center_buffers"], **on)
        coords = np.stack([header[axis][i] for axis, i in zip(AXES, index)], axis=1)
        thetas = center + torch.as_tensor(coords, **on) @ dirs
        return Part(subject.evaluate_many(thetas, buffers, recompute_bn=self.bn == "recompute"))

    def assemble(self, subject, header, parts):
        out = {name: header[name] for name in (*AXES, "directions", "center", "cosine", "path",
                                               "explained_variance") if name in header}
        for (name, (start, stop)) in self.tasks(subject, header):
            index = np.unravel_index(np.arange(start, stop), self.shape)
            for key, values in parts[name].arrays.items():
                out.setdefault(key, np.full(self.shape, np.nan))[index] = values
        return out


def grid_points(sample) -> np.ndarray:
    """Sample coordinates, (points, dimensions), in the row-major order of the loss grid: one
    column a coordinate of x, y (z, w) that the sample has."""
    data = getattr(sample, "data", sample)
    axes = [data[axis] for axis in AXES if axis in data]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def loss_grid(store, subject, directions: str = "random", resolution: int = 51, span=1.0, at: str = "theta0",
              minimum: int = 0, seed: int = 0, include_bn: bool = False, bn: str = "fixed", progress: bool = True,
              curvature: str = "hessian", dimensions: int = 2):
    """The grid for these settings as a Sample (``sample["loss"]``), computing what the store lacks."""
    span_x, span_y = directions_module.span_pair(span)
    request = Grid(point=Point(at=at, minimum=minimum), directions=directions, resolution=resolution, span_x=span_x,
                   span_y=span_y, seed=seed, include_bn=include_bn, bn=bn, curvature=curvature, dimensions=dimensions,
                   trajectory=Trajectory(minimum=minimum) if directions == "pca" else None)
    return obtain(store, subject, request, progress)
