import numpy as np
import pytest
import torch

from lossatlas import ConfigError, FunctionSubject, ModuleSubject, Recipe, Store, analyze, train_minima
from lossatlas.directions import check as check_directions
from lossatlas.directions import filter_normalize, hessian_directions
from lossatlas.problems import himmelblau, resnet, three_hump_camel
from lossatlas.samplers import loss_grid

_AXES = dict(directions="axes", at="theta0")


def test_himmelblau_minima_saddles_and_death_values():
    with Store.memory() as store:
        result = analyze(store, himmelblau(), "merge-tree", span=5.0, resolution=501, relative_threshold=0.01, **_AXES)
    assert result.metrics["n_minima"] == 4 and result.metrics["n_saddles"] == 3
    deaths = np.sort(result.arrays["pairs"][:, 1][np.isfinite(result.arrays["pairs"][:, 1])])
    saddle_values = sorted(v for _, v in himmelblau().critical_points["saddles"])[:3]  # the lowest three merge
    np.testing.assert_allclose(deaths, [13.3120, 67.7192, 104.0151], rtol=0.01)
    np.testing.assert_allclose(deaths, saddle_values, rtol=0.01)


def test_three_hump_camel_pairs():
    with Store.memory() as store:
        result = analyze(store, three_hump_camel(), "merge-tree", span=2.0, resolution=401, **_AXES)
    finite = result.arrays["pairs"][np.isfinite(result.arrays["pairs"][:, 1])]
    np.testing.assert_allclose(finite, [[0.29864, 0.87736], [0.29864, 0.87736]], rtol=2e-3)
    # Xie, Geniesse et al.: the mean distance of the pairs to the diagonal, (death - birth) / sqrt(2)
    assert result.metrics["average_persistence_finite"] == pytest.approx((0.87736 - 0.29864) / np.sqrt(2), rel=5e-3)
    # TTK's diagram pairs the global minimum with the grid maximum f(2, 2) = 8 - 16.8 + 64/6 + 4 + 4
    corner = 8 - 16.8 + 64 / 6 + 4 + 4
    assert result.metrics["average_persistence"] == pytest.approx(
        (2 * (0.87736 - 0.29864) + corner) / 3 / np.sqrt(2), rel=5e-3)


@pytest.mark.parametrize("subject,span", [(himmelblau, 5.0), (three_hump_camel, 2.0)])
def test_representations_agree_on_smooth_functions(subject, span):
    saddles = {}
    with Store.memory() as store:
        for representation in ("triangulated_grid", "image", "delaunay", "gabriel", "knn"):
            result = analyze(store, subject(), "merge-tree", span=span, resolution=151, representation=representation,
                             relative_threshold=0.005, **_AXES)
            saddles[representation] = result.metrics["n_saddles"]
    assert len(set(saddles.values())) == 1, saddles


def test_grid_resume_after_interruption_equals_uninterrupted(monkeypatch):
    subject = himmelblau()
    subject.chunk_size = 64  # several blocks
    with Store.memory() as store:
        full = loss_grid(store, subject, "axes", 60, 4.0, progress=False)
    calls = []
    original = type(subject).evaluate_many

    def interrupted(self, thetas, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(thetas))
        return original(self, thetas, *args, **kwargs)

    with Store.memory() as store:
        monkeypatch.setattr(type(subject), "evaluate_many", interrupted)
        with pytest.raises(KeyboardInterrupt):
            loss_grid(store, subject, "axes", 60, 4.0, progress=False)
        monkeypatch.setattr(type(subject), "evaluate_many", original)
        root = store.file[f"subjects/himmelblau/samples/grid/{full.key}"]
        done = sum(len(part["loss"]) for part in root.values() if part.attrs.get("complete"))
        assert 0 < done < 60 * 60  # interrupted half-way, first block kept
        counted = []
        monkeypatch.setattr(type(subject), "evaluate_many",
                            lambda self, thetas, *a, **k: counted.append(len(thetas))
                            or original(self, thetas, *a, **k))
        resumed = loss_grid(store, subject, "axes", 60, 4.0, progress=False)
    assert sum(counted) == 60 * 60 - done  # only the missing points were evaluated
    np.testing.assert_array_equal(resumed["loss"], full["loss"])


