import gudhi
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lossatlas.topology import (
    delaunay_edges,
    gabriel_edges,
    grid_edges,
    knn_edges,
    lower_star_pairs,
    merge_tree,
    representation_edges,
)
from lossatlas.topology.barcode import minima_barcode
from lossatlas.topology.graphs import grid_triangles
from lossatlas.topology.union_find import ElderUnionFind


def _sorted(pairs):
    pairs = np.asarray(pairs, dtype=float)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _cubical_pairs(field):
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=field)
    complex_.compute_persistence()
    pairs = complex_.persistence_intervals_in_dimension(0)
    return pairs[pairs[:, 1] > pairs[:, 0]]


@pytest.mark.parametrize("seed", range(4))
def test_image_persistence_equals_gudhi_cubical(seed):
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(40, 31))
    if seed % 2:
        field = np.round(field, 1)  # many ties
    tree = merge_tree(field.ravel(), grid_edges(field.shape))
    np.testing.assert_allclose(_sorted(tree.pairs), _sorted(_cubical_pairs(field)))
    assert tree.n_saddles == tree.n_minima - 1


def _ttk_triangulation_tree(field):
    """gudhi SimplexTree of TTK's implicit triangulation of an nx x ny image, from TTK's own
    neighbour rule (vtk point id v = x + nx * y; neighbours v -+ 1, v -+ nx, v - nx + 1, v + nx - 1)
    and its triangles (the 3-cliques of that graph), each simplex at its largest vertex value."""
    nx, ny = field.shape
    value = {x + nx * y: field[x, y] for x in range(nx) for y in range(ny)}
    tree = gudhi.SimplexTree()
    for x in range(nx):
        for y in range(ny):
            for dx, dy in ((1, 0), (0, 1), (1, -1)):  # each edge once: right, up, down-right
                if 0 <= x + dx < nx and 0 <= y + dy < ny:
                    tree.insert([x + nx * y, x + dx + nx * (y + dy)])
    tree.expansion(2)
    for simplex, _ in list(tree.get_simplices()):
        tree.assign_filtration(simplex, max(value[v] for v in simplex))
    tree.make_filtration_non_decreasing()
    return tree


