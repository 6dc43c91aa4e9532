"""The 1-D convection PINN of Krishnapriyan et al. 2021, as used by seed 001.

    u_t + beta u_x = 0,  x in [0, 2 pi], t in [0, 1],  u(x, 0) = sin x,  u(0, t) = u(2 pi, t).

Loss (reference code a1k12/characterizing-pinns-failure-modes): initial-condition MSE on
x = linspace(0, 2 pi, 256, endpoint=False), periodic-boundary MSE on t = linspace(0, 1, 100),
and the mean squared PDE residual on ``n_f`` collocation points drawn (fixed seed, without
replacement) from the interior of that 256 x 100 grid. Test error: relative L2 error against
sin(x - beta t) on the full grid. Input derivatives use forward-mode AD (torch.func.jvp), so
the loss can be vmapped over parameter vectors and differentiated with respect to them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import jvp

from ..subjects import ModuleSubject

N_X, N_T = 256, 100


def convection_mlp(hidden: int = 50, layers: int = 4) -> nn.Sequential:
    """(x, t) -> u: ``layers`` hidden layers of ``hidden`` tanh units."""
    modules, width = [], 2
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    modules.append(nn.Linear(width, 1))
    return nn.Sequential(*modules).double()


class ConvectionPINN(ModuleSubject):
    """A ModuleSubject whose loss is the PINN objective; ``evaluate`` adds ``relative_l2_error``."""

    def __init__(self, beta: float, n_f: int = 1000, collocation_seed: int = 0, hidden: int = 50,
                 layers: int = 4, name: str | None = None):
        x = np.linspace(0, 2 * np.pi, N_X, endpoint=False)
        t = np.linspace(0, 1, N_T)
        interior = np.stack(np.meshgrid(x[1:], t[1:]), axis=-1).reshape(-1, 2)  # columns (x, t)
        if not 1 <= n_f <= len(interior):
            raise ValueError(f"n_f must be in [1, {len(interior)}]; got {n_f}.")
        index = np.random.RandomState(collocation_seed).choice(len(interior), n_f, replace=False)
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        collocation = as_tensor(interior[index])
        self.initial = as_tensor(np.stack([x, np.zeros_like(x)], axis=1))
        self.initial_u = torch.sin(self.initial[:, 0:1])
        self.left = as_tensor(np.stack([np.zeros_like(t), t], axis=1))
        self.right = as_tensor(np.stack([np.full_like(t, 2 * np.pi), t], axis=1))
        grid = np.stack(np.meshgrid(x, t), axis=-1).reshape(-1, 2)
        self.grid = as_tensor(grid)
        self.beta = float(beta)
        self.exact = torch.sin(self.grid[:, 0:1] - self.beta * self.grid[:, 1:2])
        config = {"problem": "pinn_convection", "beta": self.beta, "n_f": n_f,
                  "collocation_seed": collocation_seed, "hidden": hidden, "layers": layers}
        super().__init__(
            convection_mlp(hidden, layers), nn.MSELoss(), (collocation, torch.zeros(n_f, 1, dtype=torch.float64)),
            name=name or f"pinn_convection_beta{beta:g}", eval_batch_size=n_f, config=config,
        )

    def residual(self, theta, points: torch.Tensor) -> torch.Tensor:
        """u_t + beta u_x at ``points`` (forward-mode derivatives along t and x)."""
        u = lambda z: self._forward(theta, self.buffers0, z)  # noqa: E731
        _, u_x = jvp(u, (points,), (torch.tensor([1.0, 0.0], dtype=points.dtype).expand_as(points),))
        _, u_t = jvp(u, (points,), (torch.tensor([0.0, 1.0], dtype=points.dtype).expand_as(points),))
        return u_t + self.beta * u_x

    def _batch_loss(self, theta, buffers, batch):
        collocation, _ = batch
        u0 = self._forward(theta, buffers, self.initial)
        boundary = self._forward(theta, buffers, self.left) - self._forward(theta, buffers, self.right)
        pde = self.residual(theta, collocation)
        return ((u0 - self.initial_u) ** 2).mean() + (boundary**2).mean() + (pde**2).mean()

    def relative_l2_error(self, theta) -> float:
        with torch.no_grad():
            u = self._forward(self._as_theta(theta), self.buffers0, self.grid)
        return float(torch.linalg.norm(u - self.exact) / torch.linalg.norm(self.exact))

    @property
    def splits(self):
        return ("eval", "test")

    def evaluate(self, theta, buffers=None, split="eval"):
        if split == "test":
            return {"relative_l2_error": self.relative_l2_error(theta)}
        metrics = super().evaluate(theta, buffers, split)
        metrics["relative_l2_error"] = self.relative_l2_error(theta)
        return metrics


def pinn_convection(beta: float, n_f: int = 1000, collocation_seed: int = 0, hidden: int = 50,
                    layers: int = 4, name: str | None = None) -> ConvectionPINN:
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite; got {beta}.")
    with torch.random.fork_rng(devices=[]):  # theta0 (the "theta0" grid center) is the same every build
        torch.manual_seed(0)
        return ConvectionPINN(beta, n_f, collocation_seed, hidden, layers, name)
