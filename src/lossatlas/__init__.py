"""lossatlas: compare loss-landscape analysis methods on one shared HDF5 store.

    import lossatlas
    subject = lossatlas.problems.himmelblau()
    with lossatlas.Store("study.h5") as store:
        result = lossatlas.analyze(store, subject, "hessian")

Names are imported lazily so ``import lossatlas`` stays light (no torch, phate or gudhi).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Store": "lossatlas.store",
    "Result": "lossatlas.store",
    "Minimum": "lossatlas.store",
    "FunctionSubject": "lossatlas.subjects",
    "ModuleSubject": "lossatlas.subjects",
    "Subject": "lossatlas.subjects",
    "Recipe": "lossatlas.training",
    "Analyzer": "lossatlas.analyzer",
    "analyze": "lossatlas.analysis",
    "train_minima": "lossatlas.samplers",
    "add_minimum": "lossatlas.samplers",
    "obtain": "lossatlas.sampling",
    "Sample": "lossatlas.sampling",
    "Metric": "lossatlas.analyzer",
    "LossatlasError": "lossatlas.errors",
    "StoreError": "lossatlas.errors",
    "ConfigError": "lossatlas.errors",
    "DataError": "lossatlas.errors",
    "NonFiniteLossError": "lossatlas.errors",
}
_SUBMODULES = {"problems", "methods", "registry", "testing", "samplers", "sampling", "store", "subjects", "topology",
               "hessian", "directions", "params", "analyzer", "analysis", "executor", "harness", "report", "plots",
               "devices", "batched", "inputs", "memory", "evaluation", "batchnorm", "point_analyzer", "record",
               "config", "stats", "export", "surfaces"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"lossatlas.{name}")
    raise AttributeError(f"module 'lossatlas' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = sorted(_LAZY)
