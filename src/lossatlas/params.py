"""One validation system: declared constraints, checked before any work (scikit-learn's convention).

Analyzer parameters, sample requests, training recipes, problem parameters and benchmark
configs are all checked here, with one message format:

    The 'k' parameter of Hessian must be an int in [1, inf). Got 0.

A parameter is declared once, as a dataclass field carrying its default and its constraint
(``param(2, Interval(int, 1))``); ``validate_fields`` checks every field of an instance.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .errors import ConfigError

_CLOSED = ("both", "left", "right", "neither")


@dataclass(frozen=True)
class Interval:
    """An int or float between ``low`` and ``high`` (None = unbounded); ``closed`` says which
    bounds belong to the interval ("both", "left", "right", "neither"), as in scikit-learn."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    allow_none: bool = False

    def __post_init__(self):
        if self.closed not in _CLOSED:
            raise ValueError(f"closed must be one of {_CLOSED}; got {self.closed!r}.")

    def accepts(self, value) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, Integral):
            return False
        if not isinstance(value, Real) or not math.isfinite(value):
            return False
        left_closed, right_closed = self.closed in ("both", "left"), self.closed in ("both", "right")
        above = self.low is None or (value >= self.low if left_closed else value > self.low)
        below = self.high is None or (value <= self.high if right_closed else value < self.high)
        return above and below

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        left = "[" if self.low is not None and self.closed in ("both", "left") else "("
        right = "]" if self.high is not None and self.closed in ("both", "right") else ")"
        text = f"{'an int' if self.kind is int else 'a float'} in {left}{low}, {high}{right}"
        return text + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple
    allow_none: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.allow_none
        return any(value == v and type(value) is type(v) for v in self.values)

    def __str__(self) -> str:
        return f"one of {list(self.values)}" + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Boolean:
    def accepts(self, value) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "a bool"


@dataclass(frozen=True)
class NumberList:
    """A list whose every entry satisfies ``each`` (an Interval); non-empty unless ``min_len=0``;
    ``unique``: no entry twice; ``allow_none``: None is accepted instead of a list."""

    each: Interval
    min_len: int = 1
    unique: bool = False
    allow_none: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.allow_none
        return (isinstance(value, (list, tuple)) and len(value) >= self.min_len
                and all(self.each.accepts(v) for v in value) and (not self.unique or len(set(value)) == len(value)))

    def __str__(self) -> str:
        size = "a non-empty list" if self.min_len >= 1 else "a list"
        text = f"{size}{' of distinct values' if self.unique else ''}, each {self.each}"
        return text + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Instance:
    """An object of a given class (a sample request, a training recipe)."""

    kind: type
    allow_none: bool = False

    def accepts(self, value) -> bool:
        return (value is None and self.allow_none) or isinstance(value, self.kind)

    def __str__(self) -> str:
        return f"a {self.kind.__name__}" + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Vectors:
    """A list of number vectors (parameter vectors, (low, high) bounds), each entry a list of
    finite numbers; None when ``allow_none``. Shapes that depend on the subject are checked
    against it when the work starts."""

    allow_none: bool = True

    def accepts(self, value) -> bool:
        if value is None:
            return self.allow_none
        try:
            array = as_matrix(value)
        except (TypeError, ValueError):
            return False
        return array.ndim == 2 and array.size > 0 and bool(np.all(np.isfinite(array)))

    def __str__(self) -> str:
        return ("a list of equal-length vectors (lists, numpy arrays or torch tensors) of finite numbers, or a 2-D "
                "array" + (" or None" if self.allow_none else ""))


def as_matrix(value) -> np.ndarray:
    """Rows of numbers as a float64 matrix: a 2-D numpy array or torch tensor, or a list/tuple of
    1-D vectors (lists, arrays, tensors)."""
    def plain(v):
        return v.detach().cpu().double().numpy() if hasattr(v, "detach") else v

    if isinstance(value, (list, tuple)):
        rows = [np.asarray(plain(row), dtype=float) for row in value]
        if not rows or any(row.ndim != 1 for row in rows) or len({row.size for row in rows}) != 1:
            raise ValueError("not equal-length vectors")
        return np.stack(rows)
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        return np.asarray(plain(value), dtype=float)
    raise TypeError(f"not vectors: {type(value).__name__}")


def param(default, constraint, doc: str = ""):
    """A declared parameter: its default and its constraint, in one place (a dataclass field)."""
    if isinstance(default, list):
        default = tuple(default)  # dataclasses refuse mutable defaults; configs give lists, both are accepted
    return dataclasses.field(default=default, metadata={"constraint": constraint, "doc": doc})


def same_as(owner, name: str):
    """A parameter declared exactly as field ``name`` of ``owner`` (a sample request): an analyzer
    that passes a setting through to the sampler using it declares it once, there."""
    declared = {f.name: f for f in dataclasses.fields(owner)}[name]
    return dataclasses.field(default=declared.default, metadata=declared.metadata)


