"""Hessian spectrum from Hessian-vector products: top eigenpairs, trace, eigenvalue density.

Pure functions of an ``HessianOperator`` (a counted HVP), so the same code serves every
subject, and every symmetric curvature with a matrix-vector product: the operator's ``curvature``
is the Hessian, the generalized Gauss-Newton matrix (Schraudolph 2002) or the empirical Fisher
(Kunstner et al. 2019 on how it differs from the Fisher), see ``lossatlas.evaluation``.
PyHessian (Yao et al. 2020) is the reference; ``pyhessian_spectrum`` runs the ``pyhessian``
package itself, with its known defects worked around.

Every solver runs inside a ``stage`` of the operator: a progress bar (``lossatlas.progress``)
advanced by each product, shown as the caller of ``analyze`` asked, since one product of a large
model over its data can take seconds and a solver hundreds of them.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import trapezoid
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from threadpoolctl import threadpool_limits

from . import distributed, evaluation, sources
from .errors import ConfigError
from .progress import bar as progress_bar

CURVATURES = ("hessian", "ggn", "ef")


class HessianOperator:
    """H(theta) of a subject as a linear operator on float64 numpy vectors, counting products;
    with ``curvature`` "ggn" or "ef" the generalized Gauss-Newton matrix or the empirical Fisher
    (model + criterion subjects only: ``check_curvature``) takes the Hessian's place."""

    def __init__(self, subject, theta, buffers=None, curvature: str = "hessian"):
        self.subject = subject
        self.theta = subject.as_theta(theta)
        self.buffers = subject.buffers_at(self.theta, buffers)
        self.dim = subject.dim
        self.count = 0
        self.curvature = curvature
        self._bar = None

    def __call__(self, vector: np.ndarray) -> np.ndarray:
        self.count += 1
        if self._bar is not None:
            self._bar.update()
        v = torch.as_tensor(np.asarray(vector, dtype=np.float64).reshape(-1), device=self.theta.device)
        if self.curvature == "ggn":
            product = evaluation.ggn_vp(self.subject, self.theta, v, self.buffers)
        elif self.curvature == "ef":
            product = evaluation.ef_vp(self.subject, self.theta, v, self.buffers)
        else:
            product = self.subject.hvp(self.theta, v, self.buffers)
        return product.double().cpu().numpy()  # one copy per product

    @contextlib.contextmanager
    def stage(self, what: str, total: int | None = None):
        """A progress bar over the products made inside (``total`` if known), yielded; a stage
        opened inside another adds its products to the outer one's bar and yields None."""
        if self._bar is not None:
            yield None
            return
        name = "Hessian" if self.curvature == "hessian" else self.curvature.upper()
        with progress_bar(total=total, desc=f"{self.subject.name}: {name} {what}", unit="products") as shown:
            self._bar = shown
            try:
                yield shown
            finally:
                self._bar = None

    def dense(self) -> np.ndarray:
        """The full Hessian from ``dim`` products with the unit vectors (tiny subjects only)."""
        with self.stage("dense matrix", self.dim):
            return dense_matrix(self, self.dim)


def stage(op, what: str, total: int | None = None):
    """``op.stage`` where the operator has one (any callable with ``dim`` serves the solvers)."""
    opened = getattr(op, "stage", None)
    return opened(what, total) if opened is not None else contextlib.nullcontext()


def check_curvature(curvature: str, subject) -> None:
    """Refuse the GGN and the empirical Fisher where they have no meaning here: they need a model's
    outputs and a criterion on them (a ModuleSubject whose loss is ``loss_fn(model(x), y)``)."""
    if curvature != "hessian" and not subject.is_plain_criterion:
        raise ConfigError(f"curvature={curvature!r} needs a model, a loss function on its outputs and data (a "
                          f"ModuleSubject); {subject.name} is not one (a function, a surface, or a composite "
                          "loss such as a PINN's). Use curvature='hessian'.")
    if curvature == "ef":
        _check_examples_weigh_alike(subject)


