"""Directions in parameter space for loss grids, two by default (a plane) or ``count`` (a 3-D or
4-D grid): random filter-normalized, Hessian, axes, and the principal components of a training
trajectory. "Hessian" directions are the top eigenvectors of a ``curvature``
(``lossatlas.hessian``): the Hessian by default, or the generalized Gauss-Newton matrix or the
empirical Fisher of a model + criterion subject."""
from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError
from .params import Interval, NumberList, validate
from .hessian import CURVATURES, HessianOperator, check_curvature, top_eigenpairs

KINDS = ("random", "hessian", "axes", "pca")


def filter_normalize(direction: torch.Tensor, theta: torch.Tensor, layout, include_bn: bool = False) -> torch.Tensor:
    """Li et al. 2018 (§4): every filter (output unit, the first axis of a weight tensor) of the
    direction is rescaled to the norm of the same filter of ``theta``. One-dimensional
    parameters (biases, BatchNorm) are zeroed, or with ``include_bn`` set to theta's own values,
    as in the authors' code. ``layout``: (name, shape, numel) per parameter tensor; None for a
    plain function, whose direction is scaled to unit norm (there are no filters)."""
    if direction.ndim != 1 or direction.shape != theta.shape:
        raise ConfigError(f"A direction must be a flat vector as long as theta ({theta.numel()} parameters); "
                          f"got shape {tuple(direction.shape)}.")
    if layout is None:
        return direction / direction.norm()
    out = torch.empty_like(direction)
    offset = 0
    for _, shape, numel in layout:
        d = direction[offset : offset + numel]
        w = theta[offset : offset + numel]
        if len(shape) <= 1:
            out[offset : offset + numel] = w if include_bn else 0.0
        else:
            d2, w2 = d.reshape(shape[0], -1), w.reshape(shape[0], -1)
            scale = w2.norm(dim=1, keepdim=True) / (d2.norm(dim=1, keepdim=True) + 1e-10)
            out[offset : offset + numel] = (d2 * scale).reshape(-1)
        offset += numel
    return out


def random_directions(subject, center: torch.Tensor, seed: int, include_bn: bool = False,
                      count: int = 2) -> torch.Tensor:
    """``count`` seeded Gaussian directions, filter-normalized at ``center``; rows of a (count, dim)
    tensor. Drawn one after another from one generator, so the first two do not depend on ``count``."""
    generator = torch.Generator().manual_seed(int(seed))
    layout = subject.param_layout
    draw = lambda: torch.randn(subject.dim, generator=generator, dtype=center.dtype).to(center.device)  # noqa: E731
    rows = [filter_normalize(draw(), center, layout, include_bn) for _ in range(count)]
    return torch.stack(rows)


def hessian_directions(subject, center: torch.Tensor, buffers, seed: int, tol: float = 1e-3,
                       curvature: str = "hessian", count: int = 2) -> torch.Tensor:
    """The top-``count`` Hessian eigenvectors at ``center`` (Yao et al. 2020), or those of the GGN
    or the empirical Fisher by ``curvature``, scaled to the norm of ``center`` for modules (so a span
    of 1 is a move as large as the parameters themselves, as with filter-normalized directions) and
    to unit norm for plain functions."""
    check(subject, "hessian", curvature, count)
    op = HessianOperator(subject, center, buffers, curvature)
    _, vectors = top_eigenpairs(op, count, tol, seed, max_restarts=1000)
    scale = float(center.norm()) if subject.param_layout is not None else 1.0
    return torch.as_tensor(vectors, dtype=center.dtype, device=center.device) * (scale if scale > 0 else 1.0)


def axis_directions(subject, count: int = 2) -> torch.Tensor:
    """The coordinate axes of a ``count``-parameter subject: the grid is the function's own domain."""
    check(subject, "axes", dimensions=count)
    return torch.eye(count, dtype=subject.theta0.dtype, device=subject.device)


