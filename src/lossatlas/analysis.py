"""``analyze``: the one entry point that runs a method on a subject.

Validates the parameters, produces the samples the analyzer requests (through the sampling
driver), runs its pure compute step, and writes the result with its parameters, seed, package
versions, wall time and the analyzer's declared scope, views and metric metadata, so a report
can be built from the store without the analyzer installed.
"""
from __future__ import annotations

import json
import time

import numpy as np

from . import devices, evaluation, memory, progress as progress_module, registry
from .analyzer import Analyzer
from .errors import ConfigError
from .params import Vectors
from .provenance import canonical_json, config_key, digest, now, versions
from .sampling import identity, obtain
from .store import Result, Store


def resolve(method) -> type[Analyzer]:
    """A registered name or an Analyzer subclass, as the class."""
    cls = registry.get(method) if isinstance(method, str) else method
    if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
        raise ConfigError(f"method must be a registered name or an Analyzer subclass; got {method!r}.")
    return cls


def analyze(store: Store, subject, method, progress: bool = True, **params) -> Result:
    """Run ``method`` (a registered name or an Analyzer class, or an Analyzer already built from
    its parameters) on ``subject``.

    If the store already holds a result for the same parameters it is returned as is (a rerun
    is a no-op); otherwise the missing samples are produced (resumable) and the result written.
    """
    if isinstance(method, Analyzer) and not params:  # built, so checked: a benchmark's job
        analyzer, cls = method, type(method)
    else:
        cls = resolve(method)
        analyzer = cls.from_params(params)
    analyzer.check_subject(subject)
    memory.check(analyzer, subject)  # what cannot fit is refused before any work
    full, param_arrays = stored_params(analyzer)
    store.register(subject)
    requests = analyzer.requests(subject)
    # the key covers the parameters, what the samples are made from (which minima) and the
    # version of the analyzer's definitions: a result at a retrained or replaced minimum, or one
    # whose metrics meant something else, is never mistaken for the stored one
    identity_of = {"params": key_params(cls, full), "samples": {name: identity(store, subject, request)
                                               for name, request in requests.items()}}
    if cls.version != 1:  # results of version-1 analyzers keep their keys
        identity_of["version"] = cls.version
    key = config_key(identity_of)
    if store.has_result(subject.name, cls.name, key):
        return store.read_result(subject.name, cls.name, key)
    start = time.perf_counter()
    # landscape measurements: no TF32 (devices.numerics); bars deep in compute (the Hessian's solvers) as asked
    with devices.numerics("float32", subject.device), progress_module.shown(progress):
        samples = {name: obtain(store, subject, request, progress) for name, request in requests.items()}
        metrics, arrays = analyzer.compute(subject, samples)
    result = Result(
        method=cls.name,
        subject=subject.name,
        params=full,
        metrics={k: float(v) for k, v in metrics.items()},
        arrays={**{k: np.asarray(v) for k, v in arrays.items()}, **param_arrays},
        seed=full.get("seed"),
        versions=versions(),
        created=now(),
        wall_time_s=time.perf_counter() - start,
        key=key,
        analyzer=cls.info(),
        runtime={**devices.runtime(subject.device, subject.theta0.dtype), "data": subject.data_source,
                 "hvp": evaluation.HVP_METHOD},
    )
    store.write_result(result)
    return result


def key_params(cls, params: dict) -> dict:
    """The parameters that enter the result's key: those the analyzer added after results were
    stored (its ``keyless_defaults``, name -> default) are left out while at their default, so
    those results keep their keys and are found again, not recomputed."""
    added = getattr(cls, "keyless_defaults", {})
    return {name: value for name, value in params.items() if not (name in added and value == added[name])}


def stored_params(analyzer) -> tuple[dict, dict[str, np.ndarray]]:
    """The parameters as the store gives them back (JSON), and the arrays among them: vector
    parameters (explicit minima, bounds) are kept as datasets ``param_<name>`` and named in the
    parameters by shape and digest, not written out as JSON text."""
    params, arrays = {}, {}
    constraints = type(analyzer).constraints()
    for name, value in analyzer.get_params().items():
        if isinstance(constraints.get(name), Vectors) and value is not None:
            matrix = np.asarray(value, dtype=float)
            params[name] = {"array": f"param_{name}", "shape": list(matrix.shape), "sha1": digest(matrix)}
            arrays[f"param_{name}"] = matrix
        else:
            params[name] = value
    return json.loads(canonical_json(params)), arrays
