import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from lossatlas import ConfigError, FunctionSubject, ModuleSubject, Store, StoreError, analyze
from lossatlas.hessian import HessianOperator, slq_density
from lossatlas.problems import pinn_convection


def _quadratic(dim=150, seed=0, top=(12.0, 9.0)):
    """0.5 theta^T A theta with a known spectrum: two separated top eigenvalues, the rest in [-1, 4]."""
    rng = np.random.default_rng(seed)
    spectrum = np.concatenate([top, rng.uniform(-1.0, 4.0, dim - 2)])
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    matrix = torch.tensor(basis @ np.diag(spectrum) @ basis.T)
    subject = FunctionSubject(lambda t: 0.5 * t @ matrix @ t, torch.zeros(dim, dtype=torch.float64), name="quadratic")
    return subject, spectrum, basis


def _exact_hessian(model, loss_fn, inputs, targets):
    """The exact Hessian of the full-data eval-mode loss (torch.autograd.functional.hessian), and
    the parameters' names and shapes in flat-vector order."""
    model = model.eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def full_loss(theta):
        pieces = torch.split(theta, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, pieces, shapes)}
        return loss_fn(functional_call(model, params, (inputs,)), targets)

    return torch.autograd.functional.hessian(full_loss, flat).numpy(), names, shapes


def _exact(model, loss_fn, inputs, targets):
    """Eigenvalues of the exact Hessian."""
    return np.linalg.eigvalsh(_exact_hessian(model, loss_fn, inputs, targets)[0])


def _mlp_subject(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(90, 5, generator=generator).to(dtype)
    targets = torch.randint(0, 3, (90,), generator=generator)
    return model, (inputs, targets)


def _cnn_subject(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 2)).to(dtype)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(64, 1, 6, 6, generator=generator).to(dtype)
    targets = torch.randint(0, 2, (64,), generator=generator)
    model.train()
    with torch.no_grad():
        model(inputs * 1.5 + 0.3)  # non-trivial running statistics
    return model.eval(), (inputs, targets)


def test_quadratic_top_eigenpairs_and_trace():
    subject, spectrum, basis = _quadratic()
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", dense_limit=0, tol=1e-8, trace_rtol=0.005,
                         trace_max_probes=2000)
    np.testing.assert_allclose(result.arrays["eigenvalues"], [12.0, 9.0], rtol=1e-8)
    cosines = np.abs(np.sum(result.arrays["eigenvectors"] * basis[:, :2].T, axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-6)
    assert result.metrics["trace_stderr"] <= 0.005 * abs(result.metrics["trace"]) + 1e-12
    assert abs(result.metrics["trace"] - spectrum.sum()) < 4 * result.metrics["trace_stderr"]
    assert result.metrics["hvp_count"] > 0


@pytest.mark.parametrize("make", [_mlp_subject, _cnn_subject], ids=["mlp", "cnn-batchnorm"])
def test_native_matches_exact_hessian(make):
    model, data = make()
    exact = _exact(model, nn.CrossEntropyLoss(), *data)
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, eval_batch_size=25, name="tiny")
    assert subject.dim > 64  # the iterative path, not the dense one
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", tol=1e-8, trace_rtol=0.01, trace_max_probes=3000)
        dense = analyze(store, subject, "hessian", at="theta0", dense_limit=10_000, density_bins=100)
    np.testing.assert_allclose(result.arrays["eigenvalues"], exact[::-1][:2], rtol=1e-6)
    assert abs(result.metrics["trace"] - exact.sum()) < 4 * result.metrics["trace_stderr"]
    np.testing.assert_allclose(dense.arrays["eigenvalues"], exact[::-1][:2], rtol=1e-9)
    assert dense.metrics["trace"] == pytest.approx(exact.sum(), rel=1e-9)
    vectors = result.arrays["eigenvectors"]
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(2), atol=1e-8)  # unit norm, orthogonal


