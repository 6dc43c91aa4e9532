"""The baseline measures: 1-D interpolation and sharpness, against closed forms on
analytic functions and quadratics, torch's own BatchNorm re-estimation, and the rescaling
invariance that adaptive sharpness is built to have (Kwon et al. 2021)."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import Minimum, Recipe, Store, analyze, train_minima
from lossatlas.errors import NonFiniteLossError
from lossatlas.methods.interpolation import largest_rise
from lossatlas.subjects import FunctionSubject, ModuleSubject


def _double_well():
    """(x^2 - 1)^2 + y^2: minima (+-1, 0) at loss 0, the saddle (0, 0) at loss 1 on the line between them."""
    return FunctionSubject(lambda t: (t[0] ** 2 - 1) ** 2 + t[1] ** 2, torch.tensor([0.3, 0.4], dtype=torch.float64),
                           name="double-well", init_scale=2.0)


def _store_minima(store, subject, points, seeds=None):
    store.register(subject)
    for index, point in enumerate(points):
        seed = index if seeds is None else seeds[index]
        store.write_minimum(subject.name, Minimum(index, np.asarray(point, dtype=float), np.zeros(0), seed,
                                                  {"epochs": 1}, {"eval_loss": 0.0}))


def test_barrier_between_two_minima_is_the_saddle_height():
    subject = _double_well()
    with Store.memory() as store:
        _store_minima(store, subject, [(-1.0, 0.0), (1.0, 0.0)])
        forward = analyze(store, subject, "interpolation", minimum=0, n_points=21, progress=False)
        backward = analyze(store, subject, "interpolation", minimum=1, n_points=21, progress=False)
    assert forward.metrics["barrier"] == pytest.approx(1.0, abs=1e-12)  # the partner defaults to the next minimum
    assert backward.metrics["barrier"] == pytest.approx(1.0, abs=1e-12)  # ... wrapping round
    x = np.linspace(-1.0, 1.0, 21)
    np.testing.assert_allclose(forward.arrays["partner_loss"], (x**2 - 1) ** 2, atol=1e-12)
    assert np.isnan(forward.metrics["error_barrier"])  # a function has no classification error


def test_the_line_from_initialisation_starts_where_training_started():
    subject = _double_well()
    with Store.memory() as store:
        _store_minima(store, subject, [(1.0, 0.0)], seeds=[7])
        result = analyze(store, subject, "interpolation", minimum=0, n_points=41, progress=False)
    start = subject.init_theta(7)[0].numpy()  # minimum 0 was trained from seed 7's initialisation
    t = np.linspace(0.0, 1.0, 41)[:, None]
    line = (1 - t) * start + t * np.array([1.0, 0.0])
    expected = (line[:, 0] ** 2 - 1) ** 2 + line[:, 1] ** 2
    np.testing.assert_allclose(result.arrays["init_loss"], expected, atol=1e-12)
    brute = max(0.0, max(expected[j] - expected[i] for i in range(41) for j in range(i + 1, 41)))
    assert result.metrics["init_largest_rise"] >= brute - 1e-12  # the refined line holds the grid
    assert result.metrics["init_monotonic"] == float(np.all(np.diff(expected) <= 0))
    assert np.isnan(result.metrics["barrier"])  # one minimum: no partner


def test_a_narrow_bump_between_grid_points_is_found_by_refinement():
    """A bump of width 0.01 centred between two of 25 grid points: the dense line (4001 points) is
    the reference; the grid alone misses most of the rise, the refined line is within 1 %."""
    seed = 3
    probe = _double_well()
    start, end = probe.init_theta(seed)[0], torch.tensor([1.0, 0.0], dtype=torch.float64)
    along = end - start

    def loss(t):
        s = (t - start) @ along / (along @ along)
        return ((t - end) ** 2).sum() + 0.4 * torch.exp(-(((s - 0.53) / 0.01) ** 2))

    subject = FunctionSubject(loss, torch.tensor([0.3, 0.4], dtype=torch.float64), name="bump", init_scale=2.0)
    dense_t = np.linspace(0, 1, 4001)
    dense = np.array([float(loss((1 - t) * start + t * end)) for t in dense_t])
    with Store.memory() as store:
        _store_minima(store, subject, [end.numpy()], seeds=[seed])
        grid = analyze(store, subject, "interpolation", minimum=0, refine=0, progress=False).metrics
        fine = analyze(store, subject, "interpolation", minimum=0, progress=False).metrics
    truth = largest_rise(dense)
    assert grid["init_largest_rise"] < 0.8 * truth
    assert fine["init_largest_rise"] == pytest.approx(truth, rel=1e-2) and fine["init_rise_change"] < 1e-3
    assert fine["init_largest_rise"] <= truth + 1e-9 and fine["n_evaluations"] > grid["n_evaluations"]


def test_largest_rise_of_monotone_and_bumpy_paths():
    assert largest_rise(np.array([3.0, 2.0, 2.0, 1.0])) == 0.0
    assert largest_rise(np.array([3.0, 1.0, 2.5, 0.5, 1.0])) == pytest.approx(1.5)


def test_batchnorm_statistics_are_re_estimated_at_every_point_as_torch_does():
    """Each interpolated point is evaluated with BatchNorm statistics re-estimated over the training
    data; torch.optim.swa_utils.update_bn (torch's own implementation) gives the reference."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 4, generator=generator, dtype=torch.float64)
    targets = (inputs[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).double()
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets), eval_batch_size=64, name="bn")
    with Store.memory() as store:
        minima = train_minima(store, subject, Recipe(lr=0.1, epochs=3, batch_size=16), seeds=[0, 1], progress=False)
        result = analyze(store, subject, "interpolation", minimum=0, n_points=5, progress=False)
    for k, t in enumerate(np.linspace(0, 1, 5)):
        theta = (1 - t) * minima[0].theta + t * minima[1].theta
        reference = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).double()
        torch.nn.utils.vector_to_parameters(torch.as_tensor(theta), reference.parameters())
        torch.optim.swa_utils.update_bn([inputs], reference)
        with torch.no_grad():
            outputs = reference.eval()(inputs)
        assert result.arrays["partner_loss"][k] == pytest.approx(float(nn.functional.cross_entropy(outputs, targets)),
                                                                 rel=1e-10)
        accuracy = float((outputs.argmax(1) == targets).double().mean())
        assert result.arrays["partner_accuracy"][k] == pytest.approx(accuracy)
    errors = 1 - result.arrays["partner_accuracy"]
    assert result.metrics["error_barrier"] == pytest.approx(errors.max() - 0.5 * (errors[0] + errors[-1]))


