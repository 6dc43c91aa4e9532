"""Graphs over sample points, the representations of a loss grid in Xie, Geniesse et al. 2024.

``triangulated_grid``: the grid as TTK triangulates an image, which is how Xie, Geniesse et al.
computed their merge trees: every square split along one diagonal, so each inner vertex has 6
neighbours (4 along the axes, 2 along the diagonal (i + 1, j) - (i, j + 1), TTK's
ImplicitTriangulation with vtk point id i + nx * j); a grid of 3 or more dimensions is split by
the Freudenthal (Kuhn) triangulation, each cube into d! simplices around its main diagonal, so an
inner vertex of a 3-D grid has 14 neighbours. ``image``: the grid as pixels (voxels), joined to
every neighbour that shares a corner (8 in 2-D, 26 in 3-D), the connectivity of gudhi's cubical
complex on top-dimensional cells. ``delaunay``, ``gabriel`` and ``knn`` build graphs over arbitrary
point sets (grids, scattered samples, more than 2 dimensions). 0-dimensional persistence only sees
the edges, so a graph is all a merge tree needs.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import Delaunay, cKDTree

REPRESENTATIONS = ("triangulated_grid", "image", "delaunay", "gabriel", "knn")


def grid_edges(shape: tuple[int, ...], diagonals: str = "both") -> np.ndarray:
    """Edges between neighbouring points of a grid (row-major vertex order): the neighbours along
    the axes, plus ``diagonals``: "both" (every neighbour sharing a corner: 8 in 2-D, 26 in 3-D),
    "one" (a triangulation: TTK's diagonal (i + 1, j) - (i, j + 1) of every square in 2-D, the
    Freudenthal triangulation in more dimensions) or "none"."""
    if diagonals not in ("both", "one", "none"):
        raise ValueError(f"diagonals must be 'both', 'one' or 'none'; got {diagonals!r}.")
    if len(shape) != 2:
        return _nd_grid_edges(tuple(shape), diagonals)
    rows, cols = shape
    index = np.arange(rows * cols).reshape(rows, cols)
    pieces = [np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], 1),
              np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], 1)]
    if diagonals in ("both", "one"):
        pieces.append(np.stack([index[:-1, 1:].ravel(), index[1:, :-1].ravel()], 1))
    if diagonals == "both":
        pieces.append(np.stack([index[:-1, :-1].ravel(), index[1:, 1:].ravel()], 1))
    return np.concatenate(pieces)


def _nd_grid_edges(shape: tuple[int, ...], diagonals: str) -> np.ndarray:
    """``grid_edges`` in any number of dimensions, one offset at a time. "one": the Freudenthal
    (Kuhn) triangulation, whose edges join each point to point + the sum of any nonempty set of
    unit steps (Freudenthal 1942): 2^d - 1 offsets, 2 (2^d - 1) neighbours an inner point."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    d = len(shape)
    if diagonals == "one":
        offsets = [o for o in itertools.product((0, 1), repeat=d) if any(o)]
    elif diagonals == "both":  # one of each pair +-o: the first nonzero step positive
        offsets = [o for o in itertools.product((-1, 0, 1), repeat=d) if any(o) and o[np.flatnonzero(o)[0]] > 0]
    else:
        offsets = [tuple(int(a == b) for b in range(d)) for a in range(d)]
    pieces = []
    for offset in offsets:
        source = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, shape))
        target = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, shape))
        pieces.append(np.stack([index[source].ravel(), index[target].ravel()], 1))
    return np.concatenate(pieces)


def grid_triangles(shape: tuple[int, int]) -> np.ndarray:
    """The triangles of TTK's grid triangulation (row-major vertex order): each square
    (i, j), (i + 1, j), (i, j + 1), (i + 1, j + 1) split along (i + 1, j) - (i, j + 1)."""
    rows, cols = shape
    index = np.arange(rows * cols).reshape(rows, cols)
    corner, below, right, across = index[:-1, :-1], index[1:, :-1], index[:-1, 1:], index[1:, 1:]
    return np.concatenate([np.stack([corner.ravel(), below.ravel(), right.ravel()], 1),
                           np.stack([below.ravel(), right.ravel(), across.ravel()], 1)])


