"""A tiny example analyzer: how a new landscape metric is added to lossatlas.

It trains ``n_minima`` minima (a shared sample, reused by any method that needs minima), then
reports the loss and the gradient norm at each: a first-order check that they are minima.
To ship it, add one line to your package's pyproject.toml:

    [project.entry-points."lossatlas.methods"]
    gradient-norm = "yourpackage.gradient_norm:GradientNorm"
"""
from __future__ import annotations

import numpy as np

from lossatlas import Analyzer, Recipe, train_minima
from lossatlas.params import Interval


class GradientNorm(Analyzer):
    name = "gradient-norm"
    description = "Loss and gradient norm at trained minima."
    needs = ("minima",)
    constraints = {"n_minima": Interval(int, 1), "epochs": Interval(int, 1), "lr": Interval(float, 0)}
    smoke_params = {"n_minima": 2, "epochs": 2}

    def __init__(self, n_minima: int = 4, epochs: int = 10, lr: float = 0.01):
        self.n_minima = n_minima
        self.epochs = epochs
        self.lr = lr

    def _recipe(self) -> Recipe:
        return Recipe(optimizer="sgd", lr=self.lr, momentum=0.0, epochs=self.epochs, steps_per_epoch=100)

    def produce(self, store, subject):
        train_minima(store, subject, self._recipe(), seeds=range(self.n_minima), progress=False)

    def run(self, store, subject):
        minima = train_minima(store, subject, self._recipe(), seeds=range(self.n_minima), progress=False)
        losses = np.array([subject.loss(m.theta, m.buffers) for m in minima])
        norms = np.array([float(subject.grad(m.theta, m.buffers).norm()) for m in minima])
        return {"mean_loss": losses.mean(), "max_grad_norm": norms.max()}, {"losses": losses, "grad_norms": norms}

    def plot(self, result, ax=None):
        import matplotlib.pyplot as plt

        figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 3))
        ax.bar(np.arange(len(result.arrays["grad_norms"])), result.arrays["grad_norms"])
        ax.set(xlabel="minimum", ylabel="gradient norm", yscale="log", title=result.subject)
        return figure
