import math
import gudhi
import gudhi.hera
import numpy as np
import pytest
import torch

from lossatlas import FunctionSubject, Recipe, Store, analyze, train_minima
from lossatlas.problems import himmelblau, resnet, three_hump_camel
from lossatlas.samplers.minima import GivenMinima
from lossatlas.samplers.paths import connect_minima
from lossatlas.topology.barcode import barcode_scores, minima_barcode


def _sorted(bars):
    return bars[np.lexsort((bars[:, 1], bars[:, 0]))]


def test_multi_hop_death():
    barcode = minima_barcode([0.3, 0.5, 0.6], [[1, 0], [1, 2], [2, 0]], [2.0, 0.7, 0.8])
    assert barcode.bars[barcode.minima == 1].tolist() == [[0.5, 0.8]]  # via b, not the direct 2.0 edge
    assert barcode.bars[barcode.minima == 0].tolist() == [[0.3, np.inf]]


@pytest.mark.parametrize("seed", range(3))
def test_graph_of_minima_reproduces_the_sublevel_barcode_of_a_1d_function(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, 4001)
    f = sum(rng.normal() * np.sin((k + 1) * np.pi * x + rng.uniform(0, 6)) / (k + 1) for k in range(12))
    minima = np.flatnonzero(np.r_[True, f[1:] < f[:-1]] & np.r_[f[:-1] < f[1:], True])
    pairs = [(a, b) for a in range(len(minima)) for b in range(a + 1, len(minima))]
    weights = [f[minima[a] : minima[b] + 1].max() for a, b in pairs]
    barcode = minima_barcode(f[minima], pairs, weights)
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=f)
    complex_.compute_persistence()
    reference = complex_.persistence_intervals_in_dimension(0)
    reference = reference[reference[:, 1] > reference[:, 0]]
    np.testing.assert_allclose(_sorted(barcode.bars), _sorted(reference))
    deaths = reference[np.isfinite(reference[:, 1]), 1]  # the saddles gudhi pairs with the minima
    scores = barcode_scores(barcode)
    assert scores["mean_saddle"] == pytest.approx(deaths.mean()) and scores["max_saddle"] == pytest.approx(deaths.max())


def test_scores_agree_with_gudhi_distances_to_the_ideal_barcode():
    rng = np.random.default_rng(4)
    values = rng.uniform(0, 1, 8)
    pairs = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)])
    barcode = minima_barcode(values, pairs, np.maximum(values[pairs].max(1), 0) + rng.uniform(0, 2, len(pairs)))
    scores = barcode_scores(barcode)
    empty = np.empty((0, 2))
    assert scores["to_score"] == pytest.approx(gudhi.bottleneck_distance(barcode.finite, empty))
    for p in (1, 2):
        expected = gudhi.hera.wasserstein_distance(barcode.finite, empty, order=p, internal_p=np.inf)
        assert scores[f"wasserstein_{p}"] == pytest.approx(expected, rel=1e-6)
    assert scores["n_bars"] == len(values) - 1 - barcode.n_zero


def test_quartic_1d_bars():
    subject = FunctionSubject(lambda t: (t**4).sum() - (t**2).sum() + t.sum() / 10, torch.zeros(1, dtype=torch.float64),
                              name="quartic_tilted")
    with Store.memory() as store:
        result = analyze(store, subject, "loss-barcode", bounds=[[-1.5, 1.5]], n_eval=2001)
    np.testing.assert_allclose(result.arrays["bars"], [[-0.180587, 0.002506], [-0.321919, np.inf]], atol=2e-6)


def test_three_hump_camel_end_to_end():
    with Store.memory() as store:
        result = analyze(store, three_hump_camel(), "loss-barcode", bounds=[[-2.5, 2.5], [-1.5, 1.5]])
    finite = result.arrays["bars"][np.isfinite(result.arrays["bars"][:, 1])]
    np.testing.assert_allclose(finite, [[0.298638, 0.877362]] * 2, atol=1e-2)
    # the camel's saddles lie on the segment between its minima: the straight line is no worse here
    assert result.metrics["max_bar_linear"] >= result.metrics["max_bar"] - 1e-3


def test_himmelblau_end_to_end_string_and_polychain():
    with Store.memory() as store:
        string = analyze(store, himmelblau(), "loss-barcode", bounds=[[-5, 5], [-5, 5]])
        chain = analyze(store, himmelblau(), "loss-barcode", bounds=[[-5, 5], [-5, 5]], path="polychain",
                        curve_epochs=20, curve_lr=0.001)
    deaths = np.sort(string.arrays["bars"][:-1, 1])
    np.testing.assert_allclose(deaths, [13.3119, 67.7192, 104.0152], rtol=0.01)
    linear = np.sort(string.arrays["bars_linear"][:-1, 1])
    assert np.all(linear > deaths * 1.01)  # straight lines overestimate the saddles
    chain_deaths = np.sort(chain.arrays["bars"][:-1, 1])
    assert np.all(chain_deaths >= deaths - 1e-6)  # the average-loss objective never beats the string here


