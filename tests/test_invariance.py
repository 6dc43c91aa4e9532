"""Function-preserving reparameterizations (lossatlas.invariance): each leaves the loss and the
model outputs unchanged to rounding on every built-in network family, and changes the parameters.
Ground truths: exact autograd Hessians of a tiny MLP (a symmetry theta -> D theta of the loss
gives H(D theta) = D^-1 H(theta) D^-1, a permutation P gives P H P^T, so the same eigenvalues),
the architectures' own counts of blocks and convolutions, and negative controls (a half-done
transformation is caught)."""
import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lossatlas import ConfigError, ModuleSubject, invariance
from lossatlas.problems import build
from lossatlas.problems.small import MLP

KWARGS = {"rescale": {"alpha": 10.0}, "scale_before_norm": {"c": 10.0}, "permute": {"seed": 0},
          "permute_heads": {"seed": 0}}
SUBJECTS = {  # name: (build arguments, the transformations that apply)
    "mlp2": (dict(problem="mlp", depth=2, width=6, n_train=48), {"rescale", "permute"}),
    "mlp3": (dict(problem="mlp", depth=3, width=6, n_train=48), {"rescale", "permute"}),
    "cnn": (dict(problem="cnn", conv_layers=2, channels=4, n_train=32), {"rescale", "permute"}),
    "cnn_bn": (dict(problem="cnn", conv_layers=2, channels=4, batchnorm=True, n_train=32),
               {"rescale", "scale_before_norm", "permute"}),
    "resnet_skip": (dict(problem="resnet", skip=True, n_train=16), {"rescale", "scale_before_norm", "permute"}),
    "resnet_noskip": (dict(problem="resnet", skip=False, n_train=16), {"rescale", "scale_before_norm", "permute"}),
    "pinn": (dict(problem="pinn_convection", beta=5.0, n_f=30, hidden=5, layers=2), {"permute"}),
    "gpt2": (dict(problem="hf", n_embd=8, n_layer=2, seq_len=8, n_train=12, n_test=4), {"permute_heads"}),
    "bert": (dict(problem="hf", model_type="bert", task="sequence-classification", hidden_size=8, num_hidden_layers=1,
                  seq_len=8, n_train=12, n_test=4), {"permute_heads"}),
}
CASES = [(name, what) for name, (_, applies) in SUBJECTS.items() for what in invariance.TRANSFORMATIONS
         if what in applies]


@functools.cache
def _subject(name):
    """The subject at its seeded start; BatchNorm statistics re-estimated there (update_bn), so the
    running means and variances the transformations rewrite are not the untrained (0, 1)."""
    params = dict(SUBJECTS[name][0])
    if params["problem"] == "hf":
        pytest.importorskip("transformers")
    subject = build(params.pop("problem"), device="cpu", **params)
    buffers = subject.update_bn(subject.theta0) if subject.has_batchnorm else subject.buffers0
    return subject, subject.theta0.clone(), buffers.clone()


@pytest.mark.parametrize("name", list(SUBJECTS))
def test_applicable_names_exactly_the_transformations_of_each_family(name):
    subject = _subject(name)[0]
    reasons = invariance.applicable(subject)
    assert set(reasons) == set(invariance.TRANSFORMATIONS)
    assert {what for what, reason in reasons.items() if reason is None} == SUBJECTS[name][1]
    assert all(isinstance(reason, str) and reason for reason in reasons.values() if reason is not None)


@pytest.mark.parametrize("name,what", CASES)
def test_transformation_preserves_the_function_and_moves_theta(name, what):
    subject, theta, buffers = _subject(name)
    before = theta.clone(), buffers.clone()
    result = getattr(invariance, what)(subject, theta, buffers, **KWARGS[what])
    assert torch.equal(theta, before[0]) and torch.equal(buffers, before[1])  # inputs untouched
    assert result.theta.shape == theta.shape and result.buffers.shape == buffers.shape
    assert not torch.equal(result.theta, theta)  # not the identity
    assert isinstance(result.description, str) and result.description
    check = invariance.check_function(subject, theta, buffers, result.theta, result.buffers)
    assert check["unchanged"], check
    assert check["output_scale"] > 0


@pytest.mark.parametrize("name,what", [case for case in CASES if case[1] != "scale_before_norm"])
def test_a_half_done_transformation_is_caught(name, what):
    """Negative control: the consumer side (the next layer's weights, the attention output
    projection) put back as it was changes the function, and check_function says so."""
    subject, theta, buffers = _subject(name)
    result = getattr(invariance, what)(subject, theta, buffers, **KWARGS[what])
    if what == "permute_heads":
        consumers = [f"{layer.name}.{'c_proj' if layer.kind == 'gpt2' else 'output.dense'}"
                     for layer in invariance.find_heads(subject)]
    else:
        consumers = [site.consumer for site in invariance.find_sites(subject)]
    half = result.theta.clone()
    views, original = subject.unflatten(half), subject.unflatten(theta)
    for consumer in consumers:
        views[f"{consumer}.weight"].copy_(original[f"{consumer}.weight"])
    check = invariance.check_function(subject, theta, buffers, half, result.buffers)
    assert not check["outputs_unchanged"], check


