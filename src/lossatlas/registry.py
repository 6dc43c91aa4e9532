"""Finds analyzers through the entry-point group ``lossatlas.methods``.

Built-in analyzers register the same way as third-party ones. The registry is cached and
tolerant: a plugin that fails to load, or a duplicate name, gives a warning, not a crash.
"""
from __future__ import annotations

import functools
import warnings
from importlib.metadata import EntryPoint, entry_points

from .analyzer import SCOPES, Analyzer
from .errors import ConfigError

GROUP = "lossatlas.methods"


class Registry:
    def __init__(self, points: list[EntryPoint]):
        self._points = list(points)

    @functools.cached_property
    def analyzers(self) -> dict[str, type]:
        found: dict[str, type] = {}
        for point in self._points:
            try:
                cls = point.load()
            except Exception as err:  # noqa: BLE001 - a broken plugin must not break the others
                warnings.warn(f"lossatlas: analyzer {point.name!r} ({point.value}) failed to load: {err!r}",
                              stacklevel=2)
                continue
            if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
                warnings.warn(f"lossatlas: entry point {point.name!r} ({point.value}) is not an Analyzer; skipped.",
                              stacklevel=2)
                continue
            if cls.scope not in SCOPES or (cls.scope == "minimum" and "minimum" not in cls.defaults()):
                warnings.warn(f"lossatlas: analyzer {point.name!r} ({point.value}) has scope {cls.scope!r}; it must be "
                              f"one of {SCOPES}, and 'minimum' needs a 'minimum' parameter. Skipped.", stacklevel=2)
                continue
            if point.name in found:
                warnings.warn(
                    f"lossatlas: two analyzers named {point.name!r}; keeping {found[point.name].__module__}, "
                    f"ignoring {point.value}.",
                    stacklevel=2,
                )
                continue
            if cls.name != point.name:
                warnings.warn(f"lossatlas: entry point {point.name!r} loads an analyzer named {cls.name!r}.",
                              stacklevel=2)
            found[point.name] = cls
        return found

    def available(self) -> list[str]:
        return sorted(self.analyzers)

    def get(self, name: str) -> type:
        if name not in self.analyzers:
            raise ConfigError(f"Unknown method {name!r}; available methods: {self.available()}.")
        return self.analyzers[name]

    def find(self, name: str) -> type | None:
        """The analyzer registered under ``name``, or None where it is not installed."""
        return self.analyzers.get(name)


@functools.cache
def default() -> Registry:
    return Registry(list(entry_points(group=GROUP)))


def available() -> list[str]:
    """Names of the installed analyzers."""
    return default().available()


def get(name: str) -> type:
    """The analyzer class registered under ``name``."""
    return default().get(name)


def find(name: str) -> type | None:
    """The analyzer class registered under ``name``, or None (e.g. a report of a store made
    with a plugin that is not installed here)."""
    return default().find(name)
