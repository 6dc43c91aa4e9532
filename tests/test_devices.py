"""Devices: one ``device`` per subject, from which every tensor follows.

On a CPU-only machine the CPU path is checked here (``device="cpu"`` and "auto" change no number,
results and minima record the device, a GPU that is not there is a clear error before any work).
The tests marked ``gpu`` compare a CUDA run with the CPU run of the same work to stated tolerances;
they are skipped without a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import ConfigError, ModuleSubject, Recipe, Store, analyze, devices, train_minima
from lossatlas.cli import main
from lossatlas.problems import pinn_convection, three_hump_camel

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_choices_resolve_and_a_missing_gpu_is_a_clear_error(tmp_path, capsys):
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad, message in [("mps", "other accelerators"), ("tpu", "must be"),
                         ("gpu!", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
                         (3, "must be 'auto'")]:
        with pytest.raises(ConfigError, match=message):
            devices.resolve(bad)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the missing-GPU errors cannot be shown here")
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU here"):
        devices.resolve("cuda:1")
    config = tmp_path / "camel.toml"
    config.write_text('name = "camel"\nproblem = "three_hump_camel"\ndevice = "cuda"\n')
    assert main(["run", str(config), "--check"]) == 2
    assert "device 'cuda' asked for, but torch sees no CUDA GPU" in capsys.readouterr().err
    config.write_text('name = "camel"\nproblem = "three_hump_camel"\n')
    assert main(["run", str(config), "--check", "--device", "cuda:0"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_cpu_device_changes_no_number_and_results_record_their_device(tmp_path):
    """device="cpu" (and "auto" on this machine) is the computation of before: the same minima
    and Hessian as a subject built without a device; results and minima say where they ran."""
    default, on_cpu = pinn_convection(1.0, n_f=50, hidden=8, layers=2), pinn_convection(1.0, n_f=50, hidden=8,
                                                                                         layers=2, device="cpu")
    found = []
    for subject, name in ((default, "a.h5"), (on_cpu, "b.h5")):
        with Store(tmp_path / name) as store:
            minimum = train_minima(store, subject, Recipe(lr=0.01, epochs=3, optimizer="adam"), seeds=[0],
                                   progress=False)[0]
            result = analyze(store, subject, "hessian", k=1, progress=False)
        found.append((minimum, result))
    (first, first_result), (second, second_result) = found
    assert np.array_equal(first.theta, second.theta)
    assert first_result.metrics == second_result.metrics
    assert second.runtime == {"device": "cpu", "dtype": "float64", "precision": "float32"}
    assert second_result.runtime == {**second.runtime, "data": "memory", "hvp": "double backward (eager)"}
    with Store(tmp_path / "b.h5", "r") as store:  # and the store gives it back
        assert store.minima(on_cpu.name)[0].runtime["device"] == "cpu"
        assert store.results(on_cpu.name)[0].runtime["device"] == "cpu"


def test_moving_a_subject_moves_every_tensor_and_keeps_shared_data_shared():
    torch.manual_seed(0)
    data = (torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,)))
    subject = ModuleSubject(nn.Linear(3, 2).double(), nn.CrossEntropyLoss(), data, device="cpu")
    assert subject.train_data is subject.data and subject.to("cpu") is subject
    target = devices.resolve("auto")
    subject.to(target)
    assert subject.train_data is subject.data and subject.splits == ("eval",)
    tensors = [subject.theta0, subject.buffers0, *subject.data] + list(subject.model.parameters())
    assert all(t.device.type == target.type for t in tensors)


def _cpu_and_gpu(build):
    return build("cpu"), build("cuda")


@pytest.mark.gpu
@gpu
def test_gpu_losses_gradients_and_hessian_match_the_cpu():
    """Stated tolerances: float64 subjects agree to 1e-10 relative (different reduction orders)."""
    cpu, cuda = _cpu_and_gpu(lambda d: pinn_convection(2.0, n_f=200, hidden=16, layers=2, device=d))
    assert cuda.device.type == "cuda" and cuda.model[0].weight.device.type == "cuda"
    thetas = cpu.theta0 + 0.1 * torch.randn(5, cpu.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert np.allclose(cuda.losses(thetas), cpu.losses(thetas), rtol=1e-10)
    assert torch.allclose(cuda.grad(cpu.theta0).cpu(), cpu.grad(cpu.theta0), rtol=1e-9, atol=1e-12)
    with Store.memory() as a, Store.memory() as b:
        top = [analyze(s, subject, "hessian", at="theta0", k=2, progress=False).metrics["top_eigenvalue"]
               for s, subject in ((a, cpu), (b, cuda))]
    assert top[1] == pytest.approx(top[0], rel=1e-8)


@pytest.mark.gpu
@gpu
def test_gpu_training_grids_and_paths_match_the_cpu():
    """Seeds draw on the CPU, so directions, batch orders and augmentations are the same on both
    devices; a few epochs of float64 training agree to 1e-8 relative."""
    cpu, cuda = _cpu_and_gpu(lambda d: three_hump_camel().to(d))
    results = []
    for subject in (cpu, cuda):
        with Store.memory() as store:
            train_minima(store, subject, Recipe(lr=0.01, epochs=3), seeds=[0, 1], progress=False)
            grid = analyze(store, subject, "merge-tree", resolution=21, progress=False)
            barcode = analyze(store, subject, "loss-barcode", n_minima=2, progress=False)
            results.append((grid.metrics, barcode.metrics))
    for (grid_cpu, bar_cpu), (grid_gpu, bar_gpu) in [tuple(results)]:
        for key, value in {**grid_cpu, **bar_cpu}.items():
            other = {**grid_gpu, **bar_gpu}[key]
            assert other == pytest.approx(value, rel=1e-8, abs=1e-10, nan_ok=True), key


def test_training_precision_is_asked_for_recorded_and_measurements_stay_float32():
    from lossatlas import devices as d

    plain, fast = Recipe(lr=0.01, epochs=2), Recipe(lr=0.01, epochs=2, precision="bf16")
    assert "precision" not in plain.to_dict() and fast.to_dict()["precision"] == "bf16"  # old keys kept
    with pytest.raises(ConfigError, match="'precision' parameter of Recipe"):
        Recipe(precision="fp8")
    torch.manual_seed(0)
    data = (torch.randn(64, 4), torch.randint(0, 3, (64,)))
    subject = ModuleSubject(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)), nn.CrossEntropyLoss(),
                            data, device="cpu")
    theta_plain, _ = subject.train(subject.theta0, plain, seed=0, progress=False)
    theta_bf16, _ = subject.train(subject.theta0, fast, seed=0, progress=False)
    assert torch.isfinite(theta_bf16).all() and not torch.equal(theta_plain, theta_bf16)  # bf16 really ran
    assert (theta_bf16 - theta_plain).abs().max() < 0.05  # and trained the same model, roughly
    flags = d.tf32_flags()
    with d.numerics("tf32"):
        assert d.tf32_flags() in (("tf32", "tf32"), (True, True))
    with d.numerics("float32"):
        assert d.tf32_flags() in (("ieee", "ieee"), (False, False))
    assert d.tf32_flags() == flags  # restored
    with Store.memory() as store:
        minimum = train_minima(store, subject, fast, seeds=[0], progress=False)[0]
    assert minimum.runtime["precision"] == "bf16" and minimum.recipe["precision"] == "bf16"
