"""The ``hessian-layers`` analyzer: the block-diagonal Hessian, one block per layer.

Users of PyHessian ask for it (PyHessian issues #9, #10, #13, #14): which layers carry the
curvature. A block is a group of parameter tensors (one module's by default, or all whose names
share their first ``depth`` dotted parts: ``depth = 1`` gives a ResNet's stem, stages and head).
For each block B:

* its top eigenvalue, of H_BB (the Hessian restricted to B; Lanczos on v -> (H [v; 0])_B, or
  exactly from the dense block for blocks of at most ``dense_limit`` parameters);
* its trace, tr H_BB. All blocks share the same Rademacher probes: for a full probe v, the
  expectation of v_B . (H v)_B is tr H_BB (cross terms have mean 0), so ``trace_probes`` products
  estimate every block's trace at once. Dense blocks have their exact trace.

A function of a flat vector (no named tensors) is one block.
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import Analyzer, diagnostic, measure
from lossatlas.hessian import HessianOperator, dense_matrix, top_eigenpairs
from lossatlas.params import Interval, param, same_as
from lossatlas.plots import draw_layers
from lossatlas.samplers import Point, finite_loss


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
    """H_BB as an operator on the block's coordinates (for ``top_eigenpairs``)."""

    def __init__(self, op: HessianOperator, indices: np.ndarray):
        self.op, self.indices, self.dim = op, indices, len(indices)

    def __call__(self, vector):
        full = np.zeros(self.op.dim)
        full[self.indices] = np.ravel(vector)
        return self.op(full)[self.indices]

    def dense(self) -> np.ndarray:
        return dense_matrix(self, self.dim)


class HessianLayers(Analyzer):
    name = "hessian-layers"
    description = "Block-diagonal (per-layer) Hessian: each layer's top eigenvalue and trace."
    scope = "minimum"
    metrics = {
        "max_layer_eigenvalue": measure("largest top eigenvalue of any layer's Hessian block", higher_is_better=False),
        "top_layer_trace_share": measure("the largest |layer trace| over the sum of the |layer traces| (how "
                                         "concentrated the curvature is)"),
        "sum_layer_trace": diagnostic("sum of the layer traces (the Hessian's trace, estimated layer by layer)"),
        "n_layers": diagnostic("blocks"),
        "hvp_count": diagnostic("Hessian-vector products computed"),
    }
    views = {"layers": draw_layers}
    smoke_params = {"at": "theta0"}

    at: str = same_as(Point, "at")
    minimum: int = same_as(Point, "minimum")
    depth: int | None = param(None, Interval(int, 1, allow_none=True),
                              "block = names sharing their first depth dotted parts; None: one block per module")
    tol: float = param(1e-3, Interval(float, 0, 1))
    max_restarts: int = param(100, Interval(int, 1))
    trace_probes: int = param(20, Interval(int, 2), "Rademacher probes shared by all blocks")
    dense_limit: int = param(8, Interval(int, 0), "blocks of at most this many parameters are formed exactly")
    seed: int = param(0, Interval(int, 0))

    def requests(self, subject):
        return {"point": Point(at=self.at, minimum=self.minimum)}

    def compute(self, subject, samples):
        theta, buffers = samples["point"]["theta"], samples["point"]["buffers"]
        finite_loss(subject, theta, buffers, self.at, self.minimum, "the Hessian")
        op = HessianOperator(subject, theta, buffers)
        blocks = layer_blocks(subject, self.depth)
        tops, traces, stderrs = np.empty(len(blocks)), np.empty(len(blocks)), np.zeros(len(blocks))
        estimated = []
        for index, (_, indices) in enumerate(blocks):
            block = _Block(op, indices)
            if block.dim <= max(self.dense_limit, 2):  # ARPACK needs k < dim - 1
                spectrum = np.linalg.eigvalsh(block.dense())
                tops[index], traces[index] = spectrum[-1], spectrum.sum()
            else:
                values, _ = top_eigenpairs(block, 1, self.tol, self.seed + index, self.max_restarts)
                tops[index] = values[0]
                estimated.append(index)
        if estimated:
            rng = np.random.default_rng(self.seed)
            samples_ = np.empty((self.trace_probes, len(estimated)))
            for probe_index in range(self.trace_probes):
                probe = rng.choice([-1.0, 1.0], size=subject.dim)
                product = op(probe)
                samples_[probe_index] = [probe[blocks[i][1]] @ product[blocks[i][1]] for i in estimated]
            traces[estimated] = samples_.mean(axis=0)
            stderrs[estimated] = samples_.std(axis=0, ddof=1) / np.sqrt(self.trace_probes)
        total = float(traces.sum())
        metrics = {"max_layer_eigenvalue": float(tops.max()), "sum_layer_trace": total,
                   "top_layer_trace_share": float(np.abs(traces).max() / np.abs(traces).sum())
                   if np.abs(traces).sum() > 0 else float("nan"),
                   "n_layers": float(len(blocks)), "hvp_count": float(op.count)}
        arrays = {"layer_names": np.array([name for name, _ in blocks], dtype="S"),
                  "layer_sizes": np.array([len(indices) for _, indices in blocks]),
                  "layer_top_eigenvalue": tops, "layer_trace": traces, "layer_trace_stderr": stderrs}
        return metrics, arrays