def _check_examples_weigh_alike(subject) -> None:
    """The empirical Fisher weighs every example 1/N, as a plain mean loss does; a class-weighted
    criterion divides by the summed weights and ignored targets count nothing, so its products
    would be those of another loss."""
    loss_fn = subject.loss_fn
    if callable(getattr(loss_fn, "terms", None)):
        raise ConfigError(f"curvature='ef' on {subject.name}: its loss averages over terms of its own (tokens, "
                          "through loss_fn.terms), not over examples alike; use curvature='ggn' or 'hessian'.")
    if getattr(loss_fn, "weight", None) is not None or getattr(loss_fn, "pos_weight", None) is not None:
        raise ConfigError(f"curvature='ef' on {subject.name}: its loss weighs classes ({type(loss_fn).__name__} with "
                          "weight), so its mean is not over examples alike; use curvature='ggn' or 'hessian'.")
    ignore = getattr(loss_fn, "ignore_index", None)
    if ignore is not None and sources.holds_target(subject.data, ignore):
        raise ConfigError(f"curvature='ef' on {subject.name}: some targets are the loss's ignore_index ({ignore}), "
                          "which count nothing in its mean; use curvature='ggn' or 'hessian'.")


def dense_matrix(apply, dim: int) -> np.ndarray:
    """The symmetric matrix of a linear operator ``apply`` from its ``dim`` columns."""
    matrix = np.stack([apply(np.eye(dim)[i]) for i in range(dim)], axis=1)
    return 0.5 * (matrix + matrix.T)


