"""Merge trees (join trees) of sublevel sets of a function on a graph, and their 0-dim persistence.

Carr et al. 2003; Xie, Geniesse et al. 2024, §2. Vertices carry values, an edge enters the
filtration at the larger of its endpoint values. Kruskal on the minimum spanning tree of those
edge values with union-find and the elder rule: when two components meet, the one with the
higher minimum dies there, giving the pair (its minimum, the merge value) and a saddle joining
two branches. Non-finite values (NaN, inf) are treated as +inf and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from .union_find import ElderUnionFind


@dataclass
class MergeTree:
    """Minima are leaves, saddles merge two branches, pairs are (birth, death) by the elder rule.

    ``pairs``: (k, 2) birth/death values, sorted by persistence (largest first), the essential
    pairs (one per connected component of the graph) last with death = inf.
    ``pair_vertices``: (k, 2) vertex indices: the minimum and the saddle (-1 for essential).
    ``saddles``: (s, 3) vertex indices of each merge: the saddle, the surviving branch's
    minimum, the dying branch's minimum, in merge order.
    """

    values: np.ndarray
    pairs: np.ndarray
    pair_vertices: np.ndarray
    saddles: np.ndarray
    n_nonfinite: int

    @property
    def persistence(self) -> np.ndarray:
        return self.pairs[:, 1] - self.pairs[:, 0]

    def simplified(self, threshold: float = 0.0) -> MergeTree:
        """Drop the pairs with persistence at or below ``threshold`` (TTK-style simplification),
        together with their saddles; essential pairs always stay."""
        keep = ~(self.persistence <= threshold)
        dying = set(self.pair_vertices[~keep, 0].tolist())
        saddles = self.saddles[[s[2] not in dying for s in self.saddles]] if len(self.saddles) else self.saddles
        return MergeTree(self.values, self.pairs[keep], self.pair_vertices[keep], saddles.reshape(-1, 3),
                         self.n_nonfinite)

    @property
    def n_minima(self) -> int:
        return len(self.pairs)

    @property
    def n_saddles(self) -> int:
        return int(np.isfinite(self.pairs[:, 1]).sum())

    def average_persistence(self, close_at: float | None = None) -> float:
        """Mean distance of the pairs to the diagonal, (death - birth) / sqrt(2) (0 without any).

        Xie, Geniesse et al. 2024, §2: "Here, we quantify the average persistence by computing
        the distance between each persistence pair and the diagonal and then taking the average."
        Without ``close_at`` only the finite pairs count. With it the essential pairs die there
        and count too, as in TTK's persistence diagram, which pairs the global minimum with the
        global maximum: then a single smooth basin has a large average persistence and many
        shallow basins a small one, the direction of the paper's Fig. 5."""
        persistence = self.persistence
        if close_at is not None:
            persistence = np.where(np.isinf(self.pairs[:, 1]), close_at - self.pairs[:, 0], persistence)
        finite = persistence[np.isfinite(persistence)]
        return float(finite.mean() / np.sqrt(2)) if len(finite) else 0.0

    def to_networkx(self):
        """The tree as a networkx DiGraph from leaves (minima) up to saddles and the root;
        node attributes: ``value``, ``kind`` ("minimum", "saddle", "root")."""
        import networkx as nx

        graph = nx.DiGraph()
        top = {}  # the current highest node of each branch, keyed by the branch's minimum
        for minimum in self.pair_vertices[:, 0]:
            graph.add_node(int(minimum), value=float(self.values[minimum]), kind="minimum")
            top[int(minimum)] = int(minimum)
        for index, (saddle, survivor, dying) in enumerate(self.saddles.tolist()):
            node = ("saddle", index, saddle)
            graph.add_node(node, value=float(self.values[saddle]), kind="saddle", vertex=saddle)
            graph.add_edge(top[survivor], node)
            graph.add_edge(top[dying], node)
            top[survivor] = node
        for minimum, death in zip(self.pair_vertices[:, 0].tolist(), self.pairs[:, 1]):
            if not np.isfinite(death):
                root = ("root", minimum)
                graph.add_node(root, value=float(np.nanmax(np.where(np.isfinite(self.values), self.values, np.nan))),
                               kind="root")
                graph.add_edge(top[minimum], root)
        return graph


