"""The 1-D convection PINN of Krishnapriyan et al. 2021, as used by Xie, Geniesse et al. 2024.

    u_t + beta u_x = 0,  x in [0, 2 pi], t in [0, 1],  u(x, 0) = sin x,  u(0, t) = u(2 pi, t).

Loss (reference code a1k12/characterizing-pinns-failure-modes): initial-condition MSE on
x = linspace(0, 2 pi, 256, endpoint=False), periodic-boundary MSE on t = linspace(0, 1, 100),
and the mean squared PDE residual on ``n_f`` collocation points drawn (fixed seed, without
replacement) from the interior of that 256 x 100 grid. Test error: relative L2 error against
sin(x - beta t) on the full grid. Input derivatives use forward-mode AD (torch.func.jvp), so
the loss can be differentiated with respect to the parameters. Many parameter vectors at once
(``losses``, grids, paths) go through ``batched_loss``, the same loss batched by hand.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import jvp

from ..errors import ConfigError
from ..subjects import ModuleSubject

N_X, N_T = 256, 100
CHUNK_SIZE = 4  # parameter vectors per batched_loss call: 4-6 measured fastest on 2 CPU cores (benchmarks/perf)


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
                 layers: int = 4, name: str | None = None, device: str = "auto"):
        x = np.linspace(0, 2 * np.pi, N_X, endpoint=False)
        t = np.linspace(0, 1, N_T)
        interior = np.stack(np.meshgrid(x[1:], t[1:]), axis=-1).reshape(-1, 2)  # columns (x, t)
        if not 1 <= n_f <= len(interior):
            raise ConfigError(f"n_f must be in [1, {len(interior)}]; got {n_f}.")
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
            name=name or f"pinn_convection_beta{beta:g}", eval_batch_size=n_f, config=config, chunk_size=CHUNK_SIZE,
            device="cpu",  # built on the CPU, then moved whole with the constants below
        )
        # batched_loss: the points as columns, collocation first, then initial, left, right boundary
        self._columns = torch.cat([collocation, self.initial, self.left, self.right]).T.contiguous()
        self._linear = _tanh_mlp_layout(self.model, self.param_layout)
        self._bias_row = torch.cat([torch.ones(self._columns.shape[1]), torch.zeros(n_f)]).double()
        self._direction = torch.tensor([2 * self.beta, 2.0], dtype=torch.float64)
        self._initial_row = self.initial_u[:, 0]
        counts = (len(self.initial), len(self.left), n_f)
        self._mean_weights = torch.cat([torch.full((n,), 1.0 / n, dtype=torch.float64) for n in counts])
        self.to(device)

    def residual(self, theta, points: torch.Tensor) -> torch.Tensor:
        """u_t + beta u_x at ``points`` (forward-mode derivatives along t and x)."""
        u = lambda z: self._forward(theta, self.buffers0, z)  # noqa: E731
        along = lambda x, t: torch.tensor([x, t], dtype=points.dtype, device=points.device).expand_as(points)  # noqa
        _, u_x = jvp(u, (points,), (along(1.0, 0.0),))
        _, u_t = jvp(u, (points,), (along(0.0, 1.0),))
        return u_t + self.beta * u_x

    def _batch_loss(self, theta, buffers, batch):
        collocation, _ = batch
        u0 = self._forward(theta, buffers, self.initial)
        boundary = self._forward(theta, buffers, self.left) - self._forward(theta, buffers, self.right)
        pde = self.residual(theta, collocation)
        return ((u0 - self.initial_u) ** 2).mean() + (boundary**2).mean() + (pde**2).mean()

    def batched_train_loss(self, thetas: torch.Tensor, buffers: torch.Tensor, batches) -> torch.Tensor | None:
        """The training loss of each row of ``thetas`` (K, dim) on its own batch of collocation
        points (K, n, 2), differentiable, for ``lossatlas.batched.train_many``: the loss of
        ``train_loss`` written as batched matrix products, the residual u_t + beta u_x carried as
        the derivative along (beta, 1) next to the forward pass (vmap over the jvp-based residual
        measured ~6x slower per run on 2 CPU cores). None for networks other than the tanh MLP."""
        if self._linear is None:
            return None
        collocation = batches[0]
        count, n = len(thetas), collocation.shape[1]
        pieces = torch.split(thetas, self._linear.sizes, dim=1)
        weights = [pieces[i].reshape(count, *shape).transpose(1, 2) for i, shape in self._linear.weights]
        biases = [pieces[i].unsqueeze(1) for i in self._linear.biases]
        shared = torch.cat([self.initial, self.left, self.right])
        h = torch.cat([shared.expand(count, -1, -1), collocation], dim=1)  # (K, points, 2)
        dz = (self._direction / 2 @ weights[0]).unsqueeze(1)  # the first layer's derivative along (beta, 1)
        for layer in range(len(weights) - 1):
            h = torch.tanh(torch.baddbmm(biases[layer], h, weights[layer]))
            dh = (1 - h[:, -n:] ** 2) * dz  # derivative of the collocation points' units
            if layer + 2 < len(weights):
                dz = torch.bmm(dh, weights[layer + 1])
        u = torch.baddbmm(biases[-1], h, weights[-1])[..., 0]
        residual = torch.bmm(dh, weights[-1])[..., 0]
        n_0, n_b = len(self.initial), len(self.left)
        initial = u[:, :n_0] - self._initial_row
        boundary = u[:, n_0 : n_0 + n_b] - u[:, n_0 + n_b : n_0 + 2 * n_b]
        return (initial**2).mean(1) + (boundary**2).mean(1) + (residual**2).mean(1)

    def batched_loss(self, thetas: torch.Tensor) -> torch.Tensor:
        """The loss at each row of ``thetas`` (B, dim), without autograd, in one pass of batched
        matrix products; equal to ``loss`` up to rounding (measured relative difference < 1e-13).

        ``evaluate_many`` (grids, paths) calls it on chunks of ``chunk_size`` rows. Three rewrites
        make it ~5x the reference code's per-point loss and ~8x one ``loss`` per point on 2 CPU
        cores (benchmarks/perf/results.md): the residual u_t + beta u_x is *one* forward-mode
        derivative along (beta, 1) (linear in the tangent), carried as extra columns next to the
        primal values, instead of two jvps along x and t plus three separate forwards; the layers
        of the B parameter vectors are batched matrices over points-as-columns (bmm), each bias
        entering through a row of ones (zeros under the derivative columns); and tanh(z) =
        2 sigmoid(2z) - 1 (torch's float64 sigmoid is ~5x faster than its tanh), with the affine part
        folded into the next layer. Columns hold s = sigmoid(2z) and q = dh/2 for h = tanh(z): with
        A = [4W | 2(b - W 1)] the next layer's product gives 2z' and 2 dz', and q' = s'(1 - s') 2 dz'.
        """
        if self._linear is None:
            raise NotImplementedError(f"{self.name}: batched_loss needs the tanh MLP of convection_mlp.")
        thetas = self.as_thetas(thetas)
        with torch.no_grad():
            return self._batched_loss_rows(thetas)

    def _batched_loss_rows(self, thetas: torch.Tensor) -> torch.Tensor:
        count, n_f = len(thetas), len(self.data[0])
        pieces = torch.split(thetas, self._linear.sizes, dim=1)
        weights = [pieces[i].reshape(count, *shape) for i, shape in self._linear.weights]
        biases = [pieces[i] for i in self._linear.biases]
        columns = self._columns
        n_primal, width = columns.shape[1], weights[0].shape[1]
        state = thetas.new_empty(count, width + 1, n_primal + n_f)  # rows: units, then the bias row
        state[:, width].copy_(self._bias_row)  # ones under the points, zeros under the derivatives
        s, q = state[:, :width, :n_primal], state[:, :width, n_primal:]
        s_f = s[:, :, :n_f]
        # first layer: s = sigmoid(2 W x + 2 b), derivative 2 dz = W (2 beta, 2)
        torch.sigmoid(torch.baddbmm(biases[0].unsqueeze(2), weights[0], columns.expand(count, -1, -1), beta=2, alpha=2),
                      out=s)
        _sigmoid_derivative(torch.matmul(weights[0], self._direction).unsqueeze(2), s_f, out=q)
        if len(weights) > 2:  # hidden layers, folded all at once: A = [4W | 2(b - W 1)]
            hidden, hidden_bias = torch.stack(weights[1:-1], 1), torch.stack(biases[1:-1], 1)
            folded = torch.cat([4 * hidden, (2 * (hidden_bias - hidden.sum(3))).unsqueeze(3)], dim=3)
            product = thetas.new_empty(count, width, n_primal + n_f)
            primal, derivative = product[:, :, :n_primal], product[:, :, n_primal:]
            for layer in range(folded.shape[1]):
                torch.bmm(folded[:, layer], state, out=product)
                torch.sigmoid(primal, out=s)
                _sigmoid_derivative(derivative, s_f, out=q)
        weight, bias = weights[-1], biases[-1]  # u = W (2s - 1) + b, du = 2 W q
        out = torch.bmm(torch.cat([2 * weight, (bias - weight.sum(2)).unsqueeze(2)], dim=2), state)[:, 0, n_f:]
        n_0, n_b = len(self.initial), len(self.left)  # out: initial, left, right boundary, then u_t + beta u_x
        left, right = out[:, n_0 : n_0 + n_b], out[:, n_0 + n_b : n_0 + 2 * n_b]
        errors = torch.cat([out[:, :n_0] - self._initial_row, left - right, out[:, n_0 + 2 * n_b :]], dim=1)
        return torch.mv(errors * errors, self._mean_weights)  # the three means, summed

    def _vmapped_metrics(self, chunk, buffers):
        if self._linear is None:  # not the network this class builds: the generic vmap path
            return super()._vmapped_metrics(chunk, buffers)
        return {"loss": self.batched_loss(chunk)}

    def relative_l2_error(self, theta) -> float:
        with torch.no_grad():
            u = self._forward(self.as_theta(theta), self.buffers0, self.grid)
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


def _sigmoid_derivative(tangent: torch.Tensor, s: torch.Tensor, out: torch.Tensor) -> None:
    """out = tangent * s * (1 - s) in one pass (torch's fused sigmoid backward)."""
    torch.ops.aten.sigmoid_backward.grad_input(tangent, s, grad_input=out)


class _MLPLayout(NamedTuple):
    sizes: list[int]  # numel of each parameter tensor, in the flat vector's order
    weights: list[tuple[int, torch.Size]]  # (index in ``sizes``, shape) of each Linear's weight
    biases: list[int]  # index in ``sizes`` of each Linear's bias


def _tanh_mlp_layout(model: nn.Module, params) -> _MLPLayout | None:
    """Where each Linear's weight and bias sit in the flat parameter vector, for a
    Linear-Tanh-...-Linear network of equal hidden widths from (x, t) to u; None for any other."""
    modules = list(model.children()) if isinstance(model, nn.Sequential) else []
    linears = modules[0::2]
    if (not linears or len(modules) != 2 * len(linears) - 1
            or not all(isinstance(m, nn.Linear) and m.bias is not None for m in linears)
            or not all(isinstance(m, nn.Tanh) for m in modules[1::2])
            or linears[0].in_features != 2 or linears[-1].out_features != 1
            or len({m.out_features for m in linears[:-1]} | {m.in_features for m in linears[1:]}) != 1
            or not all(p.requires_grad for p in model.parameters())):  # frozen tensors are not in the vector
        return None
    names = {id(m): n for n, m in model.named_children()}
    index = {name: i for i, (name, _, _) in enumerate(params)}
    return _MLPLayout([numel for _, _, numel in params],
                      [(index[f"{names[id(m)]}.weight"], m.weight.shape) for m in linears],
                      [index[f"{names[id(m)]}.bias"] for m in linears])


def pinn_convection(beta: float, n_f: int = 1000, collocation_seed: int = 0, hidden: int = 50,
                    layers: int = 4, name: str | None = None, device: str = "auto") -> ConvectionPINN:
    if not math.isfinite(beta):
        raise ConfigError(f"beta must be finite; got {beta}.")
    with torch.random.fork_rng(devices=[]):  # theta0 (the "theta0" grid center) is the same every build
        torch.manual_seed(0)
        return ConvectionPINN(beta, n_f, collocation_seed, hidden, layers, name, device)
