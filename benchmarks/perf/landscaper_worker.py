"""Run inside the throwaway landscaper venv (numpy<2), not with lossatlas:

    /tmp/landscaper-venv/bin/python benchmarks/perf/landscaper_worker.py REPEAT GRID.npy [GRID.npy ...]

For each 2-D loss grid: the merge tree as landscaper builds it (``LossLandscape(loss, ranges)
.get_sublevel_tree()``: topopy's MergeTree on an nglpy empty-region graph of the grid points) and
its 0-dim persistence pairs (elder rule on that tree), best of REPEAT wall seconds. Prints one
JSON object: {path: {"seconds": best, "n_minima": ..., "persistence": sorted finite persistences}}.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def tree_persistence(tree) -> list[float]:
    """Finite (saddle - minimum) values of the tree's branches by the elder rule."""
    values = {int(k): float(v) for k, v in tree.nodes.items()}
    neighbours: dict[int, list[int]] = {k: [] for k in values}
    for a, b in tree.edges:
        neighbours[int(a)].append(int(b))
        neighbours[int(b)].append(int(a))
    parent: dict[int, int] = {}
    lowest: dict[int, int] = {}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    out = []
    for node in sorted(values, key=lambda k: (values[k], k)):
        parent[node], lowest[node] = node, node
        roots = sorted({find(n) for n in neighbours[node] if n in parent}, key=lambda r: values[lowest[r]])
        for root in roots[1:]:  # every younger branch dies here
            out.append(values[node] - values[lowest[root]])
        for root in roots:  # the node joins them all; the oldest minimum lives on
            parent[root] = node
        if roots:
            lowest[node] = lowest[roots[0]]
    return sorted(p for p in out if p > 0)


def main() -> None:
    from landscaper import LossLandscape

    repeat, paths = int(sys.argv[1]), sys.argv[2:]
    report = {}
    for path in paths:
        loss = np.load(path)
        ranges = [np.linspace(-1.0, 1.0, n) for n in loss.shape]
        best, result = float("inf"), None
        for _ in range(repeat):
            start = time.perf_counter()
            tree = LossLandscape(loss, ranges).get_sublevel_tree()
            persistence = tree_persistence(tree)
            best = min(best, time.perf_counter() - start)
            result = {"n_minima": len(tree.leaves), "persistence": persistence}
        report[path] = {"seconds": best, **result}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
