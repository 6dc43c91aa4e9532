"""Batched training: K runs trained together equal K runs trained alone (float64, to
rounding), BatchNorm in training mode and augmentation included, each run with its own seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import FunctionSubject, ModuleSubject, Recipe
from lossatlas.batched import runs_at_once, train_many
from lossatlas.problems import pinn_convection


def _alone(subject, starts, recipe, seeds, buffers=None):
    runs = [subject.train(start, recipe, seed, buffers=buffers, progress=False) for start, seed in zip(starts, seeds)]
    return torch.stack([r[0] for r in runs]), torch.stack([r[1] for r in runs])


def _bn_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 6 * 6, 3)).double()
    generator = torch.Generator().manual_seed(1)
    data = (torch.randn(40, 1, 6, 6, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (40,), generator=generator))
    return ModuleSubject(model, nn.CrossEntropyLoss(), data, device="cpu")


@pytest.mark.parametrize("recipe", [
    Recipe(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, epochs=2, batch_size=16, augment=True),
    Recipe(optimizer="adam", lr=0.01, weight_decay=1e-4, epochs=2, batch_size=12, schedule="cosine"),
], ids=["sgd-nesterov-augment", "adam-cosine"])
def test_batched_runs_equal_runs_alone_with_batchnorm_in_training_mode(recipe):
    subject = _bn_cnn()
    seeds = [0, 5, 9]
    starts = torch.stack([subject.init_theta(seed)[0] for seed in seeds])
    thetas, buffers, diverged = train_many(subject, starts, recipe, seeds)
    expected_thetas, expected_buffers = _alone(subject, starts, recipe, seeds)
    assert not diverged.any()
    assert torch.allclose(thetas, expected_thetas, rtol=1e-10, atol=1e-12)
    assert torch.allclose(buffers, expected_buffers, rtol=1e-10, atol=1e-12)  # each run's own BatchNorm statistics
    assert not torch.allclose(buffers[0], buffers[1])  # and they differ between runs


def test_batched_pinn_runs_equal_runs_alone_and_record_every_epoch():
    subject = pinn_convection(5.0, n_f=200, hidden=10, layers=2, device="cpu")
    recipe = Recipe(lr=0.001, momentum=0.9, weight_decay=1e-4, epochs=4, batch_size=100)
    seeds = [1, 2]
    starts = subject.theta0 + 0.1 * torch.randn(2, subject.dim, generator=torch.Generator().manual_seed(0),
                                                dtype=torch.float64)
    seen = []
    thetas, _, _ = train_many(subject, starts, recipe, seeds, on_epoch=lambda e, t, b, d: seen.append(t))
    expected, _ = _alone(subject, starts, recipe, seeds)
    assert torch.allclose(thetas, expected, rtol=1e-10, atol=1e-13)
    assert len(seen) == 4 and torch.equal(seen[-1], thetas)


def test_a_diverging_run_is_reported_and_leaves_the_others_alone():
    subject = FunctionSubject(lambda t: (t**4).sum(), torch.ones(2, dtype=torch.float64), name="quartic",
                              device="cpu")
    recipe = Recipe(lr=0.1, momentum=0.0, epochs=3, steps_per_epoch=5)
    starts = torch.tensor([[0.5, -0.5], [30.0, 30.0]], dtype=torch.float64)  # the second explodes
    thetas, _, diverged = train_many(subject, starts, recipe, [0, 1])
    alone, _ = subject.train(starts[0], recipe, 0, progress=False)
    assert diverged.tolist()[0] == 0 and diverged[1] >= 1
    assert torch.equal(thetas[0], alone)


def test_runs_at_once_batches_small_models_and_not_convolutions_on_a_cpu():
    recipe = Recipe(lr=0.01, epochs=1, batch_size=100)
    pinn = pinn_convection(1.0, n_f=200, hidden=10, layers=2, device="cpu")
    assert runs_at_once(pinn, recipe, 16) == 16  # a few kB per run
    assert runs_at_once(_bn_cnn(), recipe, 16) == 1  # grouped convolutions lose on a CPU
    assert runs_at_once(pinn, Recipe(optimizer="lbfgs", lr=1.0, epochs=1), 16) == 1
    assert np.isscalar(runs_at_once(pinn, recipe, 1))


def _header(subject):
    return {"center": subject.theta0.numpy(), "center_buffers": subject.buffers0.numpy()}


@pytest.mark.parametrize("build, record_test", [
    (lambda: pinn_convection(5.0, n_f=200, hidden=10, layers=2, device="cpu"), False),
    (lambda: _bn_cnn(), False),
])
def test_jump_and_retrain_runs_batched_equal_runs_one_by_one(build, record_test):
    from lossatlas.samplers.jump_retrain import JumpRetrainRuns, reference_recipe

    subject = build()
    request = JumpRetrainRuns(seeds=(0, 1), step_sizes=(0.25, 1.0), record_test=record_test,
                              recipe=reference_recipe(epochs=3, batch_size=100, lr=0.01))
    tasks = [task for _, task in request.tasks(subject, _header(subject))]
    together = request.run_many(subject, _header(subject), False, tasks)
    alone = [request.run(subject, _header(subject), False, task) for task in tasks]
    for a, b in zip(together, alone):
        assert a.arrays.keys() == b.arrays.keys()
        for key in a.arrays:
            assert np.allclose(a.arrays[key], b.arrays[key], rtol=1e-9, atol=1e-12, equal_nan=True), key


def test_jump_and_retrain_batched_runs_mark_a_diverged_run_as_one_by_one_does():
    from lossatlas.samplers.jump_retrain import JumpRetrainRuns, reference_recipe

    subject = FunctionSubject(lambda t: (t**4).sum(), torch.ones(2, dtype=torch.float64), name="quartic",
                              device="cpu")
    request = JumpRetrainRuns(seeds=(0,), step_sizes=(0.1, 40.0),
                              recipe=reference_recipe(epochs=4, lr=0.05, momentum=0.0, steps_per_epoch=3))
    header = _header(subject)
    tasks = [task for _, task in request.tasks(subject, header)]
    together = request.run_many(subject, header, False, tasks)
    alone = [request.run(subject, header, False, task) for task in tasks]
    assert np.isnan(alone[1].arrays["losses"][-1])  # the long jump diverges
    for a, b in zip(together, alone):
        assert np.allclose(a.arrays["losses"], b.arrays["losses"], rtol=1e-12, equal_nan=True)
        assert np.array_equal(np.isnan(a.arrays["thetas"]), np.isnan(b.arrays["thetas"]))


def test_minima_of_a_variant_trained_together_equal_minima_trained_alone():
    from lossatlas.samplers.minima import TrainedMinima

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    data = (torch.randn(48, 5, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (48,), generator=generator))
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    subject = ModuleSubject(model, nn.functional.cross_entropy, data, device="cpu")  # no convolution: batched
    request = TrainedMinima(recipe=Recipe(lr=0.1, epochs=3, batch_size=16), seeds=(0, 4, 7))
    tasks = [task for _, task in request.tasks(subject, {})]
    assert request.group_size(subject, len(tasks)) == 3
    together = request.run_many(subject, {}, False, tasks)
    alone = [request.run(subject, {}, False, task) for task in tasks]
    for a, b in zip(together, alone):
        for key in ("theta", "buffers"):
            assert np.allclose(a.arrays[key], b.arrays[key], rtol=1e-10, atol=1e-12)
        assert a.attrs["seed"] == b.attrs["seed"] and a.attrs["recipe"] == b.attrs["recipe"]


class _Branchy(nn.Module):
    """A model with data-dependent control flow, which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def forward(self, x):
        y = self.layer(x)
        return y * 2 if y.mean() > 100 else y


