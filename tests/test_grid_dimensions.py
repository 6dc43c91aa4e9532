"""Loss grids in 3 (and 4) dimensions: the directions, the sampler's cost and refusals, the 3-D
merge tree against gudhi and a function with known critical points, and the views' central slice."""
import itertools

import gudhi
import matplotlib
import numpy as np
import pytest
import torch

from lossatlas import ConfigError, FunctionSubject, Store, analyze
from lossatlas.analysis import key_params
from lossatlas.directions import axis_directions, cosine, hessian_directions, pca_directions, random_directions
from lossatlas.directions import check as check_directions
from lossatlas.methods.merge_tree import MergeTreeAnalyzer
from lossatlas.methods.merge_tree_views import draw_contour, draw_surface
from lossatlas.samplers import Grid, Point, loss_grid
from lossatlas.topology import grid_edges, lower_star_pairs, merge_tree, representation_edges

matplotlib.use("Agg")


def _wells(theta):
    return ((theta**2 - 1) ** 2).sum()


def _subject(dim: int = 3) -> FunctionSubject:
    """f = sum_i (x_i^2 - 1)^2: minima at every (+-1, ..., +-1) (f = 0), index-1 saddles with one
    coordinate 0 (f = 1), the maximum at 0 (f = dim)."""
    return FunctionSubject(_wells, torch.zeros(dim, dtype=torch.float64), name=f"wells{dim}")


def _finite(pairs):
    pairs = np.asarray(pairs, dtype=float).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs[:, 1])]
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def test_a_3d_grid_of_three_double_wells_has_8_minima_and_7_saddles_at_1():
    # 8 minima joined along the 12 edges of a cube by saddles of value 1: a spanning tree of the cube
    # takes 7 merges, each at 1; the grid through 0 and +-1 holds every critical point.
    with Store.memory() as store:
        result = analyze(store, _subject(), "merge-tree", directions="axes", at="theta0", dimensions=3, span=2.0,
                         resolution=21, progress=False)
    loss, x, y, z = (result.arrays[name] for name in ("loss_grid", "x", "y", "z"))
    mesh = np.meshgrid(x, y, z, indexing="ij")
    np.testing.assert_allclose(loss, sum((c**2 - 1) ** 2 for c in mesh), rtol=1e-12, atol=1e-12)  # loss[i, j, k]
    assert result.metrics["n_minima"] == 8 and result.metrics["n_saddles"] == 7
    finite = _finite(result.arrays["pairs"])
    np.testing.assert_allclose(finite, np.tile([0.0, 1.0], (7, 1)), atol=1e-12)
    assert result.metrics["smad"] == pytest.approx(1.0, abs=1e-12)
    assert result.metrics["direction_cosine"] == 0.0


@pytest.mark.parametrize("representation", ["image", "delaunay", "gabriel", "knn"])
def test_every_representation_finds_the_8_minima_in_3d(representation):
    with Store.memory() as store:  # 11 points an axis: the minima at +-0.8, the saddles' rows at 0
        result = analyze(store, _subject(), "merge-tree", directions="axes", at="theta0", dimensions=3, span=2.0,
                         resolution=11, representation=representation, progress=False)
    assert result.metrics["n_minima"] == 8 and result.metrics["n_saddles"] == 7


def test_the_image_of_a_3d_grid_is_gudhis_cubical_complex():
    rng = np.random.default_rng(0)
    field = rng.normal(size=(6, 7, 8))
    field[:, :, 4] = np.round(field[:, :, 4], 1)  # ties as well
    edges = grid_edges(field.shape, "both")
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=3) if any(o)]  # the 26 neighbours, each pair twice
    assert len(edges) == sum(np.prod([n - abs(d) for n, d in zip(field.shape, o)]) for o in offsets) // 2
    tree = merge_tree(field.ravel(), edges)
    cubical = gudhi.CubicalComplex(top_dimensional_cells=field)
    cubical.compute_persistence()
    expected = cubical.persistence_intervals_in_dimension(0)
    np.testing.assert_allclose(_finite(tree.pairs), _finite(expected[expected[:, 1] > expected[:, 0]]))
    assert tree.n_minima - tree.n_saddles == 1  # one essential class, as gudhi's


