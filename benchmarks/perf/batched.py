"""Batched training of many small runs: jump and retrain on the convection PINN at the `cpu` scale of
benchmarks/pinn_convection.toml, the runs trained one at a time vs together (issue 15's target: at
least 3x on a CPU).

    python -m benchmarks.perf --only batched

Both sides produce the same parts (checked here to 1e-9 relative, as in tests/test_batched.py):
``JumpRetrainRuns.run`` per (seed, step) task, and ``run_many`` over all of them, which trains the
runs as one vmapped computation (``lossatlas.batched``) and evaluates their losses with the PINN's
batched loss. Part of ``python -m benchmarks.perf``.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from lossatlas.batched import runs_at_once
from lossatlas.problems import pinn_convection
from lossatlas.samplers.jump_retrain import JumpRetrainRuns, reference_recipe

from .common import Section, Target, interleaved_best, log, table

CONFIG = Path(__file__).parents[1] / "pinn_convection.toml"


def run(quick: bool = False) -> Section:
    config = tomllib.loads(CONFIG.read_text())
    settings = config["methods"]["jump-retrain"]
    n_f = 200 if quick else config["params"]["n_f"]
    subject = pinn_convection(10.0, n_f=n_f, device="cpu")
    recipe = reference_recipe(epochs=settings["epochs"], lr=settings["lr"], batch_size=settings["batch_size"])
    request = JumpRetrainRuns(seeds=tuple(settings["seeds"]), step_sizes=tuple(settings["step_sizes"]), recipe=recipe)
    header = {"center": subject.theta0.numpy(), "center_buffers": subject.buffers0.numpy()}
    tasks = [task for _, task in request.tasks(subject, header)]
    log(f"batched training: {len(tasks)} jump-and-retrain runs on {subject.name} (n_f = {n_f})")
    found = {}
    sides = {
        "one at a time": lambda: found.__setitem__("alone", [request.run(subject, header, False, t) for t in tasks]),
        "batched": lambda: found.__setitem__("together", request.run_many(subject, header, False, tasks)),
    }
    best = interleaved_best(sides, repeat=1 if quick else 3)
    worst = max(float(np.nanmax(np.abs(a.arrays["losses"] - b.arrays["losses"]) / np.abs(b.arrays["losses"])))
                for a, b in zip(found["together"], found["alone"]))
    ratio = best["one at a time"] / best["batched"]
    section = Section("batched", "Batched training: jump and retrain on the convection PINN")
    section.text.append(
        f"{len(tasks)} runs ({len(settings['seeds'])} seeds × {len(settings['step_sizes'])} step sizes) of "
        f"{settings['epochs']} full-batch SGD epochs on the convection PINN (beta 10, {n_f} collocation points, "
        f"{subject.dim} parameters), each epoch followed by the loss of every run, as the `cpu` scale of "
        f"benchmarks/pinn_convection.toml runs them: **{ratio:.1f}× faster batched** "
        f"({best['one at a time']:.2f} s one at a time, {best['batched']:.2f} s together; "
        f"`runs_at_once` chose {runs_at_once(subject, recipe, len(tasks))} of {len(tasks)} from memory). "
        f"Largest relative difference between the two sides' losses: {worst:.1e}.")
    section.tables.append(table(["side", "seconds (best)"], [[name, f"{s:.3f}"] for name, s in best.items()]))
    section.targets.append(Target("PINN jump and retrain, batched vs one run at a time (CPU)", ratio, 3.0,
                                  missed_reason="see the section"))
    return section