def test_models_vmap_cannot_batch_train_one_at_a_time_and_a_diverged_seed_keeps_the_others(tmp_path):
    from lossatlas import Store, train_minima
    from lossatlas.errors import NonFiniteLossError

    torch.manual_seed(0)
    data = (torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,)))
    branchy = ModuleSubject(_Branchy().double(), nn.CrossEntropyLoss(), data, device="cpu")
    recipe = Recipe(lr=0.1, epochs=2, batch_size=8)
    assert runs_at_once(branchy, recipe, 3) == 3  # it looks batchable until a step is tried
    with Store.memory() as store:
        minima = train_minima(store, branchy, recipe, seeds=[0, 1, 2], progress=False)
    assert branchy._train_vmap_failed and runs_at_once(branchy, recipe, 3) == 1
    alone = branchy.train(branchy.init_theta(1)[0], recipe, 1, progress=False)[0]
    assert torch.equal(torch.as_tensor(minima[1].theta), alone)

    class Exploding(FunctionSubject):
        def init_theta(self, seed):  # seed 2 starts where the quartic's gradient steps diverge
            return torch.full((2,), 30.0 if seed == 2 else 0.5, dtype=torch.float64), self.buffers0.clone()

    subject = Exploding(lambda t: (t**4).sum(), torch.zeros(2, dtype=torch.float64), name="exploding")
    with Store(tmp_path / "s.h5") as store:
        with pytest.raises(NonFiniteLossError, match=r"minimum 2, seed 2\) diverged"):
            train_minima(store, subject, Recipe(lr=0.1, momentum=0.0, epochs=2, steps_per_epoch=5), seeds=[0, 1, 2],
                         progress=False)
        assert [m.index for m in store.minima("exploding")] == [0, 1]  # the group's finished minima were stored


