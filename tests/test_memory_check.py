"""Memory estimates: what cannot fit is refused before any work (``lossatlas run --check``, the run,
``analyze``), and the estimates bound the peak a method really reaches."""
import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import FunctionSubject, ModuleSubject, Store, analyze, memory, registry
from lossatlas.cli import main
from lossatlas.errors import ConfigError
from lossatlas.memory import GiB, Memory

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.toml"))
BIG = '''
import torch
from lossatlas import FunctionSubject


def big():
    """A stand-in for a 9.2M-parameter model: a quadratic of as many float32 parameters."""
    return FunctionSubject(lambda t: 0.5 * (t ** 2).sum(), torch.zeros(9_200_000), name="big")
'''


@pytest.fixture
def machine(monkeypatch):
    """A 64 GiB machine, wherever the tests run."""
    monkeypatch.setattr(memory, "physical_memory", lambda: 64 * GiB)


@pytest.fixture
def big_problem(tmp_path, monkeypatch):
    (tmp_path / "big_problem.py").write_text(BIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "big_problem:big"


@pytest.mark.parametrize("method,lower", [
    ("[methods.hessian]\nk = 300", "Lower k."),
    ("[methods.jump-retrain]\nseeds = [{}]\nstep_sizes = [0.25, 0.5, 0.75, 1.0]\nepochs = 200".format(
        ", ".join(map(str, range(25)))), "Lower epochs, seeds or step_sizes."),
])
def test_check_refuses_what_cannot_fit(machine, big_problem, tmp_path, capsys, method, lower):
    config = tmp_path / "big.toml"
    config.write_text(f'name = "big"\nproblem = "{big_problem}"\ndevice = "cpu"\n[minima]\nepochs = 1\n{method}\n')
    assert main(["run", str(config), "--check", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lossatlas: error: [methods.") and error.count("\n") == 1
    assert "on big" in error and "9,200,000 parameters" in error and lower in error
    assert "this machine has 64.0 GiB" in error and not (tmp_path / "out").exists()
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2  # the run refuses before training
    assert lower in capsys.readouterr().err and not list(tmp_path.glob("out/*.h5"))


def test_check_passes_what_fits(machine, big_problem, tmp_path, capsys):
    config = tmp_path / "big.toml"
    config.write_text(f'name = "big"\nproblem = "{big_problem}"\ndevice = "cpu"\n[minima]\nepochs = 1\n'
                      "[methods.hessian]\nk = 2\n")
    assert main(["run", str(config), "--check", "--out", str(tmp_path / "out")]) == 0
    assert "config OK" in capsys.readouterr().out


def test_analyze_refuses_before_any_work(machine):
    subject = FunctionSubject(lambda t: 0.5 * (t ** 2).sum(), torch.zeros(9_200_000), name="big")
    with Store.memory() as store:
        with pytest.raises(ConfigError, match=r"hessian on 'big' .* needs about \d+\.\d GiB of memory .* Lower k"):
            analyze(store, subject, "hessian", at="theta0", k=300)
        assert store.subjects() == []  # nothing registered, nothing computed


def test_a_gpu_run_is_checked_against_the_gpu_free_memory(machine, monkeypatch):
    monkeypatch.setattr(memory, "gpu_free", lambda device: 8 * GiB)
    cuda = torch.device("cuda", 0)
    memory.refuse("x", Memory(host=44 * GiB, device=6 * GiB), cuda)  # each part fits where it lives
    with pytest.raises(ConfigError, match="needs about 9.1 GiB on cuda:0 .* it has free 8.0 GiB. Lower k."):
        memory.refuse("x", Memory(host=GiB, device=7 * GiB, lower="k"), cuda)
    with pytest.raises(ConfigError, match="65.0 GiB of host memory"):
        memory.refuse("x", Memory(host=50 * GiB), cuda)
    with pytest.raises(ConfigError, match="65.0 GiB of memory"):  # on a CPU both parts share the memory
        memory.refuse("x", Memory(host=44 * GiB, device=6 * GiB), torch.device("cpu"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_configs_pass_the_check(path, tmp_path):
    for scale in ("smoke", "cpu"):
        assert main(["run", str(path), "--scale", scale, "--check", "--out", str(tmp_path)]) == 0


# -- the estimates against measured peaks ---------------------------------------------------------
def _quadratic(dim: int) -> FunctionSubject:
    """0.5 sum a_i t_i^2 with a_i = 1 / (1 + i): well separated top eigenvalues, fast Lanczos."""
    scales = torch.tensor(1.0 / (1.0 + np.arange(dim)))
    return FunctionSubject(lambda t: 0.5 * (scales * t * t).sum(), torch.ones(dim, dtype=torch.float64),
                           name=f"quadratic_{dim}")


def _mlp(width: int) -> ModuleSubject:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    data = (torch.tensor(x[:256], dtype=torch.float32) / 16, torch.tensor(y[:256]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 10))
    return ModuleSubject(model, nn.CrossEntropyLoss(), data, name=f"mlp_{width}")


def _resident() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _measured_peak(store, subject, method, params) -> int:
    """The growth of the resident memory at its peak while ``analyze`` runs (Linux: freed heap is
    given back first, so that reusing it counts, and the peak is reset through /proc/self/clear_refs)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _resident()[0]
    Path("/proc/self/clear_refs").write_text("5")
    analyze(store, subject, method, progress=False, **params)
    return _resident()[1] - before


JUMP = dict(at="theta0", seeds=[0, 1, 2, 3], step_sizes=[0.5, 1.0], epochs=20, batch_size=128, knn_k=10)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
@pytest.mark.parametrize("method,make,params", [
    ("hessian", lambda: _quadratic(300_000), dict(at="theta0", k=8, bottom_k=0, density_steps=10, trace_min_probes=2,
                                                        trace_max_probes=10)),
    ("jump-retrain", lambda: _mlp(512), JUMP),  # 168 records of 66762 parameters
], ids=["hessian", "jump-retrain"])
def test_estimates_bound_the_measured_peak(tmp_path, method, make, params):
    with Store(tmp_path / "peak.h5") as store:
        warm = {"hessian": dict(params, k=2), "jump-retrain": dict(params, seeds=[0], epochs=4)}[method]
        analyze(store, make(), method, progress=False, **warm)  # imports and first-use caches out of the count
        subject = make()
        estimate = registry.get(method).from_params(params).memory(subject).total
        actual = _measured_peak(store, subject, method, params)
    print(f"{method}: estimate {estimate / 2**20:.1f} MiB (x {memory.SLACK}), measured {actual / 2**20:.1f} MiB, "
          f"ratio {memory.SLACK * estimate / actual:.2f}")
    assert actual <= memory.SLACK * estimate <= 10 * actual