def test_a_non_finite_loss_on_the_line_is_an_error_and_nothing_is_written():
    subject = FunctionSubject(lambda t: torch.where(t[0].abs() < 0.1, torch.tensor(float("nan"), dtype=t.dtype),
                                                    (t**2).sum()),
                              torch.zeros(2, dtype=torch.float64), name="hole")
    with Store.memory() as store:
        _store_minima(store, subject, [(-1.0, 0.0), (1.0, 0.0)])
        with pytest.raises(NonFiniteLossError, match="t = "):
            analyze(store, subject, "interpolation", minimum=0, n_points=5, progress=False)
        assert store.results(subject.name) == []


# -- sharpness ----------------------------------------------------------------------------------------

def _quadratic_bowl(dim=6, offset=0.5, seed=0, dominant=0.0):
    """offset + 1/2 (theta - c)^T A (theta - c), minimum c with every |c_i| > 0.5; ``dominant``
    adds a sharp direction, dominant v v^T."""
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(dim, dim))
    matrix = root @ root.T / dim + np.diag(np.linspace(0.2, 3.0, dim))
    direction = rng.normal(size=dim)
    matrix = matrix + dominant * np.outer(direction, direction)
    centre = rng.choice([-1.0, 1.0], size=dim) * rng.uniform(0.5, 2.0, size=dim)
    a, c = torch.tensor(matrix), torch.tensor(centre)
    subject = FunctionSubject(lambda t: offset + 0.5 * (t - c) @ a @ (t - c), torch.zeros(dim, dtype=torch.float64),
                              name="bowl")
    return subject, matrix, centre


