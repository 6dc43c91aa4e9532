"""Jump-and-retrain sampling (seed 004, Horoi et al., §3.1): optimizer trajectories around a minimum.

For every seed and step size: a random direction filter-normalized at the minimum (the same
routine as the grids; the seed fixes it and the retraining randomness), a jump to
theta0 + step * v, then ``epochs`` epochs of retraining with the recipe of the minimum's final
phase (reference code: SGD, momentum 0.9, constant lr 0.001, weight decay 1e-4). Recorded: the
parameters and the loss on the full evaluation set in eval mode right after the jump (epoch 0)
and after every epoch; a run whose training diverges keeps its epochs up to the divergence and
NaN for the rest (the analyzer counts and leaves them out). Stored per run under ``samples/jump_retrain/<key>/<seed>_<step>``,
parameters chunked and compressed; resumable per run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import executor
from ..directions import random_directions
from ..errors import ConfigError, NonFiniteLossError
from ..progress import bar as progress_bar
from ..provenance import config_key
from ..training import Recipe
from .points import point_of

REFERENCE_RECIPE = {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant"}


@dataclass
class Trajectories:
    thetas: np.ndarray  # (n, dim): every run's epochs 0..N, runs in (seed, step) order
    losses: np.ndarray  # (n,)
    seeds: np.ndarray  # (n,) the run's seed
    steps: np.ndarray  # (n,) the run's step size
    epochs: np.ndarray  # (n,) 0 = right after the jump
    center: np.ndarray


def jump_and_retrain(store, subject, seeds=(0, 1, 2, 3), steps=(0.25, 0.5, 0.75, 1.0), epochs: int = 40,
                     recipe: dict | None = None, center: str = "minimum", minimum: int = 0,
                     include_bn: bool = False, progress: bool = True) -> Trajectories:
    """Run (or resume) every (seed, step) retraining and return all recorded points."""
    from . import register

    if not seeds or not steps or epochs < 1:
        raise ConfigError("jump_and_retrain needs at least one seed, one step size and one epoch.")
    recipe = Recipe.from_dict({**REFERENCE_RECIPE, **(recipe or {}), "epochs": int(epochs)})
    config = {"seeds": [int(s) for s in seeds], "steps": [float(s) for s in steps], "epochs": int(epochs),
              "recipe": recipe.to_dict(), "center": center, "minimum": int(minimum), "include_bn": bool(include_bn)}
    register(store, subject)
    theta0, buffers0 = (torch.as_tensor(a, dtype=subject.theta0.dtype) for a in point_of(store, subject, center, minimum))
    root = store.sample_node(subject.name, "jump_retrain", config_key(config), config)
    if "center" not in root:
        store.write_array(root, "center", theta0.numpy())
    runs = [(seed, step) for seed in config["seeds"] for step in config["steps"]]
    todo = [run for run in runs if not store.finished(f"{root.name}/{_run_name(*run)}")]
    bar = progress_bar(total=len(todo), desc=f"{subject.name}: jump & retrain", enabled=progress)
    shared = (subject, theta0, buffers0, recipe, bool(include_bn))
    for index, (thetas, losses) in executor.current().map(_jump_run, todo, shared=shared):
        seed, step = todo[index]
        name = _run_name(seed, step)
        if name in root:
            del root[name]
        node = store.node(f"{root.name}/{name}", "run", seed=seed, step=step, complete=False)
        node.create_dataset("thetas", data=thetas, chunks=(1, thetas.shape[1]), compression="gzip", shuffle=True)
        store.write_array(node, "losses", losses)
        node.attrs["complete"] = True
        store.flush()
        bar.update(1)
    bar.close()
    parts = [root[_run_name(seed, step)] for seed, step in runs]
    count = epochs + 1
    return Trajectories(
        thetas=np.concatenate([p["thetas"][()] for p in parts]),
        losses=np.concatenate([p["losses"][()] for p in parts]),
        seeds=np.repeat([seed for seed, _ in runs], count),
        steps=np.repeat([step for _, step in runs], count),
        epochs=np.tile(np.arange(count), len(runs)),
        center=root["center"][()],
    )


def _jump_run(subject, theta0, buffers0, recipe: Recipe, include_bn: bool, task) -> tuple[np.ndarray, np.ndarray]:
    """One (seed, step) run: parameters and eval-set loss after the jump and every epoch."""
    seed, step = task
    direction = random_directions(subject, theta0, seed, include_bn)[0]
    start = theta0 + step * direction
    thetas, losses = [start.clone()], [subject.loss(start, buffers0)]

    def record(epoch, theta, buffers, train_loss):
        thetas.append(theta)
        losses.append(subject.loss(theta, buffers))

    try:
        subject.train(start, recipe, seed, buffers=buffers0, on_epoch=record, progress=False)
    except NonFiniteLossError:  # the jump landed where training diverges: a finding, not a failure
        while len(thetas) < recipe.epochs + 1:  # the lost epochs: NaN, counted and left out by the analyzer
            thetas.append(torch.full_like(start, float("nan")))
            losses.append(float("nan"))
    return torch.stack(thetas).numpy(), np.array(losses)


def _run_name(seed: int, step: float) -> str:
    return f"{seed}_{step:g}"