def delaunay_edges(points: np.ndarray) -> np.ndarray:
    """Edges of the Delaunay triangulation (scipy/Qhull; joggled ties on regular grids)."""
    points = np.asarray(points, dtype=float)
    triangulation = Delaunay(points, qhull_options="QJ Pp")
    simplices = triangulation.simplices
    d = simplices.shape[1]
    edges = np.concatenate([simplices[:, [i, j]] for i in range(d) for j in range(i + 1, d)])
    return np.unique(np.sort(edges, axis=1), axis=0)


def gabriel_edges(points: np.ndarray) -> np.ndarray:
    """The Gabriel graph: Delaunay edges whose diametral ball holds no other point (points on
    the sphere, as the corners of a grid square, do not remove the edge)."""
    points = np.asarray(points, dtype=float)
    edges = delaunay_edges(points)
    middle = 0.5 * (points[edges[:, 0]] + points[edges[:, 1]])
    radius = 0.5 * np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    distance, _ = cKDTree(points).query(middle, k=3)  # the two endpoints are at distance = radius
    blocked = distance[:, 0] < radius * (1 - 1e-9)  # strictly inside
    blocked |= distance[:, 2] < radius * (1 - 1e-9)
    return edges[~blocked]


def knn_edges(points: np.ndarray, k: int = 8) -> np.ndarray:
    """Symmetrized k-nearest-neighbour graph (Euclidean; scikit-learn picks a tree or brute
    force by dimension, so it also serves high-dimensional rows such as PHATE potentials)."""
    from sklearn.neighbors import NearestNeighbors

    points = np.asarray(points, dtype=float)
    k = min(k, len(points) - 1)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    edges = np.stack([np.repeat(np.arange(len(points)), k), neighbours[:, 1:].ravel()], axis=1)
    return np.unique(np.sort(edges, axis=1), axis=0)


def representation_edges(name: str, points: np.ndarray, shape: tuple[int, ...] | None = None, k: int = 8) -> np.ndarray:
    """The edges of representation ``name`` over a grid of ``shape`` (``image``, ``triangulated_grid``)
    or over ``points``, one row a sample (``delaunay``, ``gabriel``, ``knn``; any dimension)."""
    if name in ("image", "triangulated_grid"):
        if shape is None:
            raise ValueError(f"the {name} representation needs a grid shape")
        return grid_edges(shape, "both" if name == "image" else "one")
    if name == "delaunay":
        return delaunay_edges(points)
    if name == "gabriel":
        return gabriel_edges(points)
    if name == "knn":
        return knn_edges(points, k)
    raise ValueError(f"Unknown representation {name!r}; valid: {list(REPRESENTATIONS)}.")


def lower_star_tree(values: np.ndarray, edges: np.ndarray):
    """The lower-star filtration of a graph as a gudhi SimplexTree: each vertex at its value,
    each edge at the larger of its endpoint values (values are taken as given)."""
    import gudhi

    values = np.asarray(values, dtype=float)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    tree = gudhi.SimplexTree()
    tree.insert_batch(np.arange(len(values))[None, :], values)
    if len(edges):
        tree.insert_batch(edges.T, np.maximum(values[edges[:, 0]], values[edges[:, 1]]))
    return tree


def lower_star_pairs(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0-dim persistence of the lower-star filtration by gudhi's SimplexTree (the reference);
    non-finite values count as +inf."""
    tree = lower_star_tree(np.where(np.isfinite(values), values, np.inf), edges)
    tree.compute_persistence(persistence_dim_max=False)
    pairs = tree.persistence_intervals_in_dimension(0)
    return pairs[pairs[:, 1] > pairs[:, 0]]
