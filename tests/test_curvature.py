"""The generalized Gauss-Newton matrix and the empirical Fisher (``curvature`` of the hessian
analyzers) against explicit matrices built with torch.autograd on tiny float64 models."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from lossatlas import ConfigError, FunctionSubject, ModuleSubject, Store, analyze
from lossatlas.analysis import key_params, resolve
from lossatlas.hessian import HessianOperator
from lossatlas.problems import pinn_convection
from lossatlas.provenance import config_key
from lossatlas.sampling import identity


def _classifier():
    """5 inputs, 4 hidden, 3 classes, 20 examples, cross-entropy (39 parameters)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (20,), generator=generator)
    return model, nn.CrossEntropyLoss(), (inputs, targets)


def _regression():
    """5 inputs, 4 hidden, 2 outputs, 20 examples, mean squared error (34 parameters)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    targets = torch.randn(20, 2, generator=generator, dtype=torch.float64)
    return model, nn.MSELoss(), (inputs, targets)


def _functional(model):
    """The model's outputs as a function of its flat parameter vector, and that vector."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def outputs(theta, inputs):
        pieces = torch.split(theta, [s.numel() for s in shapes])
        return functional_call(model, {n: p.view(s) for n, p, s in zip(names, pieces, shapes)}, (inputs,))

    return outputs, flat


def _explicit_ggn(model, loss_fn, data) -> np.ndarray:
    """J^T H_L J over the whole data: J of all outputs, H_L of the mean loss in all outputs."""
    inputs, targets = data
    outputs, flat = _functional(model)
    jacobian = torch.autograd.functional.jacobian(lambda t: outputs(t, inputs), flat)
    out = outputs(flat, inputs).detach()
    hessian = torch.autograd.functional.hessian(lambda o: loss_fn(o.view(out.shape), targets), out.reshape(-1))
    jacobian = jacobian.reshape(out.numel(), -1)
    return (jacobian.T @ hessian @ jacobian).numpy()


def _explicit_ef(model, loss_fn, data) -> np.ndarray:
    """(1/N) sum_i g_i g_i^T, g_i the gradient of example i's own loss."""
    inputs, targets = data
    outputs, flat = _functional(model)
    rows = []
    for i in range(len(inputs)):
        leaf = flat.clone().requires_grad_(True)
        rows.append(torch.autograd.grad(loss_fn(outputs(leaf, inputs[i : i + 1]), targets[i : i + 1]), leaf)[0])
    g = torch.stack(rows)
    return (g.T @ g / len(inputs)).numpy()


EXPLICIT = {"ggn": _explicit_ggn, "ef": _explicit_ef}


@pytest.mark.parametrize("curvature", ["ggn", "ef"])
@pytest.mark.parametrize("problem", [_classifier, _regression])
def test_products_equal_explicit_matrices(problem, curvature):
    model, loss_fn, data = problem()
    explicit = EXPLICIT[curvature](model, loss_fn, data)
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7)  # unequal batches: 7, 7, 6
    op = HessianOperator(subject, subject.theta0, curvature=curvature)
    rng = np.random.default_rng(0)
    for vector in rng.normal(size=(3, subject.dim)):
        np.testing.assert_allclose(op(vector), explicit @ vector, rtol=0, atol=1e-10)
    np.testing.assert_allclose(op.dense(), explicit, rtol=0, atol=1e-10)
    assert op.count == 3 + subject.dim


@pytest.mark.parametrize("problem", [_classifier, _regression])
def test_ggn_is_psd_for_convex_losses(problem):
    model, loss_fn, data = problem()
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7)
    assert np.linalg.eigvalsh(HessianOperator(subject, subject.theta0, curvature="ggn").dense())[0] >= -1e-10


