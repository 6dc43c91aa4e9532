"""The ``hessian-layers`` analyzer: the block-diagonal Hessian, one block per layer.

Users of PyHessian ask for it (PyHessian issues #9, #10, #13, #14): which layers carry the
curvature. A block is a group of parameter tensors (one module's by default, or all whose names
share their first ``depth`` dotted parts: ``depth = 1`` gives a ResNet's stem, stages and head).
For each block B:

* its top eigenvalue, of H_BB (the Hessian restricted to B; Lanczos on v -> (H [v; 0])_B, or
  exactly from the dense block for blocks of at most ``dense_limit`` parameters), accepted only
  when its residual is at most tol ||H_BB|| and below the value (``checked_eigenpairs``), NaN
  otherwise;
* its trace, tr H_BB, by Hutchinson with ``trace_probes`` Rademacher probes of the block's own
  (zero elsewhere): a probe shared by all blocks would add every other block's cross terms to the
  variance (20 shared probes gave 0.83 +- 0.22 for an exact 0.49). Dense blocks have their exact
  trace.

A function of a flat vector (no named tensors) is one block. ``curvature`` ("ggn", "ef") puts the
generalized Gauss-Newton matrix or the empirical Fisher in the Hessian's place (see the ``hessian``
analyzer), block by block.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from lossatlas import memory
from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.evaluation import EXAMPLE_CHUNK
from lossatlas.hessian import CURVATURES, HessianOperator, check_curvature, checked_eigenpairs, dense_matrix
from lossatlas.memory import Memory
from lossatlas.params import Interval, Options, param
from lossatlas.hessian import lanczos_products
from lossatlas.plots import finite_or_nan, no_data
from lossatlas.point_analyzer import PointAnalyzer


def layer_blocks(subject, depth: int | None) -> list[tuple[str, np.ndarray]]:
    """(block name, flat parameter indices) in parameter order."""
    if subject.param_layout is None:
        return [("theta", np.arange(subject.dim))]
    blocks: dict[str, list[np.ndarray]] = {}
    start = 0
    for name, _, numel in subject.param_layout:
        parts = name.split(".")
        key = ".".join(parts[:depth]) if depth else (".".join(parts[:-1]) or name)
        blocks.setdefault(key, []).append(np.arange(start, start + numel))
        start += numel
    return [(key, np.concatenate(indices)) for key, indices in blocks.items()]


class _Block:
    """H_BB as an operator on the block's coordinates (for ``checked_eigenpairs``)."""

    def __init__(self, op: HessianOperator, indices: np.ndarray):
        self.op, self.indices, self.dim = op, indices, len(indices)

    def __call__(self, vector):
        full = np.zeros(self.op.dim)
        full[self.indices] = np.ravel(vector)
        return self.op(full)[self.indices]

    def dense(self) -> np.ndarray:
        return dense_matrix(self, self.dim)


