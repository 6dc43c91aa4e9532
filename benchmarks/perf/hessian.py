"""Hessian: native (Lanczos + deflated Hutchinson) vs the pyhessian package, side by side.

    python -m benchmarks.perf.hessian [--n-train 500] [--epochs 3] [--probes 50]

Same subject, same minimum, same answer: pyhessian computes the top-2 eigenvalues (power
iteration, its tol 1e-3) and a trace from ``--probes`` Rademacher probes; native computes the
top-2 eigenvalues (ARPACK tol 1e-3) and a trace to the *same relative standard error* that
pyhessian's probes reached (pyhessian's own stopping rule, relative change of the running
mean, does not bound the error, so equal tolerance would not mean equal accuracy). A tight
native run (tol 1e-8) is the reference for the eigenvalues. Writes results_hessian.md here.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lossatlas import ModuleSubject, Recipe, Store, train_minima
from lossatlas.hessian import HessianOperator, hutchinson_trace, pyhessian_spectrum, top_eigenpairs
from lossatlas.problems import resnet, resnet20


def _random_cifar(n: int) -> ModuleSubject:
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return ModuleSubject(resnet20(), nn.CrossEntropyLoss(), data, name=f"resnet20_random_cifar{n}", eval_batch_size=n)


def _native(subject, theta, buffers, rtol):
    op = HessianOperator(subject, theta, buffers)
    values, vectors = top_eigenpairs(op, 2, 1e-3, seed=0, max_restarts=100)
    trace = hutchinson_trace(op, seed=0, rtol=rtol, min_probes=10, max_probes=1000, deflate=vectors,
                             deflate_values=values)
    return values, trace.trace, trace.stderr, op.count


def _compare(subject, epochs: int, probes: int) -> list[str]:
    with Store.memory() as store:
        (minimum,) = train_minima(store, subject, Recipe(lr=0.05, epochs=epochs, batch_size=64), seeds=[0], progress=False)
    theta, buffers = minimum.theta, minimum.buffers
    reference, _ = top_eigenpairs(HessianOperator(subject, theta, buffers), 2, 1e-8, seed=1, max_restarts=1000)
    start = time.perf_counter()
    py = pyhessian_spectrum(subject, theta, buffers, 2, 1e-3, 100, probes, 0.0, seed=0)
    t_py = time.perf_counter() - start
    rtol = py["trace_stderr"] / abs(py["trace"])
    start = time.perf_counter()
    values, trace, stderr, count = _native(subject, theta, buffers, rtol)
    t_native = time.perf_counter() - start
    error = lambda v: np.max(np.abs(np.asarray(v) - reference) / reference)  # noqa: E731
    return [
        f"| {subject.name} | pyhessian | {t_py:.1f} | {py['hvp_count']} | {py['eigenvalues'][0]:.5g}, "
        f"{py['eigenvalues'][1]:.5g} ({error(py['eigenvalues']):.1e}) | {py['trace']:.4g} ± {py['trace_stderr']:.2g} |",
        f"| {subject.name} | native | {t_native:.1f} | {count} | {values[0]:.5g}, {values[1]:.5g} "
        f"({error(values):.1e}) | {trace:.4g} ± {stderr:.2g} |",
        f"| {subject.name} | **native speed-up {t_py / t_native:.2f}x** | | | reference {reference[0]:.5g}, "
        f"{reference[1]:.5g} | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    rows = ["| subject | backend | wall s | HVPs | top-2 eigenvalues (max rel. error) | trace ± stderr |",
            "|---|---|---|---|---|---|"]
    rows += _compare(resnet(skip=True, n_train=args.n_train, eval_batch_size=args.n_train), args.epochs, args.probes)
    rows += _compare(_random_cifar(128), 1, args.probes)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads")
    text = (f"# Hessian: native vs pyhessian\n\nMachine: {machine}. pyhessian trace: {args.probes} probes; native "
            "trace: deflated by its top-2 eigenvectors, run to the same relative standard error.\n\n"
            + "\n".join(rows) + "\n")
    Path(__file__).with_name("results_hessian.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
