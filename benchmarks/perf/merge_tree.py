"""Merge tree + persistence of a 2-D loss grid: lossatlas vs gudhi's cubical complex vs landscaper.

    python -m benchmarks.perf --only merge_tree

The same smooth random fields (Gaussian-filtered noise, sigma 2) at 41², 61², 101², 1001²:

- lossatlas: ``grid_edges`` + ``merge_tree`` (the merge-tree analyzer's ``image``
  representation, 8-connected pixels, the one gudhi's cubical complex shares; the default
  ``triangulated_grid`` has one diagonal fewer per square), the pairs, i.e. the persistence, included; and on a
  Gabriel graph of the grid points (``gabriel_edges``), the kind of graph landscaper builds;
- gudhi: ``CubicalComplex(top_dimensional_cells=...)`` and its 0-dim persistence (the same
  8-connectivity: asserted to give the same diagram);
- landscaper (PyPI ``landscaper``, which pins numpy<2 and so lives in its own venv): ``LossLandscape
  (loss, ranges).get_sublevel_tree()`` (topopy's MergeTree on an nglpy empty-region graph) and the
  elder-rule persistence of that tree, run by ``landscaper_worker.py`` with that venv's python on
  the same .npy grids, timing only that call. Create the venv with

      python3 -m venv /tmp/landscaper-venv
      /tmp/landscaper-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
      /tmp/landscaper-venv/bin/pip install landscaper

  It is skipped, with the reason recorded, where that python or package is missing.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

import gudhi
import numpy as np
from scipy.ndimage import gaussian_filter

from lossatlas.topology import gabriel_edges, grid_edges, merge_tree

from .common import Section, Target, interleaved_best, log, table

LANDSCAPER_PYTHON = os.environ.get("LOSSATLAS_LANDSCAPER_PYTHON", "/tmp/landscaper-venv/bin/python")
LANDSCAPER_TARGET = 100.0
WORKER = Path(__file__).with_name("landscaper_worker.py")


def field(n: int) -> np.ndarray:
    return gaussian_filter(np.random.default_rng(0).normal(size=(n, n)), sigma=2.0)


def ours_image(values: np.ndarray):
    return merge_tree(values.ravel(), grid_edges(values.shape))


def ours_gabriel(values: np.ndarray, points: np.ndarray):
    return merge_tree(values.ravel(), gabriel_edges(points))


def gudhi_cubical(values: np.ndarray) -> np.ndarray:
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=values)
    complex_.compute_persistence()
    return complex_.persistence_intervals_in_dimension(0)


def _rows(pairs: np.ndarray) -> np.ndarray:
    """The finite (birth, death) pairs in lexicographic order."""
    finite = pairs[np.isfinite(pairs[:, 1])]
    return finite[np.lexsort((finite[:, 1], finite[:, 0]))]


def grid_points(n: int) -> np.ndarray:
    axis = np.linspace(-1.0, 1.0, n)
    xx, yy = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def landscaper(python: str, paths: list[str], repeat: int, timeout: float) -> tuple[dict, str]:
    """({path: result}, "") from the landscaper venv, or ({}, why it could not run)."""
    if not Path(python).exists():
        return {}, f"no landscaper venv python at {python} (see the module docstring to create one)"
    try:
        done = subprocess.run([python, str(WORKER), str(repeat), *paths], capture_output=True, text=True,
                              timeout=timeout, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return {}, f"landscaper did not finish within {timeout:.0f} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {}, f"landscaper venv failed: {last}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def run(quick: bool = False, landscaper_python: str = LANDSCAPER_PYTHON) -> Section:
    section = Section("merge_tree", "Merge tree + persistence")
    section.text.append(
        "Smooth random fields (Gaussian-filtered noise, σ = 2). lossatlas `image`: `grid_edges` + `merge_tree` "
        "(8-connected pixels, the connectivity gudhi's cubical complex shares; the analyzer's default "
        "`triangulated_grid` has one diagonal fewer per square; graph construction and pairing included). gudhi: "
        "`CubicalComplex` + 0-dim persistence, the same connectivity (diagrams asserted equal). lossatlas "
        "`gabriel`: `gabriel_edges` + `merge_tree`, the kind of graph landscaper builds. landscaper: "
        "`LossLandscape(loss, ranges).get_sublevel_tree()` (topopy MergeTree on an nglpy empty-region graph) "
        "+ elder-rule persistence of its tree, in its own venv (numpy<2) on the same .npy grids, only that "
        "call timed. Best of 5 interleaved runs (landscaper: best of 2 at 41², one run above).")
    sizes = (41, 61, 101) if quick else (41, 61, 101, 1001)
    landscaper_sizes = (41,) if quick else (41, 61)
    rows, timings = [], {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for n in sizes:
            values = field(n)
            points = grid_points(n)
            tree = ours_image(values)
            diagram = gudhi_cubical(values)
            np.testing.assert_allclose(_rows(tree.pairs), _rows(diagram), rtol=1e-12)
            assert tree.n_minima == len(diagram)
            sides = {"image": lambda v=values: ours_image(v), "gudhi": lambda v=values: gudhi_cubical(v)}
            if n <= 101:
                sides["gabriel"] = lambda v=values, p=points: ours_gabriel(v, p)
            timings[n] = interleaved_best(sides, 5 if n <= 101 else 2)
            timings[n]["minima"] = tree.n_minima
            timings[n]["gabriel minima"] = ours_gabriel(values, points).n_minima if n <= 101 else None
            log(f"merge tree: {n}x{n} ours {timings[n]['image']:.4f} s, gudhi {timings[n]['gudhi']:.4f} s")
            if n in landscaper_sizes:
                paths[n] = os.path.join(folder, f"grid{n}.npy")
                np.save(paths[n], values)
        found, why = {}, ""
        for n in landscaper_sizes:
            log(f"merge tree: landscaper {n}x{n} (seconds to minutes)")
            result, why = landscaper(landscaper_python, [paths[n]], 2 if n == 41 else 1, timeout=900)
            if why:
                break
            found[n] = result[paths[n]]
    measured = sorted(found)
    if len(measured) >= 2:  # landscaper's cost grows ~N^k with the number of grid points N
        (n0, n1), (t0, t1) = measured[-2:], (found[measured[-2]]["seconds"], found[measured[-1]]["seconds"])
        exponent = math.log(t1 / t0) / math.log(n1**2 / n0**2)
    for n in sizes:
        t = timings[n]
        if n in found:
            their = found[n]
            landscaper_cells = [f"{their['seconds']:.2f}", f"{their['seconds'] / t['image']:.0f}",
                                f"{their['n_minima']}"]
        elif why and n in landscaper_sizes:
            landscaper_cells = ["skipped", "", ""]
        elif len(measured) >= 2 and n < 1001:
            estimate = found[measured[-1]]["seconds"] * (n**2 / measured[-1] ** 2) ** exponent
            landscaper_cells = [f"not run (≈{estimate:.0f} s extrapolated, N^{exponent:.1f})",
                                f"≈{estimate / t['image']:.0f}", ""]
        else:
            landscaper_cells = ["not run", "", ""]
        gabriel = "" if t["gabriel minima"] is None else f"{t['gabriel']:.4f} ({t['gabriel minima']})"
        rows.append([f"{n}²", f"{t['image']:.4f}", f"{t['gudhi']:.4f}", f"{t['gudhi'] / t['image']:.2f}",
                     str(t["minima"]), gabriel, *landscaper_cells])
    section.tables.append(table(["grid", "lossatlas image s", "gudhi cubical s", "gudhi / ours", "minima",
                                 "lossatlas gabriel s (minima)", "landscaper s", "landscaper / ours (image)",
                                 "landscaper minima"], rows))
    if why:
        section.text.append(f"landscaper: skipped where no time is given: {why}.")
    if 41 not in found:
        section.targets.append(Target("merge tree vs landscaper at 41²", float("nan"), LANDSCAPER_TARGET,
                                      missed_reason=f"not measured: {why}"))
    else:
        section.targets.append(Target("merge tree vs landscaper at 41²", found[41]["seconds"] / timings[41]["image"],
                                      LANDSCAPER_TARGET))
        growth = f"~N^{exponent:.1f} in the number N of grid points here" if len(measured) >= 2 else "steeply"
        section.text.append(
            "landscaper's time is almost all the nglpy empty-region graph over the grid points (cProfile at "
            f"41²: 98% in `EmptyRegionGraph.build`), which grows {growth}; "
            "its minima differ from ours because that graph differs from the 8-connected pixels (and topopy "
            "stores values as float32). No target is set against gudhi; it is the reference the diagrams are "
            "checked against.")
    return section
