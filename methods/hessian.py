"""The ``hessian`` analyzer: top eigenvalues, trace and eigenvalue density at a minimum.

PyHessian-style metrics (Yao et al. 2020), as used by seed 001, on the subject's full
evaluation set. Backends: ``native`` (implicitly restarted Lanczos via scipy/ARPACK; Hutchinson
trace deflated by the top-k eigenvectors unless ``trace_deflate=False``; stochastic Lanczos
quadrature; all on lossatlas's own Hessian-vector products) and ``pyhessian`` (the ``pyhessian`` package, modules only; power iteration returns the
largest-*magnitude* eigenvalues; its density is replaced by the native SLQ because
``pyhessian.density`` calls the removed ``torch.eig``). At or below ``dense_limit`` parameters
the Hessian is formed exactly from ``dim`` products and its spectrum is exact.
Eigenvectors are stored as flat parameter-space vectors, the "Hessian directions" of 2-D grids.
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import Analyzer
from lossatlas.errors import NonFiniteLossError
from lossatlas.hessian import (HessianOperator, density_from_spectrum, hutchinson_trace, pyhessian_spectrum,
                               slq_density, top_eigenpairs)
from lossatlas.params import Boolean, Interval, Options
from lossatlas.samplers.points import point_of


class Hessian(Analyzer):
    name = "hessian"
    description = "Top Hessian eigenvalues/eigenvectors, trace (deflated Hutchinson) and eigenvalue density (SLQ)."
    needs = ("minima",)
    constraints = {
        "backend": Options(("native", "pyhessian")),
        "at": Options(("minimum", "theta0")),
        "minimum": Interval(int, 0),
        "k": Interval(int, 1),
        "tol": Interval(float, 0, 1),
        "max_iter": Interval(int, 1),
        "trace_rtol": Interval(float, 0, 1),
        "trace_min_probes": Interval(int, 2),
        "trace_max_probes": Interval(int, 2),
        "trace_deflate": Boolean(),
        "density_runs": Interval(int, 1),
        "density_steps": Interval(int, 2),
        "density_bins": Interval(int, 10),
        "dense_limit": Interval(int, 0),
        "seed": Interval(int, 0),
    }
    smoke_params = {"at": "theta0", "density_bins": 200}

    def __init__(self, backend: str = "native", at: str = "minimum", minimum: int = 0, k: int = 2, tol: float = 1e-3,
                 max_iter: int = 100, trace_rtol: float = 1e-2, trace_min_probes: int = 10,
                 trace_max_probes: int = 200, trace_deflate: bool = True, density_runs: int = 1, density_steps: int = 80,
                 density_bins: int = 1000, dense_limit: int = 64, seed: int = 0):
        self.backend = backend
        self.at = at
        self.minimum = minimum
        self.k = k
        self.tol = tol
        self.max_iter = max_iter
        self.trace_rtol = trace_rtol
        self.trace_min_probes = trace_min_probes
        self.trace_max_probes = trace_max_probes
        self.trace_deflate = trace_deflate
        self.density_runs = density_runs
        self.density_steps = density_steps
        self.density_bins = density_bins
        self.dense_limit = dense_limit
        self.seed = seed

    def run(self, store, subject):
        theta, buffers = point_of(store, subject, self.at, self.minimum)
        loss = subject.loss(theta, buffers)
        if not np.isfinite(loss):
            where = f"minimum {self.minimum}" if self.at == "minimum" else "theta0"
            raise NonFiniteLossError(f"The loss of {subject.name!r} at {where} is {loss}: the Hessian of a non-finite "
                                     "loss is meaningless. Nothing was written; check the model or its minimum.")
        op = HessianOperator(subject, theta, buffers)
        k = min(self.k, subject.dim)
        if subject.dim <= self.dense_limit:
            spectrum, vectors = np.linalg.eigh(op.dense())
            values, vectors = spectrum[::-1][:k], vectors[:, ::-1][:, :k].T
            trace, stderr, probes = float(spectrum.sum()), 0.0, 0
            grid, density = density_from_spectrum(spectrum, np.full(len(spectrum), 1 / len(spectrum)), self.density_bins)
        else:
            if self.backend == "pyhessian":
                found = pyhessian_spectrum(subject, theta, buffers, k, self.tol, self.max_iter, self.trace_max_probes,
                                           self.trace_rtol, self.seed)
                values, vectors = found["eigenvalues"], found["eigenvectors"]
                trace, stderr, probes = found["trace"], found["trace_stderr"], found["trace_probes"]
                op.count += found["hvp_count"]
            else:
                values, vectors = top_eigenpairs(op, k, self.tol, self.seed, self.max_iter)
                deflate = (vectors, values) if self.trace_deflate else (None, None)
                estimate = hutchinson_trace(op, self.seed, self.trace_rtol, self.trace_min_probes,
                                            self.trace_max_probes, *deflate)
                trace, stderr, probes = estimate.trace, estimate.stderr, estimate.probes
            grid, density = slq_density(op, self.seed, self.density_runs, self.density_steps, self.density_bins)
        metrics = {"top_eigenvalue": values[0], "trace": trace, "trace_stderr": stderr, "trace_probes": probes,
                   "hvp_count": op.count}
        arrays = {"eigenvalues": values, "eigenvectors": vectors, "density_grid": grid, "density": density}
        return metrics, arrays

    def plot(self, result, ax=None):
        import matplotlib.pyplot as plt

        from lossatlas.plots import draw_density, prefix_title

        figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 3.5))
        draw_density(ax, result)
        prefix_title(ax, result.subject)
        figure.tight_layout()
        return figure
