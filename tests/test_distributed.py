"""Data-parallel evaluation on two processes (gloo on the CPU): with the evaluation batches split
between the ranks and the sums all-reduced, the loss, gradient, Hessian / GGN / empirical Fisher
products, many-point metrics, re-estimated BatchNorm statistics and the Hessian analyzer's top
eigenvalues and trace equal one process's (float64, 1e-9 relative; in memory and streamed), bit for
bit alike on both ranks. The one-process values are each worker's own, computed before it joins
the process group. A function's loss is not split; a failure on one rank fails both, never hangs."""
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from lossatlas import FunctionSubject, ModuleSubject, Store, analyze, distributed, evaluation
from lossatlas.errors import ConfigError

RTOL = 1e-9
DEADLINE = 120  # seconds for the whole run; a collective gives up after COLLECTIVE_TIMEOUT
COLLECTIVE_TIMEOUT = timedelta(seconds=60)
HESSIAN = {"at": "theta0", "k": 2, "bottom_k": 0, "tol": 1e-10, "trace_min_probes": 10, "trace_max_probes": 10,
           "density_runs": 0}


class _Counted(Dataset):
    """A dataset that records which examples were read."""

    def __init__(self, x, y):
        self.x, self.y, self.read = x, y, set()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.read.add(int(i))
        return self.x[i], self.y[i]


