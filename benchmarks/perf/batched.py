"""Batched training of many small runs: jump and retrain on the convection PINN at the `cpu` scale of
benchmarks/pinn_convection.toml, the runs trained one at a time vs together (the target: at
least 3x on a CPU); and the PINN's Garipov curves of a barcode, 6 pairs (4 minima, as at `paper`
scale) with the `cpu` scale's curve settings, one at a time vs together.

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
from lossatlas.samplers.minima import GivenMinima
from lossatlas.samplers.paths import Paths

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
    best, worst, ratio = _side_by_side(request, subject, header, tasks, quick)
    section = Section("batched", "Batched training on the convection PINN: jump and retrain, barcode curves")
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
    _curves(section, config, subject, quick)
    return section


def _curves(section: Section, config: dict, subject, quick: bool) -> None:
    """The barcode's Garipov curves of one PINN, trained one pair at a time vs all pairs together."""
    settings = config["methods"]["loss-barcode"]
    generator = np.random.default_rng(0)  # stand-ins for 4 minima: the cost does not depend on where they lie
    minima = subject.theta0.numpy() + 0.1 * generator.standard_normal((4, subject.dim))
    request = Paths(minima=GivenMinima(vectors=tuple(map(tuple, minima))), path_kind="polychain",
                    curve_epochs=1 if quick else settings["curve_epochs"], curve_lr=settings["curve_lr"],
                    batch_size=settings["batch_size"], n_eval=settings["n_eval"])
    header = request.prepare(subject, {"minima": {"minima": minima}})
    tasks = [task for _, task in request.tasks(subject, header)]
    log(f"batched training: {len(tasks)} barcode curves on {subject.name}")
    best, worst, ratio = _side_by_side(request, subject, header, tasks, quick)
    section.text.append(
        f"Barcode curves: {len(tasks)} polychain curves (the pairs of 4 stand-in minima -- theta0 plus seeded "
        f"noise, as the cost does not depend on where they lie -- as many as at `paper` scale; `cpu` scale trains "
        f"2 minima, one pair) of {request.curve_epochs} epochs x {request.batch_size}-point batches, then "
        f"each evaluated at {request.n_eval} points: **{ratio:.1f}× faster batched** "
        f"({best['one at a time']:.2f} s one pair at a time, {best['batched']:.2f} s together). Largest relative "
        f"difference between the sides' path losses: {worst:.1e}. No target in the issue; recorded.")
    section.tables.append(table(["curves: side", "seconds (best)"],
                                [[name, f"{s:.3f}"] for name, s in best.items()]))


def _side_by_side(request, subject, header, tasks, quick: bool) -> tuple[dict[str, float], float, float]:
    """The sampler's ``run`` per task vs ``run_many`` over all tasks, taking turns: best seconds per
    side, the largest relative difference between their losses, and the speed-up of batching."""
    found = {}
    sides = {
        "one at a time": lambda: found.__setitem__("alone", [request.run(subject, header, False, t) for t in tasks]),
        "batched": lambda: found.__setitem__("together", request.run_many(subject, header, False, tasks)),
    }
    best = interleaved_best(sides, repeat=1 if quick else 3)
    worst = max(float(np.nanmax(np.abs(a.arrays["losses"] - b.arrays["losses"]) / np.abs(b.arrays["losses"])))
                for a, b in zip(found["together"], found["alone"]))
    return best, worst, best["one at a time"] / best["batched"]
