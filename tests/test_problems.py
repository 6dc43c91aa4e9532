import pickle

import numpy as np
import pytest
import torch

from lossatlas import ConfigError, DataError
from lossatlas.problems import (build, cifar10, digits, himmelblau, pinn_convection, quartic, resnet20,
                                three_hump_camel)


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet20_parameter_counts():
    with_skip, without = _count(resnet20(skip=True)), _count(resnet20(skip=False))
    assert 0.26e6 < with_skip < 0.28e6  # He et al.: ResNet-20 has 0.27 M parameters
    # removing the shortcuts removes exactly the two 1x1 downsampling convs + their BatchNorms
    assert with_skip - without == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_no_skip_has_no_shortcut_and_output_differs():
    torch.manual_seed(0)
    model = resnet20(skip=False)
    assert not any("shortcut" in name for name, _ in model.named_parameters())
    skip = resnet20(skip=True)
    skip.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(model.eval()(x), skip.eval()(x))


@pytest.mark.parametrize("depth,width", [(56, 1), (110, 1), (20, 2)])
def test_depth_and_width_variants(depth, width):
    model = resnet20(depth=depth, width=width, in_channels=1, num_classes=10)
    blocks = sum(1 for m in model.modules() if type(m).__name__ == "BasicBlock")
    assert blocks == 3 * (depth - 2) // 6
    assert model.fc.in_features == 64 * width
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet20(depth=21)


def test_pinn_residual_vanishes_on_exact_solution():
    subject = pinn_convection(beta=30.0)
    points = subject.data[0]
    x, t = points[:, 0], points[:, 1]

    def exact(z):
        return torch.sin(z[:, 0:1] - 30.0 * z[:, 1:2])

    def wrong(z):
        return torch.sin(z[:, 0:1] + 30.0 * z[:, 1:2])

    def residual(u):
        _, u_x = torch.func.jvp(u, (points,), (torch.tensor([1.0, 0.0], dtype=points.dtype).expand_as(points),))
        _, u_t = torch.func.jvp(u, (points,), (torch.tensor([0.0, 1.0], dtype=points.dtype).expand_as(points),))
        return u_t + 30.0 * u_x

    assert float(residual(exact).abs().max()) < 1e-10
    assert float(residual(wrong).abs().max()) > 1.0  # the check can fail
    np.testing.assert_allclose(residual(wrong).squeeze().numpy(), (60 * torch.cos(x + 30 * t)).numpy(), rtol=1e-10,
                               atol=1e-10)


