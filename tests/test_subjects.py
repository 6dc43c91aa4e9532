import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import ConfigError, FunctionSubject, ModuleSubject, NonFiniteLossError, Recipe
from lossatlas.problems import himmelblau, pinn_convection
from lossatlas.subjects import MODULE_PROTOCOL, PROTOCOL, Subject
from lossatlas.surfaces import SurfaceSubject


def _tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).double()


def _image_data(n, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 6, 6, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=generator))


def _trained_bn_stats(model, inputs):
    """Give BatchNorm non-trivial running statistics, as after training."""
    model.train()
    with torch.no_grad():
        model(inputs * 2 + 1)
    return model.eval()


def test_function_subject_loss_and_grad_match_closed_form():
    subject = himmelblau()
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x, y = theta.tolist()
    assert subject.loss(theta) == pytest.approx((x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2)
    expected = [4 * x * (x**2 + y - 11) + 2 * (x + y**2 - 7), 2 * (x**2 + y - 11) + 4 * y * (x + y**2 - 7)]
    np.testing.assert_allclose(subject.grad(theta).numpy(), expected, rtol=1e-12)


def test_function_batched_equals_loop_and_falls_back_without_vmap():
    def branchy(theta):  # data-dependent control flow: vmap cannot batch it
        return theta.pow(2).sum() if float(theta[0]) > 0 else theta.abs().sum()

    thetas = torch.randn(37, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for fn in (lambda t: (t**4).sum() - t.prod(), branchy):
        subject = FunctionSubject(fn, torch.zeros(3, dtype=torch.float64), name="f")
        loop = np.array([subject.loss(t) for t in thetas])
        np.testing.assert_allclose(subject.losses(thetas, chunk_size=8), loop, rtol=1e-12)


def test_module_loss_is_mean_over_whole_eval_set_in_eval_mode():
    inputs, targets = _image_data(70)
    model = _trained_bn_stats(_tiny_cnn(), inputs)
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets), eval_batch_size=16)
    with torch.no_grad():
        expected = float(nn.CrossEntropyLoss()(model(inputs), targets))  # one pass over all 70, eval mode
    assert subject.loss(subject.theta0) == pytest.approx(expected, rel=1e-12)
    expected_grad = torch.autograd.grad(nn.CrossEntropyLoss()(model(inputs), targets), list(model.parameters()))
    np.testing.assert_allclose(subject.grad(subject.theta0).numpy(),
                               torch.cat([g.reshape(-1) for g in expected_grad]).numpy(), rtol=1e-10, atol=1e-14)
    accuracy = float((model(inputs).argmax(1) == targets).double().mean())
    assert subject.evaluate(subject.theta0)["accuracy"] == pytest.approx(accuracy)


def test_module_batched_equals_loop():
    inputs, targets = _image_data(50)
    subject = ModuleSubject(_trained_bn_stats(_tiny_cnn(), inputs), nn.CrossEntropyLoss(), (inputs, targets),
                            eval_batch_size=20,
                            vmap=True)
    noise = torch.randn(9, subject.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    thetas = subject.theta0 + 0.1 * noise
    batched = subject.evaluate_many(thetas, chunk_size=4)
    assert subject._vmap_ok  # the batched path was used
    loop = [subject.evaluate(t) for t in thetas]
    np.testing.assert_allclose(batched["loss"], [r["loss"] for r in loop], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(batched["accuracy"], [r["accuracy"] for r in loop])
    default = ModuleSubject(subject.model, nn.CrossEntropyLoss(), (inputs, targets), eval_batch_size=20)
    assert not default._vmap_ok  # convolutions: a loop of forwards is faster on CPU
    np.testing.assert_allclose(default.losses(thetas), batched["loss"], rtol=1e-6)


def test_user_model_is_not_modified():
    inputs, targets = _image_data(30)
    model = _trained_bn_stats(_tiny_cnn(), inputs).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets), bn="recompute")
    subject.train(subject.theta0, Recipe(epochs=1, batch_size=10, lr=0.1), seed=0, progress=False)
    subject.loss(subject.theta0 + 0.1)
    subject.init_theta(3)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_update_bn_matches_torch_cumulative_average():
    """Re-estimated statistics equal torch's own BatchNorm with momentum=None over one pass."""
    inputs, targets = _image_data(60)
    model = _trained_bn_stats(_tiny_cnn(), inputs)
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets), eval_batch_size=20)
    theta = subject.theta0 + 0.05
    reference = _tiny_cnn()
    torch.nn.utils.vector_to_parameters(theta, reference.parameters())
    bn = reference[1]
    bn.reset_running_stats()
    bn.momentum = None  # cumulative moving average: exact mean of the per-batch statistics
    reference.train()
    with torch.no_grad():
        for start in range(0, 60, 20):
            reference(inputs[start : start + 20])
    buffers = subject.update_bn(theta)
    np.testing.assert_allclose(buffers.numpy(), torch.cat([bn.running_mean, bn.running_var]).numpy(), rtol=1e-12)
    # the loss with re-estimated statistics is the eval-mode loss of that reference model
    reference.eval()
    with torch.no_grad():
        expected = float(nn.CrossEntropyLoss()(reference(inputs), targets))
    assert subject.loss(theta, buffers) == pytest.approx(expected, rel=1e-12)
    recompute = ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets), eval_batch_size=20, bn="recompute")
    assert recompute.loss(theta) == pytest.approx(expected, rel=1e-12)
    assert subject.loss(theta) != pytest.approx(expected, rel=1e-6)  # fixed statistics differ


