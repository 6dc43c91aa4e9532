"""Jump-and-retrain time split: retraining vs PHATE vs persistence (ResNet-20, digits).

    python -m benchmarks.perf.jump_retrain [--epochs 10]

4 seeds x 4 step sizes x ``epochs`` retraining epochs from one trained minimum, then cosine
PHATE, the k = 20 potential-distance kNN graph and its persistence. Writes results_jump_retrain.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import torch

from lossatlas import Recipe, Store, train_minima
from lossatlas.methods.jump_retrain import phate_embedding, potential_knn_edges
from lossatlas.problems import resnet
from lossatlas.samplers.jump_retrain import jump_and_retrain
from lossatlas.topology.graph_persistence import graph_diagrams, total_persistence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    subject = resnet(skip=True)
    with Store.memory() as store:
        start = time.perf_counter()
        train_minima(store, subject, Recipe(lr=0.05, epochs=10, batch_size=64, schedule="cosine"), seeds=[0], progress=False)
        t_minimum = time.perf_counter() - start
        start = time.perf_counter()
        samples = jump_and_retrain(store, subject, epochs=args.epochs, recipe={"batch_size": 64}, progress=False)
        t_retrain = time.perf_counter() - start
    start = time.perf_counter()
    embedding, potential = phate_embedding(samples.thetas, 5, 40.0, 2000, 0)
    t_phate = time.perf_counter() - start
    start = time.perf_counter()
    edges = potential_knn_edges(potential, 20)
    d0, d1 = graph_diagrams(samples.losses, edges)
    pers = total_persistence(d0), total_persistence(d1)
    t_topology = time.perf_counter() - start
    total = t_retrain + t_phate + t_topology
    rows = ["| stage | seconds | share |", "|---|---|---|"]
    for name, seconds in (("retraining (16 runs)", t_retrain), ("PHATE (cosine)", t_phate), ("kNN graph + persistence", t_topology)):
        rows.append(f"| {name} | {seconds:.2f} | {seconds / total:.1%} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    text = (f"# Jump and retrain: time split\n\nMachine: {machine}. ResNet-20 (skip) on digits, {len(samples.losses)} "
            f"samples ({args.epochs} epochs per run); training the minimum (10 epochs) took {t_minimum:.1f} s.\n\n"
            + "\n".join(rows) + f"\n\nTotal persistence D0 {pers[0]:.4g}, D1 {pers[1]:.4g}.\n")
    Path(__file__).with_name("results_jump_retrain.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