def _blas_single_threaded(solver):
    """numpy/scipy (OpenBLAS) at one thread inside a solver: between Hessian-vector products
    ARPACK's and numpy's vector work woke BLAS worker threads that kept spinning and took the
    cores from torch's threads; each product then cost 0.21 s instead of 0.14 s (ResNet-20, 2
    cores). The vector work is tiny, so one BLAS thread loses nothing (benchmarks/perf)."""
    @functools.wraps(solver)
    def limited(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return solver(*args, **kwargs)
    return limited


@_blas_single_threaded
def top_eigenpairs(op: HessianOperator, k: int, tol: float, seed: int,
                   max_restarts: int) -> tuple[np.ndarray, np.ndarray]:
    """The k algebraically largest eigenvalues (descending) and unit eigenvectors (rows).

    Implicitly restarted Lanczos (ARPACK through scipy's ``eigsh``), started from a seeded
    Rademacher vector; ``tol`` is ARPACK's relative accuracy of the Ritz values. A small Krylov
    basis (ncv = max(2k + 2, 6)) suits the well-separated top of a network Hessian: on a
    ResNet-20 minimum it reached the top 2 to 1e-6 in 11 products (scipy's default ncv = 20: 21).
    Raises a ConfigError without convergence (``checked_eigenpairs`` reports it instead).
    """
    with stage(op, f"top {_eigenvalues(k)} (Lanczos)"):
        found = _lanczos(op, k, "top", tol, _rademacher(op.dim, seed), max_restarts, shift=0.0)
    if found is None or not found[2]:
        raise ConfigError(f"Lanczos did not converge to tol={tol} for the top {k} eigenvalues within {max_restarts} "
                          "restarts; raise max_restarts or tol.")
    return found[0], found[1]


@dataclass
class Eigenpairs:
    """Ritz pairs checked by their residuals ||H v - lambda v||: ``values`` (descending for the top,
    ascending for the bottom; NaN where refused), unit ``vectors`` (rows), ``rayleigh`` (v.Hv of
    every vector, refused or not), ``residuals``, ``accepted`` and the ``reason`` for a refusal."""

    values: np.ndarray
    vectors: np.ndarray
    rayleigh: np.ndarray
    residuals: np.ndarray
    accepted: np.ndarray
    reason: str = ""
    norm: float = math.nan  # the ||H|| the tolerance was relative to
    complete: bool = True  # False when the solver returned fewer pairs than asked for

    @property
    def converged(self) -> bool:
        return self.complete and bool(len(self.accepted)) and bool(self.accepted.all())


MIN_TOL = 1e-13  # ARPACK's tolerance is not tightened below this (near float64 rounding of ||H||)


@_blas_single_threaded
def checked_eigenpairs(op, k: int, end: str, tol: float, seed: int, max_restarts: int,
                       scale: float | None = None, eps: float = float(np.finfo(np.float64).eps)) -> Eigenpairs:
    """The k extreme eigenpairs at ``end`` ("top": largest, "bottom": smallest), each accepted only
    when its residual r = ||H v - lambda v|| is at most ``tol`` x ||H|| and below |lambda|: H has
    an eigenvalue within r of lambda, so then the value holds to ``tol`` relative to the spectral
    norm and its sign is settled. ARPACK's own test (a Ritz value accurate relative to the width of
    the spectrum) passes long before a small eigenvalue near a crowded bulk is resolved: on a
    1500-dim spectrum with lambda_max = 1000 it returned +1.5e-4 for -2e-4. Where the sign is not
    settled, ARPACK's tolerance is tightened (warm-started) until it is -- down to ``MIN_TOL`` or
    100 x the products' machine ``eps`` (float32 products cannot resolve more), and only while
    each round still lowers the residual; what stays unsettled is NaN with the reason. ``scale``:
    ||H|| if known (the bottom is found on ``scale`` I - H, whose top is H's bottom; without it a
    short Lanczos run estimates it)."""
    with stage(op, f"{end} {_eigenvalues(k)} (Lanczos)"):
        return _checked_eigenpairs(op, k, end, tol, seed, max_restarts, scale, eps)


def _checked_eigenpairs(op, k, end, tol, seed, max_restarts, scale, eps) -> Eigenpairs:
    start = _rademacher(op.dim, seed)
    shift = 0.0 if end == "top" else float(scale if scale is not None else _norm_estimate(op, seed))
    norm = scale if scale is not None else (shift or None)
    floor = max(MIN_TOL, 100 * eps)
    current, checked, stopped, previous = tol, None, False, np.inf
    while True:
        found = _lanczos(op, k, end, current, start, max_restarts, shift)
        if found is None:  # not one Ritz pair within max_restarts: keep what an easier tolerance gave
            stopped = True
            break
        checked = residual_check(op, found[1], tol, norm)
        stopped = not found[2] or len(found[0]) < k
        worst = float(np.max(checked.residuals)) if len(checked.residuals) else np.inf
        if checked.accepted.all() or stopped or current <= floor or worst >= 0.5 * previous:
            break
        previous = worst
        unsettled = checked.residuals >= np.abs(checked.rayleigh)
        needed = 0.1 * float(np.min(np.abs(checked.rayleigh[unsettled]))) / max(shift, 1e-300) if unsettled.any() \
            else current
        current, start = max(floor, min(current / 10, needed)), found[1].sum(axis=0)
    if checked is None:
        return Eigenpairs(np.full(0, np.nan), np.zeros((0, op.dim)), np.zeros(0), np.zeros(0), np.zeros(0, bool),
                          f"Lanczos found no {end} eigenpair within max_restarts={max_restarts}")
    if len(checked.values) < k:
        checked.reason = (f"Lanczos found {len(checked.values)} of the {k} {end} eigenpairs within "
                          f"max_restarts={max_restarts}")
        checked.complete = False
    elif not checked.accepted.all():
        worst = int(np.argmax(checked.residuals / np.maximum(np.abs(checked.rayleigh), 1e-300)))
        residual, value = checked.residuals[worst], checked.rayleigh[worst]
        checked.reason = (f"the residual {residual:.2g} of the {end} Ritz value {value:.3g} "
                          + ("does not settle its sign" if residual >= abs(value)
                             else f"exceeds tol x ||H|| = {tol * checked.norm:.2g}")
                          + (f" (Lanczos stopped at max_restarts={max_restarts})" if stopped
                             else f" at ARPACK's tol={current:.0e}"))
    return checked


def _eigenvalues(k: int) -> str:
    return "eigenvalue" if k == 1 else f"{k} eigenvalues"


def _rademacher(dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=dim)


def _lanczos(op, k: int, end: str, tol: float, start: np.ndarray, max_restarts: int, shift: float):
    """(values, vectors as rows, converged) from ARPACK: the top of H, or of ``shift`` I - H for the
    bottom (a crowded bulk near 0 needs a larger basis there: ncv >= 20); values sorted from the
    end inwards; None when not one Ritz pair converged."""
    if end == "top":
        operator = LinearOperator((op.dim, op.dim), matvec=op, dtype=np.float64)
        ncv = min(op.dim, max(2 * k + 2, 6))
    else:
        operator = LinearOperator((op.dim, op.dim), matvec=lambda v: shift * np.ravel(v) - op(v), dtype=np.float64)
        ncv = min(op.dim, max(2 * k + 2, 20))
    converged = True
    try:
        values, vectors = eigsh(operator, k=k, which="LA", tol=tol, v0=start, ncv=ncv, maxiter=max_restarts)
    except ArpackNoConvergence as err:
        values, vectors, converged = err.eigenvalues, err.eigenvectors, False
    if not len(values):
        return None
    order = np.argsort(values)[::-1]
    values = values[order] if end == "top" else shift - values[order]
    return values, vectors[:, order].T, converged


def residual_check(op, vectors: np.ndarray, tol: float, scale: float | None = None) -> Eigenpairs:
    """``checked_eigenpairs``'s acceptance rule applied to given unit vectors (rows), e.g. another
    solver's: one product each."""
    with stage(op, "residual check", len(vectors)):
        products = np.stack([op(v) for v in vectors])
    rayleigh = np.einsum("ij,ij->i", vectors, products)
    residuals = np.linalg.norm(products - rayleigh[:, None] * vectors, axis=1)
    norm = max(float(scale or 0.0), float(np.max(np.abs(rayleigh))))
    accepted = (residuals <= tol * norm) & (residuals < np.abs(rayleigh))
    reason = "" if accepted.all() else (f"residuals {np.round(residuals[~accepted], 6).tolist()} of the values "
                                        f"{np.round(rayleigh[~accepted], 6).tolist()} exceed tol x ||H|| = "
                                        f"{tol * norm:.2g} or leave their sign open")
    return Eigenpairs(np.where(accepted, rayleigh, np.nan), vectors, rayleigh, residuals, accepted, reason, norm=norm)


def _norm_estimate(op, seed: int) -> float:
    """||H|| from a few Lanczos steps (an upper bound is not needed: the shift only has to reach
    the top of the spectrum roughly)."""
    alphas, betas = lanczos_tridiagonal(op, _rademacher(op.dim, seed + 1), min(20, op.dim))
    return float(np.max(np.abs(eigh_tridiagonal(alphas, betas, eigvals_only=True))))


@dataclass
class TraceEstimate:
    trace: float
    stderr: float
    probes: int


@_blas_single_threaded
def hutchinson_trace(op: HessianOperator, seed: int, rtol: float, min_probes: int, max_probes: int,
                     deflate: np.ndarray | None = None, deflate_values: np.ndarray | None = None) -> TraceEstimate:
    """Hutchinson's estimator with Rademacher probes, the count chosen so that the standard error
    is about ``rtol * |trace|``: ``min_probes`` pilot probes estimate the mean and spread, which
    fix the count n (between ``min_probes`` and ``max_probes``), and n fresh probes give the
    estimate. Deciding the count on the probes that are averaged biases the mean (stopping when
    the running error looks small stops more often on low draws: -0.19 %, 3 standard errors, in an
    audit); fresh probes keep it unbiased. The rule works for negative traces too, unlike
    PyHessian's, which divides by the running trace. ``rtol = 0`` or ``min_probes = max_probes``:
    exactly ``max_probes`` probes, no pilot.

    ``deflate`` (orthonormal rows V, e.g. the top eigenvectors, with Rayleigh quotients
    ``deflate_values``): tr H = tr(V H V^T) + tr((I - P) H (I - P)) with P = V^T V holds exactly,
    and only the second term is estimated. The top eigenvalues dominate ||H||_F, so the
    variance drops (the idea of Hutch++, Meyer et al. 2021): on a ResNet-20 minimum, deflating
    the top 2 cut the probe standard deviation from 299 to 187 (2.6x fewer probes).
    """
    rng = np.random.default_rng(seed)
    base = 0.0 if deflate is None else float(np.sum(deflate_values))

    def probes(count: int) -> list[float]:
        values = []
        for _ in range(count):
            probe = rng.choice([-1.0, 1.0], size=op.dim)
            if deflate is not None:
                probe = probe - deflate.T @ (deflate @ probe)
            values.append(float(probe @ op(probe)))
        return values

    count = max_probes
    with stage(op, "trace (Hutchinson)", max_probes) as shown:
        if rtol > 0 and min_probes < max_probes:
            pilot = probes(max(min_probes, 2))
            spread, level = float(np.std(pilot, ddof=1)), abs(base + float(np.mean(pilot)))
            wanted = math.ceil((spread / (rtol * level)) ** 2) if level > 0 else max_probes
            count = int(np.clip(wanted, min_probes, max_probes))
            if shown is not None:  # the pilot's probes and the count it chose
                shown.total = shown.n + count
        samples = probes(count)
    return TraceEstimate(base + float(np.mean(samples)), _stderr(samples), count)


@_blas_single_threaded
def hutchpp_trace(op: HessianOperator, seed: int, matvecs: int) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021) with a budget of ``matvecs`` Hessian-vector products: a third
    of them sketch the top of the spectrum (Q = orth(H S)), a third take its trace exactly,
    tr(Q^T H Q), and a third estimate the rest by Hutchinson on (I - QQ^T) H (I - QQ^T). For the
    same products its variance is much lower than Hutchinson's when a few eigenvalues dominate,
    as in network Hessians. ``stderr`` is that of the Hutchinson third."""
    if matvecs < 3:
        raise ConfigError(f"Hutch++ needs at least 3 Hessian-vector products; got {matvecs}.")
    rng = np.random.default_rng(seed)
    sketch = min(matvecs // 3, op.dim)
    probes = matvecs - 2 * sketch
    with stage(op, "trace (Hutch++)", matvecs):
        basis, _ = np.linalg.qr(np.stack([op(rng.choice([-1.0, 1.0], size=op.dim)) for _ in range(sketch)], axis=1))
        top = float(sum(q @ op(q) for q in basis.T))
        samples = []
        for _ in range(probes):
            probe = rng.choice([-1.0, 1.0], size=op.dim)
            probe = probe - basis @ (basis.T @ probe)
            samples.append(float(probe @ op(probe)))
    return TraceEstimate(top + float(np.mean(samples)), _stderr(samples), matvecs)


def _stderr(samples: list[float]) -> float:
    return float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")


def lanczos_tridiagonal(op: HessianOperator, start: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos iterations from ``start`` with full reorthogonalization; returns the
    diagonal and off-diagonal of the tridiagonal matrix (stops early on an invariant subspace)."""
    basis = [start / np.linalg.norm(start)]
    alphas, betas = [], []
    for step in range(steps):
        w = op(basis[-1])
        alphas.append(float(w @ basis[-1]))
        for q in basis:  # full reorthogonalization (twice is enough)
            w -= (w @ q) * q
        for q in basis:
            w -= (w @ q) * q
        beta = float(np.linalg.norm(w))
        if step == steps - 1 or beta < 1e-10 * max(1.0, abs(alphas[-1])):
            break
        betas.append(beta)
        basis.append(w / beta)
    return np.array(alphas), np.array(betas)