@pytest.mark.parametrize("make", [_mlp_subject, _cnn_subject], ids=["mlp", "cnn-batchnorm"])
def test_native_agrees_with_pyhessian(make):
    model, data = make(torch.float32)
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, eval_batch_size=25, name="tiny")
    with Store.memory() as store:
        native = analyze(store, subject, "hessian", at="theta0", k=1, tol=1e-6, trace_rtol=0.01, trace_max_probes=3000)
        reference = analyze(store, subject, "hessian", at="theta0", k=1, backend="pyhessian", tol=1e-6,
                            max_restarts=1000,
                            trace_rtol=1e-4, trace_max_probes=3000)
    assert native.metrics["top_eigenvalue"] == pytest.approx(reference.metrics["top_eigenvalue"], rel=1e-3)
    both = np.hypot(native.metrics["trace_stderr"], reference.metrics["trace_stderr"])
    assert abs(native.metrics["trace"] - reference.metrics["trace"]) < 4 * both
    cosine = abs(float(native.arrays["eigenvectors"][0] @ reference.arrays["eigenvectors"][0]))
    assert cosine > 0.99


def test_same_seed_same_numbers_and_seed_matters():
    subject, _, _ = _quadratic(dim=100, seed=3)
    runs = []
    for seed in (7, 7, 8):
        with Store.memory() as store:
            runs.append(analyze(store, subject, "hessian", at="theta0", dense_limit=0, seed=seed, density_bins=100))
    assert runs[0].metrics == runs[1].metrics
    np.testing.assert_array_equal(runs[0].arrays["density"], runs[1].arrays["density"])
    assert runs[0].metrics["trace"] != runs[2].metrics["trace"]


def test_slq_density_integrates_to_one_and_its_moments_are_gauss_quadrature_exact():
    subject, spectrum, _ = _quadratic(dim=200, seed=5)
    op = HessianOperator(subject, subject.theta0)
    grid, density = slq_density(op, seed=0, runs=1, steps=30, bins=4000)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, rel=1e-6)
    # Lanczos quadrature with m steps integrates polynomials of degree < 2m exactly: the
    # density's moments are v^T H^j v / |v|^2 for the (seeded) Rademacher start v.
    start = np.random.default_rng(0).choice([-1.0, 1.0], size=200)
    hv = op(start)
    assert np.trapezoid(grid * density, grid) == pytest.approx(start @ hv / 200, rel=1e-4)
    assert np.trapezoid(grid**2 * density, grid) == pytest.approx(hv @ hv / 200, rel=1e-3)
    # averaged over many starts, the mass of the two outliers is 2 / dim
    grid, density = slq_density(op, seed=1, runs=100, steps=30, bins=4000)
    top = grid > 8.0
    assert np.trapezoid(density[top], grid[top]) == pytest.approx(2 / 200, abs=0.004)


def test_minimum_is_required_unless_theta0():
    subject, _, _ = _quadratic(dim=10)
    with Store.memory() as store:
        with pytest.raises(StoreError, match="Needs minimum 0 .* Train minima first"):
            analyze(store, subject, "hessian")


def test_pyhessian_backend_refuses_custom_losses():
    subject = pinn_convection(1.0, n_f=50)
    with Store.memory() as store:
        with pytest.raises(ConfigError, match="custom loss"):
            analyze(store, subject, "hessian", at="theta0", backend="pyhessian")


def test_deflated_trace_is_unbiased_and_has_lower_variance():
    subject, spectrum, basis = _quadratic(dim=150, seed=2, top=(60.0, 40.0))  # outliers dominate ||H||_F
    op = HessianOperator(subject, subject.theta0)
    from lossatlas.hessian import hutchinson_trace

    top = basis[:, :2].T
    plain = hutchinson_trace(op, seed=0, rtol=0.0, min_probes=400, max_probes=400)
    deflated = hutchinson_trace(op, seed=0, rtol=0.0, min_probes=400, max_probes=400, deflate=top,
                                deflate_values=np.array([60.0, 40.0]))
    assert abs(plain.trace - spectrum.sum()) < 4 * plain.stderr
    assert abs(deflated.trace - spectrum.sum()) < 4 * deflated.stderr
    assert deflated.stderr < 0.5 * plain.stderr


