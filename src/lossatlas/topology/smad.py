"""SMAD, the saddle-minimum average distance of Landscaper 1.3.1 (Chen, Hadler et al. 2025;
``LossLandscape.smad()`` with its defaults, as released: the repository's later code reads the
join tree instead of the contour tree).

Landscaper builds the contour tree (Carr, Snoeyink & Axen 2003) of the loss on the beta-skeleton
(beta = 1, nglpy's EmptyRegionGraph) of the grid's coordinates, which on a regular grid is the
grid with its axis neighbours only (4 in 2-D, 6 in 3-D: the corners of a square lie on the circle
of its diagonal and block it). SMAD is the mean, over the edges of that tree joining a local
minimum to an inner node, of the loss difference along the edge; 0 when the tree is one edge (one
minimum, one maximum, no saddle).

Here without building the contour tree: the node next to a minimum m is the lowest of (a) the
join saddle where m's sublevel-set component first meets another one (the highest point when it
never does) and (b) the split saddles inside that component below it. Below (a) the component
holds no other minimum, so its part of the contour tree only branches upward, and every node of
that part lies above its lowest split saddle (Carr et al. 2003: a vertex's up-degree in the
contour tree is its up-degree in the split tree). Equal to Landscaper's wherever its contour tree is
a tree (every such grid tried, 2-D and 3-D). The grid graph is not a triangulated disk, and on
grids rough at the scale of one step its join and split trees need not merge into a tree: topopy
then returns a forest (and raises with full augmentation), and Landscaper's number depends on how
that merge failed; this one stays the join/split reading above. A minimum that is itself a split
saddle (removing it cuts the higher ground in two) has one neighbour here where a tree has several.
"""
from __future__ import annotations

import numpy as np

from .merge_tree import merge_tree


def smad(values, edges) -> float:
    """SMAD of ``values`` (n,) on the graph ``edges`` (m, 2); NaN/inf count as +inf and their
    minima are left out (as the merge tree leaves them out): NaN without a finite value. Ties go by
    index."""
    values = np.asarray(values, dtype=float).ravel()
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    n = len(values)
    if not np.isfinite(values).any():
        return float("nan")
    clean = np.where(np.isfinite(values), values, np.inf)
    order = np.argsort(clean, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    join, split = merge_tree(rank, edges), merge_tree(-rank, edges)  # one total order, read both ways
    if not len(join.saddles) and not len(split.saddles):
        return 0.0
    basin = _basins(rank, edges)
    minima = np.flatnonzero(basin == np.arange(n))
    # (a) the first merge of each minimum's component, else the component's highest point
    first = np.full(n, n, dtype=np.int64)
    for column in (1, 2):
        np.minimum.at(first, join.saddles[:, column], rank[join.saddles[:, 0]])
    top = np.full(n, -1, dtype=np.int64)
    np.maximum.at(top, basin, rank)
    node = np.where(first < n, first, top)
    # (b) split saddles inside a minimum's component below its first merge
    saddles = np.unique(split.saddles[:, 0])
    saddles = saddles[(basin[saddles] != saddles) & (rank[saddles] < node[basin[saddles]])]
    np.minimum.at(node, basin[saddles], rank[saddles])
    minima = minima[np.isfinite(clean[minima])]
    return float(np.mean(clean[order[node[minima]]] - clean[minima]))


def _basins(rank: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The minimum each vertex descends to, step by step to its lowest neighbour: the component
    it joins in the sublevel-set filtration before that component's first merge."""
    n = len(rank)
    lowest = rank.copy()
    low = np.where(rank[edges[:, 0]] < rank[edges[:, 1]], edges[:, 0], edges[:, 1])
    high = np.where(rank[edges[:, 0]] < rank[edges[:, 1]], edges[:, 1], edges[:, 0])
    np.minimum.at(lowest, high, rank[low])
    order = np.empty(n, dtype=np.int64)
    order[rank] = np.arange(n)
    basin = order[lowest]
    while True:  # pointer jumping
        deeper = basin[basin]
        if np.array_equal(deeper, basin):
            return basin
        basin = deeper