def test_pinn_batched_equals_loop_and_grad_matches_finite_differences():
    subject = pinn_convection(beta=5.0, n_f=200)
    noise = torch.randn(5, subject.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    thetas = subject.theta0 + 0.05 * noise
    np.testing.assert_allclose(subject.losses(thetas), [subject.loss(t) for t in thetas], rtol=1e-10)
    direction = torch.randn(subject.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = 1e-6
    up, down = subject.loss(subject.theta0 + eps * direction), subject.loss(subject.theta0 - eps * direction)
    numeric = (up - down) / (2 * eps)
    assert float(subject.grad(subject.theta0) @ direction) == pytest.approx(numeric, rel=1e-6)


def test_wrong_length_and_bad_data_are_clear_errors():
    subject = himmelblau()
    with pytest.raises(ConfigError, match="has 2 parameters; got a vector of length 3"):
        subject.loss(torch.zeros(3))
    with pytest.raises(ConfigError, match=r"one common, non-zero number of examples.*\[2, 3\]"):
        ModuleSubject(nn.Linear(2, 1), nn.MSELoss(), (torch.zeros(3, 2), torch.zeros(2, 1)))
    with pytest.raises(ConfigError, match="must be"):
        ModuleSubject(nn.Linear(2, 1), nn.MSELoss(), [1, 2, 3])


def test_training_divergence_is_reported():
    subject = FunctionSubject(lambda t: (t**4).sum(), torch.ones(2, dtype=torch.float64), name="quartic")
    with pytest.raises(NonFiniteLossError, match="diverged"):
        subject.train(subject.theta0, Recipe(optimizer="sgd", lr=10.0, momentum=0.0, epochs=3), seed=0, progress=False)


def test_nan_losses_pass_through_batched_evaluation():
    subject = FunctionSubject(lambda t: torch.log(t).sum(), torch.ones(2, dtype=torch.float64), name="log")
    losses = subject.losses(torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]], dtype=torch.float64))
    assert losses[0] == 0 and np.isnan(losses[1]) and losses[2] == -np.inf


def test_dataset_input_equals_tensor_input():
    inputs, targets = _image_data(25)
    model = _trained_bn_stats(_tiny_cnn(), inputs)
    from_tensors = ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, targets))
    from_dataset = ModuleSubject(model, nn.CrossEntropyLoss(), torch.utils.data.TensorDataset(inputs, targets))
    assert from_dataset.loss(from_dataset.theta0) == from_tensors.loss(from_tensors.theta0)
    assert from_dataset.config()["data"] == from_tensors.config()["data"]


