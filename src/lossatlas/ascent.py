"""Auto-PGD (Croce & Hein 2020): the maximization behind every worst-case sharpness.

A pure function of an objective ``u -> (value, gradient)`` on the unit ball of the l2 or l_inf
norm (callers scale their neighbourhood to it: d = s * u). Auto-PGD as Andriushchenko et al.
2023 use it for sharpness: initial step 2 (twice the radius), momentum alpha = 0.75, the step
halved at the checkpoints w_j = p_j N (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
0.06)) when fewer than 75 % of the steps since the last checkpoint raised the value, or
when neither the step nor the best value changed since then; a halving restarts from the best
point. The best value any iterate reached is returned: a lower bound of the maximum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

NORMS = ("l2", "linf")
MOMENTUM = 0.75  # Croce & Hein's alpha: the weight of the new step
PROGRESS = 0.75  # Croce & Hein's rho: the share of improving steps a checkpoint asks for


@dataclass
class Ascent:
    best: float  # the largest value reached (inf if a non-finite value was met: the maximum is unbounded)
    point: torch.Tensor  # where (scaled coordinates)
    curve: list[float]  # the best value so far after each evaluation (steps + 1 entries unless stopped early: at a
    # fixed point, where every later step would evaluate the same point, or at a non-finite value)
    evaluations: int  # objective (value and gradient) evaluations


def checkpoints(steps: int) -> set[int]:
    """Croce & Hein 2020's checkpoints in whole steps, as their reference implementation counts
    them: a first stretch of 0.22 N steps, each next one 0.03 N shorter, none under 0.06 N
    (N = 100: 22, 41, 57, 70, 80, 87, 93, 99)."""
    stretch, shrink, floor = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    found, at = set(), stretch
    while at <= steps:
        found.add(at)
        stretch = max(stretch - shrink, floor)
        at += stretch
    return found


def project(u: torch.Tensor, norm: str) -> torch.Tensor:
    return u / max(1.0, float(u.norm())) if norm == "l2" else u.clamp(-1.0, 1.0)


def _direction(gradient: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.sign(gradient)
    size = gradient.norm()
    return gradient / size if size > 0 else torch.zeros_like(gradient)


def random_start(dim: int, norm: str, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A uniform point of the unit ball (l2) or box (l_inf)."""
    if norm == "l2":
        u = torch.randn(dim, generator=generator, dtype=dtype)
        return u / u.norm() * torch.rand(1, generator=generator, dtype=dtype) ** (1 / dim)
    return 2 * torch.rand(dim, generator=generator, dtype=dtype) - 1


def apgd(objective: Callable[[torch.Tensor], tuple[float, torch.Tensor]], start: torch.Tensor, norm: str,
         steps: int) -> Ascent:
    """Maximize ``objective`` over the unit ``norm`` ball from ``start`` with ``steps`` Auto-PGD
    steps (at most ``steps + 1`` evaluations). Stops at a non-finite value (the maximum is then
    reported as inf) and when the best point is a fixed point of the iteration (a KKT point where
    the projected step does not move, e.g. a vertex of the box whose signs are the gradient's:
    every later step would evaluate it again); a fixed point below the best restarts from the best
    point at once, with half the step, as the next checkpoint would."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}.")
    marks = checkpoints(steps)
    eta = 2.0
    x = project(start, norm)
    value, gradient = objective(x)
    curve, evaluations = [value], 1
    best, best_x, best_gradient = value, x, gradient
    previous = x
    raised, mark_best, last_mark, halved_last = 0, best, 0, True  # no stall test before a first stretch
    for k in range(steps):
        if not math.isfinite(value):
            break
        z = project(x + eta * _direction(gradient, norm), norm)
        new = z if k == 0 else project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - previous), norm)
        if torch.equal(new, x) and torch.equal(x, previous):
            if value >= best:
                break  # the best point is a fixed point of the iteration for every later step size
            eta /= 2  # stuck below the best point: restart from it now, as the next checkpoint would
            x, previous, gradient, value = best_x, best_x, best_gradient, best
            continue
        new_value, new_gradient = objective(new)
        evaluations += 1
        raised += new_value > value
        previous, x, value, gradient = x, new, new_value, new_gradient
        if value > best or not math.isfinite(value):
            best, best_x, best_gradient = value, x, gradient
        curve.append(best)
        if k + 1 in marks:
            stalled = raised < PROGRESS * (k + 1 - last_mark) or (not halved_last and best <= mark_best)
            mark_best, last_mark, raised, halved_last = best, k + 1, 0, stalled
            if stalled:
                eta /= 2
                x, previous, gradient = best_x, best_x, best_gradient
                value = best
    best = best if math.isfinite(best) else math.inf
    return Ascent(best, best_x, [v if math.isfinite(v) else math.inf for v in curve], evaluations)