def pca_directions(trajectory, center: torch.Tensor, count: int = 2) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Li et al. 2018 (§7): the first ``count`` principal components (unit vectors, rows) of the
    trajectory's offsets from ``center`` (the final point), their explained variance ratios, and
    the trajectory's coordinates along them (its projection onto the grid's plane or space). A
    random direction is nearly orthogonal to a trajectory; these show the path the optimizer took."""
    from sklearn.decomposition import PCA

    offsets = np.asarray(trajectory, dtype=np.float64) - center.double().cpu().numpy()[None, :]
    if len(offsets) < count + 1:
        raise ConfigError(f"{count} PCA directions need a trajectory of at least {count + 1} points ({count} epochs); "
                          f"got {len(offsets)}.")
    pca = PCA(n_components=count, svd_solver="full").fit(offsets)
    components = pca.components_ / np.linalg.norm(pca.components_, axis=1, keepdims=True)
    path = offsets @ components.T
    return (torch.as_tensor(components, dtype=center.dtype, device=center.device), pca.explained_variance_ratio_,
            path)


def cosine(directions: torch.Tensor) -> float:
    """The cosine between two directions (rows); of more, the pair's farthest from 0 (the grid's
    worst skew)."""
    if directions.ndim != 2 or len(directions) < 2:
        raise ConfigError(f"cosine needs two or more directions as the rows of a (k, dim) array; got shape "
                          f"{tuple(directions.shape)}.")
    rows = directions.double()
    cosines = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            denominator = float(rows[i].norm() * rows[j].norm())
            cosines.append(float(rows[i] @ rows[j]) / denominator if denominator > 0 else float("nan"))
    return max(cosines, key=lambda c: abs(c) if c == c else np.inf)  # NaN (a zero direction) wins


def check(subject, kind: str, curvature: str = "hessian", dimensions: int = 2) -> None:
    """Whether ``dimensions`` directions of ``kind`` (of ``curvature`` for "hessian") exist for
    ``subject``: checked before any work."""
    if kind not in KINDS:
        raise ConfigError(f"Unknown directions {kind!r}; valid: {list(KINDS)}.")
    if curvature not in CURVATURES:
        raise ConfigError(f"Unknown curvature {curvature!r}; valid: {list(CURVATURES)}.")
    if curvature != "hessian" and kind != "hessian":
        raise ConfigError(f"curvature={curvature!r} chooses the matrix of Hessian directions; directions={kind!r} "
                          "has none. Use directions='hessian', or leave curvature at 'hessian'.")
    d = dimensions
    if subject.dim < d:  # more directions than parameters are dependent: the grid folds onto fewer dimensions
        words = {2: "two", 3: "three", 4: "four"}.get(d, str(d))
        raise ConfigError(f"A {d}-D loss grid needs {words} independent directions; {subject.name} has {subject.dim} "
                          "parameter(s). " + ("Use the interpolation analyzer for a 1-D landscape." if subject.dim < 2
                                              else f"Use dimensions={subject.dim}."))
    if kind == "hessian" and subject.dim <= d:
        raise ConfigError(f"Hessian directions need more than {d} parameters; {subject.name} has {subject.dim}: "
                          "use directions='axes'.")
    if kind == "pca" and subject.dim <= d:
        raise ConfigError(f"PCA directions need more than {d} parameters; {subject.name} has {subject.dim}: "
                          "use directions='axes'.")
    if kind == "axes" and subject.dim != d:
        raise ConfigError(f"directions='axes' needs a {d}-parameter subject; {subject.name} has {subject.dim}"
                          + (f": use dimensions={subject.dim}." if subject.dim in (2, 3, 4) else "."))
    if kind == "hessian":
        check_curvature(curvature, subject)


def make(kind: str, subject, center, buffers, seed: int, include_bn: bool = False,
         curvature: str = "hessian", count: int = 2) -> torch.Tensor:
    """``count`` directions of ``kind`` (rows); "pca" needs a trajectory: see ``pca_directions``."""
    if kind == "random":
        return random_directions(subject, center, seed, include_bn, count)
    if kind == "hessian":
        return hessian_directions(subject, center, buffers, seed, curvature=curvature, count=count)
    if kind == "axes":
        return axis_directions(subject, count)
    if kind == "pca":
        raise ConfigError("PCA directions come from a training trajectory: use pca_directions (a Grid with "
                          "directions='pca' and a Trajectory input does).")
    raise ConfigError(f"Unknown directions {kind!r}; valid: {list(KINDS)}.")


def span_pair(span) -> tuple[float, float]:
    """(span_x, span_y) from one half-width or two."""
    pair = list(span) if isinstance(span, (list, tuple)) else [span, span]
    validate("loss_grid", {"span": pair}, {"span": NumberList(Interval(float, 0, None, closed="neither"), min_len=2)})
    if len(pair) != 2:
        raise ConfigError(f"The 'span' parameter of loss_grid must be one number or two. Got {span!r}.")
    return float(pair[0]), float(pair[1])
