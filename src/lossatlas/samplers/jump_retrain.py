"""Jump-and-retrain sampling (Horoi et al. 2022, §3.1): optimizer trajectories around a minimum.

For every seed and step size: a random direction filter-normalized at the minimum (the same
routine as the grids; the seed fixes it and the retraining randomness), a jump to
theta0 + step * v, then ``epochs`` epochs of retraining with the recipe of the minimum's final
phase (reference code: SGD, momentum 0.9, constant lr 0.001, weight decay 1e-4). Recorded: the
parameters and the loss on the full evaluation set in eval mode right after the jump (epoch 0)
and after every epoch (with ``record_test``, on the subject's test split too); a run whose
training diverges keeps its epochs up to the divergence and NaN for the rest (the analyzer counts
and leaves them out). Stored per run under
``samples/jump_retrain/<key>/<seed>_<step>``, parameters compressed; resumable per run.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from .. import memory
from ..batched import or_one_at_a_time, runs_at_once, train_many
from ..directions import random_directions
from ..errors import ConfigError, NonFiniteLossError
from ..memory import Memory
from ..params import Boolean, Instance, Interval, NumberList, param
from ..sampling import Sampler, obtain
from ..store import Part
from ..training import Recipe
from .points import Point

REFERENCE_RECIPE = {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant"}


def reference_recipe(**overrides) -> Recipe:
    """The retraining recipe: the reference code's final phase, with ``overrides``."""
    return Recipe.from_dict({**REFERENCE_RECIPE, **overrides})