def test_filter_normalization_matches_theta_filter_norms():
    subject = resnet(n_train=64)
    direction = torch.randn(subject.dim, generator=torch.Generator().manual_seed(0))
    for include_bn in (False, True):
        normalized = filter_normalize(direction, subject.theta0, subject.param_layout, include_bn)
        offset = 0
        for name, shape, numel in subject.param_layout:
            d, w = normalized[offset : offset + numel], subject.theta0[offset : offset + numel]
            if len(shape) > 1:
                np.testing.assert_allclose(d.reshape(shape[0], -1).norm(dim=1), w.reshape(shape[0], -1).norm(dim=1),
                                           rtol=1e-5)
            else:
                assert torch.equal(d, w if include_bn else torch.zeros_like(w)), name
            offset += numel


def test_hessian_directions_are_the_top_eigenvectors():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    matrix = torch.tensor(basis @ np.diag([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) @ basis.T)
    subject = FunctionSubject(lambda t: 0.5 * t @ matrix @ t, torch.zeros(6, dtype=torch.float64), name="q")
    dirs = hessian_directions(subject, subject.theta0, subject.buffers0, seed=0, tol=1e-10)
    np.testing.assert_allclose(np.abs(dirs.numpy() @ basis[:, :2]), np.eye(2), atol=1e-6)
    with pytest.raises(ConfigError, match="directions='axes'"):
        hessian_directions(himmelblau(), himmelblau().theta0, None, seed=0)


def test_ggn_directions_are_the_top_eigenvectors_of_the_explicit_ggn():
    """curvature="ggn": the top-2 eigenvectors (up to sign) of J^T H_L J built with torch.autograd,
    not the Hessian's (on this model they differ), each scaled to ||theta||."""
    from test_curvature import _classifier, _explicit_ggn

    model, loss_fn, data = _classifier()
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7, name="tiny")
    _, vectors = np.linalg.eigh(_explicit_ggn(model, loss_fn, data))
    dirs = hessian_directions(subject, subject.theta0, subject.buffers0, seed=0, tol=1e-10, curvature="ggn").numpy()
    norm = float(subject.theta0.norm())
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), [norm, norm], rtol=1e-12)
    np.testing.assert_allclose(np.abs(dirs / norm @ vectors[:, ::-1][:, :2]), np.eye(2), atol=1e-6)
    hessian = hessian_directions(subject, subject.theta0, subject.buffers0, seed=0, tol=1e-10).numpy()
    assert np.abs(np.sum(dirs * hessian, axis=1) / norm**2).min() < 0.9


def test_a_curvature_needs_hessian_directions_and_a_model():
    function = FunctionSubject(lambda t: (t**2).sum(), torch.zeros(3, dtype=torch.float64), name="bowl")
    with pytest.raises(ConfigError, match="curvature='ggn' chooses the matrix of Hessian directions"):
        check_directions(function, "random", "ggn")
    with pytest.raises(ConfigError, match="curvature='ef' needs a model"):
        hessian_directions(function, function.theta0, None, seed=0, curvature="ef")


