"""Cost of one optimized path between two minima vs training one minimum (seed 002 §3.3:
"the time budget for a path optimization is similar to ... a single training").

    python -m benchmarks.perf.paths [--epochs 10]

ResNet-20 on digits: one minimum trained for ``epochs`` epochs vs one polychain (1 bend) path
trained for the same number of epochs, plus the path's evaluation (61 points, BatchNorm
re-estimated at each). Himmelblau: one string path vs gradient descent to one minimum.
Writes results_paths.md here.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lossatlas import Recipe, Store, train_minima
from lossatlas.problems import himmelblau, resnet
from lossatlas.samplers.paths import connect_minima


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    rows = ["| subject | one minimum s | one path s | path / minimum |", "|---|---|---|---|"]
    subject = resnet(skip=True)
    recipe = Recipe(lr=0.05, epochs=args.epochs, batch_size=64, schedule="cosine")
    with Store.memory() as store:
        t_min, _ = _timed(lambda: train_minima(store, subject, recipe, seeds=[0], progress=False))
        minima = train_minima(store, subject, recipe, seeds=[0, 1], progress=False)
        config = {"path": "polychain", "n_images": 21, "string_steps": 0, "string_lr": 0.0, "bends": 1,
                  "curve_epochs": args.epochs, "curve_lr": 0.01, "weight_decay": 0.0, "batch_size": 64, "n_eval": 61,
                  "seed": 0}
        t_path, _ = _timed(lambda: connect_minima(store, subject, np.stack([m.theta for m in minima]), config,
                                                  progress=False))
    rows.append(f"| {subject.name} ({args.epochs} epochs) | {t_min:.1f} | {t_path:.1f} | {t_path / t_min:.2f} |")
    subject = himmelblau()
    minima = np.array([p for p, _ in subject.critical_points["minima"][:2]])
    recipe = Recipe(optimizer="sgd", lr=0.01, momentum=0.0, epochs=1, steps_per_epoch=2000)
    t_min, _ = _timed(lambda: subject.train(torch.tensor([0.5, 0.5], dtype=torch.float64), recipe, 0, progress=False))
    config = {"path": "string", "n_images": 21, "string_steps": 2000, "string_lr": 0.01, "bends": 1, "curve_epochs": 1,
              "curve_lr": 0.01, "weight_decay": 0.0, "batch_size": 64, "n_eval": 61, "seed": 0}
    with Store.memory() as store:
        t_path, _ = _timed(lambda: connect_minima(store, subject, minima, config, progress=False))
    rows.append(f"| himmelblau (2000 GD steps vs string) | {t_min:.2f} | {t_path:.2f} | {t_path / t_min:.2f} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    text = "# Path optimization vs training one minimum\n\n" + f"Machine: {machine}\n\n" + "\n".join(rows) + "\n"
    Path(__file__).with_name("results_paths.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
