"""SMAD, Landscaper 1.3.1's saddle-minimum average distance (Chen, Hadler et al. 2025), against
contour trees worked out by hand, closed forms, and Landscaper itself.

Landscaper's graph of a grid is the beta-skeleton (beta = 1) of its coordinates, which joins axis
neighbours only (nglpy, checked on 2-D and 3-D grids, square and not): ``grid_edges(shape, "none")``.
"""
import numpy as np
import pytest
import torch

from lossatlas import ConfigError, FunctionSubject, Store, analyze
from lossatlas.topology import grid_edges, merge_tree, smad


def _smad(grid) -> float:
    grid = np.asarray(grid, dtype=float)
    return smad(grid.ravel(), grid_edges(grid.shape, "none"))


def _ranks(field) -> np.ndarray:
    """Integer ranks of a field: exact in float32 (Landscaper's topopy compares in float32) and
    without ties, so both tools order the points alike."""
    flat = np.asarray(field, dtype=float).ravel()
    out = np.empty(flat.size)
    out[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    return out.reshape(np.shape(field))


def test_two_basins_by_hand():
    # 6 7 8     4-neighbours. Minima: 0 (row 1, col 0) and 1 (row 1, col 2).
    # 0 2 1     Join tree: 0 and 1 meet at the centre 2. Split tree (from the top down): 8 7 6 are one
    # 3 4 5     component, 5 4 3 another; the centre 2 joins them (7 above it, 4 below): a split saddle.
    # Contour tree: 0-2, 1-2, 2-5, 2-8; each minimum's neighbour is the centre, so
    # SMAD = ((2 - 0) + (2 - 1)) / 2 = 1.5 (Landscaper 1.3.1 gives the same tree and 1.5).
    assert _smad([[6, 7, 8], [0, 2, 1], [3, 4, 5]]) == 1.5


def test_a_split_saddle_below_the_first_merge_by_hand():
    # 8 1 7     One minimum, 0 in the centre, so no join saddle. Going down from the top, the four
    # 2 0 3     corners are maxima (8, 7, 6, 5); 4 joins 5 and 6, 3 joins 7 to them, 2 joins 8 to all:
    # 5 4 6     split saddles 4, 3, 2; 1 and 0 join nothing new. Contour tree: 0-2, 2-8, 2-3, 3-7, 3-4,
    # 4-5, 4-6 (a tree: 8 nodes, 7 edges). The minimum's neighbour is the split saddle 2: SMAD = 2 - 0.
    assert _smad([[8, 1, 7], [2, 0, 3], [5, 4, 6]]) == 2.0


def test_one_minimum_and_one_maximum_give_zero():
    # 8 7 6     The ring around the centre rises one way round from 1 to 8, so the only minimum is the
    # 1 0 5     centre and the only maximum 8: no saddle of either tree, the contour tree is one edge,
    # 2 3 4     and Landscaper returns 0 for a tree without inner nodes.
    grid = np.array([[8, 7, 6], [1, 0, 5], [2, 3, 4]], dtype=float)
    values, edges = grid.ravel(), grid_edges(grid.shape, "none")
    assert not len(merge_tree(values, edges).saddles) and not len(merge_tree(-values, edges).saddles)
    assert _smad(grid) == 0.0


def test_separable_double_wells_have_smad_one():
    # f = (x^2 - 1)^2 + (y^2 - 1)^2 on a grid through 0 and +-1: four minima at 0, each meeting its
    # neighbours at the saddles (0, +-1), (+-1, 0) of value 1, and no split saddle below that inside a
    # basin: SMAD = 1 - 0; in 3-D likewise with 8 minima and saddles (0, +-1, +-1) of value 1.
    x = np.linspace(-2, 2, 41)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    assert _smad((xx**2 - 1) ** 2 + (yy**2 - 1) ** 2) == pytest.approx(1.0, abs=1e-12)
    x3 = np.linspace(-2, 2, 21)
    mesh = np.meshgrid(x3, x3, x3, indexing="ij")
    assert _smad(sum((c**2 - 1) ** 2 for c in mesh)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("half_width", [1.0, 1.6])
def test_a_single_bowl_on_a_square_measures_to_the_edge(half_width):
    # f = x^2 + 1.3 y^2 on [-a, a]^2: one minimum, yet the contour tree splits where the rising ellipse
    # first touches the square's sides, at (+-a, 0): below a^2 the region above a level is one ring,
    # above it two pieces (top, bottom). So SMAD = f(a, 0) - f(0, 0) = a^2, not 0 (Landscaper: 2.59 at
    # a = 1.6 with a 1e-4 index ramp added).
    x = np.linspace(-half_width, half_width, 41)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    assert _smad(xx**2 + 1.3 * yy**2) == pytest.approx(half_width**2, rel=1e-12)


# Landscaper 1.3.1 (PyPI; LossLandscape(loss, ranges).smad() with its defaults) on these grids, run in
# a separate environment: it asks for networkx < 3 and numpy < 2, which lossatlas does not install.
# Each is a case where Landscaper's contour tree is a tree (see the module smad's docstring).
LANDSCAPER = {"wells_tilted": 249.75, "rectangle": 131.5, "smooth": 154.75, "wells3d_tilted": 139.0,
              "ripple3d": 432 / 11}


def _cases() -> dict[str, np.ndarray]:
    x = np.linspace(-1.5, 1.5, 25)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    z = np.linspace(-1.6, 1.6, 9)
    x3 = np.meshgrid(z, z, z, indexing="ij")
    return {
        "wells_tilted": _ranks((xx**2 - 1) ** 2 + (yy**2 - 1) ** 2 + 0.1 * xx + 0.07 * yy),
        "rectangle": _ranks(np.cos(2.1 * xx[:, :17] + 0.3) * np.sin(1.7 * yy[:, :17]) + 0.2 * yy[:, :17]),
        "smooth": _ranks(np.sin(2 * xx + 0.4) * np.cos(1.5 * yy) + 0.25 * (xx**2 + yy**2)),
        "wells3d_tilted": _ranks(sum((c**2 - 1) ** 2 for c in x3) + 0.1 * x3[0] + 0.07 * x3[1] + 0.05 * x3[2]),
        "ripple3d": _ranks(np.sin(2 * x3[0]) * np.cos(3 * x3[1]) + np.sin(x3[2] + 0.5 * x3[0]) + 0.2 * x3[2] ** 2),
    }


@pytest.mark.parametrize("name", sorted(LANDSCAPER))
def test_landscapers_values(name):
    assert _smad(_cases()[name]) == pytest.approx(LANDSCAPER[name], rel=1e-12)


@pytest.mark.parametrize("name", sorted(LANDSCAPER))
def test_landscaper_itself(name):
    landscaper = pytest.importorskip("landscaper")
    loss = _cases()[name]
    order = [1, 0, *range(2, loss.ndim)]  # its meshgrid is 'xy': the first range runs along axis 1
    expected = landscaper.LossLandscape(loss, [np.linspace(-1, 1, loss.shape[a]) for a in order]).smad()
    assert _smad(loss) == pytest.approx(expected, rel=1e-12)


def test_nonfinite_points_count_as_plus_infinity():
    # A NaN in the saddle of two basins: the basins then meet elsewhere, as if the point were +inf.
    grid = np.array([[6, 7, 8], [0, 2, 1], [3, 4, 5]], dtype=float)
    with_nan = grid.copy()
    with_nan[1, 1] = np.nan
    as_inf = grid.copy()
    as_inf[1, 1] = np.inf
    assert _smad(with_nan) == _smad(as_inf) and np.isfinite(_smad(with_nan))


def test_the_merge_tree_analyzer_reports_smad_of_its_grid():
    def wells(theta):
        return ((theta**2 - 1) ** 2).sum()

    subject = FunctionSubject(wells, torch.zeros(2, dtype=torch.float64), name="wells")
    with Store.memory() as store:
        result = analyze(store, subject, "merge-tree", directions="axes", at="theta0", span=2.0, resolution=41,
                         relative_threshold=0.5, progress=False)  # SMAD is Landscaper's: never simplified
        assert result.metrics["n_minima"] == 1
        assert result.metrics["smad"] == pytest.approx(1.0, abs=1e-12)
        with pytest.raises(ConfigError, match="dimensions"):
            analyze(store, subject, "merge-tree", directions="axes", at="theta0", dimensions=5, progress=False)
