"""The ``hessian`` analyzer: top eigenvalues, trace and eigenvalue density at a minimum.

PyHessian-style metrics (Yao et al. 2020), as used by Xie, Geniesse et al. 2024, on the
subject's full evaluation set. Backends: ``native`` (implicitly restarted Lanczos via
scipy/ARPACK; Hutchinson trace deflated by the top-k eigenvectors unless ``trace_deflate=False``;
stochastic Lanczos quadrature; all on lossatlas's own Hessian-vector products) and ``pyhessian``
(the ``pyhessian`` package, modules only; power iteration returns the largest-*magnitude*
eigenvalues; its density is replaced by the native SLQ because ``pyhessian.density`` calls the
removed ``torch.eig``). At or below ``dense_limit`` parameters the Hessian is formed exactly from
``dim`` products and its spectrum is exact. Eigenvectors are stored as flat parameter-space
vectors, the "Hessian directions" of 2-D grids.

Extensions beyond PyHessian: the ``bottom_k`` (1) smallest eigenvalues (negative curvature: how much
of a saddle the point is), and Hutch++ (Meyer et al. 2021) as ``trace_estimator`` with a fixed
budget of ``trace_max_probes`` products. Per-layer spectra are the ``hessian-layers`` analyzer.

``curvature``: the same outputs for the generalized Gauss-Newton matrix (``"ggn"``, Schraudolph
2002: J^T H_L J, the Hessian without the outputs' own curvature, PSD for convex losses) or the
empirical Fisher (``"ef"``: the mean of the per-example gradients' outer products; not the Fisher,
Kunstner et al. 2019), on model + criterion subjects, by their matrix-vector products
(``lossatlas.evaluation``). The metrics then describe that matrix where they say "Hessian".

Cost: each product is a pass over the evaluation data, so its time grows with the model and the
data; how many products a run makes follows the spectrum, not the parameter count (about 20 for
the top 2, the trace's 10 pilot probes and the count they choose for ``trace_rtol``, capped at
``trace_max_probes``, tens to hundreds for the bottom, ``density_runs`` x ``density_steps``): on
trained MLPs of 1e3 to 3e5 parameters a run took 234 to 444 products, not rising with the size. So
no default depends on the model's size; on a large model, save time with a looser ``trace_rtol``
(the probe count falls as its square), ``bottom_k = 0`` or ``density_runs = 0``. Each solver's
products show as progress (``lossatlas.progress``).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from lossatlas import memory
from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.errors import ConfigError
from lossatlas.evaluation import EXAMPLE_CHUNK
from lossatlas.hessian import (CURVATURES, HessianOperator, check_curvature, checked_eigenpairs,
                               density_from_spectrum, hutchinson_trace, hutchpp_trace, pyhessian_spectrum,
                               residual_check, slq_density)
from lossatlas.memory import Memory
from lossatlas.params import Boolean, Interval, Options, param
from lossatlas.hessian import lanczos_products
from lossatlas.plots import OKABE_ITO, finite_or_nan, metric, no_data
from lossatlas.point_analyzer import PointAnalyzer


def draw_density(ax, result) -> None:
    """Eigenvalue density on a log axis, the top eigenvalues as dashed vermillion lines."""
    curvature = {"ggn": "GGN", "ef": "Fisher"}.get((getattr(result, "params", None) or {}).get("curvature"), "Hessian")
    ax.set(xlabel=f"{curvature} eigenvalue (loss / parameter²)", ylabel="spectral density (log scale)",
           title=f"density: top {metric(result, 'top_eigenvalue'):.3g}, trace {metric(result, 'trace'):.3g}")
    grid = finite_or_nan(result.arrays.get("density_grid", []))
    density = finite_or_nan(result.arrays.get("density", []))
    eigenvalues = finite_or_nan(result.arrays.get("eigenvalues", [])).ravel()
    shown = np.isfinite(grid) & np.isfinite(density) & (density > 0) if grid.shape == density.shape else [False]
    if np.any(shown):
        ax.semilogy(grid, np.maximum(density, 1e-12), lw=1, c=OKABE_ITO["blue"],  # the floor: empty bins drop
                    label="density (SLQ)")
        ax.set_ylim(bottom=max(1e-12, 1e-7 * float(np.max(density[shown]))))  # 7 decades: the spectrum's shape
    else:
        ax.set_yscale("log")
        no_data(ax)
    for index, value in enumerate(eigenvalues[np.isfinite(eigenvalues)]):
        ax.axvline(value, color=OKABE_ITO["vermillion"], lw=0.8, ls="--",
                   label="top eigenvalues" if index == 0 else None)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")


class Hessian(PointAnalyzer):
    name = "hessian"
    description = "Top Hessian eigenvalues/eigenvectors, trace (deflated Hutchinson) and eigenvalue density (SLQ)."
    scope = "minimum"
    metrics = {
        "top_eigenvalue": measure("largest eigenvalue of the Hessian (the GGN or empirical Fisher by curvature; "
                                  "sharpness); NaN unless its residual ||Hv - lambda v|| is at most tol ||H|| and "
                                  "below |lambda|", higher_is_better=False),
        "trace": measure("trace of the Hessian (the GGN or empirical Fisher by curvature; sum of eigenvalues)",
                         higher_is_better=False),
        "bottom_eigenvalue": measure("smallest eigenvalue of the Hessian (the GGN or empirical Fisher by curvature; "
                                     "negative: a direction of descent, the point is a saddle); NaN with bottom_k = 0, "
                                     "and NaN unless its residual ||Hv - lambda v|| "
                                     "is at most tol ||H|| and below |lambda| (its sign settled)"),
        "negative_curvature_ratio": measure("max(0, -smallest eigenvalue) / largest eigenvalue (0 at a true minimum); "
                                            "NaN with bottom_k = 0", higher_is_better=False),
        "bottom_converged": diagnostic("1 if every smallest eigenvalue passed the residual test, 0 if not (their "
                                       "metrics are then NaN; raise max_restarts), NaN with bottom_k = 0"),
        "bottom_residual": diagnostic("||Hv - lambda v|| of the smallest eigenpair (the eigenvalue is within it)"),
        "top_converged": diagnostic("1 if every top eigenvalue passed the residual test, 0 if not (NaN values)"),
        "trace_stderr": diagnostic("standard error of the Hutchinson trace estimate (0 when exact)"),
        "trace_probes": diagnostic("Hessian-vector products averaged by the trace estimate (Rademacher probes, the "
                                   "pilot that chose their count not included; Hutch++: all "
                                   "its products; 0 when exact)"),
        "hvp_count": diagnostic("Hessian-vector products computed (GGN or empirical Fisher ones by curvature)"),
    }
    views = {"density": view(draw_density, shared="xy")}
    smoke_params = {"at": "theta0", "density_bins": 200}
    version = 2
    references = ("Yao et al. 2020, PyHessian", "Xie, Geniesse et al. 2024", "Meyer et al. 2021, Hutch++",
                  "Schraudolph 2002, generalized Gauss-Newton", "Kunstner et al. 2019, empirical Fisher")
    keyless_defaults = {"curvature": "hessian"}  # results stored before it existed keep their keys

    curvature: str = param("hessian", Options(CURVATURES),
                           "the matrix: Hessian, generalized Gauss-Newton, or empirical Fisher (model subjects)")
    backend: str = param("native", Options(("native", "pyhessian")))
    k: int = param(2, Interval(int, 1), "number of top eigenpairs")
    bottom_k: int = param(1, Interval(int, 0), "number of smallest eigenpairs (0: none)")
    tol: float = param(1e-3, Interval(float, 0, 1))
    max_restarts: int = param(100, Interval(int, 1), "Lanczos restarts (power iterations for pyhessian)")
    trace_rtol: float = param(1e-2, Interval(float, 0, 1))
    trace_min_probes: int = param(10, Interval(int, 2))
    trace_max_probes: int = param(200, Interval(int, 2))
    trace_deflate: bool = param(True, Boolean())
    trace_estimator: str = param("hutchinson", Options(("hutchinson", "hutch++")),
                                 "hutch++: Meyer et al. 2021 with trace_max_probes products (no stopping rule)")
    density_runs: int = param(1, Interval(int, 0), "SLQ runs for the eigenvalue density (0: no density, its "
                              "density_steps products saved)")
    density_steps: int = param(80, Interval(int, 2), "Lanczos steps per SLQ run")
    density_bins: int | None = param(None, Interval(int, 10, allow_none=True),
                                     "density grid points; None: 4 per kernel sigma (1000 to 100000)")
    density_sigma: float | None = param(None, Interval(float, 0, None, closed="neither", allow_none=True),
                                        "kernel std; None: PyHessian's, sqrt(1e-5 x max(1, spectrum width))")
    dense_limit: int = param(64, Interval(int, 0))
    seed: int = param(0, Interval(int, 0))

    def check(self):
        if self.trace_estimator == "hutch++" and self.backend == "pyhessian":
            raise ConfigError("trace_estimator='hutch++' is native: the pyhessian backend has its own Hutchinson "
                              "trace.")
        if self.trace_estimator == "hutch++" and self.trace_max_probes < 3:
            raise ConfigError(f"Hutch++ splits trace_max_probes products in three; got {self.trace_max_probes}.")
        if self.curvature != "hessian" and self.backend == "pyhessian":
            raise ConfigError(f"curvature={self.curvature!r} is native: the pyhessian backend has the Hessian "
                              "only.")
        if self.trace_min_probes > self.trace_max_probes:
            raise ConfigError(f"trace_min_probes ({self.trace_min_probes}) must not exceed trace_max_probes "
                              f"({self.trace_max_probes}).")

    def check_subject(self, subject):
        super().check_subject(subject)
        check_curvature(self.curvature, subject)
        if self.backend == "pyhessian" and subject.dim > self.dense_limit and not subject.is_plain_criterion:
            raise ConfigError(f"backend='pyhessian' needs a plain model + criterion subject; {subject.name} is not "
                              "one (a function, or a custom loss such as a PINN's). Use backend='native'.")

    def memory(self, subject):
        """Float64 parameter-sized vectors on the host, phase by phase, each with what earlier phases
        left (``lossatlas.hessian``): the top k by ARPACK -- its basis (ncv = 2k + 2) twice (scipy
        holds a copy: measured), 3 work vectors, residual, start, a product, the k new Ritz vectors
        and, on a tightened retry, the k previous ones -- then their residual check (old and new
        vectors, the products listed and stacked, two temporaries); the trace (the k top vectors, a
        probe and its index draw, two projections, a product; Hutch++ its sketch listed, stacked
        and factored); the bottom (k kept, ARPACK's ncv = max(2b + 2, 20) basis, twice, on the
        shifted operator, or the 20-step norm estimate); SLQ (k + b kept, the density_steps Lanczos
        basis, w, a temporary, a product, the probe). The dense path holds about six dim x dim
        matrices; pyhessian keeps its k vectors on the device too. Plus one Hessian-vector product
        on the device (with curvature="ef", its per-example gradients too)."""
        d, k = subject.dim, min(self.k, subject.dim)
        b = min(self.bottom_k, d - 1)
        if d <= self.dense_limit or k >= d - 1:
            return (Memory(host=6 * 8 * d * d, lower="k" if k >= d - 1 else "dense_limit") + memory.hvp(subject)
                    + _curvature_memory(self.curvature, subject))
        top, bottom = min(d, max(2 * k + 2, 6)), min(d, max(2 * b + 2, 20))
        sketch = min(self.trace_max_probes // 3, d)
        phases = {"k": max(2 * top + 2 * k + 6, 5 * k + 1),
                  "trace_max_probes": k + (4 * sketch + 4 if self.trace_estimator == "hutch++" else 5),
                  "bottom_k": k + max(25, 2 * bottom + 2 * b + 8, 5 * b + 1) if b else 0,
                  "density_steps": k + b + min(self.density_steps, d) + 5 if self.density_runs else 0}
        lower = max(phases, key=phases.get)
        need = Memory(host=memory.vectors(subject, phases[lower]), lower=lower) + memory.hvp(subject)
        if self.backend == "pyhessian":  # its float32 model copy and eigenvectors, a few work vectors
            need = need + Memory(device=memory.vectors(subject, k + 6, 4), lower="k")
        return need + _curvature_memory(self.curvature, subject) + memory.requested(self, subject)

    def work(self, subject):
        """Its work (``lossatlas.planning``): the loss at the point and the curvature products --
        dim for the dense matrix; else the top k and bottom_k by Lanczos (typical counts; the bottom,
        in the crowded bulk near zero, about twice its basis: 22 products at the smoke benchmarks'
        barely trained minima, 90 on average at the cpu barcode's), the trace's probes at most
        (Hutchinson's pilot included) and the density's Lanczos steps."""
        d, k = subject.dim, min(self.k, subject.dim)
        b = min(self.bottom_k, d - 1)
        if d <= self.dense_limit or k >= d - 1:
            return {("product", self.curvature): d, ("loss",): 1}
        pilot = self.trace_min_probes if self.trace_rtol > 0 and self.trace_min_probes < self.trace_max_probes else 0
        products = lanczos_products(k, max(2 * k + 2, 6)) + self.trace_max_probes \
            + (pilot if self.trace_estimator == "hutchinson" else 0) + self.density_runs * self.density_steps
        if b:
            products += 2 * lanczos_products(b, max(2 * b + 2, 20))
        return {("product", self.curvature): products, ("loss",): 1}

    def compute(self, subject, samples):
        theta, buffers = samples["point"]["theta"], samples["point"]["buffers"]
        self.finite_loss(subject, theta, buffers, "the Hessian")
        op = HessianOperator(subject, theta, buffers, self.curvature)
        k = min(self.k, subject.dim)
        bottom_k = min(self.bottom_k, subject.dim - 1)
        top_ok = bottom_ok = True
        bottom_residual = float("nan")
        eps = float(torch.finfo(subject.theta0.dtype).eps)
        if subject.dim <= self.dense_limit or k >= subject.dim - 1:  # ARPACK needs k < dim - 1
            spectrum, vectors = np.linalg.eigh(op.dense())
            bottom = spectrum[: min(self.bottom_k, subject.dim)]
            bottom_residual = 0.0 if self.bottom_k else float("nan")
            values, vectors = spectrum[::-1][:k], vectors[:, ::-1][:, :k].T
            trace, stderr, probes = float(spectrum.sum()), 0.0, 0
            weights = np.full(len(spectrum), 1 / len(spectrum))
            grid, density = (density_from_spectrum(spectrum, weights, self.density_bins, sigma=self.density_sigma)
                             if self.density_runs else (np.zeros(0), np.zeros(0)))
        else:
            if self.backend == "pyhessian":
                found = pyhessian_spectrum(subject, theta, buffers, k, self.tol, self.max_restarts,
                                           self.trace_max_probes, self.trace_rtol, self.seed)
                # power iteration stops on the value's relative change (tol): its vector holds to ~sqrt(tol)
                top = residual_check(op, found["eigenvectors"], self.tol**0.5)
                trace, stderr, probes = found["trace"], found["trace_stderr"], found["trace_probes"]
                op.count += found["hvp_count"]
            else:
                top = checked_eigenpairs(op, k, "top", self.tol, self.seed, self.max_restarts, eps=eps)
                if self.trace_estimator == "hutch++":  # its own sketch takes the place of the deflation
                    estimate = hutchpp_trace(op, self.seed, self.trace_max_probes)
                else:  # the deflation identity holds for any orthonormal rows, with their Rayleigh quotients
                    deflate = (top.vectors, top.rayleigh) if self.trace_deflate and len(top.vectors) else (None, None)
                    estimate = hutchinson_trace(op, self.seed, self.trace_rtol, self.trace_min_probes,
                                                self.trace_max_probes, *deflate)
                trace, stderr, probes = estimate.trace, estimate.stderr, estimate.probes
            values, vectors, top_ok = _padded(top.values, k), top.vectors, top.converged
            _warn(subject, "top", top.reason)
            bottom = np.zeros(0)
            if bottom_k:
                lowest = checked_eigenpairs(op, bottom_k, "bottom", self.tol, self.seed, self.max_restarts,
                                            scale=top.norm if top.converged else None, eps=eps)
                bottom, bottom_ok = _padded(lowest.values, bottom_k), lowest.converged
                bottom_residual = float(lowest.residuals[0]) if len(lowest.residuals) else float("nan")
                _warn(subject, "bottom", lowest.reason)
            grid, density = (slq_density(op, self.seed, self.density_runs, self.density_steps, self.density_bins,
                                         sigma=self.density_sigma) if self.density_runs else (np.zeros(0), np.zeros(0)))
        smallest = float(bottom[0]) if len(bottom) else float("nan")
        ratio = max(0.0, -smallest) / values[0] if values[0] > 0 and np.isfinite(smallest) else float("nan")
        metrics = {"top_eigenvalue": values[0], "trace": trace, "bottom_eigenvalue": smallest,
                   "negative_curvature_ratio": ratio, "top_converged": float(top_ok),
                   "bottom_converged": float(bottom_ok) if self.bottom_k else float("nan"),
                   "bottom_residual": bottom_residual, "trace_stderr": stderr,
                   "trace_probes": probes, "hvp_count": op.count}
        arrays = {"eigenvalues": values, "eigenvectors": vectors, "bottom_eigenvalues": bottom,
                  "density_grid": grid, "density": density}
        return metrics, arrays


def _curvature_memory(curvature: str, subject) -> Memory:
    """What an empirical Fisher product holds beyond a Hessian-vector product: its per-example
    gradients (the GGN's products hold no more than a Hessian-vector product)."""
    return memory.example_gradients(subject, EXAMPLE_CHUNK) if curvature == "ef" else Memory()


def _padded(values: np.ndarray, k: int) -> np.ndarray:
    """``k`` values, NaN where the solver found fewer."""
    return np.concatenate([values, np.full(max(0, k - len(values)), np.nan)])


def _warn(subject, end: str, reason: str) -> None:
    if reason:
        warnings.warn(f"{subject.name}: the {end} Hessian eigenvalues are NaN where refused: {reason}.", stacklevel=3)