def constraints_of(cls) -> dict:
    """name -> constraint of every declared field of a dataclass (class or instance)."""
    return {f.name: f.metadata["constraint"] for f in dataclasses.fields(cls) if "constraint" in f.metadata}


def validate(owner: str, params: dict, constraints: dict) -> None:
    """Raise ConfigError for the first parameter that violates its constraint."""
    for name, constraint in constraints.items():
        if name in params and not constraint.accepts(params[name]):
            raise ConfigError(
                f"The {name!r} parameter of {owner} must be {constraint}. Got {params[name]!r}."
            )


def validate_fields(instance, owner: str | None = None) -> None:
    """Check every declared field of a (frozen) dataclass instance against its constraint; an int
    given for a float becomes that float, so ``span = 1`` and ``span = 1.0`` are one setting (one
    store key)."""
    values = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    constraints = constraints_of(instance)
    validate(owner or type(instance).__name__, values, constraints)
    for name, constraint in constraints.items():
        value = as_declared(values[name], constraint)
        if value is not values[name]:
            object.__setattr__(instance, name, value)


def as_declared(value, constraint):
    """``value`` (already accepted by ``constraint``) with ints made floats where floats are declared."""
    if isinstance(constraint, Interval) and constraint.kind is float and isinstance(value, Integral):
        return float(value)
    if isinstance(constraint, NumberList) and constraint.each.kind is float and isinstance(value, (list, tuple)):
        return type(value)(float(v) for v in value)
    if isinstance(constraint, Vectors) and value is not None:
        return tuple(tuple(row) for row in as_matrix(value).tolist())  # tensors and arrays as plain numbers
    return value


def check_known(owner: str, given, valid, what: str = "parameter") -> None:
    """Unknown names (parameters, config keys, scales) are an error that names them and lists
    the valid ones."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"Unknown {what}(s) {unknown} for {owner}; valid {what}s: {sorted(valid)}.")


def check_table(owner: str, value, what: str = "a table") -> dict:
    """A config value that must be a table (a dict)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{owner} must be {what}; got {type(value).__name__}.")
    return value


def from_annotation(annotation) -> object | None:
    """A constraint from a builder's type annotation (``int``, ``float | None``, ``str``...), for
    problem parameters that are declared by a function signature; None if not checkable."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = [k.strip() for k in str(text).split("|")]
    allow_none = "None" in kinds
    kinds = [k for k in kinds if k in _KINDS]
    if len(kinds) != 1:
        return None
    return _KINDS[kinds[0]](allow_none)


@dataclass(frozen=True)
class OfType:
    """A value of a plain type (str, bool, dict), optionally None."""

    kind: type
    allow_none: bool = False

    def accepts(self, value) -> bool:
        return (value is None and self.allow_none) or type(value) is self.kind

    def __str__(self) -> str:
        name = {bool: "a bool", str: "a string", dict: "a table"}.get(self.kind, f"a {self.kind.__name__}")
        return name + (" or None" if self.allow_none else "")


_KINDS = {
    "int": lambda none: Interval(int, allow_none=none),
    "float": lambda none: Interval(float, allow_none=none),
    "bool": lambda none: OfType(bool, none),
    "str": lambda none: OfType(str, none),
}


# -- config tables declared like analyzers -------------------------------------------------------
@dataclass(frozen=True)
class Array:
    """A config array (a list) whose entries are read by their own declaration, e.g. the tables of
    ``[[report.claims]]``; ``of`` says what they are."""

    of: str = "values"

    def accepts(self, value) -> bool:
        return isinstance(value, (list, tuple))

    def __str__(self) -> str:
        return f"an array of {self.of}"


def required(constraint, doc: str = ""):
    """A declared config key without a default: it must be given."""
    return dataclasses.field(metadata={"constraint": constraint, "doc": doc})


def table(doc: str = ""):
    """A declared config key holding a table (a dict), empty unless given."""
    return dataclasses.field(default_factory=dict, metadata={"constraint": OfType(dict), "doc": doc})


def from_table(cls, values: dict, owner: str, what: str = "key", needs: str = "{owner} needs {name!r}."):
    """The declared dataclass ``cls`` (fields made with ``param``, ``required``, ``table``) from a
    config table, checked before any work as analyzer parameters are: unknown names (listing the
    valid ones), missing required ones (``needs`` says so), then every given value against its
    constraint; an int given for a float becomes that float."""
    declared = {f.name: f for f in dataclasses.fields(cls)}
    check_known(owner, values, declared, what)
    for name, f in declared.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(needs.format(owner=owner, name=name))
    constraints = constraints_of(cls)
    validate(owner, values, constraints)
    return cls(**{name: as_declared(value, constraints[name]) if name in constraints else value
                  for name, value in values.items()})
