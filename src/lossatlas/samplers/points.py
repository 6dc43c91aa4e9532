"""Where a method looks at a subject: its starting point or one of its stored minima."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, StoreError


def point_of(store, subject, at: str, minimum: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(theta, buffers) of ``subject.theta0`` (at="theta0") or of stored minimum ``minimum``."""
    if at == "theta0":
        return subject.theta0.numpy(), subject.buffers0.numpy()
    if at != "minimum":
        raise ConfigError(f"at/center must be 'theta0' or 'minimum'; got {at!r}.")
    minima = {m.index: m for m in store.minima(subject.name)}
    if minimum not in minima:
        raise StoreError(
            f"Needs minimum {minimum} of {subject.name!r}, and {store.path} holds {sorted(minima)}. Train minima "
            "first (lossatlas.train_minima or a benchmark config's [minima]), or use 'theta0'."
        )
    return minima[minimum].theta, minima[minimum].buffers