def test_pinn_network_residual_agrees_with_autograd():
    subject = pinn_convection(beta=5.0, n_f=50)
    points = subject.data[0].clone().requires_grad_(True)
    u = subject.model(points)
    (du,) = torch.autograd.grad(u.sum(), points)
    expected = du[:, 1:2] + 5.0 * du[:, 0:1]
    np.testing.assert_allclose(subject.residual(subject.theta0, subject.data[0]).detach().numpy(),
                               expected.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_pinn_collocation_is_seeded_interior_and_error_is_relative_l2():
    a, b, c = pinn_convection(10.0), pinn_convection(10.0), pinn_convection(10.0, collocation_seed=1)
    assert torch.equal(a.data[0], b.data[0]) and not torch.equal(a.data[0], c.data[0])
    assert len(a.data[0]) == 1000 and len(torch.unique(a.data[0], dim=0)) == 1000
    assert float(a.data[0][:, 0].min()) > 0 and float(a.data[0][:, 1].min()) > 0  # interior: no x = 0, no t = 0
    assert a.grid.shape == (256 * 100, 2)
    assert a.relative_l2_error(a.theta0) > 0.5  # an untrained network is far from sin(x - beta t)


def test_analytic_critical_points_are_stationary_with_the_right_index():
    for subject in (himmelblau(), three_hump_camel(), quartic()):
        expected_signs = {"minima": (True, False), "saddles": (False, False), "maxima": (False, True)}
        for kind, points in subject.critical_points.items():
            for point, value in points:
                theta = torch.as_tensor(point, dtype=torch.float64)
                assert float(subject.grad(theta).norm()) < 1e-8, (subject.name, kind, point)
                assert subject.loss(theta) == pytest.approx(value, abs=1e-12)
                eigenvalues = torch.linalg.eigvalsh(torch.func.hessian(subject.fn)(theta))
                all_positive, all_negative = expected_signs[kind]
                assert bool((eigenvalues > 0).all()) == all_positive or kind == "saddles"
                assert bool((eigenvalues < 0).all()) == all_negative
                if kind == "saddles":
                    assert float(eigenvalues.min()) < 0 < float(eigenvalues.max())
    assert len(himmelblau().critical_points["saddles"]) == 4


def test_digits_split_is_fixed_and_stratified():
    (x1, y1), (xt1, yt1) = digits()
    (x2, y2), _ = digits()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape[1:] == (1, 8, 8) and len(x1) + len(xt1) == 1797
    assert abs(float(x1.mean())) < 1e-5 and float(x1.std()) == pytest.approx(1.0, rel=1e-3)
    counts = torch.bincount(yt1, minlength=10)
    assert int(counts.min()) >= 40  # stratified: every class in the test split


def _fake_cifar(folder, n=20):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    return rng


def test_cifar10_reads_the_python_batches(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    (x, y), (xt, yt) = cifar10(tmp_path)
    assert x.shape == (100, 3, 32, 32) and xt.shape == (20, 3, 32, 32) and y.dtype == torch.int64
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    pixel = raw[b"data"][0].reshape(3, 32, 32)[1, 2, 3] / 255.0  # channel 1 (green), row 2, column 3
    assert float(x[0, 1, 2, 3]) == pytest.approx((pixel - 0.4822) / 0.2435, rel=1e-5)


def test_missing_or_corrupt_cifar10_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as info:
        cifar10(tmp_path)
    assert "download_cifar10" in str(info.value)
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        cifar10(tmp_path)


def test_build_validates_problem_and_parameters():
    with pytest.raises(ConfigError, match="Unknown problem 'resnet21'.*valid problems"):
        build("resnet21")
    with pytest.raises(ConfigError, match=r"Unknown parameter\(s\) \['skipp'\]"):
        build("resnet", skipp=False)
    with pytest.raises(ConfigError, match="needs parameter"):
        build("pinn_convection")
    assert build("himmelblau").dim == 2


def test_a_cifar10_batch_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    _fake_cifar(tmp_path / "cifar-10-batches-py")
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Payload(), b"labels": [0]}, handle)
    with pytest.raises(DataError, match="refused to load posix.system|refused to load os.system"):
        cifar10(tmp_path)
    assert not marker.exists()
    for protocol in (2, pickle.HIGHEST_PROTOCOL):  # the real files are protocol 2 (Python 2 era)
        rng = np.random.default_rng(protocol)
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 20))}
        with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
        (x, y), _ = cifar10(tmp_path)
        assert x.shape == (100, 3, 32, 32) and y[:20].tolist() == [int(v) for v in batch[b"labels"]]


# -- the small networks of Barannikov et al. 2025 §4.1-4.2 --------------------------------

def test_an_mlp_embeds_into_a_deeper_one_with_the_same_loss():
    """Barannikov et al. 2025 (appendix): after a hidden ReLU layer, an extra layer with identity
    weights and zero biases changes nothing, so the deeper network's landscape holds the shallower
    one's minima at the same loss."""
    from lossatlas.problems import mlp

    shallow, deep = mlp(depth=2, width=16, n_train=200), mlp(depth=3, width=16, n_train=200)
    assert shallow.dim == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10
    assert deep.dim == shallow.dim + 16 * 16 + 16
    small, big = shallow.model.layers, deep.model.layers
    with torch.no_grad():
        for source, target in ((small[1], big[1]), (small[3], big[3]), (small[5], big[7])):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
        big[5].weight.copy_(torch.eye(16))
        big[5].bias.zero_()
    before = shallow.loss(torch.nn.utils.parameters_to_vector(shallow.model.parameters()))
    after = deep.loss(torch.nn.utils.parameters_to_vector(deep.model.parameters()))
    assert after == pytest.approx(before, rel=1e-6)