@pytest.mark.parametrize("curvature", ["ggn", "ef"])
def test_hessian_analyzer_spectrum_and_trace(curvature):
    model, loss_fn, data = _classifier()
    explicit = EXPLICIT[curvature](model, loss_fn, data)
    values = np.linalg.eigvalsh(explicit)
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7, name="tiny")
    with Store.memory() as store:
        dense = analyze(store, subject, "hessian", at="theta0", curvature=curvature, progress=False)
        iterative = analyze(store, subject, "hessian", at="theta0", curvature=curvature, dense_limit=0, tol=1e-10,
                            bottom_k=0, density_steps=10, trace_max_probes=400, progress=False)
    assert dense.params["curvature"] == iterative.params["curvature"] == curvature
    np.testing.assert_allclose(dense.arrays["eigenvalues"], values[::-1][:2], rtol=1e-9)
    assert dense.metrics["trace"] == pytest.approx(np.trace(explicit), rel=1e-9)
    assert dense.metrics["bottom_eigenvalue"] == pytest.approx(values[0], abs=1e-10)
    np.testing.assert_allclose(iterative.arrays["eigenvalues"], values[::-1][:2], rtol=1e-8)
    stderr = iterative.metrics["trace_stderr"]
    assert abs(iterative.metrics["trace"] - np.trace(explicit)) <= 4 * stderr + 1e-9 * np.trace(explicit)


def test_hessian_layers_block_traces_with_ggn():
    model, loss_fn, data = _classifier()
    explicit = _explicit_ggn(model, loss_fn, data)
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7, name="tiny")
    with Store.memory() as store:
        result = analyze(store, subject, "hessian-layers", at="theta0", curvature="ggn", dense_limit=1000,
                         progress=False)
    blocks = {"0": np.arange(0, 24), "2": np.arange(24, 39)}
    assert [n.decode() for n in result.arrays["layer_names"]] == list(blocks)
    for index, indices in enumerate(blocks.values()):
        block = explicit[np.ix_(indices, indices)]
        assert result.arrays["layer_trace"][index] == pytest.approx(np.trace(block), rel=1e-9)
        assert result.arrays["layer_top_eigenvalue"][index] == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-9)


@pytest.mark.parametrize("method", ["hessian", "hessian-layers"])
def test_default_curvature_keeps_the_stored_key(method):
    """A result stored before ``curvature`` existed (params without it) is found again."""
    model, loss_fn, data = _classifier()
    subject = ModuleSubject(model, loss_fn, data, name="tiny")
    cls = resolve(method)
    with Store.memory() as store:
        result = analyze(store, subject, method, at="theta0", progress=False)
        assert result.params["curvature"] == "hessian"
        old_params = {k: v for k, v in result.params.items() if k != "curvature"}
        assert key_params(cls, result.params) == old_params
        analyzer = cls.from_params({"at": "theta0"})
        samples = {name: identity(store, subject, request) for name, request in analyzer.requests(subject).items()}
        assert result.key == config_key({"params": old_params, "samples": samples, "version": cls.version})
        assert analyze(store, subject, method, at="theta0", curvature="hessian", progress=False).key == result.key
        assert analyze(store, subject, method, at="theta0", curvature="ggn", progress=False).key != result.key


@pytest.mark.parametrize("method", ["hessian", "hessian-layers"])
def test_refused_without_a_model_and_criterion(method):
    function = FunctionSubject(lambda t: (t**2).sum(), torch.zeros(3, dtype=torch.float64), name="bowl")
    with Store.memory() as store:
        with pytest.raises(ConfigError, match="curvature='ggn' needs a model, a loss function"):
            analyze(store, function, method, at="theta0", curvature="ggn")
        with pytest.raises(ConfigError, match="composite loss such as a PINN's"):
            analyze(store, pinn_convection(1.0, n_f=50), method, at="theta0", curvature="ef")


def test_pyhessian_backend_has_the_hessian_only():
    with pytest.raises(ConfigError, match="the pyhessian backend has the Hessian only"):
        resolve("hessian").from_params({"backend": "pyhessian", "curvature": "ggn"})


