"""The ``sharpness`` analyzer: the worst loss increase in a neighbourhood of a minimum.

Three neighbourhoods, each searched by projected gradient ascent from seeded random starts
(``restarts`` of ``steps`` steps; the best point any of them reaches counts):

* ``epsilon_sharpness`` (Keskar et al. 2017): the box |d_i| <= epsilon (|w_i| + 1), reported as
  Keskar's 100 x (max L(w + d) - L(w)) / (1 + L(w));
* ``adaptive_sharpness_l2`` / ``_linf`` (Kwon et al. 2021, as Andriushchenko et al. 2023 study
  it): max L(w + d) - L(w) over ||d / |w| || <= rho in the l2 / l_inf norm, elementwise |w|
  scaling, so the measure does not change when a ReLU network's layers are rescaled.

Ascent runs in the scaled coordinates u = d / s (s = the box half-widths or rho |w|): sign steps
for the box and l_inf (u clipped to [-1, 1]), normalized gradient steps for l2 (u projected onto
the unit ball), step size ``step_scale / steps`` (Madry et al. 2018's 2.5 / steps). The loss and its
gradient are the subject's, on its full evaluation set, with the point's own buffers (a BatchNorm
model keeps its stored running statistics). Ascent finds a lower bound of the maximum; the tests
check it reaches the closed form on quadratics.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lossatlas.analyzer import Analyzer, diagnostic, measure
from lossatlas.params import Interval, param, same_as
from lossatlas.plots import draw_ascent
from lossatlas.samplers import Point, finite_loss

NEIGHBOURHOODS = ("epsilon", "adaptive_l2", "adaptive_linf")


class Sharpness(Analyzer):
    name = "sharpness"
    description = ("Worst-case loss increase near a minimum by projected gradient ascent: epsilon-sharpness "
                   "(Keskar et al. 2017) and adaptive sharpness in l2 and l_inf (Kwon et al. 2021).")
    scope = "minimum"
    metrics = {
        "epsilon_sharpness": measure("Keskar et al. 2017: 100 (max L(w+d) - L(w)) / (1 + L(w)) over the box "
                                     "|d_i| <= epsilon (|w_i| + 1)", higher_is_better=False),
        "adaptive_sharpness_l2": measure("Kwon et al. 2021: max L(w+d) - L(w) over ||d / |w| ||_2 <= rho_l2",
                                         higher_is_better=False),
        "adaptive_sharpness_linf": measure("Kwon et al. 2021: max L(w+d) - L(w) over ||d / |w| ||_inf <= rho_linf",
                                           higher_is_better=False),
        "loss": diagnostic("loss at the point (full evaluation set)"),
        "gradient_evaluations": diagnostic("gradients of the full-data loss computed by the ascent"),
    }
    views = {"ascent": draw_ascent}
    smoke_params = {"at": "theta0", "steps": 5, "epsilon": 0.05, "rho_l2": 0.05, "rho_linf": 0.05}

    at: str = same_as(Point, "at")
    minimum: int = same_as(Point, "minimum")
    epsilon: float = param(1e-3, Interval(float, 0, None, closed="neither"), "Keskar et al. 2017's box size")
    rho_l2: float = param(0.5, Interval(float, 0, None, closed="neither"), "adaptive l2 radius (Kwon et al. 2021's)")
    rho_linf: float = param(1e-3, Interval(float, 0, None, closed="neither"), "adaptive l_inf radius")
    steps: int = param(20, Interval(int, 1), "ascent steps per start")
    restarts: int = param(1, Interval(int, 1), "seeded random starts per neighbourhood")
    step_scale: float = param(2.5, Interval(float, 0, None, closed="neither"), "step size x steps, in scaled units")
    seed: int = param(0, Interval(int, 0))

    def requests(self, subject):
        return {"point": Point(at=self.at, minimum=self.minimum)}

    def compute(self, subject, samples):
        theta = subject.as_theta(samples["point"]["theta"])
        buffers = subject.buffers_at(theta, samples["point"]["buffers"])
        base = finite_loss(subject, theta, buffers, self.at, self.minimum, "the sharpness")
        generator = torch.Generator().manual_seed(self.seed)
        scales = {"epsilon": self.epsilon * (theta.abs() + 1), "adaptive_l2": self.rho_l2 * theta.abs(),
                  "adaptive_linf": self.rho_linf * theta.abs()}
        metrics, arrays, gradients = {"loss": base}, {}, 0
        for name in NEIGHBOURHOODS:
            curves = []
            for _ in range(self.restarts):
                curve, used = self._ascend(subject, theta, buffers, scales[name], name.endswith("l2"), generator)
                curves.append(np.asarray(curve) - base)
                gradients += used
            ascent = np.array([np.pad(c, (0, self.steps + 1 - len(c)), constant_values=np.nan) for c in curves])
            arrays[f"{name}_ascent"] = ascent
            metrics[name] = max(0.0, float(np.nanmax(ascent)))  # d = 0 is in every neighbourhood
        metrics["epsilon_sharpness"] = 100 * metrics.pop("epsilon") / (1 + base)
        metrics["adaptive_sharpness_l2"] = metrics.pop("adaptive_l2")
        metrics["adaptive_sharpness_linf"] = metrics.pop("adaptive_linf")
        metrics["gradient_evaluations"] = float(gradients)
        return metrics, arrays

    def _ascend(self, subject, theta, buffers, scale, l2: bool, generator) -> tuple[list[float], int]:
        """Losses at the start and after each step (stops at a non-finite loss: the worst case is
        then unbounded, and the ascent says so with inf), and the gradients used."""
        dim = theta.numel()
        if l2:
            u = torch.randn(dim, generator=generator, dtype=torch.float64)
            u = u / u.norm() * torch.rand(1, generator=generator, dtype=torch.float64) ** (1 / dim)
        else:
            u = 2 * torch.rand(dim, generator=generator, dtype=torch.float64) - 1
        u = u.to(theta)
        step = self.step_scale / self.steps
        losses, used = [subject.loss(theta + scale * u, buffers)], 0
        for _ in range(self.steps):
            if not math.isfinite(losses[-1]):
                break
            g = scale * subject.grad(theta + scale * u, buffers)
            used += 1
            if l2:
                norm = g.norm()
                u = u + step * g / norm if norm > 0 else u
                u = u / max(1.0, float(u.norm()))
            else:
                u = (u + step * torch.sign(g)).clamp(-1.0, 1.0)
            losses.append(subject.loss(theta + scale * u, buffers))
        return [value if math.isfinite(value) else math.inf for value in losses], used