def test_adam_curves_with_garipov_decay_find_the_himmelblau_saddles():
    """The optimizer and schedule of Barannikov et al. 2025's fully connected experiments (Adam,
    decayed rate) also stay above the string method's saddles, and settle closer to them than the
    straight lines."""
    with Store.memory() as store:
        string = analyze(store, himmelblau(), "loss-barcode", bounds=[[-5, 5], [-5, 5]])
        chain = analyze(store, himmelblau(), "loss-barcode", bounds=[[-5, 5], [-5, 5]], path="polychain",
                        curve_epochs=20, curve_lr=0.05, curve_optimizer="adam", curve_schedule="garipov")
    deaths, chain_deaths = (np.sort(r.arrays["bars"][:-1, 1]) for r in (string, chain))
    linear = np.sort(string.arrays["bars_linear"][:-1, 1])
    assert np.all(chain_deaths >= deaths - 1e-6) and np.all(chain_deaths < linear)
    assert chain.params["curve_optimizer"] == "adam"


def test_garipov_schedule_is_their_piecewise_linear_decay():
    from lossatlas.samplers.paths import garipov_factor

    # Garipov et al. 2018, learning_rate_schedule: 1 up to half the epochs, linear to 0.01 at 90%, then 0.01
    assert [garipov_factor(e, 10) for e in (0, 5)] == [1.0, 1.0]
    assert garipov_factor(7, 10) == pytest.approx(1 - 0.99 * 0.2 / 0.4)
    assert garipov_factor(9, 10) == pytest.approx(0.01) and garipov_factor(10, 10) == 0.01


def test_default_curve_optimizer_keeps_the_stored_path_keys():
    from lossatlas.samplers.paths import Paths

    minima = GivenMinima(vectors=((0.0, 0.0), (1.0, 1.0)))
    assert not {"curve_optimizer", "curve_schedule"} & set(Paths(minima=minima).own_config())
    assert Paths(minima=minima, curve_optimizer="adam").own_config()["curve_optimizer"] == "adam"


def test_paths_are_resumable_per_pair(monkeypatch):
    subject = three_hump_camel()
    minima = np.array([p for p, _ in subject.critical_points["minima"]])
    config = {"path_kind": "string", "n_images": 11, "string_steps": 100, "string_lr": 0.01, "bends": 1,
              "curve_epochs": 1, "curve_lr": 0.01, "weight_decay": 0.0, "batch_size": 128, "n_eval": 21, "seed": 0}
    with Store.memory() as store:
        first = connect_minima(store, subject, minima, progress=False, **config)
        import lossatlas.samplers.paths as paths

        monkeypatch.setattr(paths, "string_path", lambda *a, **k: pytest.fail("recomputed a stored pair"))
        again = connect_minima(store, subject, minima, progress=False, **config)
    np.testing.assert_array_equal(first["path_max"], again["path_max"])


def test_resnet_paths_reestimate_batchnorm_at_every_point():
    subject = resnet(skip=True, n_train=128)
    with Store.memory() as store:
        minima = train_minima(store, subject, Recipe(lr=0.05, epochs=2, batch_size=32), seeds=[0, 1], progress=False)
        result = analyze(store, subject, "loss-barcode", n_minima=2, curve_epochs=1, batch_size=32, n_eval=5)
    thetas = [torch.as_tensor(m.theta) for m in minima]
    for index, theta in enumerate(thetas):  # endpoints: the minima's losses, measured like every path point
        expected = subject.loss(theta, subject.update_bn(theta))
        assert result.arrays["minima_losses"][index] == pytest.approx(expected, rel=1e-5)
    middle = 0.5 * (thetas[0] + thetas[1])
    recomputed = subject.evaluate_many(middle[None], recompute_bn=True)["loss"][0]
    fixed = subject.loss(middle, minima[0].buffers)
    assert abs(recomputed - fixed) > 1e-3 * fixed  # re-estimating BatchNorm changes the loss on the path
    assert result.metrics["n_minima"] == 2 and result.arrays["path_losses"].shape == (1, 5)


def _ring(theta):
    """(x^2 + y^2 - 1)^2 - 0.2 x^2: minima (+-sqrt(1.1), 0) at -0.21, saddles (0, +-1) at 0, and on
    the line y = 0 between the minima a maximum of 1 at the origin. y -> -y is a symmetry, so the
    gradient has no y-component on that line."""
    x, y = theta[0], theta[1]
    return (x**2 + y**2 - 1) ** 2 - 0.2 * x**2


