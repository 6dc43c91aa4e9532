"""Union-find with the elder rule, shared by the merge tree and the barcode of minima.

0-dim persistence by Kruskal: when two components meet, the younger one (the one whose oldest
element comes later in the filtration) dies and the elder one lives on (Edelsbrunner & Harer,
Computational Topology, 2010, §VII.1). Keeping the elder element as each component's root
makes the root the component's birth.
"""
from __future__ import annotations

import numpy as np


class ElderUnionFind:
    """``n`` elements; ``order[i]`` is element i's position in the filtration (lower = elder,
    all distinct). Each root is the elder element of its component."""

    def __init__(self, n: int, order) -> None:
        self.order = np.asarray(order)
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        """The root of x's component, with path compression (iterative)."""
        parent = self.parent
        root = int(x)
        while parent[root] != root:
            root = int(parent[root])
        while x != root:
            parent[x], x = root, int(parent[x])
        return root

    def union(self, a: int, b: int) -> tuple[int, int] | None:
        """Join the components of a and b: (elder root, younger root), the younger one dying
        here; None when they are already one component."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return None
        if self.order[a] > self.order[b]:
            a, b = b, a
        self.parent[b] = a
        return a, b
