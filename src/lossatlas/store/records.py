"""What a store holds, as the rest of lossatlas sees it: plain records, no HDF5."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..provenance import canonical_json, now, versions


@dataclass
class Result:
    """What an analyzer computed for one subject with one parameter set."""

    method: str
    subject: str
    params: dict
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    wall_time_s: float = float("nan")
    key: str = ""
    analyzer: dict = field(default_factory=dict)  # scope, views, metric metadata: the report reads these
    runtime: dict = field(default_factory=dict)  # device and numerics it ran with (lossatlas.devices.runtime)


@dataclass
class Part:
    """One task's output in a sample: arrays (datasets) and attrs (scalars, strings)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@dataclass
class Minimum:
    """A trained minimum of a subject, as stored."""

    index: int
    theta: np.ndarray
    buffers: np.ndarray
    seed: int
    recipe: dict
    metrics: dict[str, float]
    wall_time_s: float = float("nan")  # training time, for the report's stage timings
    runtime: dict = field(default_factory=dict)  # device and numerics it was trained with
    trajectory: np.ndarray | None = None  # (epochs + 1, dim) when recorded; read with Store.trajectory


@dataclass(frozen=True)
class SubjectRecord:
    """A registered subject as stored: its config and the length of its parameter vector."""

    config: dict
    dim: int


def minimum_part(minimum: Minimum) -> Part:
    """How a minimum is stored: theta and buffers, and its seed, recipe, metrics and provenance."""
    attrs = {"seed": int(minimum.seed), "recipe": canonical_json(minimum.recipe),
             "metrics": canonical_json(minimum.metrics), "created": now(), "versions": canonical_json(versions()),
             "wall_time_s": float(minimum.wall_time_s), "runtime": canonical_json(minimum.runtime)}
    arrays = {"theta": np.asarray(minimum.theta), "buffers": np.asarray(minimum.buffers)}
    if minimum.trajectory is not None:  # float32: it only feeds a PCA (Li et al. 2018 §7)
        arrays["trajectory"] = np.asarray(minimum.trajectory, dtype=np.float32)
    return Part(arrays, attrs)


def part_minimum(part: Part, index: int, dim: int) -> Minimum:
    """The minimum ``minimum_part`` stored (without its trajectory), checked against the subject's
    dimension."""
    attrs = part.attrs
    minimum = Minimum(
        index=index,
        theta=part.arrays["theta"],
        buffers=part.arrays["buffers"],
        seed=int(attrs["seed"]),
        recipe=json.loads(attrs["recipe"]),
        metrics=json.loads(attrs["metrics"]),
        wall_time_s=float(attrs["wall_time_s"]),
        runtime=json.loads(attrs["runtime"]),
    )
    if minimum.theta.shape != (dim,):
        raise ValueError(f"minimum {minimum.index} has parameters of shape {minimum.theta.shape}, the subject "
                         f"has {dim}")
    return minimum
