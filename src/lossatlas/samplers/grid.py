"""The 2-D loss grid sampler (Li et al. 2018; seed 001 §3): loss on center + a d1 + b d2.

Stored once under ``samples/grid/<key>`` (key: hash of the grid's config) and shared by every
method that needs it. Resumable: points are evaluated in blocks, each written and flushed
with a ``done`` mask, so a rerun after an interruption evaluates only the missing points.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from .. import directions as directions_module
from .. import executor
from ..errors import ConfigError
from ..progress import bar as progress_bar
from ..provenance import config_key
from ..store import Store
from ..subjects import Subject
from .points import point_of


@dataclass
class Grid:
    """``loss[i, j]`` is the loss at center + x[i] d1 + y[j] d2."""

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None
    directions: np.ndarray
    center: np.ndarray
    cosine: float
    config: dict
    key: str

    def points(self) -> np.ndarray:
        """Sample coordinates, (len(x) * len(y), 2), in the row-major order of ``loss``."""
        xx, yy = np.meshgrid(self.x, self.y, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1)


def loss_grid(store: Store, subject: Subject, directions: str = "random", resolution: int = 51, span=1.0,
              center: str = "theta0", minimum: int = 0, seed: int = 0, include_bn: bool = False,
              bn: str = "fixed", progress: bool = True) -> Grid:
    """The grid for this config, computing whatever points the store does not hold yet."""
    from . import register

    if resolution < 2:
        raise ConfigError(f"resolution must be an int in [2, inf); got {resolution}.")
    if bn not in ("fixed", "recompute"):
        raise ConfigError(f"bn must be 'fixed' or 'recompute'; got {bn!r}.")
    span_x, span_y = directions_module.span_pair(span)
    config = {"directions": directions, "resolution": int(resolution), "span": [span_x, span_y], "center": center,
              "minimum": int(minimum) if center == "minimum" else None, "seed": int(seed),
              "include_bn": bool(include_bn), "bn": bn}
    key = config_key(config)
    register(store, subject)
    path = f"subjects/{subject.name}/samples/grid/{key}"
    if path not in store.file:
        theta, buffers = point_of(store, subject, center, minimum)
        theta = torch.as_tensor(theta, dtype=subject.theta0.dtype)
        buffers = torch.as_tensor(buffers, dtype=subject.theta0.dtype)
        dirs = directions_module.make(directions, subject, theta, buffers, seed, include_bn)
        _create(store, subject, key, config, theta, buffers, dirs, span_x, span_y, resolution)
    node = store.file[path]
    _fill(store, subject, node, bn, progress)
    return read_grid(node, key)


def _create(store, subject, key, config, theta, buffers, dirs, span_x, span_y, resolution) -> None:
    node = store.sample_node(subject.name, "grid", key, config)
    node.attrs["cosine"] = directions_module.cosine(dirs)
    node.attrs["complete"] = False
    store.write_array(node, "directions", dirs.numpy())
    store.write_array(node, "center", theta.numpy())
    store.write_array(node, "center_buffers", buffers.numpy())
    store.write_array(node, "x", np.linspace(-span_x, span_x, resolution))
    store.write_array(node, "y", np.linspace(-span_y, span_y, resolution))
    store.write_array(node, "loss", np.full((resolution, resolution), np.nan))
    store.write_array(node, "done", np.zeros((resolution, resolution), dtype=bool))
    if getattr(subject, "classification", False):
        store.write_array(node, "accuracy", np.full((resolution, resolution), np.nan))
    store.flush()


def _fill(store: Store, subject: Subject, node, bn: str, progress: bool) -> None:
    done = node["done"][()].ravel()
    missing = np.flatnonzero(~done)
    if not len(missing):
        return
    x, y = node["x"][()], node["y"][()]
    dirs = torch.as_tensor(node["directions"][()], dtype=subject.theta0.dtype)
    center = torch.as_tensor(node["center"][()], dtype=subject.theta0.dtype)
    buffers = torch.as_tensor(node["center_buffers"][()], dtype=subject.theta0.dtype)
    shape = node["loss"].shape
    arrays = {name: node[name][()] for name in ("loss", "accuracy", "done") if name in node}
    # Blocks over the whole grid, at least a few vmap chunks, at most ~100 writes per grid (each
    # rewrites the arrays); a resumed grid recomputes its unfinished blocks exactly as an
    # uninterrupted run computes them, so the numbers are the same to the bit. They are also the
    # tasks a Dask executor farms out; each worker forms its own points.
    block = max(4 * subject.chunk_size, -(-done.size // 100))
    starts = sorted({int(index) // block * block for index in missing})
    blocks = [np.unravel_index(np.arange(start, min(start + block, done.size)), shape) for start in starts]
    coords = [np.stack([x[i], y[j]], axis=1) for i, j in blocks]
    bar = progress_bar(total=sum(len(i) for i, _ in blocks), desc=f"{subject.name}: grid", enabled=progress)
    runner = executor.current()
    for index, found in runner.map(_evaluate_block, coords, shared=(subject, center, dirs, buffers, bn)):
        i, j = blocks[index]
        for name, values in found.items():
            if name in arrays:
                arrays[name][i, j] = values
        arrays["done"][i, j] = True
        for name, values in arrays.items():
            node[name][...] = values
        store.flush()
        bar.update(len(i))
    bar.close()
    node.attrs["complete"] = True
    store.flush()


def _evaluate_block(subject: Subject, center, dirs, buffers, bn: str, coords) -> dict[str, np.ndarray]:
    """Metrics at center + a d1 + b d2 for one block of (a, b) coordinates."""
    thetas = center + torch.as_tensor(coords, dtype=center.dtype) @ dirs
    return subject.evaluate_many(thetas, buffers, recompute_bn=bn == "recompute")


def read_grid(node, key: str) -> Grid:
    return Grid(
        x=node["x"][()], y=node["y"][()], loss=node["loss"][()],
        accuracy=node["accuracy"][()] if "accuracy" in node else None,
        directions=node["directions"][()], center=node["center"][()], cosine=float(node.attrs["cosine"]),
        config=json.loads(node.attrs["config"]), key=key,
    )