def test_scale_before_norm_needs_the_eps_correction_of_the_running_variance():
    """Scaling the running variance by c^2 alone leaves var + eps short of c^2 (var + eps): for a
    small c the eval output changes; the transformation's c^2 var + (c^2 - 1) eps does not."""
    subject, theta, buffers = _subject("cnn_bn")
    c = 0.01
    result = invariance.scale_before_norm(subject, theta, buffers, c=c)
    assert invariance.check_function(subject, theta, buffers, result.theta, result.buffers)["unchanged"]
    naive = result.buffers.clone()
    views, original = subject.unflatten(result.theta, naive), subject.unflatten(theta, buffers)
    for _, norm in invariance.find_normalized(subject):
        views[f"{norm}.running_var"].copy_(c * c * original[f"{norm}.running_var"])
    assert not invariance.check_function(subject, theta, buffers, result.theta, naive)["unchanged"]


def _blocks(model):
    return [name for name, module in model.named_modules() if type(module).__name__ == "BasicBlock"]


def test_resnet_sites_exclude_the_residual_stream():
    """With skips, a block's input and output are also the shortcut's: only conv1 -> bn1 -> relu
    -> conv2 inside each block is a site. Without, every convolution feeds the next one alone (the
    last through pooling and flattening into fc). Every convolution feeds its own BatchNorm."""
    skip, plain = _subject("resnet_skip")[0], _subject("resnet_noskip")[0]
    blocks = _blocks(skip.model)
    assert len(blocks) == 9
    sites = invariance.find_sites(skip)
    assert [(s.producer, s.norm, s.consumer) for s in sites] == [
        (f"{b}.conv1", f"{b}.bn1", f"{b}.conv2") for b in blocks]
    assert all(s.rescalable and s.activation == "ReLU" for s in sites)
    plain_sites = invariance.find_sites(plain)
    assert len(plain_sites) == 2 * len(_blocks(plain.model)) + 1
    assert plain_sites[-1].consumer == "fc" and plain_sites[-1].block == 1  # AdaptiveAvgPool2d(1), then flatten(1)
    for subject in (skip, plain):
        convolutions = sum(isinstance(m, nn.Conv2d) for m in subject.model.modules())
        assert len(invariance.find_normalized(subject)) == convolutions  # 21 with the 1x1 shortcuts, 19 without
    assert invariance.find_sites(_subject("cnn_bn")[0])[-1].block == 4  # channels x 2 x 2 into the linear layer


def test_pinn_is_tanh_so_only_permutation_applies():
    subject = _subject("pinn")[0]
    assert [s.activation for s in invariance.find_sites(subject)] == ["Tanh", "Tanh"]
    assert "Tanh" in invariance.applicable(subject)["rescale"]
    with pytest.raises(ConfigError, match="rescale does not apply"):
        invariance.rescale(subject, subject.theta0, None, alpha=2.0)


def test_transformers_have_no_fx_sites_but_their_heads_are_found():
    subject = _subject("gpt2")[0]
    assert invariance.find_sites(subject) == []
    assert "no sites found" in invariance.applicable(subject)["permute"]
    layers = invariance.find_heads(subject)
    assert [(layer.kind, layer.heads, layer.head_dim) for layer in layers] == [("gpt2", 2, 4)] * 2


def test_one_site_or_one_alpha_per_site():
    subject, theta, buffers = _subject("mlp3")
    one = invariance.rescale(subject, theta, buffers, alpha=10.0, sites=[1])  # layers.3 -> layers.5 only
    moved = {name for name, before in subject.unflatten(theta).items()
             if not torch.equal(before, subject.unflatten(one.theta)[name])}
    assert moved == {"layers.3.weight", "layers.3.bias", "layers.5.weight"}
    assert invariance.check_function(subject, theta, buffers, one.theta, one.buffers)["unchanged"]
    each = invariance.rescale(subject, theta, buffers, alpha=[0.5, 3.0, 7.0])
    assert invariance.check_function(subject, theta, buffers, each.theta, each.buffers)["unchanged"]
    first = invariance.permute(subject, theta, buffers, seed=3, sites=[invariance.find_sites(subject)[0]])
    assert torch.equal(first.theta, invariance.permute(subject, theta, buffers, seed=3, sites=[0]).theta)
    assert not torch.equal(first.theta, invariance.permute(subject, theta, buffers, seed=4, sites=[0]).theta)