def _known_spectrum(eigenvalues: np.ndarray, seed: int = 0) -> FunctionSubject:
    """0.5 x^T A x with A = Q diag(eigenvalues) Q^T: its Hessian spectrum is known exactly."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    matrix = torch.tensor(basis @ np.diag(eigenvalues) @ basis.T)
    return FunctionSubject(lambda t: 0.5 * t @ matrix @ t, torch.zeros(len(eigenvalues), dtype=torch.float64),
                           name=f"quadratic{len(eigenvalues)}")


def _mass_near(result, value: float, radius: float = 1.0) -> float:
    grid, density = result.arrays["density_grid"], result.arrays["density"]
    window = (grid > value - radius) & (grid < value + radius)
    return float(np.trapezoid(density[window], grid[window]))


def test_density_resolves_isolated_eigenvalues_of_a_known_spectrum():
    """A bulk in [0, 10] and outliers at ~150 and ~300 (width W = 300, each of weight 1/200): the
    density must give each outlier its mass and be within 1% of W (Wasserstein-1) of the exact
    spectrum. A fixed grid of 1000 points (sigma 0.055, spacing 0.3) gave 0.003-0.011."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    spectrum = np.concatenate([rng.uniform(0, 10, 198), [150.3, 300.7]])
    subject, width = _known_spectrum(spectrum), spectrum.max() - spectrum.min()
    with Store.memory() as store:
        exact = analyze(store, subject, "hessian", at="theta0", dense_limit=10_000, progress=False)
        slq = analyze(store, subject, "hessian", at="theta0", dense_limit=0, density_runs=4, progress=False)
    for outlier in spectrum[-2:]:
        assert _mass_near(exact, outlier) == pytest.approx(1 / 200, rel=0.02)
    w1_exact = wasserstein_distance(exact.arrays["density_grid"], spectrum, u_weights=exact.arrays["density"])
    w1_slq = wasserstein_distance(slq.arrays["density_grid"], spectrum, u_weights=slq.arrays["density"])
    assert w1_exact < 1e-3 * width and w1_slq < 1e-2 * width
    assert len(exact.arrays["density_grid"]) > 10_000  # 4 points per kernel sigma


def test_a_narrow_spectrum_needs_its_own_kernel_width():
    """PyHessian's relative kernel (std sqrt(1e-5) for widths below 1) is wider than a spectrum of
    width 1e-3: most of the density falls outside it; an absolute ``density_sigma`` resolves it."""
    from scipy.stats import wasserstein_distance

    spectrum = np.linspace(1e-3, 2e-3, 40)
    subject, width = _known_spectrum(spectrum), spectrum.max() - spectrum.min()
    with Store.memory() as store:
        relative = analyze(store, subject, "hessian", at="theta0", dense_limit=100, progress=False)
        absolute = analyze(store, subject, "hessian", at="theta0", dense_limit=100, density_sigma=1e-6, progress=False)
    outside = 1 - _mass_near(relative, 1.5e-3, radius=0.5e-3 + 1e-5)
    assert outside > 0.5
    w1 = wasserstein_distance(absolute.arrays["density_grid"], spectrum, u_weights=absolute.arrays["density"])
    assert w1 < 1e-2 * width


# -- extensions: smallest eigenvalues, Hutch++, per-layer blocks ------------------------

def test_smallest_eigenvalue_of_a_known_spectrum_and_the_saddle_ratio():
    subject, spectrum, _ = _quadratic()
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", dense_limit=0, tol=1e-8, bottom_k=2,
                         trace_max_probes=10)
    np.testing.assert_allclose(result.arrays["bottom_eigenvalues"], np.sort(spectrum)[:2], rtol=1e-6, atol=1e-8)
    assert spectrum.min() < 0  # a saddle: the ratio is |lambda_min| / lambda_max
    assert result.metrics["negative_curvature_ratio"] == pytest.approx(-spectrum.min() / 12.0, rel=1e-6)


def test_a_bottom_that_does_not_converge_keeps_the_rest_of_the_result(monkeypatch):
    from lossatlas.hessian import Eigenpairs, checked_eigenpairs
    from lossatlas.methods import hessian as method

    subject, spectrum, _ = _quadratic()
    found = checked_eigenpairs(HessianOperator(subject, subject.theta0), 1, "bottom", 1e-14, 0, 1, scale=12.0)
    assert not found.converged and np.isnan(found.values).all() and found.reason
    solve = method.checked_eigenpairs
    refused = Eigenpairs(np.full(1, np.nan), np.zeros((1, 150)), np.zeros(1), np.ones(1), np.zeros(1, bool), "test")
    monkeypatch.setattr(method, "checked_eigenpairs",
                        lambda op, k, end, *a, **kw: refused if end == "bottom" else solve(op, k, end, *a, **kw))
    with Store.memory() as store, pytest.warns(UserWarning, match="bottom Hessian eigenvalues are NaN"):
        result = analyze(store, subject, "hessian", at="theta0", dense_limit=0, tol=1e-8, trace_max_probes=10)
    assert result.metrics["bottom_converged"] == 0.0 and np.isnan(result.metrics["negative_curvature_ratio"])
    assert np.isnan(result.metrics["bottom_eigenvalue"])
    assert result.metrics["top_eigenvalue"] == pytest.approx(12.0, rel=1e-6)
    assert result.metrics["top_converged"] == 1.0