@pytest.mark.parametrize("seed", range(3))
def test_triangulated_grid_equals_gudhi_on_ttks_triangulation(seed):
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(23, 17))
    if seed == 2:
        field = np.round(field, 1)  # ties
    reference = _ttk_triangulation_tree(field)
    ttk_triangles = {tuple(sorted(s)) for s, _ in reference.get_simplices() if len(s) == 3}
    rows, cols = field.shape
    ours = {tuple(sorted(int(v // cols + rows * (v % cols)) for v in t)) for t in grid_triangles(field.shape)}
    assert ours == ttk_triangles and len(ours) == 2 * (rows - 1) * (cols - 1)
    reference.compute_persistence()
    pairs = reference.persistence_intervals_in_dimension(0)
    tree = merge_tree(field.ravel(), representation_edges("triangulated_grid", None, field.shape))
    np.testing.assert_allclose(_sorted(tree.pairs), _sorted(pairs[pairs[:, 1] > pairs[:, 0]]))
    assert np.isfinite(reference.persistence_intervals_in_dimension(1)).all()  # a disk: every loop is filled
    triangles = grid_triangles(field.shape)
    assert len(field.ravel()) - len(grid_edges(field.shape, "one")) + len(triangles) == 1  # Euler: a disk
    degree = np.bincount(grid_edges(field.shape, "one").ravel(), minlength=field.size).reshape(field.shape)
    assert np.all(degree[1:-1, 1:-1] == 6)


def test_triangulation_and_8_connectivity_differ_on_rugged_grids():
    x = np.linspace(-5.12, 5.12, 51)
    rastrigin = 20 + (x[:, None] ** 2 - 10 * np.cos(2 * np.pi * x[:, None])) + (
        x[None, :] ** 2 - 10 * np.cos(2 * np.pi * x[None, :]))
    field = rastrigin + np.random.default_rng(0).normal(0, 2.0, rastrigin.shape)
    six = merge_tree(field.ravel(), representation_edges("triangulated_grid", None, field.shape))
    eight = merge_tree(field.ravel(), representation_edges("image", None, field.shape))
    assert six.n_minima > eight.n_minima  # fewer neighbours: more local minima
    smooth = merge_tree(rastrigin.ravel(), representation_edges("triangulated_grid", None, field.shape))
    assert smooth.n_minima == merge_tree(rastrigin.ravel(), grid_edges(field.shape)).n_minima


@pytest.mark.parametrize("builder", [delaunay_edges, gabriel_edges, knn_edges])
@pytest.mark.parametrize("dim", [2, 3])
def test_graph_persistence_equals_gudhi_simplex_tree(builder, dim):
    rng = np.random.default_rng(dim)
    points, values = rng.uniform(size=(400, dim)), rng.normal(size=400)
    edges = builder(points)
    tree = merge_tree(values, edges)
    np.testing.assert_allclose(_sorted(tree.pairs), _sorted(lower_star_pairs(values, edges)))


def test_gabriel_is_a_subgraph_of_delaunay_and_drops_blocked_edges():
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(300, 2))
    delaunay = {tuple(e) for e in delaunay_edges(points)}
    gabriel = gabriel_edges(points)
    assert {tuple(e) for e in gabriel} < delaunay
    for a, b in gabriel:  # no point strictly inside the diametral circle
        middle, radius = (points[a] + points[b]) / 2, np.linalg.norm(points[a] - points[b]) / 2
        assert np.sum(np.linalg.norm(points - middle, axis=1) < radius * (1 - 1e-9)) == 0


def test_knn_graph_has_every_point_linked_to_its_k_nearest():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(200, 4))
    edges = {tuple(e) for e in knn_edges(points, k=5)}
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    for i in range(200):
        for j in np.argsort(distances[i])[1:6]:
            assert (min(i, j), max(i, j)) in edges


def test_nonfinite_values_are_infinite_and_counted():
    rng = np.random.default_rng(2)
    field = rng.normal(size=(30, 30))
    field[10:20, :] = np.nan  # a diverged band splits the grid in two
    field[0, 0] = np.inf
    tree = merge_tree(field.ravel(), grid_edges(field.shape))
    assert tree.n_nonfinite == 301
    finite_reference = np.where(np.isfinite(field), field, np.inf)
    expected = _cubical_pairs(finite_reference)
    np.testing.assert_allclose(_sorted(tree.pairs), _sorted(expected))
    assert np.isinf(tree.pairs[:, 1]).sum() == 2  # the two halves meet only through the non-finite band


def test_simplification_and_networkx_tree():
    x = np.linspace(-3, 3, 121)
    field = np.sin(3 * x)[:, None] * np.cos(2 * x)[None, :] + 0.02 * (x[:, None] ** 2 + x[None, :] ** 2)
    tree = merge_tree(field.ravel(), grid_edges(field.shape))
    cut = float(np.median(tree.persistence[np.isfinite(tree.persistence)]))
    simple = tree.simplified(cut)
    assert 1 < simple.n_minima < tree.n_minima and np.all(simple.persistence > cut)
    graph = simple.to_networkx()
    kinds = [data["kind"] for _, data in graph.nodes(data=True)]
    assert kinds.count("minimum") == simple.n_minima and kinds.count("saddle") == simple.n_saddles
    assert kinds.count("root") == 1
    for node, data in graph.nodes(data=True):  # heights grow towards the root
        for _, parent in graph.out_edges(node):
            assert graph.nodes[parent]["value"] >= data["value"]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(2, 12)),
              elements=st.floats(-1e3, 1e3, allow_nan=False)))
def test_property_saddles_are_minima_minus_one_on_a_connected_grid(field):
    tree = merge_tree(field.ravel(), grid_edges(field.shape))
    assert tree.n_saddles == tree.n_minima - 1
    assert np.isinf(tree.pairs[-1, 1]) and tree.pairs[-1, 0] == field.min()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 10), st.integers(2, 10)),
              elements=st.floats(-10, 10, allow_nan=False)))
def test_property_pairs_follow_monotone_transforms(field):
    def transform(v):
        return v**3 + 2 * v  # strictly increasing
    edges = grid_edges(field.shape)
    before, after = merge_tree(field.ravel(), edges), merge_tree(transform(field).ravel(), edges)
    # same pairs; their order by persistence may change
    a, b = np.lexsort(before.pair_vertices.T), np.lexsort(after.pair_vertices.T)
    np.testing.assert_array_equal(before.pair_vertices[a], after.pair_vertices[b])
    np.testing.assert_allclose(after.pairs[b], transform(before.pairs[a]))