def test_merge_tree_grid_on_ggn_directions_and_the_default_key():
    """merge-tree with curvature="ggn" grids along the explicit GGN's top eigenvectors; at the
    default the parameter stays out of the analyzer's and the grid's keys (results stored before
    it existed are found again)."""
    from test_curvature import _classifier, _explicit_ggn

    from lossatlas.analysis import resolve
    from lossatlas.provenance import config_key
    from lossatlas.samplers import Grid, Point
    from lossatlas.sampling import identity, obtain

    model, loss_fn, data = _classifier()
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7, name="tiny")
    settings = dict(directions="hessian", at="theta0", resolution=5)
    cls = resolve("merge-tree")
    with Store.memory() as store:
        default = analyze(store, subject, "merge-tree", progress=False, **settings)
        ggn = analyze(store, subject, "merge-tree", curvature="ggn", progress=False, **settings)
        grid = obtain(store, subject, Grid(point=Point(at="theta0"), directions="hessian", resolution=5,
                                           curvature="ggn"), progress=False)
        old_params = {k: v for k, v in default.params.items() if k not in ("curvature", "dimensions")}
        samples = {name: identity(store, subject, request)
                   for name, request in cls.from_params(settings).requests(subject).items()}
    assert "curvature" not in samples["grid"]
    assert default.key == config_key({"params": old_params, "samples": samples, "version": cls.version})
    assert ggn.key != default.key and ggn.params["curvature"] == "ggn"
    np.testing.assert_array_equal(ggn.arrays["loss_grid"], grid["loss"])
    _, vectors = np.linalg.eigh(_explicit_ggn(model, loss_fn, data))
    units = grid["directions"] / np.linalg.norm(grid["directions"], axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(units @ vectors[:, ::-1][:, :2]), np.eye(2), atol=1e-6)
    with pytest.raises(ConfigError, match="curvature='ggn' chooses the matrix of Hessian directions"):
        cls.from_params({"directions": "random", "curvature": "ggn"})


def test_resnet_grid_at_a_minimum_with_random_directions():
    subject = resnet(skip=False, n_train=128)
    with Store.memory() as store:
        (minimum,) = train_minima(store, subject, Recipe(lr=0.05, epochs=2, batch_size=32), seeds=[0], progress=False)
        result = analyze(store, subject, "merge-tree", resolution=5, span=0.5)
        grid = loss_grid(store, subject, "random", 5, 0.5, "minimum", progress=False)
    centre = grid["loss"][2, 2]
    assert centre == pytest.approx(minimum.metrics["eval_loss"], rel=1e-5)  # the minimum's own BN statistics
    assert result.metrics["loss_min"] <= centre
    assert abs(result.metrics["direction_cosine"]) < 0.2  # nearly orthogonal random directions
    assert result.arrays["accuracy_grid"][2, 2] == pytest.approx(minimum.metrics["eval_accuracy"])
    # grid points equal single evaluations at center + a d1 + b d2 with the minimum's buffers
    dirs = torch.as_tensor(grid["directions"])
    theta = torch.as_tensor(grid["center"]) + grid["x"][0] * dirs[0] + grid["y"][4] * dirs[1]
    assert subject.loss(theta, minimum.buffers) == pytest.approx(grid["loss"][0, 4], rel=1e-5)


def test_nonfinite_grid_losses_are_counted_not_fatal():
    subject = FunctionSubject(lambda t: torch.log(t[0]) * 0 + (t**2).sum() + torch.sqrt(t[1] + 1.0),
                              torch.zeros(2, dtype=torch.float64), name="partly_nan")
    with Store.memory() as store:
        result = analyze(store, subject, "merge-tree", span=2.0, resolution=41, **_AXES)
    assert result.metrics["n_nonfinite"] > 0 and result.metrics["n_minima"] >= 1


@pytest.mark.parametrize("directions", ["random", "hessian", "pca", "axes"])
def test_a_one_parameter_subject_gets_no_grid(directions):
    """Two directions in one dimension are colinear (cosine -1): the grid of t^2 would show a
    'landscape' of 5 minima. Refused before any work, whatever the directions."""
    parabola = FunctionSubject(lambda t: (t**2).sum(), torch.tensor([0.5], dtype=torch.float64), name="parabola")
    with Store.memory() as store, pytest.raises(ConfigError, match="needs two independent directions"):
        analyze(store, parabola, "merge-tree", directions=directions, progress=False)
