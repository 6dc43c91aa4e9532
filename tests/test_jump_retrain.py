import warnings

import gudhi
import numpy as np
import pytest
import torch

from lossatlas import ConfigError, FunctionSubject, ModuleSubject, Recipe, Store, analyze, train_minima
from lossatlas.errors import NonFiniteLossError
from lossatlas.problems import resnet
from lossatlas.samplers import JumpRetrainRuns, Point, reference_recipe
from lossatlas.samplers.jump_retrain import jump_and_retrain
from lossatlas.sampling import obtain
from lossatlas.methods.jump_retrain import persistence_metrics
from lossatlas.topology.graph_persistence import graph_diagrams, total_persistence
from lossatlas.topology.graphs import knn_edges

_SETTINGS = dict(at="theta0", seeds=[0, 1, 2, 3], step_sizes=[0.5, 1.0, 1.5, 2.0], epochs=10, steps_per_epoch=5,
                 lr=0.01,
                 knn_k=5)


@pytest.fixture(autouse=True)
def _quiet_phate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _well():
    return FunctionSubject(lambda t: (t**2).sum(), torch.zeros(2, dtype=torch.float64), name="well")


def _double_well():
    return FunctionSubject(lambda t: (t[0] ** 2 - 1) ** 2 + t[1] ** 2, torch.tensor([1.0, 0.0], dtype=torch.float64),
                           name="double_well")


def _reference_diagrams(losses, edges, dim, triangles=True):
    """gudhi on the stored graph and its triangles, built here independently of lossatlas."""
    tree = gudhi.SimplexTree()
    for vertex, loss in enumerate(losses):
        tree.insert([vertex], filtration=loss)
    neighbours = {v: set() for v in range(len(losses))}
    for a, b in edges:
        tree.insert([int(a), int(b)], filtration=max(losses[a], losses[b]))
        neighbours[int(a)].add(int(b))
        neighbours[int(b)].add(int(a))
    if triangles:  # every 3-clique of the graph, at its largest vertex loss
        for a, b in edges:
            for c in neighbours[int(a)] & neighbours[int(b)]:
                tree.insert([int(a), int(b), c], filtration=max(losses[a], losses[b], losses[c]))
    tree.compute_persistence(persistence_dim_max=True)
    return np.array(tree.persistence_intervals_in_dimension(dim)).reshape(-1, 2)


def _sorted(d):
    return d[np.lexsort((d[:, 1], d[:, 0]))]


def test_graph_persistence_equals_gudhi_on_the_stored_graph():
    with Store.memory() as store:
        result = analyze(store, _double_well(), "jump-retrain", **_SETTINGS)
    losses, edges = result.arrays["losses"], result.arrays["edges"]
    np.testing.assert_array_equal(result.arrays["filtration"], losses)  # loss_split="train"
    for dim in (0, 1):
        expected = _reference_diagrams(losses, edges, dim)
        np.testing.assert_allclose(_sorted(result.arrays[f"diagram_{dim}"]), _sorted(expected))
        finite = expected[np.isfinite(expected[:, 1])]
        assert result.metrics[f"total_persistence_{dim}_finite"] == pytest.approx(
            float(np.sum((finite[:, 1] - finite[:, 0]) ** 2)))
        assert result.metrics[f"n_essential_{dim}"] == np.isinf(expected[:, 1]).sum()
        plain = _reference_diagrams(losses, edges, dim, triangles=False)  # the released code's closed totals
        plain[:, 1] = np.where(np.isinf(plain[:, 1]), losses.max(), plain[:, 1])
        assert result.metrics[f"total_persistence_{dim}_closed"] == pytest.approx(
            float(np.sum((plain[:, 1] - plain[:, 0]) ** 2)))
    assert result.metrics["n_essential_0"] >= 1
    assert result.params["knn_k"] == 5 and result.params["phate_knn_k"] == 5 and "phate" in result.versions


def test_double_well_has_more_d0_persistence_than_a_single_well():
    with Store.memory() as store:
        single = analyze(store, _well(), "jump-retrain", **_SETTINGS)
        double = analyze(store, _double_well(), "jump-retrain", **_SETTINGS)
    assert double.metrics["total_persistence_0_finite"] > 10 * single.metrics["total_persistence_0_finite"]