def merge_tree(values, edges) -> MergeTree:
    """Merge tree of ``values`` (n,) on the graph with ``edges`` (m, 2) vertex index pairs.

    O(m log m): numpy sorts, scipy's minimum spanning tree, pointer jumping to each vertex's
    basin; the Python union-find only visits the merges (about one per minimum).
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    n = len(values)
    nonfinite = ~np.isfinite(values)
    clean = np.where(nonfinite, np.inf, values)
    # Vertex order: by value, ties by index (simulation of simplicity); ranks replace values.
    order = np.argsort(clean, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    low, high = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    keys = np.unique((low * n + high)[low != high])  # sorted, once each: coo_matrix would sum duplicate edges
    low, high = keys // n, keys % n
    weight = np.maximum(rank[low], rank[high]) + 1  # +1: csgraph drops zero weights
    mst = minimum_spanning_tree(coo_matrix((weight, (low, high)), shape=(n, n)).tocsr()).tocoo()
    upper = np.where(rank[mst.row] > rank[mst.col], mst.row, mst.col)  # the edge's higher vertex
    lower = np.where(rank[mst.row] > rank[mst.col], mst.col, mst.row)
    by_upper = np.argsort(rank[upper], kind="stable")
    upper, lower = upper[by_upper], lower[by_upper]
    # A vertex's first upper edge attaches it to a lower vertex (a regular step, no merge);
    # each further upper edge is a merge with the vertex as saddle (Kruskal with ties by rank).
    first = np.ones(len(upper), dtype=bool)
    first[1:] = upper[1:] != upper[:-1]
    parent = np.arange(n)
    parent[upper[first]] = lower[first]
    basin = parent
    while True:  # pointer jumping: every vertex to the minimum its descending attachments reach
        deeper = basin[basin]
        if np.array_equal(deeper, basin):
            break
        basin = deeper
    _, labels = connected_components(mst, directed=False)
    lowest = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(lowest, labels, rank)
    merges = np.stack([upper[~first], basin[upper[~first]], basin[lower[~first]]], axis=1)
    return _elder_rule(clean, rank, merges, order[lowest], int(nonfinite.sum()))


def _elder_rule(values: np.ndarray, rank: np.ndarray, merges: np.ndarray, global_minima: np.ndarray,
                n_nonfinite: int) -> MergeTree:
    """Union-find over basins: at each merge (saddle, basin a, basin b), in filtration order,
    the component whose minimum is higher dies at the saddle."""
    components = ElderUnionFind(len(values), rank)
    pair_vertices, saddles = [], []
    for saddle, a, b in merges.tolist():
        joined = components.union(a, b)  # roots are the components' minima
        if joined is None:
            continue
        ma, mb = joined
        pair_vertices.append((mb, saddle))
        saddles.append((saddle, ma, mb))
    essential = [(int(m), -1) for m in global_minima]  # one per connected component
    pv = np.array(pair_vertices + essential, dtype=np.int64).reshape(-1, 2)
    births = values[pv[:, 0]]
    deaths = np.where(pv[:, 1] >= 0, values[np.maximum(pv[:, 1], 0)], np.inf)
    pairs = np.stack([births, deaths], axis=1)
    keep = np.isfinite(births) & (deaths > births)
    pairs, pv = pairs[keep], pv[keep]
    order = np.lexsort((pairs[:, 0], -(pairs[:, 1] - pairs[:, 0])))
    order = np.concatenate([order[~np.isinf(pairs[order, 1])], order[np.isinf(pairs[order, 1])]])
    kept_minima = set(pv[:, 0].tolist())
    saddle_array = np.array([s for s in saddles if s[2] in kept_minima], dtype=np.int64).reshape(-1, 3)
    return MergeTree(values, pairs[order], pv[order], saddle_array, n_nonfinite)