def _bn_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    generator = torch.Generator().manual_seed(1)
    data = (torch.randn(60, 4, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (60,), generator=generator))
    return ModuleSubject(model, nn.CrossEntropyLoss(), data, device="cpu")


@pytest.mark.parametrize("kind,optimizer,schedule", [("polychain", "sgd", "constant"), ("bezier", "sgd", "constant"),
                                                     ("polychain", "adam", "garipov")])
def test_barcode_curves_trained_together_equal_curves_trained_alone(kind, optimizer, schedule):
    from lossatlas.samplers.paths import fit_curve, fit_curves

    subject = _bn_mlp()
    minima = torch.stack([subject.init_theta(seed)[0] for seed in range(4)])
    starts, ends = minima[[0, 0, 1]], minima[[1, 2, 3]]
    settings = dict(kind=kind, n_bends=2, epochs=3, lr=0.05, weight_decay=1e-3, batch_size=16, steps_per_epoch=5,
                    seed=3, progress=False, optimizer=optimizer, schedule=schedule)
    together = fit_curves(subject, starts, ends, **settings)
    alone = torch.stack([fit_curve(subject, start, end, **settings) for start, end in zip(starts, ends)])
    assert together.shape == alone.shape == (3, 2 if kind == "polychain" else 1, subject.dim)
    assert torch.allclose(together, alone, rtol=1e-10, atol=1e-13)
    assert (together - (starts + ends)[:, None] / 2).abs().max() > 1e-2  # the bends moved off the line


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_curve_through_non_finite_losses_skips_those_steps_as_it_does_alone(optimizer):
    from lossatlas.samplers.paths import fit_curve, fit_curves

    undefined, alone_now = [], [False]

    def well(t):  # a double well, undefined above t[1] = 0.3
        base = ((t**2 - 1) ** 2).sum() + t[1] ** 2
        if alone_now[0]:  # unbatched calls: record which sampled points were undefined
            undefined.append(bool(t[1] > 0.3))
        return torch.where(t[1] > 0.3, torch.full_like(base, float("nan")), base)

    subject = FunctionSubject(well, torch.tensor([-1.0, 0.0], dtype=torch.float64), name="well", device="cpu")
    starts = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    ends = torch.tensor([[1.0, 0.0], [1.0, 0.6]], dtype=torch.float64)  # the second curve crosses the hole
    settings = dict(kind="polychain", epochs=2, lr=0.02, batch_size=None, steps_per_epoch=20, seed=0, progress=False,
                    optimizer=optimizer, schedule="garipov")
    together = fit_curves(subject, starts, ends, **settings)
    alone_now[0] = True
    alone = torch.stack([fit_curve(subject, start, end, **settings) for start, end in zip(starts, ends)])
    assert any(undefined) and not all(undefined)  # alone, the second curve skipped some steps and took others
    assert torch.isfinite(together).all()
    assert torch.allclose(together, alone, rtol=1e-12, atol=1e-14)


def test_barcode_paths_between_minima_batched_equal_paths_one_by_one(tmp_path, monkeypatch):
    from lossatlas import Store
    from lossatlas.samplers.minima import GivenMinima
    from lossatlas.samplers.paths import Paths, connect_minima

    subject = _bn_mlp()
    minima = np.stack([subject.init_theta(seed)[0].numpy() for seed in range(3)])
    given = GivenMinima(vectors=tuple(map(tuple, minima)))
    assert Paths(minima=given, path_kind="polychain").group_size(subject, 3) == 3
    assert Paths(minima=given, path_kind="string").group_size(subject, 3) == 1  # one batched call per step already
    settings = dict(path_kind="polychain", curve_epochs=2, batch_size=16, n_eval=7, progress=False)
    together = connect_minima(Store(tmp_path / "together.h5"), subject, minima, **settings)
    monkeypatch.setenv("LOSSATLAS_BATCHED_TRAINING", "0")
    alone = connect_minima(Store(tmp_path / "alone.h5"), subject, minima, **settings)
    for key in ("path_max", "path_losses", "linear_max", "vertex_losses"):
        assert np.allclose(together[key], alone[key], rtol=1e-9, atol=1e-12, equal_nan=True), key