def test_the_freudenthal_triangulation_of_a_cube_grid():
    shape = (4, 5, 3)
    edges = grid_edges(shape, "one")
    # one cube: its 12 edges, 6 face diagonals and 1 main diagonal
    assert len(grid_edges((2, 2, 2), "one")) == 19
    degree = np.bincount(edges.ravel(), minlength=np.prod(shape)).reshape(shape)
    assert degree[1:-1, 1:-1, 1:-1].min() == degree[1:-1, 1:-1, 1:-1].max() == 14  # 2 (2^3 - 1)
    # a flag complex: its cliques are the triangulation's simplices, 6 tetrahedra a cube, and a ball
    tree = gudhi.SimplexTree()
    tree.insert_batch(np.arange(np.prod(shape))[None, :], np.zeros(np.prod(shape)))
    tree.insert_batch(edges.T, np.zeros(len(edges)))
    tree.expansion(4)
    counts = np.bincount([len(simplex) - 1 for simplex, _ in tree.get_simplices()])
    assert len(counts) == 4 and counts[3] == 6 * np.prod([n - 1 for n in shape])
    assert counts[0] - counts[1] + counts[2] - counts[3] == 1  # Euler characteristic of a ball
    tree.compute_persistence()
    assert tree.betti_numbers() == [1, 0, 0]


@pytest.mark.parametrize("seed", range(2))
def test_the_3d_merge_tree_on_the_triangulation_is_gudhis_lower_star_persistence(seed):
    field = np.random.default_rng(seed).normal(size=(5, 6, 7))
    edges = representation_edges("triangulated_grid", None, field.shape)
    np.testing.assert_allclose(_finite(merge_tree(field.ravel(), edges).pairs),
                               _finite(lower_star_pairs(field.ravel(), edges)))


def test_the_directions_of_a_3d_grid():
    subject = _subject()
    assert torch.equal(axis_directions(subject, 3), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="needs a 2-parameter subject.*use dimensions=3"):
        check_directions(subject, "axes")
    with pytest.raises(ConfigError, match="needs a 3-parameter subject; wells4 has 4: use dimensions=4"):
        check_directions(_subject(4), "axes", dimensions=3)
    with pytest.raises(ConfigError, match="3-D loss grid needs three independent directions.*Use dimensions=2"):
        check_directions(_subject(2), "random", dimensions=3)
    with pytest.raises(ConfigError, match="Hessian directions need more than 3 parameters"):
        check_directions(subject, "hessian", dimensions=3)
    # random: drawn in turn from one generator, so a plane's two come first; filter-normalized (unit norm here)
    three = random_directions(_subject(6), torch.zeros(6, dtype=torch.float64), seed=3, count=3)
    assert torch.equal(three[:2], random_directions(_subject(6), torch.zeros(6, dtype=torch.float64), seed=3))
    np.testing.assert_allclose(three.norm(dim=1), 1.0)
    assert abs(cosine(three)) == max(abs(float(three[i] @ three[j])) for i, j in ((0, 1), (0, 2), (1, 2)))