@_blas_single_threaded
def slq_density(op: HessianOperator, seed: int, runs: int, steps: int, bins: int | None = None,
                sigma_squared: float = 1e-5, overhead: float = 0.01,
                sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019; PyHessian's
    ``density`` + ``density_generate``): Ritz values weighted by the squared first components of
    their eigenvectors, averaged over ``runs`` Rademacher starts, smoothed by a Gaussian kernel
    (see ``density_from_spectrum``). Returns (grid, density), integrating to 1."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    with stage(op, "density (SLQ)", runs * min(steps, op.dim)):
        for _ in range(runs):
            alphas, betas = lanczos_tridiagonal(op, rng.choice([-1.0, 1.0], size=op.dim), min(steps, op.dim))
            values, vectors = eigh_tridiagonal(alphas, betas)
            nodes.append(values)
            weights.append(vectors[0] ** 2 / runs)
    return density_from_spectrum(np.concatenate(nodes), np.concatenate(weights), bins, sigma_squared, overhead,
                                 sigma)


BINS_PER_SIGMA = 4
MAX_BINS = 100_000


def density_from_spectrum(nodes: np.ndarray, weights: np.ndarray, bins: int | None = None,
                          sigma_squared: float = 1e-5, overhead: float = 0.01,
                          sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-smoothed density of point masses ``weights`` at ``nodes``, on a grid.

    Kernel: standard deviation ``sigma``, or PyHessian's relative rule, variance
    ``sigma_squared * max(1, spectrum width)``; the relative rule blurs narrow spectra (width
    << 1) over much more than their width, so pass ``sigma`` for those. ``bins``: None chooses
    the grid from the kernel, ``BINS_PER_SIGMA`` points per sigma (at least 1000, at most
    ``MAX_BINS``): a grid coarser than the kernel samples each Gaussian at a few arbitrary points
    and misweighs isolated eigenvalues (a fixed 1000 bins gave 0.003-0.011 of the mass to an
    outlier of weight 0.005 in a spectrum of width 300)."""
    sigma2 = sigma**2 if sigma is not None else sigma_squared * max(1.0, nodes.max() - nodes.min() + 2 * overhead)
    margin = max(overhead, 6 * math.sqrt(sigma2))  # PyHessian's 0.01 margin cuts the edge kernels short
    low, high = nodes.min() - margin, nodes.max() + margin
    if bins is None:
        bins = int(np.clip(math.ceil(BINS_PER_SIGMA * (high - low) / math.sqrt(sigma2)) + 1, 1000, MAX_BINS))
    grid = np.linspace(low, high, bins)
    density = np.empty(bins)
    for start in range(0, bins, 8192):  # bounded memory: 8192 x nodes at a time
        part = grid[start : start + 8192, None] - nodes[None, :]
        density[start : start + 8192] = np.exp(-(part**2) / (2 * sigma2)) @ weights / math.sqrt(2 * math.pi * sigma2)
    area = trapezoid(density, grid)
    return grid, density / area if area > 0 else density


def pyhessian_spectrum(subject, theta, buffers, k: int, tol: float, max_iter: int, trace_probes: int,
                       trace_tol: float, seed: int) -> dict:
    """Top-k eigenpairs and trace from the ``pyhessian`` package on the full evaluation set.

    Works around PyPI pyhessian 0.1: ``cuda=False`` (its default needs CUDA); a private model
    copy (it calls ``model.eval()`` in place); seeded through a forked global RNG (it draws
    from the global one); float32 (it allocates float32 buffers). Its power iteration returns
    the largest-*magnitude* eigenvalues; they are returned sorted descending.
    """
    import copy

    from pyhessian import hessian as PyHessian

    if not subject.is_plain_criterion or subject._user_forward is not None or subject.data_source != "memory" \
            or not torch.is_tensor(subject.data[0]):
        raise ConfigError(f"The pyhessian backend needs a plain model + criterion subject (loss_fn(model(x), y) with "
                          f"x a tensor held in memory); {subject.name} has a custom loss, forward, structured inputs "
                          "or streamed data.")
    model = copy.deepcopy(subject.model).float()
    theta = subject.as_theta(theta)
    with torch.no_grad():
        state = subject.unflatten(theta, subject.buffers_at(theta, buffers))
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name in state:  # integer buffers (num_batches_tracked) are not in the flat vectors
                tensor.copy_(state[name])
    with distributed.alone():  # the reference reads the whole data on every process
        batches = [(x.float() if x.is_floating_point() else x, y) for (x, y), _ in subject.eval_batches()]
    on_device = torch.cuda.device(subject.device) if subject.device.type == "cuda" else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), on_device:  # pyhessian's .cuda(): this GPU
        # pyhessian calls backward(create_graph=True) on the model copy, which is discarded after
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        torch.manual_seed(seed)
        engine = PyHessian(model, subject.loss_fn, dataloader=batches, cuda=subject.device.type == "cuda")
        with progress_bar(desc=f"{subject.name}: Hessian top {k} eigenvalues and trace (pyhessian)",
                          unit="products") as shown:
            products = _count_calls(engine, "dataloader_hv_product", shown.update)
            values, vectors = engine.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
            samples = engine.trace(maxIter=trace_probes, tol=trace_tol)
    flat = np.stack([torch.cat([t.reshape(-1) for t in v]).double().cpu().numpy() for v in vectors])
    order = np.argsort(values)[::-1]
    stderr = _stderr(samples)
    return {
        "eigenvalues": np.asarray(values, dtype=float)[order],
        "eigenvectors": flat[order] / np.linalg.norm(flat[order], axis=1, keepdims=True),
        "trace": float(np.mean(samples)),
        "trace_stderr": stderr,
        "trace_probes": len(samples),
        "hvp_count": products[0],
    }


def _count_calls(obj, method: str, on_call=None) -> list[int]:
    counter = [0]
    original = getattr(obj, method)

    def counted(*args, **kwargs):
        counter[0] += 1
        if on_call is not None:
            on_call()
        return original(*args, **kwargs)

    setattr(obj, method, counted)
    return counter


def lanczos_products(k: int, ncv: int) -> int:
    """Products an implicitly restarted Lanczos run (ARPACK) typically takes for k eigenpairs with a
    basis of ncv vectors, and their residual check: one pass over the basis, or about ten products
    per eigenpair where a small basis restarts, plus k. The Hessians of the smoke and cpu benchmarks
    took 0.7 to 1.5 times that; the bottom of a crowded spectrum can take ten times more."""
    return max(ncv + k, 10 * k) + k