def test_disconnected_graphs_report_every_component():
    losses = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.4])
    edges = np.array([[0, 1], [2, 3], [4, 5]])  # three components
    metrics, diagrams = persistence_metrics(losses, edges, flag=True, p=2.0)
    assert metrics["n_essential_0"] == 3 and metrics["total_persistence_0_finite"] == 0
    assert np.isinf(diagrams["diagram_0"][:, 1]).sum() == 3
    # the released code closes each component at the max loss: (0.9-0.1)^2 + (0.9-0.2)^2 + (0.9-0.3)^2
    assert metrics["total_persistence_0_closed"] == pytest.approx(0.64 + 0.49 + 0.36)
    cycle = np.array([[0, 1], [1, 2], [2, 0]])
    _, plain = graph_diagrams(losses, cycle)
    _, flag = graph_diagrams(losses, cycle, flag=True)
    assert len(plain) == 1 and len(flag) == 0  # the triangle fills the cycle
    assert total_persistence(np.array([[0.0, 2.0], [1.0, 1.5]]), p=2) == pytest.approx(4.25)


def test_connecting_edges_join_the_components_as_a_minimum_spanning_tree_does():
    """Ground truth: the minimum spanning tree of the complete graph in which the kNN graph's own
    edges cost nothing; its edges between components weigh what the connecting edges weigh."""
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial.distance import cdist

    from lossatlas.methods.jump_retrain import connecting_edges, n_components

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=20, size=(5, 3))
    points = np.concatenate([c + rng.normal(size=(12, 3)) for c in centres])
    edges = knn_edges(points, 3)
    pieces = n_components(len(points), edges)
    assert pieces == 5
    bridges = connecting_edges(points, edges)
    assert len(bridges) == pieces - 1 and n_components(len(points), np.concatenate([edges, bridges])) == 1
    distances = cdist(points, points)
    weights = distances.copy()
    weights[edges[:, 0], edges[:, 1]] = weights[edges[:, 1], edges[:, 0]] = 1e-12
    tree = minimum_spanning_tree(weights).tocoo()
    piece = np.repeat(np.arange(5), 12)  # well-separated clusters: the kNN graph's components
    across = sum(distances[a, b] for a, b in zip(tree.row, tree.col) if piece[a] != piece[b])
    assert sum(distances[a, b] for a, b in bridges) == pytest.approx(across, rel=1e-9)
    assert len(connecting_edges(points, np.concatenate([edges, bridges]))) == 0


def test_a_graph_of_separate_runs_is_joined_and_counted(caplog):
    settings = {**_SETTINGS, "knn_k": 1}  # one neighbour: the runs fall apart
    with Store.memory() as store, caplog.at_level("WARNING", logger="lossatlas"):
        apart = analyze(store, _double_well(), "jump-retrain", connect="none", **settings)
    assert "pieces (knn_components), left apart" in caplog.text
    caplog.clear()
    with Store.memory() as store, caplog.at_level("WARNING", logger="lossatlas"):
        joined = analyze(store, _double_well(), "jump-retrain", **settings)
    assert "pieces (knn_components), joined by" in caplog.text
    assert apart.metrics["knn_components"] > 1 and apart.metrics["connecting_edges"] == 0
    assert apart.metrics["n_essential_0"] == apart.metrics["knn_components"]
    assert joined.metrics["knn_components"] == apart.metrics["knn_components"]
    assert joined.metrics["n_essential_0"] == 1
    assert joined.metrics["connecting_edges"] == joined.metrics["knn_components"] - 1


def test_total_persistence_of_finite_pairs_by_hand():
    # a path a-b-c-d-e at 0, 2, 0.5, 3, 1: c's component dies at 2, e's at 3, a's never
    path = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    metrics, _ = persistence_metrics(np.array([0.0, 2.0, 0.5, 3.0, 1.0]), path, flag=True, p=2.0)
    assert metrics["total_persistence_0_finite"] == pytest.approx(1.5**2 + 2.0**2)
    assert metrics["total_persistence_0_closed"] == pytest.approx(1.5**2 + 2.0**2 + 3.0**2)
    assert metrics["n_essential_0"] == 1 and metrics["n_points_0"] == 2
    # a square a-b-e-d (0, 1, 2, 1.5) is a cycle born at 2; a hub h at 5 joined to all four
    # cones it off with four triangles, so with flag=True it dies at 5
    square = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 0], [4, 1], [4, 2], [4, 3]])
    values = np.array([0.0, 1.0, 2.0, 1.5, 5.0])
    filled, _ = persistence_metrics(values, square, flag=True, p=2.0)
    assert filled["total_persistence_1_finite"] == pytest.approx(3.0**2) and filled["n_essential_1"] == 0
    plain, _ = persistence_metrics(values, square, flag=False, p=2.0)
    assert plain["total_persistence_1_finite"] == 0 and plain["n_essential_1"] == 4  # E - V + 1 cycles
    assert plain["total_persistence_1_closed"] == filled["total_persistence_1_closed"] == pytest.approx(9.0)


