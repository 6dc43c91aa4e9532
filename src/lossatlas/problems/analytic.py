"""Analytic test landscapes with known critical points (the ground truth for topology tests).

Each builder returns a FunctionSubject whose ``critical_points`` maps "minima", "saddles" and
"maxima" to lists of (point, value), computed from closed forms (three-hump camel, quartic)
or polished to machine precision by Newton's method on the exact gradient (Himmelblau).
"""
from __future__ import annotations

import numpy as np
import torch

from ..subjects import FunctionSubject


def himmelblau_fn(theta: torch.Tensor) -> torch.Tensor:
    x, y = theta[0], theta[1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def three_hump_camel_fn(theta: torch.Tensor) -> torch.Tensor:
    x, y = theta[0], theta[1]
    return 2 * x**2 - 1.05 * x**4 + x**6 / 6 + x * y + y**2


def quartic_fn(theta: torch.Tensor) -> torch.Tensor:
    """A tilted double well (x^2 - 1)^2 + 0.25 x: one global and one local minimum."""
    x = theta[0]
    return (x**2 - 1) ** 2 + 0.25 * x


def himmelblau() -> FunctionSubject:
    """Four minima of value 0, four saddles, one maximum (Himmelblau 1972)."""
    rough = {
        "minima": [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)],
        "saddles": [(0.086678, 2.884255), (-3.073026, -0.081353), (-0.127961, -1.953715), (3.385154, 0.073852)],
        "maxima": [(-0.270845, -0.923039)],
    }
    points = {kind: [_newton(himmelblau_fn, p) for p in pts] for kind, pts in rough.items()}
    return _subject(himmelblau_fn, [0.0, 0.0], "himmelblau", 3.0, points)


def three_hump_camel() -> FunctionSubject:
    """Critical points lie on y = -x/2 with x^4 - 4.2 x^2 + 3.5 = 0 (or x = 0)."""
    roots = np.sqrt(np.roots([1.0, -4.2, 3.5]).real)  # x^2 = 2.1 ± sqrt(0.91)
    outer, inner = max(roots), min(roots)
    points = {
        "minima": [(0.0, 0.0), (outer, -outer / 2), (-outer, outer / 2)],
        "saddles": [(inner, -inner / 2), (-inner, inner / 2)],
        "maxima": [],
    }
    return _subject(three_hump_camel_fn, [0.0, 0.0], "three_hump_camel", 1.5, points)


def quartic() -> FunctionSubject:
    """Critical points are the real roots of 4x^3 - 4x + 0.25 = 0."""
    roots = np.sort(np.roots([4.0, 0.0, -4.0, 0.25]).real)
    points = {"minima": [(roots[0],), (roots[2],)], "saddles": [], "maxima": [(roots[1],)]}
    return _subject(quartic_fn, [0.0], "quartic", 1.0, points)


def _subject(fn, theta0, name, init_scale, points) -> FunctionSubject:
    table = {
        kind: [(np.array(p, dtype=float), float(fn(torch.tensor(p, dtype=torch.float64)))) for p in pts]
        for kind, pts in points.items()
    }
    theta0 = torch.tensor(theta0, dtype=torch.float64)
    return FunctionSubject(fn, theta0, name=name, init_scale=init_scale, critical_points=table)


def _newton(fn, point, steps: int = 50) -> tuple[float, ...]:
    theta = torch.tensor(point, dtype=torch.float64)
    for _ in range(steps):
        grad = torch.func.grad(fn)(theta)
        hess = torch.func.hessian(fn)(theta)
        theta = theta - torch.linalg.solve(hess, grad)
    return tuple(theta.tolist())