def draw_layers(ax, result) -> None:
    """Each block's top eigenvalue and trace, in parameter order."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in result.arrays.get("layer_names", [])]
    tops = finite_or_nan(result.arrays.get("layer_top_eigenvalue", []))
    traces = finite_or_nan(result.arrays.get("layer_trace", []))
    ax.set(xlabel="layer block", ylabel="curvature (loss / parameter², symlog)",
           title="Hessian per layer block")
    if not names or len(tops) != len(names) or not np.isfinite(np.concatenate([tops, traces])).any():
        no_data(ax)
        return
    x = np.arange(len(names))
    ax.bar(x - 0.2, tops, width=0.4, label="top eigenvalue")
    ax.bar(x + 0.2, traces, width=0.4, label="trace")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xticks(x, names, rotation=90, fontsize=5 if len(names) > 12 else 6)
    ax.legend(loc="best")


class HessianLayers(PointAnalyzer):
    name = "hessian-layers"
    description = "Block-diagonal (per-layer) Hessian: each layer's top eigenvalue and trace."
    scope = "minimum"
    metrics = {
        "max_layer_eigenvalue": measure("largest top eigenvalue of any layer's Hessian block (GGN or empirical "
                                        "Fisher block by curvature; NaN if a block's failed the residual test)",
                                        higher_is_better=False),
        "top_layer_trace_share": measure("the largest |layer trace| over the sum of the |layer traces| (how "
                                         "concentrated the curvature is)"),
        "top_layer_trace_share_stderr": diagnostic("bootstrap standard error of top_layer_trace_share over the "
                                                   "probes (0 when every block is exact)"),
        "layers_unresolved": diagnostic("blocks whose top eigenvalue failed the residual test (NaN)"),
        "sum_layer_trace": diagnostic("sum of the layer traces (the Hessian's trace, estimated layer by layer)"),
        "n_layers": diagnostic("blocks"),
        "hvp_count": diagnostic("Hessian-vector products computed (GGN or empirical Fisher ones by curvature)"),
    }
    views = {"layers": view(draw_layers)}
    smoke_params = {"at": "theta0"}
    version = 2
    references = ("Yao et al. 2020, PyHessian",)
    keyless_defaults = {"curvature": "hessian"}  # results stored before it existed keep their keys

    curvature: str = param("hessian", Options(CURVATURES),
                           "the matrix: Hessian, generalized Gauss-Newton, or empirical Fisher (model subjects)")
    depth: int | None = param(None, Interval(int, 1, allow_none=True),
                              "block = names sharing their first depth dotted parts; None: one block per module")
    tol: float = param(1e-3, Interval(float, 0, 1))
    max_restarts: int = param(100, Interval(int, 1))
    trace_probes: int = param(20, Interval(int, 2), "Rademacher probes per block (each block its own)")
    dense_limit: int = param(8, Interval(int, 0), "blocks of at most this many parameters are formed exactly")
    seed: int = param(0, Interval(int, 0))

    def check_subject(self, subject):
        super().check_subject(subject)
        check_curvature(self.curvature, subject)

    def memory(self, subject):
        """On the host: the blocks' indices (int64, one per parameter), and for the largest block the
        embedding of a block vector, the full product and its restriction (parameter-sized), and
        ARPACK for its top eigenpair (``checked_eigenpairs`` with k = 1: a 6-vector basis and scipy's
        copy of it, 3 work vectors, residual, start, product, old and new Ritz vectors: 20
        block-sized vectors); on the device one Hessian-vector product (with curvature="ef", its
        per-example gradients too)."""
        largest = max(len(indices) for _, indices in layer_blocks(subject, self.depth))
        host = memory.vectors(subject, 3) + 20 * 8 * largest
        need = Memory(host=host) + memory.hvp(subject) + memory.requested(self, subject)
        return need + memory.example_gradients(subject, EXAMPLE_CHUNK) if self.curvature == "ef" else need

    def work(self, subject):
        """Its work (``lossatlas.planning``): the loss at the point and, per block, its dense
        matrix (one product per parameter) or a Lanczos run for its top eigenpair and its trace
        probes -- each a product of the whole curvature matrix."""
        products = sum(len(indices) if len(indices) <= max(self.dense_limit, 2)
                       else lanczos_products(1, 6) + self.trace_probes
                       for _, indices in layer_blocks(subject, self.depth))
        return {("product", self.curvature): products, ("loss",): 1}

    def compute(self, subject, samples):
        theta, buffers = samples["point"]["theta"], samples["point"]["buffers"]
        self.finite_loss(subject, theta, buffers, "the Hessian")
        op = HessianOperator(subject, theta, buffers, self.curvature)
        blocks = layer_blocks(subject, self.depth)
        tops, traces, stderrs = np.empty(len(blocks)), np.empty(len(blocks)), np.zeros(len(blocks))
        estimated, reasons = [], []
        operators = [_Block(op, indices) for _, indices in blocks]
        eps = float(torch.finfo(subject.theta0.dtype).eps)
        with op.stage("top eigenvalue per block") as shown:  # one bar, the current block named on it
            for index, ((name, _), block) in enumerate(zip(blocks, operators)):
                if shown is not None:
                    shown.set_postfix_str(name, refresh=False)
                if block.dim <= max(self.dense_limit, 2):  # ARPACK needs k < dim - 1
                    spectrum = np.linalg.eigvalsh(block.dense())
                    tops[index], traces[index] = spectrum[-1], spectrum.sum()
                else:
                    top = checked_eigenpairs(block, 1, "top", self.tol, self.seed + index, self.max_restarts, eps=eps)
                    tops[index] = top.values[0] if len(top.values) else np.nan
                    reasons += [f"{name}: {top.reason}"] if top.reason else []
                    estimated.append(index)
        rng = np.random.default_rng(self.seed)
        probes = np.empty((self.trace_probes, len(estimated)))
        with op.stage("trace per block (Hutchinson)", self.trace_probes * len(estimated)):
            for column, index in enumerate(estimated):  # each block its own probes
                block = operators[index]
                for row in range(self.trace_probes):
                    probe = rng.choice([-1.0, 1.0], size=block.dim)
                    probes[row, column] = probe @ block(probe)
        if estimated:
            traces[estimated] = probes.mean(axis=0)
            stderrs[estimated] = probes.std(axis=0, ddof=1) / np.sqrt(self.trace_probes)
        if reasons:
            warnings.warn(f"{subject.name}: layer top eigenvalues refused: {'; '.join(reasons)}.", stacklevel=2)
        total = float(traces.sum())
        metrics = {"max_layer_eigenvalue": float(tops.max()), "sum_layer_trace": total,
                   "top_layer_trace_share": _share(traces[None])[0],
                   "top_layer_trace_share_stderr": _share_stderr(traces, probes, estimated, self.seed),
                   "layers_unresolved": float(np.isnan(tops).sum()),
                   "n_layers": float(len(blocks)), "hvp_count": float(op.count)}
        arrays = {"layer_names": np.array([name for name, _ in blocks], dtype="S"),
                  "layer_sizes": np.array([len(indices) for _, indices in blocks]),
                  "layer_top_eigenvalue": tops, "layer_trace": traces, "layer_trace_stderr": stderrs}
        return metrics, arrays


def _share(traces: np.ndarray) -> np.ndarray:
    """The largest |trace| over the sum of |traces| of every row; NaN where all are 0."""
    total = np.abs(traces).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(traces).max(axis=1) / np.where(total > 0, total, 1), np.nan)


def _share_stderr(traces: np.ndarray, probes: np.ndarray, estimated: list[int], seed: int,
                  resamples: int = 1000) -> float:
    """Bootstrap standard error of the share: each estimated block's probes resampled on their own."""
    if not estimated:
        return 0.0
    rng = np.random.default_rng(seed)
    drawn = np.repeat(traces[None], resamples, axis=0)
    rows = rng.integers(0, len(probes), (resamples, len(probes), len(estimated)))
    drawn[:, estimated] = np.take_along_axis(probes[None].repeat(resamples, axis=0), rows, axis=1).mean(axis=1)
    return float(np.nanstd(_share(drawn), ddof=1))
