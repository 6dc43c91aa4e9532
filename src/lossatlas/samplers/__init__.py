"""Samplers: the expensive things several methods share, written once to the store.

Every sampler is resumable: what is already stored is reused, only what is missing is computed.
"""
from __future__ import annotations

from ..store import Store
from ..subjects import Subject
from .grid import Grid, loss_grid
from .minima import train_minima
from .points import point_of


def register(store: Store, subject: Subject) -> None:
    """Record the subject in the store (refused if the name is taken by another config)."""
    store.add_subject(subject.name, subject.config(), subject.theta0.numpy(), subject.buffers0.numpy())


__all__ = ["register", "train_minima", "loss_grid", "Grid", "point_of"]
