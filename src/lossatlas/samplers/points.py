"""Where a method looks at a subject: its starting point or one of its stored minima."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import memory
from ..errors import ConfigError, NonFiniteLossError, StoreError
from ..memory import Memory
from ..params import Interval, Options, param
from ..provenance import digest
from ..sampling import Request, Sample

AT = ("minimum", "theta0")


@dataclass(frozen=True)
class Point(Request):
    """(theta, buffers) of ``subject.theta0`` (at="theta0") or of stored minimum ``minimum``."""

    kind = "point"
    at: str = param("minimum", Options(AT))
    minimum: int = param(0, Interval(int, 0))

    def own_config(self) -> dict:
        return {"at": self.at, "minimum": self.minimum if self.at == "minimum" else None}

    def memory(self, subject) -> Memory:
        return Memory(host=memory.vectors(subject, 1))  # theta as the store gives it

    def read(self, store, subject, inputs) -> Sample:
        theta, buffers = point_of(store, subject, self.at, self.minimum)
        config = {**self.own_config(), "theta_sha1": digest(theta), "buffers_sha1": digest(buffers)}
        return Sample(self.kind, "", config, {"theta": theta, "buffers": buffers})


def point_of(store, subject, at: str, minimum: int = 0, minima: dict | None = None):
    """(theta, buffers) as numpy arrays; a minimum the store lacks is an error that says what to do.
    ``minima``: the subject's stored minima by index, when the caller has read them already."""
    if at == "theta0":
        return subject.theta0.cpu().numpy(), subject.buffers0.cpu().numpy()
    minima = stored_minima(store, subject) if minima is None else minima
    if minimum not in minima:
        raise StoreError(
            f"Needs minimum {minimum} of {subject.name!r}, and {store.path} holds {sorted(minima)}. Train minima "
            "first (lossatlas.train_minima or a benchmark config's [minima]), or use 'theta0'."
        )
    return minima[minimum].theta, minima[minimum].buffers


def stored_minima(store, subject) -> dict:
    """The subject's stored minima by index (none if the subject is not in the store)."""
    return {m.index: m for m in store.minima(subject.name)} if subject.name in store.subjects() else {}


def finite_loss(subject, theta, buffers, at: str, minimum: int, what: str) -> float:
    """The loss at a point, or a NonFiniteLossError saying that ``what`` of a non-finite loss
    means nothing (raised before any work is stored)."""
    loss = subject.loss(theta, buffers)
    if not math.isfinite(loss):
        where = f"minimum {minimum}" if at == "minimum" else "theta0"
        raise NonFiniteLossError(f"The loss of {subject.name!r} at {where} is {loss}: {what} of a non-finite loss is "
                                 "meaningless. Nothing was written; check the model or its minimum.")
    return loss


@dataclass(frozen=True)
class Trajectory(Request):
    """The recorded training trajectory of stored minimum ``minimum`` (initialisation, then every
    epoch; ``train_minima(..., record_trajectory=True)``)."""

    kind = "trajectory"
    minimum: int = param(0, Interval(int, 0))

    def read(self, store, subject, inputs) -> Sample:
        found = store.trajectory(subject.name, self.minimum) if subject.name in store.subjects() else None
        if found is None:
            raise StoreError(f"Minimum {self.minimum} of {subject.name!r} in {store.path} has no recorded training "
                             "trajectory; PCA directions need one. Train with train_minima(..., "
                             "record_trajectory=True) (a benchmark does so when a method asks for directions='pca').")
        return Sample(self.kind, "", {"minimum": self.minimum, "sha1": digest(found)}, {"trajectory": found})


@dataclass(frozen=True)
class LineEnds(Request):
    """The ends of the straight lines a 1-D interpolation looks along (Goodfellow et al. 2015):
    the point (``at``, ``minimum``), its initialisation and another stored minimum.

    The initialisation is ``subject.init_theta(seed)`` with the minimum's training seed, which is
    the start of its training for minima trained by lossatlas (``init`` = "trained-from"); for a
    checkpoint added with ``add_minimum`` or for theta0 it is a fresh seeded initialisation
    (``init`` = "fresh", seed ``init_seed``). ``partner`` None: the next stored minimum (wrapping
    round; with two minima both rows then measure the same line); with one minimum there is no
    partner and ``partner_theta`` is empty."""

    kind = "line_ends"
    at: str = param("minimum", Options(AT))
    minimum: int = param(0, Interval(int, 0))
    partner: int | None = param(None, Interval(int, 0, allow_none=True))
    init_seed: int = param(0, Interval(int, 0), "seed of the fresh initialisation where the training start is unknown")

    def memory(self, subject) -> Memory:
        """theta, its initialisation (made on the device first) and the partner."""
        return Memory(host=memory.vectors(subject, 3), device=memory.vectors(subject, 1, memory.itemsize(subject)))

    def read(self, store, subject, inputs) -> Sample:
        minima = stored_minima(store, subject)  # read once: every end comes from it
        theta, buffers = point_of(store, subject, self.at, self.minimum, minima)
        own = minima.get(self.minimum) if self.at == "minimum" else None
        trained = own is not None and own.recipe.get("source") != "checkpoint"
        seed = own.seed if trained else self.init_seed
        init_theta = subject.init_theta(seed)[0].cpu().numpy()
        partner = self.partner
        if partner is None and self.at == "minimum" and len(minima) > 1:
            indices = sorted(minima)
            partner = indices[(indices.index(self.minimum) + 1) % len(indices)]
        if partner is not None and partner == self.minimum and self.at == "minimum":
            raise ConfigError(f"partner ({partner}) is the minimum itself: a line from a point to itself has no "
                              "barrier.")
        if partner is not None:
            partner_theta, partner_buffers = point_of(store, subject, "minimum", partner, minima)
        else:
            partner_theta, partner_buffers = np.zeros(0), np.zeros(0)
        config = {"at": self.at, "minimum": self.minimum if self.at == "minimum" else None, "partner": partner,
                  "init": "trained-from" if trained else "fresh", "init_seed": int(seed),
                  "init_sha1": digest(init_theta),
                  "theta_sha1": digest(theta), "buffers_sha1": digest(buffers),
                  "partner_sha1": digest(partner_theta), "partner_buffers_sha1": digest(partner_buffers)}
        return Sample(self.kind, "", config, {"theta": theta, "buffers": buffers, "init_theta": init_theta,
                                              "partner_theta": partner_theta, "partner_buffers": partner_buffers})