class _Branchy(nn.Module):
    """An MLP with a data-dependent branch, which vmap refuses: evaluate_many falls back to a loop."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        out = self.net(x)
        return out if bool(out.sum() > -1e9) else -out


def _rosenbrock(theta):
    return ((1 - theta[:-1]) ** 2 + 100 * (theta[1:] - theta[:-1] ** 2) ** 2).sum()


def _subjects():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(203, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (203,), generator=generator)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()  # 75 parameters: Lanczos, not dense
    bn = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    loss = nn.CrossEntropyLoss()
    data = _Counted(x, y)
    return {  # 203 examples in batches of 50: rank 0 takes batches 0, 2, 4, rank 1 batches 1, 3
        "memory": ModuleSubject(mlp, loss, data, eval_batch_size=50, stream=False, name="mlp"),
        "stream": ModuleSubject(mlp, loss, data, eval_batch_size=50, stream=True, name="mlp"),
        "one_batch": ModuleSubject(mlp, loss, data, eval_batch_size=500, stream=False, name="mlp"),  # rank 1: none
        "batchnorm": ModuleSubject(bn, loss, data, eval_batch_size=40, stream=True, bn="recompute", name="bn"),
        "branchy": ModuleSubject(_Branchy().double(), loss, data, eval_batch_size=500, vmap=True, name="branchy"),
        "function": FunctionSubject(_rosenbrock, torch.full((6,), 0.5, dtype=torch.float64)),
    }


def _noise(dim: int, seed: int, rows: int | None = None) -> torch.Tensor:
    shape = (dim,) if rows is None else (rows, dim)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _measure(subjects) -> dict:
    found = {}
    for name, subject in subjects.items():
        theta, vector = subject.theta0 + 0.1 * _noise(subject.dim, 1), _noise(subject.dim, 2)
        points = subject.theta0 + 0.2 * _noise(subject.dim, 3, rows=5)
        loss, grad = subject.loss_and_grad(theta)
        row = {"loss": subject.loss(theta), "loss_and_grad": loss, "grad": grad, "hvp": subject.hvp(theta, vector),
               "grads": subject.grads(points[:2])}
        if name != "function":
            row.update(ggn=evaluation.ggn_vp(subject, theta, vector), ef=evaluation.ef_vp(subject, theta, vector),
                       evaluate=np.array(list(subject.evaluate(theta).values())))
        for vmapped in (True, False):
            subject._vmap_ok = vmapped
            for key, values in subject.evaluate_many(points).items():
                row[f"many_{key}_{'vmap' if vmapped else 'loop'}"] = values
            if vmapped:  # the branchy model's vmap fails on rank 0 alone (rank 1 has no batch): both fall back
                row["vmap_ok"] = float(subject._vmap_ok)
        if name == "batchnorm":
            row["update_bn"] = subject.update_bn(theta)
            recomputed = subject.evaluate_many(points, buffers=subject.buffers0, recompute_bn=True)
            row["many_recompute_bn"] = recomputed["loss"]
        if name in ("memory", "stream"):
            result = analyze(Store.memory(), subject, "hessian", progress=False, **HESSIAN)
            row["eigenvalues"], row["trace"] = result.arrays["eigenvalues"], result.metrics["trace"]
        found[name] = {key: np.asarray(value.numpy() if torch.is_tensor(value) else value, dtype=np.float64)
                       for key, value in row.items()}
    return found


def _worker(rank: int, size: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    subjects = _subjects()
    reference = _measure(subjects)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size, timeout=COLLECTIVE_TIMEOUT)
    try:
        stream = subjects["stream"]
        stream.data.dataset.read.clear()
        shares = {"weights": sum(w for _, w in subjects["memory"].eval_batches()),
                  "one_batch": len(list(subjects["one_batch"].eval_batches())),
                  "stream_batches": len(list(stream.eval_batches()))}
        shares["stream_read"] = sorted(stream.data.dataset.read)
        with distributed.alone():  # work a rank does whole by itself
            shares["alone_batches"] = len(list(subjects["memory"].eval_batches()))
            shares["alone_loss"] = subjects["memory"].loss(subjects["memory"].theta0)
        found = _measure(subjects)
        failures = {}
        for name in ("memory", "one_batch"):  # an all-reduce passes no gradient: refused, on both ranks
            subject = subjects[name]
            leaf = subject.theta0.clone().requires_grad_(True)
            try:
                torch.autograd.grad(subject._loss_tensor(leaf, subject.buffers0), leaf)
                failures[name] = "none"
            except Exception as error:  # noqa: BLE001 -- the type is what is checked
                failures[name] = type(error).__name__
    finally:
        dist.destroy_process_group()
    torch.save({"reference": reference, "found": found, "shares": shares, "failures": failures},
               f"{out}/rank{rank}.pt")


def test_two_processes_equal_one(tmp_path):
    context = mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2,
                       join=False)
    deadline = time.monotonic() + DEADLINE
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two processes did not finish in {DEADLINE} s (a collective run by one rank only?)")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    reference = ranks[0]["reference"]
    for name, row in reference.items():
        for key, want in row.items():
            assert np.array_equal(ranks[1]["reference"][name][key], want)  # one process is deterministic
            got, other = ranks[0]["found"][name][key], ranks[1]["found"][name][key]
            assert np.array_equal(got, other, equal_nan=True), (name, key)  # the same bits on both ranks
            scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
            assert np.max(np.abs(got - want), initial=0.0) <= RTOL * scale, (name, key, got, want)
    # the data really was split: each rank held its share of the weights and read only its batches
    assert [rank["shares"]["weights"] for rank in ranks] == pytest.approx([103 / 203, 100 / 203])
    assert [rank["shares"]["one_batch"] for rank in ranks] == [1, 0]
    assert [rank["shares"]["stream_batches"] for rank in ranks] == [3, 2]
    assert ranks[0]["shares"]["stream_read"] == [*range(0, 50), *range(100, 150), *range(200, 203)]
    assert ranks[1]["shares"]["stream_read"] == [*range(50, 100), *range(150, 200)]
    assert [rank["shares"]["alone_batches"] for rank in ranks] == [5, 5]
    assert ranks[0]["shares"]["alone_loss"] == ranks[1]["shares"]["alone_loss"]
    assert reference["branchy"]["vmap_ok"] == 0.0 and reference["memory"]["vmap_ok"] == 1.0
    assert [rank["failures"] for rank in ranks] == [{"memory": "ConfigError", "one_batch": "ConfigError"},
                                                    {"memory": "ConfigError", "one_batch": "PeerFailure"}]


def test_one_process_is_untouched():
    """Without a process group the reduction hands back its input itself, or raises the error given."""
    totals = {"loss": torch.tensor(1.5), "count": 3}
    assert distributed.world() == (0, 1)
    assert distributed.all_reduce_sum(totals) is totals
    with pytest.raises(ConfigError):
        distributed.all_reduce_sum(totals, ConfigError("mine"))