def _box_maximum(matrix, half_widths):
    """max of 1/2 d^T A d over the box |d_i| <= h_i: a convex function peaks at a vertex."""
    return max(0.5 * (s * half_widths) @ matrix @ (s * half_widths)
               for s in map(np.array, itertools.product([-1.0, 1.0], repeat=len(half_widths))))


def _sharpness(subject, centre, **settings):
    with Store.memory() as store:
        _store_minima(store, subject, [centre])
        return analyze(store, subject, "sharpness", minimum=0, progress=False, **settings).metrics


def _clustered_bowl(dim, seed, gap=0.02):
    """A quadratic bowl whose top four eigenvalues lie within 3 gap of each other (1, 1 - gap, ...),
    on a random rotation: the spectrum where a short ascent stops short of the top eigenvector."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    spectrum = np.concatenate([1 - gap * np.arange(4), rng.uniform(0.0, 0.5, dim - 4)])
    matrix = rotation @ np.diag(spectrum) @ rotation.T
    centre = rng.choice([-1.0, 1.0], size=dim) * rng.uniform(0.5, 2.0, size=dim)
    a, c = torch.tensor(matrix), torch.tensor(centre)
    subject = FunctionSubject(lambda t: 0.5 + 0.5 * (t - c) @ a @ (t - c), torch.zeros(dim, dtype=torch.float64),
                              name="clustered-bowl")
    return subject, matrix, centre


@pytest.mark.parametrize("dim, seed", [(12, 0), (12, 1), (14, 2), (24, 3)])
def test_adaptive_l2_sharpness_reaches_the_closed_form_at_the_default_budget(dim, seed):
    """max of 1/2 d^T A d over ||d / |c| ||_2 <= rho is 1/2 rho^2 lambda_max(|c| A |c|)."""
    subject, matrix, centre = _clustered_bowl(dim, seed)
    rho = 0.3
    found = _sharpness(subject, centre, rho_l2=rho)
    scaled = np.diag(np.abs(centre)) @ matrix @ np.diag(np.abs(centre))
    closed = 0.5 * rho**2 * np.linalg.eigvalsh(scaled)[-1]
    assert found["loss"] == pytest.approx(0.5)
    assert 0.99 * closed <= found["adaptive_sharpness_l2"] <= closed * (1 + 1e-12)  # a lower bound, within 1 %


def test_box_sharpness_is_a_lower_bound_of_the_brute_force_maximum_that_restarts_raise():
    """The maximum over a box of a convex quadratic sits at a vertex (brute force over all 2^dim);
    with a sharp direction the ascent finds it, without one it finds a vertex that restarts improve."""
    epsilon = 0.02
    subject, matrix, centre = _quadratic_bowl(dominant=4.0)
    found = _sharpness(subject, centre, epsilon=epsilon, rho_linf=0.05)
    box = _box_maximum(matrix, epsilon * (np.abs(centre) + 1))
    assert found["epsilon_sharpness"] == pytest.approx(100 * box / (1 + 0.5), rel=1e-9)  # Keskar et al. 2017
    assert found["adaptive_sharpness_linf"] == pytest.approx(_box_maximum(matrix, 0.05 * np.abs(centre)), rel=1e-9)
    ratios = {restarts: [] for restarts in (1, 10, 40)}  # 40: the default
    for seed, dim in itertools.product(range(4), (10, 12)):
        subject, matrix, centre = _clustered_bowl(dim, seed)
        box = 100 * _box_maximum(matrix, epsilon * (np.abs(centre) + 1)) / 1.5
        linf = _box_maximum(matrix, 0.05 * np.abs(centre))
        for restarts in ratios:
            found = _sharpness(subject, centre, epsilon=epsilon, rho_linf=0.05, box_restarts=restarts)
            assert found["epsilon_sharpness"] <= box * (1 + 1e-12)  # lower bounds
            assert found["adaptive_sharpness_linf"] <= linf * (1 + 1e-12)
            ratios[restarts].append((found["epsilon_sharpness"] / box, found["adaptive_sharpness_linf"] / linf))
    means = {restarts: np.mean(values, axis=0) for restarts, values in ratios.items()}
    assert np.all(np.diff(np.array(ratios[1]), axis=0) != 0)  # different problems, different answers
    assert np.all(means[1] < means[10]) and np.all(means[10] <= means[40])
    assert np.all(np.min(ratios[40], axis=0) >= 0.97)  # every problem at the default budget


def test_keskar_sharpness_in_a_random_subspace_is_its_box_maximum():
    """d = A y with |y_j| <= epsilon (|(A^T w)_j| + 1): the maximum of 1/2 d^T M d is that of
    1/2 y^T (A^T M A) y over a 10-dimensional box, found here by brute force over its vertices."""
    from lossatlas.methods.sharpness import RandomSubspace

    rng = np.random.default_rng(4)
    dim, p, epsilon = 300, 10, 0.02
    root = rng.normal(size=(dim, 20))
    matrix = root @ root.T / 20
    centre = rng.normal(size=dim)
    a, c = torch.tensor(matrix), torch.tensor(centre)
    subject = FunctionSubject(lambda t: 0.5 * (t - c) @ a @ (t - c), torch.zeros(dim, dtype=torch.float64), name="big")
    found = _sharpness(subject, centre, epsilon=epsilon, subspace=p)
    basis = RandomSubspace(dim, p, 0, torch.zeros(dim, dtype=torch.float64))
    columns = np.stack([basis.up(torch.eye(p, dtype=torch.float64)[j]).numpy() for j in range(p)], axis=1)
    np.testing.assert_allclose(columns.T @ columns, np.eye(p), atol=1e-12)  # orthonormal: A^+ = A^T
    widths = epsilon * (np.abs(columns.T @ centre) + 1)
    brute = 100 * _box_maximum(columns.T @ matrix @ columns, widths) / 1.0
    assert 0.97 * brute <= found["epsilon_sharpness"] <= brute * (1 + 1e-12)
    full = _sharpness(subject, centre, epsilon=epsilon, subspace=None, box_restarts=2)
    assert full["epsilon_sharpness"] > 10 * found["epsilon_sharpness"]  # the full box grows with the dimension


def test_sharpness_never_decreases_with_more_steps_or_restarts():
    subject, _, centre = _clustered_bowl(12, 5)
    budgets = [(steps, restarts) for restarts in (1, 3, 10) for steps in (5, 20, 80)]
    found = {budget: _sharpness(subject, centre, rho_l2=0.3, rho_linf=0.05, steps=budget[0], restarts=budget[1],
                                box_restarts=budget[1])
             for budget in budgets}
    for name in ("adaptive_sharpness_l2", "adaptive_sharpness_linf", "epsilon_sharpness"):
        for steps, restarts in budgets:
            for more_steps, more_restarts in budgets:
                if more_steps >= steps and more_restarts >= restarts:
                    assert found[more_steps, more_restarts][name] >= found[steps, restarts][name] * (1 - 1e-12)


def test_m_sharpness_averages_the_maximum_over_batches_of_m_examples():
    """On a linear least-squares model the per-batch loss is a quadratic with a closed-form l2
    maximum: m-sharpness is the mean over the batches of 1/2 rho^2 lambda_max(T H_b T)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(60, 4, generator=generator, dtype=torch.float64)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [1.5]], dtype=torch.float64)
    net = nn.Linear(4, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 1.5]]))
    subject = ModuleSubject(net, nn.MSELoss(), (inputs, targets), name="linear")
    rho, m = 0.2, 16  # 3 batches of 16, the last 12 examples left out
    scale = np.diag(np.abs([1.0, -2.0, 0.5, 1.5]))
    batches = [inputs[start:start + m].numpy() for start in (0, 16, 32)]
    closed = np.mean([0.5 * rho**2 * np.linalg.eigvalsh(scale @ (2 * x.T @ x / m) @ scale)[-1] for x in batches])
    with Store.memory() as store:
        found = analyze(store, subject, "sharpness", at="theta0", rho_l2=rho, m=m, progress=False).metrics
        whole = analyze(store, subject, "sharpness", at="theta0", rho_l2=rho, progress=False).metrics
    assert found["m_batches"] == 3 and whole["m_batches"] == 0
    assert 0.99 * closed <= found["adaptive_sharpness_l2"] <= closed * (1 + 1e-9)
    x = inputs.numpy()
    assert whole["adaptive_sharpness_l2"] == pytest.approx(
        0.5 * rho**2 * np.linalg.eigvalsh(scale @ (2 * x.T @ x / 60) @ scale)[-1], rel=1e-2)


