import numpy as np
import pytest

from lossatlas import Recipe, Store, StoreError, train_minima
from lossatlas.problems import himmelblau, resnet

_DIGITS = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=3, batch_size=64, schedule="cosine")


def test_minima_training_reduces_loss_on_digits():
    subject = resnet(skip=True, n_train=600)
    initial, _ = subject.init_theta(0)
    with Store.memory() as store:
        (minimum,) = train_minima(store, subject, _DIGITS, seeds=[0], progress=False)
    start = subject.evaluate(initial, subject.init_theta(0)[1])
    assert start["loss"] > 1.5  # ~ln 10 at initialization
    assert minimum.metrics["eval_loss"] < 0.5 * start["loss"]
    assert minimum.metrics["test_accuracy"] > 0.6  # well above the 0.1 of chance, on held-out digits
    assert set(minimum.metrics) == {"eval_loss", "eval_accuracy", "test_loss", "test_accuracy"}


def test_minima_are_seeded_reproducible_and_resumable(tmp_path):
    subject = himmelblau()
    recipe = Recipe(optimizer="sgd", lr=0.01, momentum=0.0, epochs=3)
    with Store(tmp_path / "a.h5") as store:
        first = train_minima(store, subject, recipe, seeds=[0, 1], progress=False)
    with Store(tmp_path / "b.h5") as store:
        again = train_minima(store, subject, recipe, seeds=[0, 1, 2], progress=False)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.theta, b.theta)
    minima_points = [p for p, _ in subject.critical_points["minima"]]
    for m in again:  # gradient descent on Himmelblau ends at one of its four minima
        assert min(np.linalg.norm(m.theta - p) for p in minima_points) < 1e-6
    with Store(tmp_path / "a.h5") as store:
        created = store.file["subjects/himmelblau/minima/000"].attrs["created"]
        resumed = train_minima(store, subject, recipe, seeds=[0, 1, 2], progress=False)
        assert store.file["subjects/himmelblau/minima/000"].attrs["created"] == created  # reused, not retrained
        np.testing.assert_array_equal(resumed[2].theta, again[2].theta)


def test_other_recipe_for_a_stored_minimum_is_refused():
    subject = himmelblau()
    with Store.memory() as store:
        train_minima(store, subject, Recipe(lr=0.01, momentum=0.0, epochs=1), seeds=[0], progress=False)
        with pytest.raises(StoreError, match="trained with seed 0 and recipe"):
            train_minima(store, subject, Recipe(lr=0.02, momentum=0.0, epochs=1), seeds=[0], progress=False)


def test_resnet_training_is_reproducible_on_cpu():
    recipe = Recipe(optimizer="sgd", lr=0.05, epochs=1, batch_size=32, augment=True)
    runs = []
    for _ in range(2):
        with Store.memory() as store:
            runs.append(train_minima(store, resnet(skip=False, n_train=96), recipe, seeds=[5], progress=False)[0])
    np.testing.assert_array_equal(runs[0].theta, runs[1].theta)
    np.testing.assert_array_equal(runs[0].buffers, runs[1].buffers)
    assert runs[0].metrics == runs[1].metrics
