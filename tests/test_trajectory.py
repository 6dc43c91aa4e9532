"""PCA directions of a training trajectory (Li et al. 2018 §7): the trajectory is
recorded while the minima train (batched or one at a time, the same numbers), and a trajectory
that lies in a plane is recovered exactly by its first two principal components."""
import numpy as np
import pytest
import torch
from torch import nn

import textwrap

from lossatlas import Recipe, Store, StoreError, analyze, train_minima
from lossatlas.cli import main
from lossatlas.samplers import loss_grid
from lossatlas.subjects import FunctionSubject, ModuleSubject


def _two_curvatures(dim=10):
    """1/2 sum a_i theta_i^2 with a_i = 1 on the first half and 4 on the second: gradient descent
    from any start moves in the plane of the start's two halves, through the minimum 0."""
    curvature = torch.tensor([1.0] * (dim // 2) + [4.0] * (dim - dim // 2), dtype=torch.float64)
    return FunctionSubject(lambda t: 0.5 * (curvature * t**2).sum(), torch.zeros(dim, dtype=torch.float64),
                           name="two-curvatures")


def test_a_planar_trajectory_is_recovered_by_its_principal_components():
    subject = _two_curvatures()
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.0, epochs=6, steps_per_epoch=3)
    with Store.memory() as store:
        (minimum,) = train_minima(store, subject, recipe, seeds=[3], progress=False, record_trajectory=True)
        trajectory = store.trajectory(subject.name, 0)
        grid = loss_grid(store, subject, directions="pca", resolution=5, span=2.0, at="minimum", progress=False)
    assert trajectory.shape == (recipe.epochs + 1, subject.dim)
    np.testing.assert_allclose(trajectory[0], subject.init_theta(3)[0].numpy(), rtol=1e-6)  # stored as float32
    np.testing.assert_allclose(trajectory[-1], minimum.theta, rtol=1e-6)
    reconstructed = minimum.theta + grid["path"] @ grid["directions"]
    np.testing.assert_allclose(reconstructed, trajectory, atol=1e-6)
    assert grid["explained_variance"].sum() == pytest.approx(1.0, abs=1e-9)
    offsets = trajectory - minimum.theta
    _, _, right = np.linalg.svd(offsets - offsets.mean(axis=0), full_matrices=False)
    units = grid["directions"] / np.linalg.norm(grid["directions"], axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(np.sum(right[:2] * units, axis=1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(grid["path"]).max(axis=0), 1.0)  # span 1 just covers the path


def _mlp_subject():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(48, 4, generator=generator, dtype=torch.float64)
    targets = (inputs[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    return ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets), name="mlp")


def test_trajectories_trained_together_equal_those_trained_alone(monkeypatch):
    from lossatlas.samplers import minima as minima_module

    recipe = Recipe(lr=0.1, epochs=3, batch_size=16)
    together = []
    original = minima_module.train_many
    monkeypatch.setattr(minima_module, "train_many", lambda *a, **k: together.append(1) or original(*a, **k))
    found = {}
    for batched in ("1", "0"):
        monkeypatch.setenv("LOSSATLAS_BATCHED_TRAINING", batched)
        with Store.memory() as store:
            train_minima(store, _mlp_subject(), recipe, seeds=[0, 1], progress=False, record_trajectory=True)
            found[batched] = [store.trajectory("mlp", index) for index in (0, 1)]
        assert len(together) == 1  # one batched call with batching on; none with it off
    for together, alone in zip(found["1"], found["0"]):
        assert together.shape == (4, _mlp_subject().dim)
        np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-7)


def test_pca_grids_need_a_recorded_trajectory():
    subject = _mlp_subject()
    recipe = Recipe(lr=0.1, epochs=2, batch_size=16)
    with Store.memory() as store:
        train_minima(store, subject, recipe, seeds=[0], progress=False)
        with pytest.raises(StoreError, match="record_trajectory"):
            analyze(store, subject, "merge-tree", directions="pca", resolution=5, progress=False)
        with pytest.raises(StoreError, match="without recording its trajectory"):
            train_minima(store, subject, recipe, seeds=[0], progress=False, record_trajectory=True)


def test_the_merge_tree_contour_shows_the_training_path():
    import matplotlib

    matplotlib.use("Agg")
    subject = _mlp_subject()
    with Store.memory() as store:
        train_minima(store, subject, Recipe(lr=0.1, epochs=4, batch_size=16), seeds=[0], progress=False,
                     record_trajectory=True)
        result = analyze(store, subject, "merge-tree", directions="pca", resolution=7, span=3.0, progress=False)
    assert result.arrays["path_xy"].shape == (5, 2)
    from lossatlas.methods.merge_tree import MergeTreeAnalyzer

    figure = MergeTreeAnalyzer(directions="pca").plot(result, view="contour")
    axis = figure.axes[0]
    assert any(line.get_label() == "training path" for line in axis.lines)
    assert axis.get_xlabel().startswith("PC 1")


def test_a_benchmark_records_trajectories_when_a_method_grids_along_pca(tmp_path, monkeypatch):
    (tmp_path / "my_valley.py").write_text(textwrap.dedent('''
        import torch
        from lossatlas import FunctionSubject

        def valley():
            scales = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
            return FunctionSubject(lambda t: 0.5 * (scales * t ** 2).sum(), torch.ones(4, dtype=torch.float64),
                                   name="valley")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "valley.toml"
    config.write_text(textwrap.dedent("""
        name = "valley"
        problem = "my_valley:valley"
        seeds = [0]
        [minima]
        lr = 0.05
        epochs = 4
        steps_per_epoch = 5
        [methods.merge-tree]
        directions = "pca"
        resolution = 9
        span = 1.2
    """))
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    with Store(tmp_path / "out" / "valley_cpu.h5", "r") as store:
        assert store.trajectory("valley", 0).shape == (5, 4)
        (result,) = store.results("valley", "merge-tree")
    assert result.arrays["path_xy"].shape == (5, 2) and result.metrics["n_minima"] >= 1