def test_the_string_leaves_a_symmetry_line_to_find_the_saddle():
    subject = FunctionSubject(_ring, torch.zeros(2, dtype=torch.float64), name="ring")
    minima = [[-1.1**0.5, 0.0], [1.1**0.5, 0.0]]
    settings = dict(path="string", minima=minima, n_images=21, string_steps=2000, n_eval=41, progress=False)
    with Store.memory() as store:
        bent = analyze(store, subject, "loss-barcode", **settings)
        straight = analyze(store, subject, "loss-barcode", string_perturbation=0.0, **settings)
    (birth, death), _ = bent.arrays["bars"]
    assert birth == pytest.approx(-0.21, abs=1e-9) and death == pytest.approx(0.0, abs=2e-3)
    assert bent.metrics["to_score"] == pytest.approx(0.105, abs=1e-3)
    # the unbent string stays on the symmetry line and reports its maximum instead
    assert straight.arrays["bars"][0, 1] == pytest.approx(1.0, abs=1e-6)


def test_explicit_minima_as_tensors_are_stored_as_a_dataset_not_json_text():
    subject = himmelblau()
    minima = [np.array(p) for p, _ in subject.critical_points["minima"][:2]]
    settings = dict(path="string", n_images=11, string_steps=200, n_eval=11, progress=False)
    with Store.memory() as store:
        from_tensors = analyze(store, subject, "loss-barcode", minima=[torch.as_tensor(m) for m in minima],
                               **settings)
        from_stack = analyze(store, subject, "loss-barcode", minima=torch.as_tensor(np.stack(minima)), **settings)
        from_lists = analyze(store, subject, "loss-barcode", minima=[m.tolist() for m in minima], **settings)
        back = store.read_result(subject.name, "loss-barcode", from_tensors.key)
    assert from_tensors.key == from_stack.key == from_lists.key  # one setting, one result
    reference = back.params["minima"]
    assert reference["shape"] == [2, 2] and reference["array"] == "param_minima" and len(reference["sha1"]) >= 8
    np.testing.assert_array_equal(back.arrays["param_minima"], np.stack(minima))
    np.testing.assert_allclose(back.arrays["minima"], np.stack(minima))


def test_minimum_bar_gives_each_camel_minimum_its_closed_form_saddle():
    """The three-hump camel's side minima (f = 0.298638) cross saddles at f = 0.877362 to reach
    the global minimum (f = 0), which has no finite bar; the bars agree with the barcode's."""
    from lossatlas.samplers.minima import add_minimum

    subject = three_hump_camel()
    minima = sorted((p for p, _ in subject.critical_points["minima"]), key=lambda p: p[0])
    settings = dict(path="string", n_minima=3, n_images=21, string_steps=600)
    with Store.memory() as store:
        for point in minima:
            add_minimum(store, subject, torch.tensor(point, dtype=torch.float64))
        found = [analyze(store, subject, "minimum-bar", minimum=i, **settings) for i in range(3)]
        barcode = analyze(store, subject, "loss-barcode", minima=[list(p) for p in minima], **{
            k: v for k, v in settings.items() if k != "n_minima"})
    for result, point in zip(found, minima):
        if abs(point[0]) < 1e-6:  # the global minimum
            assert math.isnan(result.metrics["saddle"]) and result.metrics["rank"] == 0
        else:
            assert result.metrics["saddle"] == pytest.approx(0.877362, abs=1e-2)
            assert result.metrics["bar"] == pytest.approx(0.877362 - 0.298638, abs=1e-2)
    finite = sorted(r.metrics["bar"] for r in found if not math.isnan(r.metrics["bar"]))
    np.testing.assert_allclose(finite, sorted(barcode.arrays["bars"][:-1, 1] - barcode.arrays["bars"][:-1, 0]),
                               rtol=1e-2)


def test_minimum_bar_and_the_barcode_train_the_paths_of_a_model_once(monkeypatch):
    import lossatlas.samplers.paths as paths
    from lossatlas.problems import mlp

    subject = mlp(depth=2, width=8, n_train=64, device="cpu")
    settings = dict(n_minima=2, curve_epochs=1, n_eval=5, batch_size=32, curve_optimizer="adam")
    calls = []
    for name in ("fit_curve", "fit_curves"):
        original = getattr(paths, name)
        monkeypatch.setattr(paths, name, lambda *a, _original=original, **k: calls.append(1) or _original(*a, **k))
    with Store.memory() as store:
        train_minima(store, subject, Recipe(lr=0.05, epochs=1, batch_size=32), seeds=[0, 1], progress=False)
        bars = [analyze(store, subject, "minimum-bar", minimum=i, **settings) for i in range(2)]
        barcode = analyze(store, subject, "loss-barcode", **settings)
    assert len(calls) == 1  # one pair, one curve, read by all three results
    upper = sorted(r.metrics["rank"] for r in bars)
    assert upper == [0.0, 1.0]
    joined = next(r for r in bars if r.metrics["rank"] == 1.0)
    assert joined.metrics["saddle"] == pytest.approx(barcode.metrics["max_saddle"])
