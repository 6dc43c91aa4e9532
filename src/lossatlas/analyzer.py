"""The analyzer contract and ``analyze``, the one entry point that runs a method on a subject.

An analyzer is a class with a ``name``, keyword-only ``__init__`` parameters with defaults
(listed by ``get_params``), declared ``constraints``, the samples it ``needs``, ``produce``
(make missing samples in the store), ``run`` (compute metrics and arrays) and ``plot``.
The base class owns the lifecycle: validation, caching by parameters, provenance, writing.
"""
from __future__ import annotations

import inspect
import json
import time
from typing import ClassVar

import numpy as np

from .errors import ConfigError
from .params import check_known, validate
from .provenance import canonical_json, config_key, now, versions
from .store import Result, Store
from .subjects import Subject


class Analyzer:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    constraints: ClassVar[dict] = {}
    smoke_params: ClassVar[dict] = {}  # fast settings for conformance checks and smoke runs

    @classmethod
    def defaults(cls) -> dict:
        """Parameter names and defaults, read from the ``__init__`` signature."""
        signature = inspect.signature(cls.__init__)
        params = {}
        for pname, p in signature.parameters.items():
            if pname == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
                raise TypeError(f"{cls.__name__}.__init__ must take only keyword parameters with defaults; see {pname!r}.")
            params[pname] = p.default
        return params

    @classmethod
    def from_params(cls, params: dict) -> "Analyzer":
        """Check names and constraints before any work, then construct."""
        check_known(f"method {cls.name!r}", params, cls.defaults())
        merged = {**cls.defaults(), **params}
        validate(cls.__name__, merged, cls.constraints)
        return cls(**params)

    def get_params(self) -> dict:
        return {pname: getattr(self, pname) for pname in self.defaults()}

    # -- to implement ---------------------------------------------------------------------------
    def produce(self, store: Store, subject: Subject) -> None:
        """Make the samples this method needs that the store does not hold yet (resumable)."""

    def run(self, store: Store, subject: Subject) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Compute (metrics, arrays) from the store's samples."""
        raise NotImplementedError

    def plot(self, result: Result, ax=None):
        """Draw the result; returns the matplotlib Figure."""
        raise NotImplementedError


def result_key(params: dict) -> str:
    """Results are cached per parameter set: the key is a hash of the canonical parameters."""
    return config_key(params)


def analyze(store: Store, subject: Subject, method, **params) -> Result:
    """Run ``method`` (a registered name or an Analyzer class) on ``subject``.

    Produces the missing samples, runs the analyzer, writes the result with its parameters,
    seed, versions and wall time, and returns it. If the store already holds a result for the
    same parameters it is returned as is (a rerun is a no-op).
    """
    from . import registry
    from .samplers import register

    cls = registry.get(method) if isinstance(method, str) else method
    if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
        raise ConfigError(f"method must be a registered name or an Analyzer subclass; got {method!r}.")
    analyzer = cls.from_params(params)
    full = json.loads(canonical_json(analyzer.get_params()))  # as the store will give it back
    key = result_key(full)
    register(store, subject)
    if store.has_result(subject.name, cls.name, key):
        return store.read_result(subject.name, cls.name, key)
    start = time.perf_counter()
    analyzer.produce(store, subject)
    metrics, arrays = analyzer.run(store, subject)
    result = Result(
        method=cls.name,
        subject=subject.name,
        params=full,
        metrics={k: float(v) for k, v in metrics.items()},
        arrays={k: np.asarray(v) for k, v in arrays.items()},
        seed=full.get("seed"),
        versions=versions(),
        created=now(),
        wall_time_s=time.perf_counter() - start,
        key=key,
    )
    store.write_result(result)
    return result
