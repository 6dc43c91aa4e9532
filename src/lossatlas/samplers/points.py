"""Where a method looks at a subject: its starting point or one of its stored minima."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import StoreError
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

    def read(self, store, subject, inputs) -> Sample:
        theta, buffers = point_of(store, subject, self.at, self.minimum)
        config = {**self.own_config(), "theta_sha1": digest(theta), "buffers_sha1": digest(buffers)}
        return Sample(self.kind, "", config, {"theta": theta, "buffers": buffers})


def point_of(store, subject, at: str, minimum: int = 0):
    """(theta, buffers) as numpy arrays; a minimum the store lacks is an error that says what to do."""
    if at == "theta0":
        return subject.theta0.cpu().numpy(), subject.buffers0.cpu().numpy()
    minima = {m.index: m for m in store.minima(subject.name)} if subject.name in store.subjects() else {}
    if minimum not in minima:
        raise StoreError(
            f"Needs minimum {minimum} of {subject.name!r}, and {store.path} holds {sorted(minima)}. Train minima "
            "first (lossatlas.train_minima or a benchmark config's [minima]), or use 'theta0'."
        )
    return minima[minimum].theta, minima[minimum].buffers