def test_ef_memory_counts_the_example_gradients():
    model, loss_fn, data = _classifier()
    subject = ModuleSubject(model, loss_fn, data, name="tiny")
    for method in ("hessian", "hessian-layers"):
        cls = resolve(method)
        plain = cls.from_params({"at": "theta0"}).memory(subject).total
        assert cls.from_params({"at": "theta0", "curvature": "ef"}).memory(subject).total > plain
        assert cls.from_params({"at": "theta0", "curvature": "ggn"}).memory(subject).total == plain


def test_ef_refuses_losses_that_do_not_weigh_examples_alike():
    """A class-weighted mean divides by the summed weights and ignored targets count nothing: the
    empirical Fisher's 1/N per example would be another loss's."""
    model, _, (inputs, targets) = _classifier()
    weighted = ModuleSubject(model, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
                             (inputs, targets), name="weighted")
    ignored = ModuleSubject(model, nn.CrossEntropyLoss(ignore_index=2), (inputs, targets), name="ignored")
    with Store.memory() as store:
        with pytest.raises(ConfigError, match="weighs classes"):
            analyze(store, weighted, "hessian", at="theta0", curvature="ef")
        with pytest.raises(ConfigError, match="ignore_index"):
            analyze(store, ignored, "hessian", at="theta0", curvature="ef")
        assert analyze(store, weighted, "hessian", at="theta0", curvature="ggn", k=1, density_steps=5,
                       progress=False).metrics["top_eigenvalue"] >= 0


# -- curvlinops (Dangel et al.) as an oracle: another library's operators on the same batches ------
def _curvlinops_matrix(subject, curvature: str) -> np.ndarray:
    """The dense matrix of curvlinops' Hessian, GGN or EF operator on the subject's own model,
    parameters and evaluation batches, in our convention.

    Conventions (reduction="mean", both losses here): curvlinops weighs each batch by its size
    over N, as our ``eval_batches`` do, so its Hessian and GGN are those of the same mean loss.
    Its empirical Fisher is c sum_n grad(l_n) grad(l_n)^T over the loss's *terms*: the criterion
    is read as c sum_n l_n with c = 1/N for cross-entropy but c = 1/(N C) for MSELoss on C outputs
    per example, l_n = ||f_n - y_n||^2 being the example's summed squared error. Ours is
    (1/N) sum_n g_n g_n^T with g_n the gradient of the criterion on example n alone, which for MSE
    is l_n / C: curvlinops' EF is C x ours for MSE, equal for cross-entropy. The factor is undone
    here (C from the targets' shape), so the comparison is of the same matrix.
    """
    curvlinops = pytest.importorskip("curvlinops")
    operators = {"hessian": curvlinops.HessianLinearOperator, "ggn": curvlinops.GGNLinearOperator,
                 "ef": curvlinops.EFLinearOperator}
    params = [p for p in subject.model.parameters() if p.requires_grad]
    data = [batch for batch, _ in subject.eval_batches()]
    operator = operators[curvature](subject.model, subject.loss_fn, params, data)
    matrix = (operator @ torch.eye(subject.dim, dtype=torch.float64)).numpy()
    outputs = subject.data[1].shape[1] if subject.data[1].ndim == 2 else 1
    return matrix / outputs if curvature == "ef" and isinstance(subject.loss_fn, nn.MSELoss) else matrix


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
@pytest.mark.parametrize("problem", [_classifier, _regression])
def test_products_equal_curvlinops(problem, curvature):
    model, loss_fn, data = problem()
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7)  # unequal batches: 7, 7, 6
    reference = _curvlinops_matrix(subject, curvature)
    op = HessianOperator(subject, subject.theta0, curvature=curvature)
    for vector in np.random.default_rng(1).normal(size=(3, subject.dim)):
        np.testing.assert_allclose(op(vector), reference @ vector, rtol=0, atol=1e-12 * np.abs(reference).max())
    assert np.abs(reference).max() > 1e-3  # a matrix worth comparing


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
@pytest.mark.parametrize("problem", [_classifier, _regression])
def test_analyzer_spectrum_and_trace_equal_curvlinops(problem, curvature):
    """The top eigenvalues and the trace the ``hessian`` analyzer reports, exact (dense) and
    iterative (Lanczos; Hutchinson within 4 standard errors; Hutch++ with 3 x dim products, whose
    sketch then spans the whole space: exact), against the spectrum of curvlinops' matrix."""
    model, loss_fn, data = problem()
    subject = ModuleSubject(model, loss_fn, data, eval_batch_size=7, name="tiny")
    reference = _curvlinops_matrix(subject, curvature)
    values, trace = np.linalg.eigvalsh(reference)[::-1], float(np.trace(reference))
    iterative = dict(at="theta0", curvature=curvature, dense_limit=0, bottom_k=0, density_runs=0, progress=False)
    with Store.memory() as store:
        dense = analyze(store, subject, "hessian", at="theta0", curvature=curvature, progress=False)
        lanczos = analyze(store, subject, "hessian", tol=1e-10, trace_max_probes=400, **iterative)
        hutchpp = analyze(store, subject, "hessian", trace_estimator="hutch++", trace_max_probes=3 * subject.dim,
                          **iterative)
    scale = values[0]
    np.testing.assert_allclose(dense.arrays["eigenvalues"], values[:2], rtol=0, atol=1e-10 * scale)
    assert dense.metrics["trace"] == pytest.approx(trace, abs=1e-10 * scale)
    assert dense.metrics["bottom_eigenvalue"] == pytest.approx(values[-1], abs=1e-10 * scale)
    np.testing.assert_allclose(lanczos.arrays["eigenvalues"], values[:2], rtol=0, atol=1e-8 * scale)
    assert abs(lanczos.metrics["trace"] - trace) <= 4 * lanczos.metrics["trace_stderr"]
    assert hutchpp.metrics["trace"] == pytest.approx(trace, abs=1e-9 * scale)