def test_smallest_eigenvalue_can_be_left_out():
    subject, _, _ = _quadratic(dim=20)
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", bottom_k=0, dense_limit=0)
    assert np.isnan(result.metrics["bottom_eigenvalue"]) and np.isnan(result.metrics["negative_curvature_ratio"])
    assert np.isnan(result.metrics["bottom_converged"])  # nothing computed, nothing converged


class _Rotated:
    """Q diag(spectrum) Q^T with Q three random Householder reflections: an operator of any size
    with a known spectrum, applied in O(dim)."""

    def __init__(self, spectrum, seed=0):
        self.spectrum, self.dim = np.asarray(spectrum, dtype=float), len(spectrum)
        self.mirrors = [v / np.linalg.norm(v) for v in np.random.default_rng(seed).normal(size=(3, self.dim))]

    def _reflect(self, v, mirrors):
        for h in mirrors:
            v = v - 2 * h * (h @ v)
        return v

    def __call__(self, v):
        return self._reflect(self.spectrum * self._reflect(np.ravel(v), self.mirrors[::-1]), self.mirrors)


def _crowded_bulk(dim, top, smallest, seed):
    """Five outliers up to ``top``, a bulk crowded at 0 (|N(0, 1e-3)|, scaled with ``top``), and ``smallest``."""
    rng = np.random.default_rng(seed)
    bulk = np.abs(rng.normal(0, 1e-3, dim - 6)) * max(1.0, top / 100)
    return np.concatenate([top * np.array([1.0, 0.6, 0.4, 0.3, 0.2]), bulk, [smallest]])


@pytest.mark.parametrize("dim", [500, 1500, 5000])
@pytest.mark.parametrize("top", [1.0, 1000.0])
@pytest.mark.parametrize("smallest", [-2e-4, -1e-2, 3e-5])
def test_the_smallest_eigenvalue_has_the_right_sign_or_is_refused(dim, top, smallest):
    """ARPACK's relative test at tol = 1e-3 returned +1.5e-4 and +2e-4 for -2e-4 here (lambda_max
    = 1000): the residual test with tightening settles the sign, or refuses the value."""
    from lossatlas.hessian import checked_eigenpairs

    spectrum = _crowded_bulk(dim, top, smallest, seed=dim)
    found = checked_eigenpairs(_Rotated(spectrum), 1, "bottom", 1e-3, 0, 100, scale=top)
    truth = spectrum.min()
    if found.converged:
        assert np.sign(found.values[0]) == np.sign(truth)
        assert abs(found.values[0] - truth) <= found.residuals[0] + 1e-3 * top  # an eigenvalue lies within r
    else:
        assert np.isnan(found.values[0]) and found.reason
    if smallest < 0:
        assert found.converged  # a separated negative eigenvalue is always found


def test_the_hessian_analyzer_reports_a_saddle_as_a_saddle():
    spectrum = _crowded_bulk(600, 1000.0, -2e-4, seed=1)
    op = _Rotated(spectrum)
    matrix = torch.tensor(np.stack([op(e) for e in np.eye(600)]))
    subject = FunctionSubject(lambda t: 0.5 * t @ matrix @ t, torch.zeros(600, dtype=torch.float64), name="saddle")
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", dense_limit=0, trace_max_probes=10,
                         density_steps=10).metrics
    assert result["top_eigenvalue"] == pytest.approx(1000.0, rel=1e-3) and result["top_converged"] == 1.0
    assert result["bottom_converged"] == 1.0 and result["bottom_eigenvalue"] < 0
    assert result["bottom_eigenvalue"] == pytest.approx(-2e-4, abs=result["bottom_residual"])
    assert result["negative_curvature_ratio"] > 0


