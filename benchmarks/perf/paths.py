"""Cost of one optimized path between two minima vs training one minimum (Barannikov et al. 2025, §3.3:
"the time budget for a path optimization is similar to ... a single training").

    python -m benchmarks.perf --only paths

ResNet-20 on digits: one minimum trained for ``epochs`` epochs vs one polychain (1 bend) path
trained for the same number of epochs, plus the path's evaluation (61 points, BatchNorm
re-estimated at each). Himmelblau: one string path vs gradient descent to one minimum.
Part of ``python -m benchmarks.perf``.
"""
from __future__ import annotations


import numpy as np
import torch

from lossatlas import Recipe, Store, train_minima
from lossatlas.problems import himmelblau, resnet
from lossatlas.samplers.paths import connect_minima

from .common import Section, log, table, timed


def run(quick: bool = False, epochs: int | None = None) -> Section:
    epochs = epochs or (2 if quick else 10)
    section = Section("paths", "Path optimization vs training one minimum")
    section.text.append(
        f"ResNet-20 (skip) on digits: one minimum trained for {epochs} epochs (SGD, cosine) vs one polychain path "
        f"(1 bend) trained for the same {epochs} epochs plus its evaluation at 61 points with BatchNorm "
        "re-estimated at each (what the loss-barcode analyzer runs per pair). Himmelblau: gradient descent "
        "(2000 steps) to one minimum vs one string path (2000 steps). No target: the issue asks for the ratio.")
    rows = []
    subject = resnet(skip=True)
    recipe = Recipe(lr=0.05, epochs=epochs, batch_size=64, schedule="cosine")
    log(f"paths: {subject.name}")
    with Store.memory() as store:
        t_min, _ = timed(lambda: train_minima(store, subject, recipe, seeds=[0], progress=False))
        minima = train_minima(store, subject, recipe, seeds=[0, 1], progress=False)
        config = {"path_kind": "polychain", "bends": 1, "curve_epochs": epochs, "curve_lr": 0.01,
                  "weight_decay": 0.0, "batch_size": 64, "n_eval": 61, "seed": 0}
        t_path, _ = timed(lambda: connect_minima(store, subject, np.stack([m.theta for m in minima]), progress=False,
                                                 **config))
    rows.append([f"{subject.name} ({epochs} epochs each)", f"{t_min:.1f}", f"{t_path:.1f}", f"{t_path / t_min:.2f}"])
    subject = himmelblau()
    minima = np.array([p for p, _ in subject.critical_points["minima"][:2]])
    recipe = Recipe(optimizer="sgd", lr=0.01, momentum=0.0, epochs=1, steps_per_epoch=2000)
    t_min, _ = timed(lambda: subject.train(torch.tensor([0.5, 0.5], dtype=torch.float64), recipe, 0, progress=False))
    config = {"path_kind": "string", "n_images": 21, "string_steps": 2000, "string_lr": 0.01, "n_eval": 61, "seed": 0}
    with Store.memory() as store:
        t_path, _ = timed(lambda: connect_minima(store, subject, minima, progress=False, **config))
    rows.append(["himmelblau (2000 GD steps vs string)", f"{t_min:.2f}", f"{t_path:.2f}", f"{t_path / t_min:.2f}"])
    section.tables.append(table(["subject", "one minimum s", "one path s", "path / minimum"], rows))
    return section
