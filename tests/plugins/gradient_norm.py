"""An example analyzer: a complete new landscape metric in one module.

The gradient at a trained minimum should vanish; its norm (overall and per parameter) is a
first-order check that a "minimum" is one. Everything lossatlas needs is declared here: the
parameters with their constraints, the scope (one result per minimum), the sample it needs (the
point to look at), the metrics' meaning, and a view that reports draw. To ship it, add one line
to your package's pyproject.toml:

    [project.entry-points."lossatlas.methods"]
    gradient-norm = "yourpackage.gradient_norm:GradientNorm"
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import Analyzer, diagnostic, measure, view
from lossatlas.params import Interval, param, same_as
from lossatlas.plots import metric, no_data
from lossatlas.samplers import Point


def draw_gradient(ax, result) -> None:
    """|gradient| per parameter, largest first, on a log axis (a diverged run's NaN left out)."""
    ax.set(xlabel="parameter (by |gradient|)", ylabel="|gradient|",
           title=f"gradient norm {metric(result, 'gradient_norm'):.3g}")
    values = np.abs(np.asarray(result.arrays.get("gradient", []), dtype=float))
    values = np.sort(values[np.isfinite(values)])[::-1]
    if not len(values):
        no_data(ax)  # a view never fails on NaN or empty arrays: it says that there is nothing to draw
        return
    ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-300), marker=".")


class GradientNorm(Analyzer):
    name = "gradient-norm"
    description = "Loss and gradient norm at a minimum (a first-order check that it is one)."
    scope = "minimum"
    metrics = {
        "gradient_norm": measure("Euclidean norm of the full-batch gradient", higher_is_better=False),
        "gradient_max": measure("largest |gradient| entry", higher_is_better=False),
        "loss": diagnostic("loss at the point"),
    }
    views = {"gradient": view(draw_gradient)}  # view(draw, projection=..., shared=..., limits_of=...)
    smoke_params = {"at": "theta0"}

    at: str = same_as(Point, "at")  # where to look: a stored minimum or theta0
    minimum: int = same_as(Point, "minimum")
    scale: float = param(1.0, Interval(float, 0, None, closed="neither"), "multiplies the reported norms")

    def requests(self, subject):
        return {"point": Point(at=self.at, minimum=self.minimum)}

    def compute(self, subject, samples):
        theta, buffers = samples["point"]["theta"], samples["point"]["buffers"]
        gradient = subject.grad(theta, buffers).cpu().numpy() * self.scale
        metrics = {"gradient_norm": float(np.linalg.norm(gradient)), "gradient_max": float(np.abs(gradient).max()),
                   "loss": subject.loss(theta, buffers)}
        return metrics, {"gradient": gradient}
