"""Hessian: native (ARPACK Lanczos + Hutchinson) vs the pyhessian package, side by side.

    python -m benchmarks.perf.hessian [--n-train 500] [--epochs 3]

Same subject, same point, same tolerances: top-2 eigenvalues (tol 1e-3) and the trace
(relative tolerance 1e-2, at most 100 probes). Reports wall time, Hessian-vector products and
the numbers both agree on; writes benchmarks/perf/results_hessian.md with the machine description.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from lossatlas import ModuleSubject, Recipe, Store, analyze, train_minima
from lossatlas.problems import resnet, resnet20

SETTINGS = dict(at="minimum", k=2, tol=1e-3, max_iter=100, trace_rtol=1e-2, trace_max_probes=100, density_steps=2,
                density_bins=50)


def _random_cifar(n: int) -> ModuleSubject:
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return ModuleSubject(resnet20(), nn.CrossEntropyLoss(), data, name=f"resnet20_random_cifar{n}", eval_batch_size=n)


def _compare(subject, epochs: int) -> list[str]:
    rows = []
    with Store.memory() as store:
        train_minima(store, subject, Recipe(lr=0.05, epochs=epochs, batch_size=64), seeds=[0], progress=False)
        found = {}
        for backend in ("native", "pyhessian"):
            start = time.perf_counter()
            result = analyze(store, subject, "hessian", backend=backend, **SETTINGS)
            found[backend] = (time.perf_counter() - start, result)
    (t_native, native), (t_py, py) = found["native"], found["pyhessian"]
    for name, (seconds, result) in found.items():
        ev = result.arrays["eigenvalues"]
        rows.append(f"| {subject.name} | {name} | {seconds:.1f} | {int(result.metrics['hvp_count'])} | "
                    f"{ev[0]:.4g}, {ev[1]:.4g} | {result.metrics['trace']:.4g} ± {result.metrics['trace_stderr']:.2g} |")
    agree = abs(native.arrays["eigenvalues"][0] - py.arrays["eigenvalues"][0]) / abs(py.arrays["eigenvalues"][0])
    rows.append(f"| {subject.name} | **speed-up {t_py / t_native:.2f}x** | | | top eigenvalue rel. diff {agree:.1e} | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = ["| subject | backend | wall s | HVPs | top-2 eigenvalues | trace ± stderr |", "|---|---|---|---|---|---|"]
    rows += _compare(resnet(skip=True, n_train=args.n_train, eval_batch_size=args.n_train), args.epochs)
    rows += _compare(_random_cifar(128), 1)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    text = "# Hessian: native vs pyhessian\n\n" + f"Machine: {machine}\n\nSettings: {SETTINGS}\n\n" + "\n".join(rows) + "\n"
    Path(__file__).with_name("results_hessian.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
