import warnings

import gudhi
import numpy as np
import pytest
import torch

from lossatlas import FunctionSubject, Recipe, Store, analyze, train_minima
from lossatlas.problems import resnet
from lossatlas.samplers.jump_retrain import jump_and_retrain
from lossatlas.topology.graph_persistence import graph_diagrams, total_persistence

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


def _reference_diagrams(losses, edges, dim):
    """gudhi on the stored graph, built here independently of lossatlas."""
    tree = gudhi.SimplexTree()
    for vertex, loss in enumerate(losses):
        tree.insert([vertex], filtration=loss)
    for a, b in edges:
        tree.insert([int(a), int(b)], filtration=max(losses[a], losses[b]))
    tree.compute_persistence(persistence_dim_max=True)
    diagram = np.array(tree.persistence_intervals_in_dimension(dim)).reshape(-1, 2)
    diagram[:, 1] = np.where(np.isinf(diagram[:, 1]), max(losses), diagram[:, 1])
    return diagram


def _sorted(d):
    return d[np.lexsort((d[:, 1], d[:, 0]))]


def test_graph_persistence_equals_gudhi_on_the_stored_graph():
    with Store.memory() as store:
        result = analyze(store, _double_well(), "jump-retrain", **_SETTINGS)
    losses, edges = result.arrays["losses"], result.arrays["edges"]
    for dim in (0, 1):
        np.testing.assert_allclose(_sorted(result.arrays[f"diagram_{dim}"]),
                                   _sorted(_reference_diagrams(losses, edges, dim)))
    d0 = result.arrays["diagram_0"]
    assert result.metrics["total_persistence_0"] == pytest.approx(float(np.sum((d0[:, 1] - d0[:, 0]) ** 2)))
    assert result.params["knn_k"] == 5 and result.params["phate_knn_k"] == 5 and "phate" in result.versions


def test_double_well_has_more_d0_persistence_than_a_single_well():
    with Store.memory() as store:
        single = analyze(store, _well(), "jump-retrain", **_SETTINGS)
        double = analyze(store, _double_well(), "jump-retrain", **_SETTINGS)
    assert double.metrics["total_persistence_0"] > 10 * single.metrics["total_persistence_0"]


def test_disconnected_graphs_report_every_component():
    losses = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.4])
    edges = np.array([[0, 1], [2, 3], [4, 5]])  # three components
    d0, d1 = graph_diagrams(losses, edges)
    assert len(d0) == 3 and np.all(d0[:, 1] == 0.9)  # each component's essential class, closed at the max loss
    open_d0, _ = graph_diagrams(losses, edges, close_essential=False)
    assert np.isinf(open_d0[:, 1]).sum() == 3
    cycle = np.array([[0, 1], [1, 2], [2, 0]])
    _, plain = graph_diagrams(losses, cycle, close_essential=False)
    _, flag = graph_diagrams(losses, cycle, close_essential=False, flag=True)
    assert len(plain) == 1 and len(flag) == 0  # the triangle fills the cycle
    assert total_persistence(np.array([[0.0, 2.0], [1.0, 1.5]]), p=2) == pytest.approx(4.25)


def test_reruns_reproduce_and_interrupted_sampling_resumes(monkeypatch):
    subject = _double_well()
    with Store.memory() as store:
        first = analyze(store, subject, "jump-retrain", **_SETTINGS)
    with Store.memory() as store:
        second = analyze(store, subject, "jump-retrain", **_SETTINGS)
    assert first.metrics == second.metrics
    np.testing.assert_array_equal(first.arrays["embedding"], second.arrays["embedding"])
    calls = []
    original = FunctionSubject.train

    def interrupted(self, *args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, *args, **kwargs)

    kwargs = dict(seeds=[0, 1, 2, 3], step_sizes=[0.5, 1.0], epochs=4, recipe={"lr": 0.01, "steps_per_epoch": 5},
                  at="theta0", progress=False)
    with Store.memory() as store:
        full = jump_and_retrain(store, subject, **kwargs)
    with Store.memory() as store:
        monkeypatch.setattr(FunctionSubject, "train", interrupted)
        with pytest.raises(KeyboardInterrupt):
            jump_and_retrain(store, subject, **kwargs)
        calls.clear()
        monkeypatch.setattr(FunctionSubject, "train", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
        resumed = jump_and_retrain(store, subject, **kwargs)
    assert len(calls) == 3  # 8 runs, 5 were stored before the interruption
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
