"""Samplers: the expensive things several methods share, written once to the store.

Every sampler follows the one sample protocol of ``lossatlas.sampling`` and is produced by its
one driver, ``obtain``: resumable, executor-agnostic, each part written with its completion flag.
"""
from __future__ import annotations

from ..sampling import Request, Sample, Sampler, obtain
from .grid import Grid, grid_points, loss_grid
from .jump_retrain import JumpRetrainRuns, jump_and_retrain, reference_recipe
from .minima import DescentMinima, GivenMinima, StoredMinima, TrainedMinima, add_minimum, train_minima
from .paths import Paths, connect_minima
from .points import LineEnds, Point, Trajectory, finite_loss, point_of, stored_minima

__all__ = ["Request", "Sample", "Sampler", "obtain", "Grid", "grid_points", "loss_grid", "JumpRetrainRuns",
           "jump_and_retrain", "reference_recipe", "DescentMinima", "GivenMinima", "StoredMinima", "TrainedMinima",
           "train_minima", "add_minimum", "Paths", "connect_minima", "Point", "LineEnds", "Trajectory", "point_of",
           "finite_loss", "stored_minima"]