def test_finite_total_persistence_depends_on_where_the_losses_lie():
    # the same losses shuffled over the same graph: the finite totals see the graph, the closed
    # totals mostly see the loss range (Horoi et al. 2022's total persistence must be the former)
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(300, 2))
    losses = (points**2).sum(axis=1)  # one smooth bowl: nothing merges late
    edges = knn_edges(points, 8)
    smooth, _ = persistence_metrics(losses, edges, flag=True, p=2.0)
    shuffled = [persistence_metrics(rng.permutation(losses), edges, flag=True, p=2.0)[0] for _ in range(5)]
    finite = np.array([m["total_persistence_0_finite"] for m in shuffled])
    assert np.all(finite > 100 * smooth["total_persistence_0_finite"]), (finite, smooth)
    finite = np.array([m["total_persistence_1_finite"] for m in shuffled])
    assert np.all(finite > 5 * smooth["total_persistence_1_finite"] + 1e-3), (finite, smooth)
    closed = np.array([m["total_persistence_0_closed"] for m in shuffled])
    assert np.all(closed < 2 * smooth["total_persistence_0_closed"]), (closed, smooth)  # the loss range dominates


def test_test_loss_filtration_records_and_filters_by_the_test_split():
    torch.manual_seed(0)
    inputs, targets = torch.randn(40, 3), torch.randint(0, 2, (40,))
    test_inputs, test_targets = torch.randn(30, 3), torch.randint(0, 2, (30,))
    subject = ModuleSubject(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)),
                            torch.nn.functional.cross_entropy, (inputs, targets), name="tiny",
                            test_data=(test_inputs, test_targets))
    settings = dict(_SETTINGS, seeds=[0, 1], step_sizes=[0.5, 1.0], epochs=4, batch_size=20)
    with Store.memory() as store:
        train = analyze(store, subject, "jump-retrain", **settings)
        test = analyze(store, subject, "jump-retrain", loss_split="test", **settings)
    assert test.params["loss_split"] == "test" and train.params["loss_split"] == "train"
    np.testing.assert_array_equal(test.arrays["losses"], train.arrays["losses"])  # the same runs
    thetas = jump_and_retrain(Store.memory(), subject, [0, 1], [0.5, 1.0], 4, {"lr": 0.01, "steps_per_epoch": 5,
                              "batch_size": 20}, at="theta0", progress=False)["thetas"]
    expected = [subject.evaluate(theta, split="test")["loss"] for theta in thetas]
    np.testing.assert_allclose(test.arrays["filtration"], expected, rtol=1e-6)
    assert not np.allclose(test.arrays["filtration"], train.arrays["losses"])
    for dim in (0, 1):
        np.testing.assert_allclose(_sorted(test.arrays[f"diagram_{dim}"]),
                                   _sorted(_reference_diagrams(np.array(expected), test.arrays["edges"], dim)))
    with Store.memory() as store, pytest.raises(ConfigError, match="no test split"):
        analyze(store, _double_well(), "jump-retrain", loss_split="test", **_SETTINGS)


def test_test_losses_use_each_epochs_buffers_and_keep_nan_where_training_diverged():
    # BatchNorm, and the test split is the evaluation data: the test losses must equal the
    # evaluation losses exactly, which they do only if each epoch's statistics are used
    torch.manual_seed(0)
    data = (torch.randn(48, 3), torch.randint(0, 2, (48,)))
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    subject = ModuleSubject(model, torch.nn.functional.cross_entropy, data, name="tiny_bn", test_data=data)
    kwargs = dict(epochs=3, at="theta0", progress=False)
    with Store.memory() as store:
        runs = jump_and_retrain(store, subject, [0, 1], [0.5, 1.0], recipe={"lr": 0.05, "batch_size": 16},
                                **kwargs)
        request = JumpRetrainRuns(point=Point(at="theta0"), seeds=(0, 1), step_sizes=(0.5, 1.0),
                                  recipe=reference_recipe(lr=0.05, batch_size=16, epochs=3), record_test=True)
        tested = obtain(store, subject, request, progress=False)
    np.testing.assert_array_equal(tested["losses"], runs["losses"])
    np.testing.assert_allclose(tested["test_losses"], tested["losses"], rtol=1e-12)
    assert len(np.unique(np.round(tested["losses"], 8))) > 4  # the epochs differ: buffers moved
    # a regression that diverges under a huge learning rate: NaN in both, at the same epochs
    data = (torch.randn(48, 3), torch.randn(48, 1))
    regression = ModuleSubject(torch.nn.Linear(3, 1), torch.nn.functional.mse_loss, data, name="diverging",
                               test_data=data)
    request = JumpRetrainRuns(point=Point(at="theta0"), seeds=(0,), step_sizes=(0.5,), record_test=True,
                              recipe=reference_recipe(lr=1e4, batch_size=16, epochs=6))
    with Store.memory() as store:
        diverged = obtain(store, regression, request, progress=False)
    nan = np.isnan(diverged["losses"])
    assert nan.any() and not nan[0] and len(diverged["losses"]) == 7
    np.testing.assert_array_equal(np.isnan(diverged["test_losses"]), nan)
    np.testing.assert_allclose(diverged["test_losses"][~nan], diverged["losses"][~nan], rtol=1e-12)