def test_small_cnns_keep_the_last_layer_and_count_their_parameters():
    from lossatlas.problems import cnn

    sizes = {}
    for layers in (1, 2, 3):
        for batchnorm in (False, True):
            subject = cnn(conv_layers=layers, channels=8, batchnorm=batchnorm, n_train=50)
            convs = 9 * 8 + (layers - 1) * 9 * 8 * 8  # 3x3 kernels: 1 -> 8 channels, then 8 -> 8
            per_channel = 2 * layers if batchnorm else layers  # BatchNorm's weight and bias replace the conv bias
            assert subject.dim == convs + per_channel * 8 + 8 * 4 * 10 + 10
            assert subject.has_batchnorm == batchnorm
            sizes[layers, batchnorm] = subject.model.layers[-1].in_features
    assert set(sizes.values()) == {8 * 4}  # max-pooled to 2x2 before the one linear layer, at every depth
    with pytest.raises(ConfigError, match="at least 1"):
        cnn(conv_layers=0)


def test_the_cyclic_schedule_is_smiths_triangle_stepped_per_epoch():
    from lossatlas.training import Recipe, make_optimizer, make_schedule

    recipe = Recipe(optimizer="adam", lr=0.01, schedule="cyclic", cycle_epochs=3, cycle_base=0.1, epochs=12)
    optimizer = make_optimizer(recipe, [torch.nn.Parameter(torch.zeros(1))])
    schedule = make_schedule(recipe, optimizer)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    epoch = np.arange(12)
    triangle = 1 - np.abs(epoch / 3 - 2 * np.floor(epoch / 6) - 1)  # 0 at the base, 1 at the peak
    np.testing.assert_allclose(rates, 0.001 + (0.01 - 0.001) * triangle, rtol=1e-12)
    assert "cycle_epochs" in recipe.to_dict() and "cycle_epochs" not in Recipe(schedule="cosine").to_dict()


def _write_idx(path, array, compress):
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open if compress else open)(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_and_fashion_mnist_read_the_standard_idx_files(tmp_path):
    from lossatlas.errors import DataError
    from lossatlas.problems import mlp
    from lossatlas.problems.data import mnist

    generator = np.random.default_rng(0)
    images = {"train": generator.integers(0, 256, (20, 28, 28)), "t10k": generator.integers(0, 256, (10, 28, 28))}
    labels = {"train": np.arange(20) % 10, "t10k": np.arange(10)[::-1]}
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for split in ("train", "t10k"):  # the training files gzipped, the test files plain: both are read
        gz = ".gz" if split == "train" else ""
        _write_idx(folder / f"{split}-images-idx3-ubyte{gz}", images[split], bool(gz))
        _write_idx(folder / f"{split}-labels-idx1-ubyte{gz}", labels[split], bool(gz))
    (x_tr, y_tr), (x_te, y_te) = mnist(tmp_path, "fmnist")
    assert x_tr.shape == (20, 1, 28, 28) and x_te.shape == (10, 1, 28, 28)
    assert y_tr.tolist() == labels["train"].tolist() and y_te.tolist() == labels["t10k"].tolist()
    pixels = images["train"] / 255.0
    expected = (images["t10k"][3] / 255.0 - pixels.mean()) / pixels.std()  # train statistics, applied to test
    np.testing.assert_allclose(x_te[3, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    subject = mlp(depth=2, width=8, dataset="fmnist", data_root=str(tmp_path), device="cpu")
    assert subject.dim == 784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    with pytest.raises(DataError, match=r"MNIST not found: expected the IDX files .* in .*mnist"):
        mnist(tmp_path, "mnist")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01")
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        mnist(tmp_path, "fmnist")