class _Branchy(nn.Module):
    """Functional activations, a value used twice, a BatchNorm without affine, pooling and
    torch.flatten into a linear layer."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(4, affine=False)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = self.b(F.relu(self.a(x)))  # a -> relu -> b: a site
        h = torch.relu(self.norm(self.c(h + F.relu(h))))  # h used twice: b is no producer of a site
        return self.fc(torch.flatten(F.max_pool2d(h, 2), 1))


def test_discovery_through_functional_forms_and_its_refusals():
    torch.manual_seed(0)
    model = _Branchy().double()
    model.norm.running_mean.uniform_(-1, 1)
    model.norm.running_var.uniform_(0.5, 2)
    generator = torch.Generator().manual_seed(1)
    data = (torch.randn(20, 1, 4, 4, generator=generator, dtype=torch.float64), torch.arange(20) % 3)
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, device="cpu")
    sites = invariance.find_sites(subject)
    assert [(s.producer, s.norm, s.consumer, s.block, s.rescalable) for s in sites] == [
        ("a", None, "b", 1, True), ("c", "norm", "fc", 4, False)]  # no affine scale to carry alpha
    assert invariance.find_normalized(subject) == [("c", "norm")]
    for what in ("rescale", "scale_before_norm", "permute"):
        result = getattr(invariance, what)(subject, subject.theta0, None, **KWARGS[what])
        assert invariance.check_function(subject, subject.theta0, None, result.theta, result.buffers)["unchanged"]
    with pytest.raises(ConfigError, match="not positively homogeneous"):
        invariance.rescale(subject, subject.theta0, None, 2.0, sites=[1])


def test_bad_arguments_and_function_subjects_are_config_errors():
    subject, theta, buffers = _subject("mlp2")
    for call in (lambda: invariance.rescale(subject, theta, buffers, alpha=0.0),
                 lambda: invariance.rescale(subject, theta, buffers, alpha=-2.0),
                 lambda: invariance.rescale(subject, theta, buffers, alpha=[2.0]),
                 lambda: invariance.rescale(subject, theta, buffers, 2.0, sites=[7]),
                 lambda: invariance.permute(subject, theta, buffers, seed=-1),
                 lambda: invariance.scale_before_norm(subject, theta, buffers, 2.0),
                 lambda: invariance.permute_heads(subject, theta, buffers, 0)):
        with pytest.raises(ConfigError):
            call()
    function = build("himmelblau")
    assert all("FunctionSubject" in reason for reason in invariance.applicable(function).values())
    with pytest.raises(ConfigError, match="needs a ModuleSubject"):
        invariance.check_function(function, function.theta0, None, function.theta0, None)
    with pytest.raises(ConfigError, match="needs a ModuleSubject"):
        invariance.permute(function, function.theta0, None, 0)


# -- exact Hessians of a tiny MLP ---------------------------------------------------------------------
def _tiny_mlp(depth=1):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    data = (torch.randn(30, 3, generator=generator, dtype=torch.float64), torch.arange(30) % 2)
    return ModuleSubject(MLP(3, depth, 4, num_classes=2).double(), nn.CrossEntropyLoss(), data, device="cpu")


def _hessian(subject, theta):
    loss = lambda t: sum(term(t) for term in subject.loss_terms(subject.buffers0))  # noqa: E731
    return torch.autograd.functional.hessian(loss, theta)


def test_rescaling_changes_the_hessian_as_a_change_of_variables():
    """L(D theta) = L(theta) for all theta, so H(D theta) = D^-1 H(theta) D^-1: the top eigenvalue
    grows by up to alpha^2 (Dinh et al. 2017; here ~9x) though the function is the same."""
    subject = _tiny_mlp()
    theta = subject.theta0
    result = invariance.rescale(subject, theta, None, alpha=10.0)
    scale = result.theta / theta  # D: 10 on the hidden layer, 1/10 on the read-out weights, 1 on its bias
    assert set(np.round(scale.numpy(), 12)) == {10.0, 0.1, 1.0}
    before, after = _hessian(subject, theta), _hessian(subject, result.theta)
    np.testing.assert_allclose(after.numpy(), (before / scale[:, None] / scale[None, :]).numpy(), rtol=1e-9,
                               atol=1e-12)
    spectrum_before, top = torch.linalg.eigvalsh(before), float(torch.linalg.eigvalsh(after)[-1])
    assert 5 * float(spectrum_before[-1]) < top <= 10.0**2 * float(spectrum_before.abs().max())  # ||D^-1||^2 = 100


def test_permutation_leaves_the_hessian_spectrum_unchanged():
    subject = _tiny_mlp(depth=2)
    theta = subject.theta0
    result = invariance.permute(subject, theta, None, seed=1)
    before, after = _hessian(subject, theta), _hessian(subject, result.theta)
    assert not torch.allclose(before, after)  # the matrix moves ...
    np.testing.assert_allclose(torch.linalg.eigvalsh(after).numpy(), torch.linalg.eigvalsh(before).numpy(),
                               rtol=1e-10, atol=1e-12)  # ... its eigenvalues do not
    # P H P^T: the permutation read off theta's entries (distinct, so unambiguous)
    order = torch.tensor([int(torch.nonzero(theta == value)[0]) for value in result.theta])
    np.testing.assert_allclose(after.numpy(), before[order][:, order].numpy(), rtol=1e-10, atol=1e-12)