def test_asam_eta_lets_zero_weights_move():
    """With eta = 0 a zero weight has a zero-width neighbourhood; ASAM's |w| + eta gives it one."""
    subject = FunctionSubject(lambda t: 0.5 * (t[0] ** 2 + 4 * t[1] ** 2), torch.zeros(2, dtype=torch.float64),
                              name="zero-weight")
    with Store.memory() as store:
        _store_minima(store, subject, [(0.0, 0.0)])
        still = analyze(store, subject, "sharpness", minimum=0, progress=False).metrics
        moved = analyze(store, subject, "sharpness", minimum=0, eta=0.5, rho_l2=0.1, progress=False).metrics
    assert still["adaptive_sharpness_l2"] == 0.0
    assert moved["adaptive_sharpness_l2"] == pytest.approx(0.5 * 4 * (0.1 * 0.5) ** 2, rel=1e-6)


def test_adaptive_sharpness_is_invariant_to_rescaling_a_relu_network_and_epsilon_sharpness_is_not():
    """Multiplying a ReLU layer by a and the next by 1/a leaves the function unchanged; adaptive
    sharpness (Kwon et al. 2021) measures the same neighbourhood in both parametrizations."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    targets = inputs @ torch.tensor([[1.0], [-1.0], [0.5]], dtype=torch.float64)

    def model(scale):
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(3, 6, bias=False), nn.ReLU(), nn.Linear(6, 1, bias=False)).double()
        with torch.no_grad():
            net[0].weight *= scale
            net[2].weight /= scale
        return ModuleSubject(net, nn.MSELoss(), (inputs, targets), name=f"relu-{scale}")

    found = {}
    for scale in (1.0, 8.0):
        subject = model(scale)
        with Store.memory() as store:
            found[scale] = analyze(store, subject, "sharpness", at="theta0", steps=30, restarts=2, box_restarts=4,
                                   progress=False).metrics
    assert found[1.0]["loss"] == pytest.approx(found[8.0]["loss"], rel=1e-12)
    for name in ("adaptive_sharpness_l2", "adaptive_sharpness_linf"):
        assert found[8.0][name] == pytest.approx(found[1.0][name], rel=1e-8)
    assert abs(found[8.0]["epsilon_sharpness"] / found[1.0]["epsilon_sharpness"] - 1) > 0.1


def test_sharpness_is_seeded():
    subject, _, centre = _quadratic_bowl()
    with Store.memory() as store:
        _store_minima(store, subject, [centre])
        ascents = [analyze(store, subject, "sharpness", minimum=0, steps=3, seed=seed,
                           progress=False).arrays["adaptive_l2_ascent"] for seed in (1, 2)]
    with Store.memory() as store:
        _store_minima(store, subject, [centre])
        again = analyze(store, subject, "sharpness", minimum=0, steps=3, seed=1, progress=False)
    np.testing.assert_array_equal(again.arrays["adaptive_l2_ascent"], ascents[0])
    assert not np.array_equal(ascents[0], ascents[1])