@dataclass(frozen=True)
class JumpRetrainRuns(Sampler):
    """Every (seed, step size) run around ``point``: data ``thetas`` (n, dim), ``losses``,
    ``seeds``, ``step_sizes``, ``epochs`` (0 = right after the jump), ``center``; with
    ``record_test`` also ``test_losses``, taken with the same buffers as ``losses``."""

    kind = "jump_retrain"
    point: Point = param(Point(), Instance(Point))
    seeds: tuple = param((0, 1, 2, 3), NumberList(Interval(int, 0), unique=True),
                         "one random direction (and retraining order) per seed")
    step_sizes: tuple = param((0.25, 0.5, 0.75, 1.0), NumberList(Interval(float, 0), unique=True),
                              "jump lengths, in units of the filter-normalized direction")
    recipe: Recipe = param(reference_recipe(), Instance(Recipe))
    include_bn: bool = param(False, Boolean(), "jump along BatchNorm parameters too")
    record_test: bool = param(False, Boolean(), "also record the loss on the subject's test split")

    def own_config(self) -> dict:
        config = {"seeds": [int(s) for s in self.seeds], "step_sizes": [float(s) for s in self.step_sizes],
                  "recipe": self.recipe.to_dict(), "include_bn": self.include_bn}
        if self.record_test:  # only when set: runs stored before the option keep their key
            config["record_test"] = True
        return config

    def check(self, subject):
        super().check(subject)
        if self.record_test:
            check_test_loss(subject)

    def memory(self, subject) -> Memory:
        """Every run records epochs + 1 parameter vectors in the subject's dtype, kept on the host: a
        group's records and their stacked copy (``_jump_runs``), then every run's part read back and
        concatenated (``assemble``); the allocator keeps the group's freed records while the parts
        are read (measured), so four times all records. On the device the training of the runs
        trained together (``group_size``), each with its direction and start, and the evaluation of
        their records."""
        runs = len(self.seeds) * len(self.step_sizes)
        size, together = memory.itemsize(subject), self.group_size(subject, runs)
        training = memory.training(subject, self.recipe).device + memory.vectors(subject, 2, size)
        records = Memory(host=memory.vectors(subject, 4 * runs * (self.recipe.epochs + 1), size),
                         device=together * training, lower="epochs, seeds or step_sizes")
        return records + memory.evaluation(subject, together) + super().memory(subject)

    def work(self, subject) -> dict:
        """Its work (``lossatlas.planning``): every run's epochs, ``group_size`` runs trained at
        once, and the loss (with ``record_test`` the test loss too) after the jump and every epoch:
        the runs' points evaluated together where no BatchNorm statistics differ, else one by one."""
        runs = len(self.seeds) * len(self.step_sizes)
        together = self.group_size(subject, runs)
        records = runs * (self.recipe.epochs + 1)
        together_evaluated = together > 1 and subject.buffers0.numel() == 0
        out = {("epoch", self.recipe, together): -(-runs // together) * self.recipe.epochs,
               ("points", False) if together_evaluated else ("loss",): records}
        if self.record_test:
            out[("evaluate", "test")] = records
        return out

    def prepare(self, subject, inputs):
        return {"center": inputs["point"]["theta"], "center_buffers": inputs["point"]["buffers"]}

    def tasks(self, subject, header):
        # repr: distinct step sizes always get distinct part names (0.5 and 0.5000001 too)
        return [(f"{seed}_{float(step)!r}", (int(seed), float(step)))
                for seed in self.seeds for step in self.step_sizes]

    def run(self, subject, header, progress, task) -> Part:
        on = {"dtype": subject.theta0.dtype, "device": subject.device}
        center = torch.as_tensor(header["center"], **on)
        buffers = torch.as_tensor(header["center_buffers"], **on)
        thetas, losses, test_losses = _jump_run(subject, center, buffers, self.recipe, self.include_bn,
                                                self.record_test, task)
        return self._part(thetas, losses, test_losses)

    def _part(self, thetas, losses, test_losses) -> Part:
        arrays = {"thetas": thetas, "losses": losses}
        if self.record_test:
            arrays["test_losses"] = test_losses
        return Part(arrays)

    def group_size(self, subject, count):
        return runs_at_once(subject, self.recipe, count)

    def run_many(self, subject, header, progress, tasks) -> list[Part]:
        """The runs trained together (``lossatlas.batched``): equal to ``run`` one by one up to
        rounding; each run keeps its own seed, direction and data order."""
        on = {"dtype": subject.theta0.dtype, "device": subject.device}
        center = torch.as_tensor(header["center"], **on)
        buffers = torch.as_tensor(header["center_buffers"], **on)

        def batched():
            runs = _jump_runs(subject, center, buffers, self.recipe, self.include_bn, self.record_test, tasks)
            return [self._part(*run) for run in runs]

        return or_one_at_a_time(subject, batched, lambda: super(JumpRetrainRuns, self).run_many(
            subject, header, progress, tasks))

    def assemble(self, subject, header, parts):
        tasks = self.tasks(subject, header)
        count = self.recipe.epochs + 1
        data = {key: np.concatenate([parts[name].arrays[key] for name, _ in tasks])
                for key in ("thetas", "losses") + (("test_losses",) if self.record_test else ())}
        return {**data,
                "seeds": np.repeat([seed for _, (seed, _) in tasks], count),
                "step_sizes": np.repeat([step for _, (_, step) in tasks], count),
                "epochs": np.tile(np.arange(count), len(tasks)),
                "center": header["center"]}


def jump_and_retrain(store, subject, seeds=(0, 1, 2, 3), step_sizes=(0.25, 0.5, 0.75, 1.0), epochs: int = 40,
                     recipe: dict | None = None, at: str = "minimum", minimum: int = 0, include_bn: bool = False,
                     progress: bool = True):
    """Run (or resume) every (seed, step size) retraining; returns the Sample."""
    request = JumpRetrainRuns(point=Point(at=at, minimum=minimum), seeds=tuple(seeds), step_sizes=tuple(step_sizes),
                              recipe=reference_recipe(**{**(recipe or {}), "epochs": int(epochs)}),
                              include_bn=include_bn)
    return obtain(store, subject, request, progress)


_TEST_LOSS_CHECKED = weakref.WeakSet()  # subjects already evaluated once: the check costs a test-set pass


def check_test_loss(subject) -> None:
    """A test-loss filtration needs a test split that reports a loss (a PINN's reports an error)."""
    if "test" not in subject.splits:
        raise ConfigError(f"{subject.name} has no test split (splits: {', '.join(subject.splits)}); "
                          "jump-and-retrain with loss_split='test' needs one. Use loss_split='train'.")
    if subject in _TEST_LOSS_CHECKED:
        return
    reported = subject.evaluate(subject.theta0, split="test")
    if "loss" not in reported:
        raise ConfigError(f"The test split of {subject.name} reports no loss (only {', '.join(reported)}); "
                          "use loss_split='train'.")
    _TEST_LOSS_CHECKED.add(subject)


def _jump_runs(subject, theta0, buffers0, recipe: Recipe, include_bn: bool, record_test: bool, tasks):
    """Several (seed, step) runs trained as one batch; per run what ``_jump_run`` returns. A run
    whose training diverged has NaN from the epoch it diverged in, as ``_jump_run`` gives it."""
    seeds = [int(seed) for seed, _ in tasks]
    starts = torch.stack([theta0 + step * random_directions(subject, theta0, seed, include_bn)[0]
                          for seed, step in tasks])
    shared = subject.buffers0.numel() == 0  # no BatchNorm statistics: every run is evaluated alike, batched
    thetas, losses, test_losses = [], [], []

    def record(epoch, points, buffers, diverged):
        gone = torch.as_tensor((diverged > 0) & (diverged <= epoch), device=points.device)
        points = torch.where(gone[:, None], torch.full_like(points, float("nan")), points)
        thetas.append(points.cpu())  # kept on the host: K x (epochs + 1) vectors need no device memory
        if shared:
            losses.append(subject.losses(points, buffers[0]))
        else:
            losses.append(np.array([subject.loss(p, b) for p, b in zip(points, buffers)]))
        losses[-1][gone.cpu().numpy()] = np.nan
        if record_test:
            test = np.array([subject.evaluate(p, b, split="test")["loss"] for p, b in zip(points, buffers)])
            test_losses.append(np.where(gone.cpu().numpy(), np.nan, test))

    count = len(tasks)
    record(0, starts.clone(), buffers0.expand(count, -1).clone(), np.zeros(count, dtype=np.int64))
    train_many(subject, starts, recipe, seeds, buffers=buffers0, on_epoch=record)
    points = torch.stack(thetas, dim=1).numpy()  # (runs, epochs + 1, dim)
    loss_rows = np.stack(losses, axis=1)
    test_rows = np.stack(test_losses, axis=1) if record_test else np.empty((count, 0))
    return [(points[k], loss_rows[k], test_rows[k]) for k in range(count)]


def _jump_run(subject, theta0, buffers0, recipe: Recipe, include_bn: bool, record_test: bool, task):
    """One (seed, step) run: parameters and eval-set loss (and test loss) after the jump and
    every epoch."""
    seed, step = task
    direction = random_directions(subject, theta0, seed, include_bn)[0]
    start = theta0 + step * direction
    thetas, losses, test_losses = [], [], []

    def record(epoch, theta, buffers, train_loss):
        thetas.append(theta)
        losses.append(subject.loss(theta, buffers))
        if record_test:
            test_losses.append(subject.evaluate(theta, buffers, split="test")["loss"])

    record(0, start.clone(), buffers0, None)

    try:
        subject.train(start, recipe, seed, buffers=buffers0, on_epoch=record, progress=False)
    except NonFiniteLossError:  # the jump landed where training diverges: a finding, not a failure
        while len(thetas) < recipe.epochs + 1:  # the lost epochs: NaN, counted and left out by the analyzer
            thetas.append(torch.full_like(start, float("nan")))
            losses.append(float("nan"))
            if record_test:
                test_losses.append(float("nan"))
    return torch.stack(thetas).cpu().numpy(), np.array(losses), np.array(test_losses)
