"""Merge tree + persistence vs gudhi's cubical persistence, and grid evaluation throughput.

    python -m benchmarks.perf.merge_tree

1. Topology on a smooth random field (the merge-tree image representation vs
   gudhi.CubicalComplex, both computing the 0-dim diagram) at 41^2, 101^2, 1001^2.
2. Grid evaluation, points/second: the batched path (vmap over chunks, ``Subject.losses``)
   vs the per-point loop a user would write (``load_state_dict`` + forward over the data),
   on ResNet-20 (digits) and the convection PINN.
Writes results_merge_tree.md here. (The ``landscaper`` package's topopy merge tree pins
numpy<2, which cannot share this environment; it is not compared.)
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import gudhi
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from lossatlas.problems import pinn_convection, resnet
from lossatlas.subjects import _unflatten
from lossatlas.topology import grid_edges, merge_tree


def _best(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def topology_rows() -> list[str]:
    rows = ["| grid | lossatlas merge tree s | gudhi cubical s | ratio (gudhi / ours) | minima |", "|---|---|---|---|---|"]
    for n in (41, 101, 1001):
        field = gaussian_filter(np.random.default_rng(0).normal(size=(n, n)), sigma=2.0)
        edges = grid_edges(field.shape)
        ours = _best(lambda: merge_tree(field.ravel(), edges))

        def cubical():
            complex_ = gudhi.CubicalComplex(top_dimensional_cells=field)
            complex_.compute_persistence()
            return complex_.persistence_intervals_in_dimension(0)

        theirs = _best(cubical)
        minima = merge_tree(field.ravel(), edges).n_minima
        assert minima == len(cubical())
        rows.append(f"| {n}x{n} | {ours:.4f} | {theirs:.4f} | {theirs / ours:.2f} | {minima} |")
    return rows


def _loop_losses(subject, thetas) -> np.ndarray:
    """What a user writes without lossatlas: load each point into the model, forward the data."""
    model = subject.model
    out = []
    for theta in thetas:
        state = model.state_dict()
        state.update(_unflatten(theta, subject._params))
        model.load_state_dict(state)
        with torch.no_grad():
            out.append(sum(float(part) for part in subject._loss_parts(theta, subject.buffers0)) if subject.classification is False
                       else float(subject.loss_fn(model(subject.data[0]), subject.data[1])))
    return np.array(out)


def evaluation_rows(points: int = 48) -> list[str]:
    rows = ["| subject | default path | vmap points/s | functional loop points/s | load_state_dict loop points/s | "
            "default / load_state_dict |", "|---|---|---|---|---|---|"]
    for subject in (resnet(skip=True, eval_batch_size=2000), pinn_convection(10.0)):
        thetas = subject.theta0 + 0.01 * torch.randn(points, subject.dim, generator=torch.Generator().manual_seed(0),
                                                      dtype=subject.theta0.dtype)
        default_vmap = subject._vmap_ok
        speeds = {}
        for path in (True, False):
            subject._vmap_ok = path
            subject.losses(thetas[:2])  # warm up
            speeds[path] = points / _best(lambda: subject.losses(thetas), repeat=2)
        subject._vmap_ok = default_vmap
        loop = points / _best(lambda: _loop_losses(subject, thetas), repeat=2)
        np.testing.assert_allclose(subject.losses(thetas), _loop_losses(subject, thetas), rtol=1e-4)
        rows.append(f"| {subject.name} | {'vmap' if default_vmap else 'loop'} | {speeds[True]:.1f} | {speeds[False]:.1f} "
                    f"| {loop:.1f} | {speeds[default_vmap] / loop:.2f} |")
    return rows


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    text = "\n".join(["# Merge tree and grid evaluation", "", f"Machine: {machine}", "", "## Topology", "",
                      *topology_rows(), "", "## Grid evaluation", "", *evaluation_rows(), ""])
    Path(__file__).with_name("results_merge_tree.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