class _TwoInputs(nn.Module):
    """A model of two inputs (an image and side features), as users write them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
        self.side = nn.Linear(2, 3)

    def forward(self, image, side):
        return self.image(image) + self.side(side)


def _direct(model, loss_fn, call, targets):
    """Loss and accuracy computed by plain torch over the whole data at once."""
    with torch.no_grad():
        out = call(model.eval())
    return float(loss_fn(out, targets)), float((out.argmax(1) == targets).double().mean())


def test_tuple_dict_loader_and_custom_forward_inputs_match_plain_torch():
    images, targets = _image_data(40)
    side = torch.randn(40, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    model = _TwoInputs().double()
    expected = _direct(model, nn.CrossEntropyLoss(), lambda m: m(images, side), targets)
    as_tuple = ModuleSubject(model, nn.CrossEntropyLoss(), ((images, side), targets), eval_batch_size=16)
    as_dict = ModuleSubject(model, nn.functional.cross_entropy, ({"image": images, "side": side}, targets),
                            eval_batch_size=16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, side, targets), batch_size=7,
                                         shuffle=True, collate_fn=lambda items: (
                                             (torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])),
                                             torch.stack([i[2] for i in items])))
    from_loader = ModuleSubject(model, nn.CrossEntropyLoss(), loader, eval_batch_size=16)
    for subject in (as_tuple, as_dict, from_loader):
        found = subject.evaluate(subject.theta0)
        assert found["loss"] == pytest.approx(expected[0], rel=1e-12)
        assert found["accuracy"] == expected[1]  # a functional cross-entropy keeps accuracy too
        many = subject.evaluate_many(torch.stack([subject.theta0, subject.theta0 * 0.5]))
        assert many["loss"][0] == pytest.approx(expected[0], rel=1e-12)
    # the loader's shuffling does not change the data's identity
    assert from_loader.config()["data"] == as_tuple.config()["data"]
    # a model returning a dict, with an explicit forward; training works on structured inputs
    wrapped = nn.ModuleDict({"net": model})
    custom = ModuleSubject(wrapped, nn.CrossEntropyLoss(), ((images, side), targets),
                           forward=lambda m, x: {"logits": m["net"](*x)}["logits"])
    assert custom.loss(custom.theta0) == pytest.approx(expected[0], rel=1e-12)
    theta, _ = custom.train(custom.theta0, Recipe(lr=0.1, epochs=3, batch_size=8), seed=0, progress=False)
    assert custom.loss(theta) < custom.loss(custom.theta0)
    assert "forward" in custom.config()


def test_data_dtype_follows_the_model_and_mixed_dtypes_are_refused():
    images, targets = _image_data(20)
    model = _tiny_cnn()  # float64
    as_float32 = ModuleSubject(model, nn.CrossEntropyLoss(), (images.float(), targets))
    as_float64 = ModuleSubject(model, nn.CrossEntropyLoss(), (images.float().double(), targets))
    assert as_float32.loss(as_float32.theta0) == as_float64.loss(as_float64.theta0)
    mixed = _tiny_cnn()
    mixed[-1].float()
    with pytest.raises(ConfigError, match=r"mix dtypes \['torch.float32', 'torch.float64'\]"):
        ModuleSubject(mixed, nn.CrossEntropyLoss(), (images, targets))


def test_unsupported_data_and_models_that_cannot_take_it_are_clear_errors():
    images, targets = _image_data(20)
    dict_batches = torch.utils.data.DataLoader([{"x": x, "y": y} for x, y in zip(images, targets)], batch_size=5)
    with pytest.raises(ConfigError, match=r"must be an \(inputs, targets\) pair; got a dict with keys \['x', 'y'\]"):
        ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), dict_batches)
    with pytest.raises(ConfigError, match=r"could not be computed on its data .*model\(\*x\) for a tuple"):
        ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), (images, images, targets))  # reaches it as model(x, x)
    with pytest.raises(ConfigError, match=r"could not be computed on its data .*pass forward=lambda model, inputs"):
        ModuleSubject(_TwoInputs().double(), nn.CrossEntropyLoss(), (images, targets))  # needs two inputs
    soft = torch.softmax(torch.randn(20, 3, dtype=torch.float64), 1)
    assert not ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), (images, soft)).classification  # soft labels
    subject = ModuleSubject(_TwoInputs().double(), nn.CrossEntropyLoss(), ((images, images[:, 0, 0, :2]), targets))
    with pytest.raises(ConfigError, match="augment=true crops and flips image tensors"):
        subject.train(subject.theta0, Recipe(lr=0.1, epochs=1, augment=True), seed=0, progress=False)


def test_loaders_keep_their_samplers_examples_and_unusual_loaders_work_or_say_why():
    images, targets = _image_data(30)
    dataset = torch.utils.data.TensorDataset(images, targets)
    chosen = [3, 7, 11, 20]
    subset = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=torch.utils.data.SubsetRandomSampler(chosen))
    as_subset = ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), subset)
    assert torch.equal(as_subset.data[0], images[chosen])  # the sampler's examples, in index order
    one_by_one = torch.utils.data.DataLoader(dataset, batch_size=None)
    assert torch.equal(ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), one_by_one).data[0], images)
    weighted = torch.utils.data.DataLoader(dataset, sampler=torch.utils.data.WeightedRandomSampler([1.0] * 30, 30))
    with pytest.raises(ConfigError, match="WeightedRandomSampler.* does not say which examples"):
        ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), weighted)
    class Rows(torch.utils.data.Dataset):  # examples as plain lists of numbers, as some users store them
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return [float(v) for v in images[i].reshape(-1)], int(targets[i])

    features = Rows()
    flat = ModuleSubject(nn.Sequential(nn.Linear(36, 3)).double(), nn.CrossEntropyLoss(), features)
    assert torch.equal(flat.data[0], images.reshape(30, -1))
    with pytest.raises(ConfigError, match=r"must be one number.*reduction='none'"):
        ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(reduction="none"), (images, targets))


def test_float32_data_keeps_its_fingerprint_and_structured_inputs_are_refused_by_pyhessian():
    images, targets = _image_data(12)
    model = _tiny_cnn()
    cast = ModuleSubject(model, nn.CrossEntropyLoss(), (images.float(), targets))
    assert cast.config()["data"] == {"n": 12, "input_shape": [1, 6, 6], "sha1": batches_sha1(images.float(), targets)}
    two = ModuleSubject(_TwoInputs().double(), nn.CrossEntropyLoss(), ((images, images[:, 0, 0, :2]), targets))
    from lossatlas.hessian import pyhessian_spectrum
    with pytest.raises(ConfigError, match="plain model \\+ criterion subject"):
        pyhessian_spectrum(two, two.theta0, None, 1, 1e-3, 10, 1, 1e-3, 0)
    lambdas = [ModuleSubject(_TwoInputs().double(), nn.CrossEntropyLoss(), ((images, images[:, 0, 0, :2]), targets),
                             forward=f) for f in (lambda m, x: m(*x), lambda m, x: 2 * m(*x))]
    assert lambdas[0].config()["forward"] != lambdas[1].config()["forward"]  # two lambdas are two landscapes


def batches_sha1(*tensors):
    import hashlib

    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def test_the_protocol_names_what_subject_defines_and_every_builtin_subject_has():
    assert len(set(PROTOCOL)) == len(PROTOCOL) and not set(PROTOCOL) & set(MODULE_PROTOCOL)
    declared = set(vars(Subject)) | set(Subject.__annotations__)
    assert set(PROTOCOL) <= declared, set(PROTOCOL) - declared  # each member defined or declared on Subject
    public = {name for name in dir(Subject) if not name.startswith("_")}
    assert public <= set(PROTOCOL), public - set(PROTOCOL)  # and none left out of the protocol
    module_public = {name for name in dir(ModuleSubject) if not name.startswith("_")}
    assert module_public <= set(PROTOCOL + MODULE_PROTOCOL), module_public - set(PROTOCOL + MODULE_PROTOCOL)
    images, targets = _image_data(12)
    builtins = [himmelblau(), ModuleSubject(_tiny_cnn(), nn.CrossEntropyLoss(), (images, targets)),
                pinn_convection(beta=1.0, n_f=20), SurfaceSubject("surface", [0.0, 1.0], [0.0, 1.0], np.zeros((2, 2)))]
    for subject in builtins:
        wanted = PROTOCOL + (MODULE_PROTOCOL if isinstance(subject, ModuleSubject) else ())
        missing = [name for name in wanted if not hasattr(subject, name)]
        assert not missing, (type(subject).__name__, missing)
