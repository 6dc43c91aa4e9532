"""What produced a result: package versions and time, recorded with every result."""
from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata

_PACKAGES = ("lossatlas", "torch", "numpy", "scipy", "h5py", "scikit-learn", "gudhi", "phate", "pyhessian")


def versions() -> dict[str, str]:
    """Installed versions of the packages a result can depend on (missing ones are omitted)."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def config_key(config) -> str:
    """A short stable hash of a config: the store key of results and samples."""
    import hashlib

    return hashlib.sha1(canonical_json(config).encode()).hexdigest()[:12]


def digest(array) -> str:
    """A short stable hash of an array's float64 values: what identifies minima and points in
    sample configs and result keys."""
    import hashlib

    import numpy as np

    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()[:16]


def canonical_json(obj) -> str:
    """JSON with sorted keys and no spaces, so equal configs give equal strings (and hashes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def _default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a JSON config: {obj!r}")
