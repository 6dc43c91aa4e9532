"""Declared parameter constraints, checked before any work (scikit-learn's convention).

One message format everywhere:
    The 'k' parameter of Hessian must be an int in [1, inf). Got 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from .errors import ConfigError


@dataclass(frozen=True)
class Interval:
    """An int or float in [low, high] (None = unbounded)."""

    kind: type
    low: float | None = None
    high: float | None = None
    allow_none: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, Integral):
            return False
        if not isinstance(value, Real) or not math.isfinite(value):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        left, right = ("(" if self.low is None else "["), (")" if self.high is None else "]")
        text = f"{'an int' if self.kind is int else 'a float'} in {left}{low}, {high}{right}"
        return text + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def accepts(self, value) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def __str__(self) -> str:
        return f"one of {list(self.values)}"


@dataclass(frozen=True)
class Boolean:
    def accepts(self, value) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "a bool"


@dataclass(frozen=True)
class NumberList:
    """A non-empty list whose every entry satisfies ``each`` (an Interval)."""

    each: Interval

    def accepts(self, value) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(self.each.accepts(v) for v in value)

    def __str__(self) -> str:
        return f"a non-empty list, each {self.each}"


def validate(owner: str, params: dict, constraints: dict) -> None:
    """Raise ConfigError for the first parameter that violates its constraint."""
    for name, constraint in constraints.items():
        if name in params and not constraint.accepts(params[name]):
            raise ConfigError(
                f"The {name!r} parameter of {owner} must be {constraint}. Got {params[name]!r}."
            )


def check_known(owner: str, given, valid) -> None:
    """Unknown names are an error that names them and lists the valid ones."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"Unknown parameter(s) {unknown} for {owner}; valid parameters: {sorted(valid)}.")