def test_ttk_backend_matches_native_when_installed():
    pytest.importorskip("topologytoolkit")
    from lossatlas.topology.ttk_backend import merge_tree_ttk

    x = np.linspace(-5, 5, 101)
    field = (x[:, None] ** 2 + x[None, :] - 11) ** 2 + (x[:, None] + x[None, :] ** 2 - 7) ** 2
    field = field + np.random.default_rng(0).normal(0, 0.5, field.shape)  # rugged: the triangulation matters
    native = merge_tree(field.ravel(), representation_edges("triangulated_grid", None, field.shape))
    ttk = merge_tree_ttk(field)
    assert ttk.n_saddles == native.n_saddles
    np.testing.assert_allclose(np.sort(ttk.pairs[:, 1]), np.sort(native.pairs[:, 1]))


def test_elder_union_find_keeps_the_elder_root_by_order():
    components = ElderUnionFind(5, [3, 0, 4, 1, 2])  # element 1 is the eldest, then 3, 4, 0, 2
    assert components.union(0, 2) == (0, 2)
    assert components.union(2, 3) == (3, 0)  # roots 0 and 3: 3 comes first
    assert components.union(0, 2) is None and components.union(3, 2) is None
    assert components.find(2) == 3
    assert components.union(4, 1) == (1, 4)
    assert components.union(2, 4) == (1, 3)
    assert [components.find(i) for i in range(5)] == [1] * 5
    n = 20000  # a chain as deep as it gets: no recursion, then compressed
    chain = ElderUnionFind(n, -np.arange(n))
    assert all(chain.union(i, i + 1) == (i + 1, i) for i in range(n - 1))
    assert chain.find(0) == n - 1 and chain.parent[0] == n - 1


def _gudhi_graph_pairs(values, edges, weights):
    """0-dim pairs of a graph filtration straight from gudhi: vertices at values, edges at weights."""
    tree = gudhi.SimplexTree()
    for vertex, value in enumerate(values):
        tree.insert([vertex], float(value))
    for (a, b), weight in zip(edges, weights):
        if a != b:
            tree.insert([int(a), int(b)], float(weight))
    tree.compute_persistence(persistence_dim_max=False)
    pairs = tree.persistence_intervals_in_dimension(0)
    return pairs[pairs[:, 1] > pairs[:, 0]]


@pytest.mark.parametrize("seed", range(20))
def test_elder_rule_pairs_equal_gudhi_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    values = rng.normal(size=n)
    if seed % 2:
        values = np.round(values, 1)  # ties, broken by index
    edges = rng.integers(0, n, size=(int(rng.integers(1, 3 * n)), 2))
    edges[0] = (0, 1)  # at least one proper edge
    lower_star = np.maximum(values[edges[:, 0]], values[edges[:, 1]])
    tree = merge_tree(values, edges)
    np.testing.assert_array_equal(_sorted(tree.pairs), _sorted(_gudhi_graph_pairs(values, edges, lower_star)))
    weights = lower_star + np.round(rng.uniform(0, 1, len(edges)), 1) * (seed % 3 > 0)
    weights[rng.uniform(size=len(edges)) < 0.1] = np.inf  # impassable: never joins anything
    barcode = minima_barcode(values, edges, weights)
    np.testing.assert_array_equal(_sorted(barcode.bars), _sorted(_gudhi_graph_pairs(values, edges, weights)))
    np.testing.assert_array_equal(barcode.bars[:, 0], values[barcode.minima])


def test_merge_tree_of_a_graph_without_edges_has_one_essential_pair_per_vertex():
    """No edges (or self-loops only): every vertex is its own component, as in gudhi."""
    values = np.array([3.0, 1.0, 2.0])
    for edges in (np.empty((0, 2), dtype=np.int64), np.array([[0, 0], [2, 2]])):
        tree = merge_tree(values, edges)
        simplex = gudhi.SimplexTree()
        for vertex, value in enumerate(values):
            simplex.insert([vertex], value)
        simplex.compute_persistence(persistence_dim_max=True)  # the complex is 0-dimensional
        births = sorted(b for b, d in simplex.persistence_intervals_in_dimension(0) if np.isinf(d))
        assert tree.n_saddles == 0 and sorted(tree.pairs[:, 0]) == births and np.isinf(tree.pairs[:, 1]).all()