def test_hessian_and_pca_give_three_directions():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    matrix = torch.tensor(basis @ np.diag([5.0, 3.0, 2.0, 0.5, 0.2, 0.1]) @ basis.T)
    subject = FunctionSubject(lambda t: 0.5 * t @ matrix @ t, torch.zeros(6, dtype=torch.float64), name="q")
    dirs = hessian_directions(subject, subject.theta0, subject.buffers0, seed=0, tol=1e-10, count=3)
    np.testing.assert_allclose(np.abs(dirs.numpy() @ basis[:, :3]), np.eye(3), atol=1e-6)
    # a path moving along three orthogonal axes, with spreads 9 : 4 : 1: its components are those axes
    steps = np.array([[a, b, c] for a in (-3, 3) for b in (-2, 2) for c in (-1, 1)], dtype=float)
    center = torch.zeros(6, dtype=torch.float64)
    components, explained, path = pca_directions(steps @ basis[:, :3].T, center, count=3)
    np.testing.assert_allclose(np.abs(components.numpy() @ basis[:, :3]), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(explained, np.array([9, 4, 1]) / 14)
    np.testing.assert_allclose(np.abs(path), np.abs(steps), atol=1e-12)
    with pytest.raises(ConfigError, match="3 PCA directions need a trajectory of at least 4 points"):
        pca_directions(steps[:3] @ basis[:, :3].T, center, count=3)


def test_a_3d_grid_states_its_cost_and_refuses_what_cannot_fit():
    subject = _subject()
    small, big = (Grid(point=Point(), directions="axes", resolution=41, dimensions=d) for d in (2, 3))
    assert big.work(subject) == {("points", False): 41**3} and small.work(subject) == {("points", False): 41**2}
    assert big.memory(subject).host >= 41**3 * 8 * 3 > small.memory(subject).host
    analyzer = MergeTreeAnalyzer(directions="axes", at="theta0", dimensions=3, resolution=41)
    assert analyzer.memory(subject).host >= 41**3 * (8 * 3 + 3 * 1024)
    with pytest.raises(ConfigError, match=r"A 3001\^3 grid has 2.7e\+10 points and needs about"):
        Grid(point=Point(), directions="axes", resolution=3001, dimensions=3).check(subject)
    with pytest.raises(ConfigError, match=r"A 300001x300001 grid has 9e\+10 points and needs about"):
        Grid(point=Point(), directions="axes", resolution=300001).check(_subject(2))


def test_dimensions_2_keeps_every_key():
    grid = Grid(point=Point(), directions="random")
    assert "dimensions" not in grid.own_config()
    assert Grid(point=Point(), directions="random", dimensions=3).own_config()["dimensions"] == 3
    params = MergeTreeAnalyzer().get_params()
    assert params["dimensions"] == 2 and "dimensions" not in key_params(MergeTreeAnalyzer, params)
    with Store.memory() as store:
        plane = loss_grid(store, _subject(), "random", 5, progress=False)
        assert plane["loss"].shape == (5, 5) and "z" not in plane.data
        cube = loss_grid(store, _subject(), "random", 5, progress=False, dimensions=3)
        assert cube.key != plane.key and cube["loss"].shape == (5, 5, 5)
        # the plane z = 0 of the cube is the plane: the same two directions, drawn first
        np.testing.assert_allclose(cube["loss"][:, :, 2], plane["loss"], rtol=1e-12)


def test_a_4d_grid_and_the_settings_that_have_no_3d():
    with Store.memory() as store:
        result = analyze(store, _subject(4), "merge-tree", directions="axes", at="theta0", dimensions=4, span=2.0,
                         resolution=5, progress=False)  # -2, -1, 0, 1, 2: 16 minima, a 4-cube's spanning tree
        assert result.metrics["n_minima"] == 16 and result.metrics["n_saddles"] == 15
        assert result.arrays["loss_grid"].shape == (5,) * 4 and "w" in result.arrays
        with pytest.raises(ConfigError, match="TTK backend reads 2-D grids"):
            analyze(store, _subject(), "merge-tree", directions="axes", dimensions=3, backend="ttk", progress=False)


def test_the_views_draw_the_central_slice_of_a_3d_grid():
    import matplotlib.pyplot as plt

    with Store.memory() as store:
        result = analyze(store, _subject(), "merge-tree", directions="axes", at="theta0", dimensions=3, span=2.0,
                         resolution=21, progress=False)
    figure = plt.figure()
    ax = figure.add_subplot(1, 2, 1)
    draw_contour(ax, result)
    assert "central slice z = 0 of the 3-D grid" in ax.get_title()
    # no minimum lies on the slice z = 0 (they are at z = +-1), so none is marked
    assert not any(c.get_label() == "minima" for c in ax.collections)
    ax3d = figure.add_subplot(1, 2, 2, projection="3d")
    draw_surface(ax3d, result)
    assert "central slice z = 0" in ax3d.get_title()
    plt.close(figure)


def test_a_3d_pca_grid_keeps_the_path_in_three_coordinates():
    from test_trajectory import _mlp_subject

    from lossatlas import Recipe, train_minima

    subject = _mlp_subject()
    with Store.memory() as store:
        train_minima(store, subject, Recipe(lr=0.1, epochs=4, batch_size=16), seeds=[0], progress=False,
                     record_trajectory=True)
        result = analyze(store, subject, "merge-tree", directions="pca", resolution=5, span=3.0, dimensions=3,
                         progress=False)
    path, explained = result.arrays["path_xyz"], result.arrays["explained_variance"]
    # 5 points (init + 4 epochs), each axis scaled to the path's extent along it, ending at the minimum (the center)
    assert path.shape == (5, 3) and "path_xy" not in result.arrays
    np.testing.assert_allclose(np.abs(path).max(axis=0), 1.0)
    np.testing.assert_allclose(path[-1], 0.0, atol=1e-6)  # the float32 model's theta, read back
    assert len(explained) == 3 and np.all(np.diff(explained) <= 0) and explained.sum() <= 1 + 1e-12
    assert abs(result.metrics["direction_cosine"]) < 1e-10  # principal components are orthogonal