def test_reruns_reproduce_and_interrupted_sampling_resumes(monkeypatch):
    subject = _double_well()
    with Store.memory() as store:
        first = analyze(store, subject, "jump-retrain", **_SETTINGS)
    with Store.memory() as store:
        second = analyze(store, subject, "jump-retrain", **_SETTINGS)
    assert first.metrics == second.metrics
    np.testing.assert_array_equal(first.arrays["embedding"], second.arrays["embedding"])
    # the runs are trained in groups (lossatlas.batched); here groups of 3, and the second group interrupted
    from lossatlas.samplers import jump_retrain as sampler_module

    monkeypatch.setattr(sampler_module, "runs_at_once", lambda subject, recipe, count: min(3, count))
    calls = []
    original = sampler_module.train_many

    def interrupted(*args, **kwargs):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(len(args[1]))
        return original(*args, **kwargs)

    kwargs = dict(seeds=[0, 1, 2, 3], step_sizes=[0.5, 1.0], epochs=4, recipe={"lr": 0.01, "steps_per_epoch": 5},
                  at="theta0", progress=False)
    with Store.memory() as store:
        full = jump_and_retrain(store, subject, **kwargs)
    with Store.memory() as store:
        monkeypatch.setattr(sampler_module, "train_many", interrupted)
        with pytest.raises(KeyboardInterrupt):
            jump_and_retrain(store, subject, **kwargs)
        calls.clear()
        monkeypatch.setattr(sampler_module, "train_many", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
        resumed = jump_and_retrain(store, subject, **kwargs)
    assert calls == [3, 2]  # 8 runs, the first group of 3 was stored before the interruption
    np.testing.assert_array_equal(resumed["thetas"], full["thetas"])
    np.testing.assert_array_equal(resumed["losses"], full["losses"])


def test_potential_rows_above_n_landmark_and_resnet_samples():
    subject = resnet(skip=True, n_train=64)
    with Store.memory() as store:
        (minimum,) = train_minima(store, subject, Recipe(lr=0.05, epochs=1, batch_size=32), seeds=[0], progress=False)
        result = analyze(store, subject, "jump-retrain", seeds=[0, 1], step_sizes=[0.5, 1.0], epochs=3, batch_size=32,
                         knn_k=4, n_landmark=6)
        samples = jump_and_retrain(store, subject, [0, 1], [0.5, 1.0], 3, {"batch_size": 32}, progress=False)
    # 16 samples embedded with a 16 x (<= 6 landmarks) potential
    assert result.metrics["n_points"] == 16 and result.arrays["embedding"].shape == (16, 2)
    assert len(result.arrays["edges"]) >= 16 * 4 / 2
    # epoch 0 is the jump itself, measured with the minimum's BatchNorm statistics
    assert samples["epochs"].tolist()[:4] == [0, 1, 2, 3]
    assert samples["losses"][0] == pytest.approx(subject.loss(samples["thetas"][0], minimum.buffers), rel=1e-6)
    jump = torch.as_tensor(samples["thetas"][0] - minimum.theta)
    name, shape, numel = subject.param_layout[0]  # the first convolution: its filters moved by 0.5 x their norm
    filters = jump[:numel].reshape(shape[0], -1).norm(dim=1)
    expected = 0.5 * torch.as_tensor(minimum.theta[:numel]).reshape(shape[0], -1).norm(dim=1)
    np.testing.assert_allclose(filters.numpy(), expected.numpy(), rtol=1e-4)


def test_too_few_samples_are_refused_before_any_work_and_all_diverged_runs_say_so():
    with Store.memory() as store, pytest.raises(ConfigError, match="PHATE needs at least 4"):
        analyze(store, _well(), "jump-retrain", at="theta0", seeds=[0], step_sizes=[0.5], epochs=2)
    explode = FunctionSubject(lambda t: torch.exp(t.abs().sum() * 1e3), torch.zeros(2, dtype=torch.float64),
                              name="explode")
    with Store.memory() as store, pytest.raises(NonFiniteLossError, match="have a finite loss"):
        analyze(store, explode, "jump-retrain", at="theta0", seeds=[0, 1], step_sizes=[1.0, 2.0], epochs=3,
                steps_per_epoch=2)