def test_hutchpp_has_lower_variance_than_hutchinson_for_the_same_products():
    """Meyer et al. 2021: on a spectrum dominated by a few eigenvalues Hutch++ needs far fewer
    products for the same variance. Both are unbiased; the known trace is the spectrum's sum."""
    from lossatlas.hessian import hutchinson_trace, hutchpp_trace

    rng = np.random.default_rng(3)
    dim = 120
    spectrum = 100.0 * np.arange(1, dim + 1) ** -2.0
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    matrix = torch.tensor(basis @ np.diag(spectrum) @ basis.T)
    subject = FunctionSubject(lambda t: 0.5 * t @ matrix @ t, torch.zeros(dim, dtype=torch.float64), name="decay")
    op = HessianOperator(subject, subject.theta0)
    plain = np.array([hutchinson_trace(op, seed, 0.0, 30, 30).trace for seed in range(60)])
    plus = np.array([hutchpp_trace(op, seed, 30).trace for seed in range(60)])
    assert op.count == 60 * 30 + 60 * 30  # the same budget for both
    assert plus.var() < 0.1 * plain.var()
    assert abs(plus.mean() - spectrum.sum()) < 4 * plus.std(ddof=1) / np.sqrt(60) + 1e-9
    assert abs(plain.mean() - spectrum.sum()) < 4 * plain.std(ddof=1) / np.sqrt(60)


def test_hutchpp_is_the_analyzers_trace_option():
    subject, spectrum, _ = _quadratic()
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", dense_limit=0, trace_estimator="hutch++",
                         trace_max_probes=150)
    assert result.metrics["trace_probes"] == 150
    assert abs(result.metrics["trace"] - spectrum.sum()) < 5 * result.metrics["trace_stderr"]
    with pytest.raises(ConfigError, match="hutch"):
        analyze(Store.memory(), subject, "hessian", at="theta0", trace_estimator="hutch++", backend="pyhessian")


def _exact_blocks(model, loss_fn, inputs, targets):
    """Exact Hessian and each module's index range."""
    hessian, names, shapes = _exact_hessian(model, loss_fn, inputs, targets)
    blocks, start = {}, 0
    for name, shape in zip(names, shapes):
        blocks.setdefault(name.rsplit(".", 1)[0], []).extend(range(start, start + shape.numel()))
        start += shape.numel()
    return hessian, blocks


def test_per_layer_blocks_match_the_exact_hessian():
    model, data = _mlp_subject()
    hessian, blocks = _exact_blocks(model, nn.CrossEntropyLoss(), *data)
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, eval_batch_size=25, name="tiny")
    with Store.memory() as store:
        iterative = analyze(store, subject, "hessian-layers", at="theta0", dense_limit=0, tol=1e-10,
                            trace_probes=400)
        exact = analyze(store, subject, "hessian-layers", at="theta0", dense_limit=1000)
    names = [n.decode() for n in iterative.arrays["layer_names"]]
    assert names == list(blocks) == ["0", "2"]
    for index, name in enumerate(names):
        block = hessian[np.ix_(blocks[name], blocks[name])]
        values = np.linalg.eigvalsh(block)
        assert iterative.arrays["layer_top_eigenvalue"][index] == pytest.approx(values[-1], rel=1e-7)
        assert exact.arrays["layer_top_eigenvalue"][index] == pytest.approx(values[-1], rel=1e-9)
        assert exact.arrays["layer_trace"][index] == pytest.approx(np.trace(block), rel=1e-9)
        stderr = iterative.arrays["layer_trace_stderr"][index]
        assert 0 < stderr and abs(iterative.arrays["layer_trace"][index] - np.trace(block)) < 4 * stderr
        # Hutchinson with the block's own Rademacher probes: variance 2 (||B||_F^2 - sum B_ii^2), nothing of
        # the other blocks (probes shared with them add their cross terms)
        own = np.sqrt(2 * (np.sum(block**2) - np.sum(np.diag(block) ** 2)))
        assert stderr * np.sqrt(400) == pytest.approx(own, rel=0.15)
    assert exact.metrics["sum_layer_trace"] == pytest.approx(np.trace(hessian), rel=1e-9)
    assert exact.metrics["top_layer_trace_share_stderr"] == 0.0 and iterative.metrics["layers_unresolved"] == 0
    assert 0 < iterative.metrics["top_layer_trace_share_stderr"] < 0.1
    assert exact.metrics["max_layer_eigenvalue"] == pytest.approx(max(np.linalg.eigvalsh(
        hessian[np.ix_(b, b)])[-1] for b in blocks.values()), rel=1e-9)


def test_layer_blocks_by_name_depth():
    from lossatlas.methods.hessian_layers import layer_blocks

    model = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3)), nn.Linear(3, 1)).double()
    subject = ModuleSubject(model, nn.MSELoss(), (torch.zeros(4, 2).double(), torch.zeros(4, 1).double()))
    assert [name for name, _ in layer_blocks(subject, None)] == ["0.0", "0.1", "1"]
    coarse = layer_blocks(subject, 1)
    assert [name for name, _ in coarse] == ["0", "1"]
    assert [len(indices) for _, indices in coarse] == [9 + 12, 4]
    assert np.array_equal(np.concatenate([i for _, i in coarse]), np.arange(subject.dim))