_APPROXIMATIONS = """
name = "curv"
problem = "mlp"
seeds = [0, 1]
[params]
dataset = "digits"
n_train = 120
[variants]
width = [8, 12]
[minima]
lr = 0.05
epochs = 2
[methods.hessian]
dense_limit = 0
density_runs = 0
tol = 1e-4
trace_max_probes = 10
[sensitivity.hessian]
curvature = ["ggn", "ef"]
"""


def test_report_sets_each_approximation_against_the_hessian(tmp_path):
    """The report's curvature table holds, per variant, the median over its minima of the stored GGN
    (and EF) top eigenvalue and trace divided by the Hessian's at the same minimum."""
    import statistics

    from lossatlas.cli import main

    config = tmp_path / "curv.toml"
    config.write_text(_APPROXIMATIONS)
    assert main(["run", str(config), "--scale", "cpu", "--out", str(tmp_path), "--figures", "none"]) == 0
    report = (tmp_path / "curv_cpu" / "report.md").read_text()
    assert "Curvature approximations against the Hessian" in report
    with Store(tmp_path / "curv_cpu.h5", "r") as store:
        for width in (8, 12):
            subject = next(name for name in store.subjects() if f"x{width}_" in name)
            by = {}
            for result in store.results(subject, "hessian"):
                by.setdefault(result.params["curvature"], {})[result.params["minimum"]] = result.metrics
            for curvature in ("ggn", "ef"):
                ratios = [by[curvature][at]["top_eigenvalue"] / by["hessian"][at]["top_eigenvalue"]
                          for at in by["hessian"]]
                row = next(line for line in report.splitlines()
                           if line.startswith(f"| hessian | width={width} | {curvature} |"))
                assert row.split(" | ")[4] == f"{statistics.median(ratios):.3g}×"
