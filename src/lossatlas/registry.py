"""One registry for everything a user can plug in: analyzers and problems.

A name resolves to an entry point of an installed package (groups ``lossatlas.methods`` and
``lossatlas.problems``; built-in analyzers register the same way as third-party ones), or to an
object of the user's own written as ``"package.module:name"`` (importable from where lossatlas
runs). Entry points load one at a time, when a name is asked for, so running one analyzer imports
that analyzer alone. Listing is tolerant: a plugin that fails to load, or a duplicate name, gives
a warning, not a crash; asking for it by name is a ConfigError that says why.
"""
from __future__ import annotations

import functools
import importlib
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Callable

from .errors import ConfigError

GROUP = "lossatlas.methods"
PROBLEM_GROUP = "lossatlas.problems"


def load_reference(reference: str, kind: str) -> object:
    """``"package.module:name"`` as the object it names; a module that fails to import (any
    exception, a syntax error, sys.exit) is a ConfigError naming the reference and the original error."""
    module, _, name = reference.partition(":")
    return _loaded(reference, kind, lambda: getattr(importlib.import_module(module), name))


def _loaded(reference: str, kind: str, load: Callable[[], object]) -> object:
    try:
        return load()
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{kind.capitalize()} {reference!r} could not be loaded: {one_line(err)}. Is its package "
                          "installed, or its folder on PYTHONPATH?") from err
    except (Exception, SystemExit) as err:
        raise ConfigError(f"{kind.capitalize()} {reference!r} could not be loaded: importing its module raised "
                          f"{one_line(err)}.") from err


def one_line(err: BaseException) -> str:
    """An exception as ``Type: message`` on one line (a CLI error is one line)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Registry:
    """Named entry points of one group, each loaded on first use and checked by ``accept`` (which
    returns None for a valid object, else why it is not one)."""

    def __init__(self, points: list[EntryPoint], kind: str = "method", noun: str = "analyzer",
                 accept: Callable[[str, object], str | None] | None = None):
        self._points = list(points)
        self._kind, self._noun = kind, noun  # "method" in what users write, "analyzer" for the class
        self._accept = accept or _analyzer_problem
        self._loaded: dict[str, object] = {}

    def names(self) -> list[str]:
        """Registered names, nothing loaded."""
        return sorted({point.name for point in self._points})

    def _load(self, name: str, strict: bool) -> object | None:
        """The object registered as ``name``: the first entry point of that name that loads and is
        valid (later duplicates are ignored with a warning, broken ones skipped). ``strict`` (the
        user asked for this name): a ConfigError saying why when none is valid, else warnings."""
        if name in self._loaded:
            return self._loaded[name]
        found, errors = None, []
        for point in (point for point in self._points if point.name == name):
            if found is not None:
                warnings.warn(f"lossatlas: two {self._noun}s named {name!r}; keeping "
                              f"{getattr(found, '__module__', '?')}, ignoring {point.value}.", stacklevel=3)
                continue
            try:
                obj = _loaded(name, self._kind, point.load)
            except ConfigError as err:
                errors.append((err, f"{self._noun} {name!r} ({point.value}) failed to load: {err.__cause__!r}"))
                continue
            problem = self._accept(name, obj)
            if problem is not None:
                errors.append((ConfigError(f"{self._kind.capitalize()} {name!r} {problem}."),
                               f"{self._noun} {name!r} ({point.value}) {problem}; skipped"))
                continue
            found = obj
        if found is None and errors and strict:
            raise errors[0][0]
        for _, warning in errors:
            warnings.warn(f"lossatlas: {warning}", stacklevel=3)
        if found is not None:
            self._loaded[name] = found
        return found

    @functools.cached_property
    def loaded(self) -> dict[str, object]:
        """Every name that loads, loaded (listing: broken plugins are warned about and skipped)."""
        return {name: obj for name in self.names() if (obj := self._load(name, strict=False)) is not None}

    def available(self) -> list[str]:
        return sorted(self.loaded)

    def get(self, name: str) -> object:
        """The object registered as ``name``, or the user's own ``"package.module:name"``."""
        if name in self.names():
            return self._load(name, strict=True)
        if ":" in name:
            obj = load_reference(name, self._kind)
            problem = self._accept(name, obj)
            if problem is not None:
                raise ConfigError(f"{self._kind.capitalize()} {name!r} {problem}.")
            return obj
        raise ConfigError(f"Unknown {self._kind} {name!r}; available {self._kind}s: {self.available()}.")

    def find(self, name: str) -> object | None:
        """The object registered under ``name``, or None where it is not installed."""
        return self._load(name, strict=False) if name in self.names() else None


def _analyzer_problem(name: str, cls: object) -> str | None:
    from .analyzer import SCOPES, Analyzer

    if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
        return "is not an Analyzer"
    if cls.scope not in SCOPES or (cls.scope == "minimum" and "minimum" not in cls.defaults()):
        return (f"has scope {cls.scope!r}; it must be one of {SCOPES}, and 'minimum' needs a 'minimum' parameter")
    if ":" in name:  # the user's own class: its name files its results in the store
        return _own_name_problem(cls)
    if cls.name != name:
        warnings.warn(f"lossatlas: entry point {name!r} loads an analyzer named {cls.name!r}.", stacklevel=4)
    return None


def _own_name_problem(cls: type) -> str | None:
    """A user's class must have a name of its own: results are stored under it, and a name an
    installed analyzer has would return that analyzer's stored results as this one's."""
    from .errors import StoreError
    from .store import _check_name

    try:
        _check_name(cls.name, "analyzer")
    except StoreError as err:
        return f"needs a name of its own (its class attribute `name`): {err}"
    taken = default().find(cls.name) if cls.name in default().names() else None
    if taken is not None and taken is not cls:
        return (f"is named {cls.name!r}, as the installed analyzer {taken.__module__}.{taken.__name__} is: give it a "
                "name of its own")
    return None


def _factory_problem(name: str, factory: object) -> str | None:
    return None if callable(factory) else f"is a {type(factory).__name__}, not a factory that returns a Subject"


@functools.cache
def problems() -> Registry:
    """Problems installed packages register (the built-in ones are in ``lossatlas.problems``)."""
    return Registry(list(entry_points(group=PROBLEM_GROUP)), kind="problem", noun="problem", accept=_factory_problem)


@functools.cache
def default() -> Registry:
    return Registry(list(entry_points(group=GROUP)))


def available() -> list[str]:
    """Names of the installed analyzers."""
    return default().available()


def get(name: str) -> type:
    """The analyzer class registered under ``name``, or a user's own as ``"package.module:Class"``."""
    return default().get(name)


def find(name: str) -> type | None:
    """The analyzer class registered under ``name``, or None (e.g. a report of a store made
    with a plugin that is not installed here)."""
    return default().find(name)