def test_hutchinsons_stopping_rule_is_unbiased_where_a_running_rule_is_not():
    """Stopping when the running standard error looks small stops more often on low (or high)
    draws; choosing the count on pilot probes and averaging fresh ones does not."""
    import math

    from lossatlas.hessian import hutchinson_trace

    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    matrix = basis @ np.diag(np.linspace(-1, 3, 40)) @ basis.T

    class Op:
        dim = 40

        def __call__(self, v):
            return matrix @ v

    def running(seed):
        draws, values = np.random.default_rng(seed), []
        while len(values) < 500:
            probe = draws.choice([-1.0, 1.0], size=40)
            values.append(probe @ matrix @ probe)
            if len(values) >= 5 and np.std(values, ddof=1) / math.sqrt(len(values)) <= 0.05 * abs(np.mean(values)):
                break
        return np.mean(values)

    truth = np.trace(matrix)
    for estimates, biased in ((np.array([hutchinson_trace(Op(), s, 0.05, 5, 500).trace for s in range(3000)]), False),
                              (np.array([running(s) for s in range(3000)]), True)):
        z = (estimates.mean() - truth) / (estimates.std(ddof=1) / math.sqrt(len(estimates)))
        assert (abs(z) > 4) == biased, z


def test_density_runs_zero_skips_the_density_and_nothing_else():
    """Without a density the eigenvalues and trace are those of the same run with one (the SLQ comes
    last), its Lanczos steps are saved, and the view says there is nothing to draw."""
    import matplotlib.pyplot as plt

    from lossatlas.methods.hessian import draw_density
    from lossatlas.plots import NO_DATA

    subject = _known_spectrum(np.linspace(-1.0, 10.0, 120))
    with Store.memory() as store:
        full = analyze(store, subject, "hessian", at="theta0", dense_limit=0, density_steps=40, progress=False)
        bare = analyze(store, subject, "hessian", at="theta0", dense_limit=0, density_steps=40, density_runs=0,
                       progress=False)
    for name in ("top_eigenvalue", "trace", "bottom_eigenvalue"):
        assert bare.metrics[name] == full.metrics[name]
    assert full.metrics["hvp_count"] - bare.metrics["hvp_count"] >= 40
    assert len(bare.arrays["density"]) == len(bare.arrays["density_grid"]) == 0 < len(full.arrays["density"])
    figure, ax = plt.subplots()
    draw_density(ax, bare)
    assert NO_DATA in [text.get_text() for text in ax.texts]
    plt.close(figure)


def _final_counts(log: str) -> dict[str, int]:
    """Each bar's last count in a log of plain progress lines ("desc: n/total ..." or "desc: n products ...")."""
    import re

    counts = {}
    for line in log.splitlines():
        found = re.match(r"^(.*): (\d+)(?:/\d+ | products )", line)
        if found:
            counts[found.group(1)] = int(found.group(2))
    return counts


@pytest.mark.parametrize("method", ["hessian", "hessian-layers"])
def test_every_product_of_every_solver_shows_as_progress(monkeypatch, capsys, method):
    """In a log (not a terminal) each solver's bar ends on a line with its products; together they
    are every product the result counts. With ``progress=False`` nothing is written."""
    monkeypatch.delenv("TQDM_DISABLE")
    model, data = _mlp_subject()
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, name="mlp")
    params = {"hessian": dict(dense_limit=0, density_steps=10), "hessian-layers": dict(dense_limit=50)}[method]
    with Store.memory() as store:
        analyze(store, subject, method, at="theta0", seed=1, progress=False, **params)
        assert capsys.readouterr().err == ""
        result = analyze(store, subject, method, at="theta0", **params)
    counts = _final_counts(capsys.readouterr().err)
    assert sum(counts.values()) == result.metrics["hvp_count"] > 0
    stages = {"hessian": ["top 2 eigenvalues (Lanczos)", "trace (Hutchinson)", "bottom eigenvalue (Lanczos)",
                          "density (SLQ)"],
              "hessian-layers": ["top eigenvalue per block", "trace per block (Hutchinson)"]}[method]
    assert sorted(counts) == sorted(f"mlp: Hessian {stage}" for stage in stages)
