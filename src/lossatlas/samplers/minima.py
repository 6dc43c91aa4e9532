"""Minima samplers: trained minima of a model, gradient-descent minima of a function, stored or
explicit minima. Each gives ``data["minima"]`` (K, dim), so any analyzer can join, compare or
look at minima whatever their source."""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import devices, memory
from ..batched import or_one_at_a_time, runs_at_once, train_many
from ..errors import ConfigError, DataError, NonFiniteLossError, StoreError
from ..memory import Memory
from ..params import Boolean, Instance, Interval, NumberList, Vectors, param
from ..provenance import digest
from ..sampling import Request, Sample, Sampler, obtain
from ..store import Minimum, Part, Store, minimum_part
from ..training import Recipe
from .points import stored_minima


@dataclass(frozen=True)
class TrainedMinima(Sampler):
    """Minimum ``i`` is trained from ``subject.init_theta(seeds[i])`` with ``recipe`` and the same
    seed for batch order and augmentation; stored under ``minima/<i>`` with its metrics on every
    split ("eval" = the landscape's own data, "test" = held-out data or test error). A stored
    minimum trained with another recipe or seed is an error (nothing is overwritten).
    ``record_trajectory``: the parameters at the initialisation and after every epoch are stored
    with the minimum (for PCA directions, Li et al. 2018 §7)."""

    kind = "minima"
    encoding = "minima"
    part_encoding = "minimum"
    part_skip = ("trajectory",)  # tens of MB per minimum; read on its own (Store.trajectory)
    recipe: Recipe = param(Recipe(), Instance(Recipe))
    seeds: tuple = param((0,), NumberList(Interval(int, 0)))
    record_trajectory: bool = param(False, Boolean())

    def own_config(self) -> dict:
        trajectory = {"trajectory": True} if self.record_trajectory else {}  # absent: earlier stores keep their keys
        return {"recipe": self.recipe.to_dict(), "seeds": [int(s) for s in self.seeds], **trajectory}

    def path(self, subject_name: str, key: str) -> str:
        return f"subjects/{subject_name}/minima"

    def check_stored(self, store: Store, path: str) -> None:
        wanted = self.recipe.to_dict()
        stored = {m.index: m for m in store.minima(path.split("/")[1])}
        for index, seed in enumerate(self.seeds):
            minimum = stored.get(index)
            if minimum is not None and minimum.recipe.get("source") == "checkpoint":
                raise StoreError(
                    f"Minimum {index} of {path.split('/')[1]!r} in {store.path} is a checkpoint added with "
                    "add_minimum, not a trained minimum; training would take the same slots. Analyze the added "
                    "minima by index (minimum=..., minima=...), or train under another subject name or store.")
            if minimum is not None and (minimum.recipe != wanted or minimum.seed != seed):
                raise StoreError(
                    f"Minimum {index} of {path.split('/')[1]!r} in {store.path} was trained with seed {minimum.seed} "
                    f"and recipe {minimum.recipe}; asked for seed {seed} and recipe {wanted}. "
                    "Use another store or subject name to keep both."
                )
            if minimum is not None and self.record_trajectory and not store.has_trajectory(path.split("/")[1], index):
                raise StoreError(
                    f"Minimum {index} of {path.split('/')[1]!r} in {store.path} was trained without recording its "
                    "trajectory, which PCA directions need (Li et al. 2018 §7). Train into another store or under "
                    "another subject name to record it."
                )

    def work(self, subject) -> dict:
        """Its work (``lossatlas.planning``): every seed's epochs, ``group_size`` runs trained at
        once, then each minimum evaluated on every split."""
        runs = len(self.seeds)
        together = self.group_size(subject, runs)
        return {("epoch", self.recipe, together): -(-runs // together) * self.recipe.epochs,
                **{("evaluate", split): runs for split in subject.splits}}

    def memory(self, subject) -> Memory:
        """The training of the runs trained together (``memory.training``), and with
        ``record_trajectory`` every run's parameters after every epoch, kept on the host."""
        runs = len(self.seeds)
        recorded = memory.vectors(subject, runs * (self.recipe.epochs + 1), memory.itemsize(subject)) \
            if self.record_trajectory else 0
        training = memory.training(subject, self.recipe)
        return Memory(host=recorded, device=self.group_size(subject, runs) * training.device, lower="seeds")

    def tasks(self, subject, header):
        return [(f"{index:03d}", (index, int(seed))) for index, seed in enumerate(self.seeds)]

    def run(self, subject, header, progress, task) -> Part:
        index, seed = task
        start = time.perf_counter()
        theta, buffers = subject.init_theta(seed)
        path = [theta.cpu().numpy()] if self.record_trajectory else None
        record = (lambda epoch, point, state, loss: path.append(point.cpu().numpy())) if path is not None else None
        theta, buffers = subject.train(theta, self.recipe, seed, buffers=buffers, on_epoch=record, progress=progress)
        metrics = minimum_metrics(subject, theta, buffers, f"Minimum {index} of {subject.name!r} (seed {seed})")
        return minimum_part(Minimum(index, theta.cpu().numpy(), buffers.cpu().numpy(), seed, self.recipe.to_dict(),
                                    metrics, time.perf_counter() - start,
                                    devices.runtime(subject.device, subject.theta0.dtype, self.recipe.precision),
                                    None if path is None else np.stack(path)))

    def group_size(self, subject, count):
        return runs_at_once(subject, self.recipe, count)

    def run_many(self, subject, header, progress, tasks) -> list:
        """The seeds' minima trained together (``lossatlas.batched``), each as ``run`` would train it
        alone (to rounding); the group's wall time is shared out evenly. A seed whose training
        diverged gives its error in place of a part: the driver stores the others, then raises it."""
        return or_one_at_a_time(subject, lambda: self._train_together(subject, progress, tasks),
                                lambda: super(TrainedMinima, self).run_many(subject, header, progress, tasks))

    def _train_together(self, subject, progress, tasks) -> list:
        start = time.perf_counter()
        seeds = [seed for _, seed in tasks]
        starts = [subject.init_theta(seed) for seed in seeds]
        paths = [torch.stack([t for t, _ in starts]).cpu().numpy()] if self.record_trajectory else None
        record = (lambda epoch, points, states, bad: paths.append(points.cpu().numpy())) if paths is not None else None
        thetas, buffers, diverged = train_many(subject, torch.stack([t for t, _ in starts]), self.recipe, seeds,
                                               buffers=torch.stack([b for _, b in starts]), on_epoch=record,
                                               progress=progress)
        share = (time.perf_counter() - start) / len(tasks)
        runtime = devices.runtime(subject.device, subject.theta0.dtype, self.recipe.precision)
        parts = []
        for (index, seed), theta, state, epoch in zip(tasks, thetas, buffers, diverged):
            try:
                if epoch:
                    raise NonFiniteLossError(f"Training {subject.name} (minimum {index}, seed {seed}) diverged: a "
                                             f"non-finite loss in epoch {epoch} (recipe {self.recipe.to_dict()}). "
                                             "Lower the learning rate.")
                found = minimum_metrics(subject, theta, state, f"Minimum {index} of {subject.name!r} (seed {seed})")
                trajectory = None if paths is None else np.stack([snapshot[len(parts)] for snapshot in paths])
                parts.append(minimum_part(Minimum(index, theta.cpu().numpy(), state.cpu().numpy(), seed,
                                                  self.recipe.to_dict(), found, share, runtime, trajectory)))
            except NonFiniteLossError as err:
                parts.append(err)
        return parts

    def assemble(self, subject, header, parts):
        ordered = [parts[name] for name, _ in self.tasks(subject, header)]
        return {"minima": np.stack([p.arrays["theta"] for p in ordered]),
                "buffers": np.stack([p.arrays["buffers"] for p in ordered]),
                "seeds": np.array([int(p.attrs["seed"]) for p in ordered])}


def train_minima(store: Store, subject, recipe: Recipe, seeds=(0,), progress: bool = True,
                 record_trajectory: bool = False) -> list[Minimum]:
    """Train (or reuse) the minima of ``subject`` for ``seeds``; returns them as stored.
    ``record_trajectory``: store each run's parameters at every epoch (``Store.trajectory``)."""
    obtain(store, subject, TrainedMinima(recipe=recipe, seeds=tuple(int(s) for s in seeds),
                                         record_trajectory=record_trajectory), progress)
    stored = {m.index: m for m in store.minima(subject.name)}
    return [stored[index] for index in range(len(seeds))]


def minimum_metrics(subject, theta, buffers, what: str) -> dict[str, float]:
    """A minimum's metrics on every split ("<split>_<metric>"); a non-finite evaluation loss is an
    error naming ``what``."""
    metrics = {f"{split}_{key}": value for split in subject.splits
               for key, value in subject.evaluate(theta, buffers, split).items()}
    if not math.isfinite(metrics["eval_loss"]):
        raise NonFiniteLossError(f"{what} has loss {metrics['eval_loss']}.")
    return metrics


BN_MISMATCH = 2.0  # stored statistics giving more than twice the re-estimated loss (+ 0.1) are suspect


def add_minimum(store: Store, subject, checkpoint, buffers=None, index: int | None = None,
                update_bn: bool = False) -> Minimum:
    """Store a model you trained yourself as minimum ``index`` (default: the next free one) of
    ``subject``, so that every analyzer can run at it (``minimum=index``) and the barcode can join
    it to others. ``checkpoint``: a ``state_dict`` of the subject's model (parameters and floating
    buffers by name) or a flat parameter vector of length ``subject.dim`` (buffers: ``buffers`` or
    the subject's own), or the path of a file holding one (``torch.save``; read with
    ``weights_only=True``). Its metrics are evaluated on every split, as for trained minima.

    BatchNorm: every analyzer evaluates in eval mode with the minimum's running statistics. A
    checkpoint's statistics can belong to other data or be stale (a ResNet-18 checkpoint evaluated
    to loss 31 with them and 0.0004 with re-estimated ones, and its top Hessian eigenvalue was
    12191 instead of 20.2): when the stored statistics give more than twice the loss (+ 0.1) of
    statistics re-estimated on the training data, a warning says so. ``update_bn=True`` stores the
    re-estimated statistics instead (Garipov et al.'s ``update_bn``). The minimum's recipe records
    which were stored (``bn_statistics``: "checkpoint" or "re-estimated") and both losses."""
    theta, buffers = _checkpoint_vectors(subject, checkpoint, buffers)
    store.register(subject)
    stored = stored_minima(store, subject)
    index = (max(stored, default=-1) + 1) if index is None else int(index)
    if index < 0:
        raise ConfigError(f"index must be >= 0; got {index}.")
    if index in stored:
        raise StoreError(f"{store.path} already holds minimum {index} of {subject.name!r}; give another index (the "
                         f"next free one is {max(stored) + 1}) or use another store.")
    recipe = {"source": "checkpoint"}
    if subject.has_batchnorm:
        fresh = subject.update_bn(theta)
        given_loss, fresh_loss = subject.loss(theta, buffers), subject.loss(theta, fresh)
        recipe.update(bn_statistics="re-estimated" if update_bn else "checkpoint",
                      loss_with_checkpoint_bn=given_loss, loss_with_reestimated_bn=fresh_loss)
        if update_bn:
            buffers = fresh
        elif not math.isfinite(given_loss) or given_loss > BN_MISMATCH * fresh_loss + 0.1:
            warnings.warn(f"The checkpoint's BatchNorm statistics give {subject.name!r} loss {given_loss:.4g}; "
                          f"statistics re-estimated on its training data give {fresh_loss:.4g}. Every analyzer uses "
                          "the stored ones: if they belong to other data or are stale, pass update_bn=True.",
                          stacklevel=2)
    metrics = minimum_metrics(subject, theta, buffers, f"The checkpoint on {subject.name!r} (nothing stored)")
    minimum = Minimum(index, theta.cpu().numpy(), buffers.cpu().numpy(), -1, recipe, metrics,
                      runtime=devices.runtime(subject.device, subject.theta0.dtype))
    store.write_minimum(subject.name, minimum)
    return minimum


def _checkpoint_vectors(subject, checkpoint, buffers):
    """(theta, buffers) of a state_dict, a flat vector or a file holding one, checked against the
    subject's layout."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = _load_checkpoint(checkpoint)
    if isinstance(checkpoint, dict):
        if subject.param_layout is None:
            raise ConfigError(f"{subject.name} is a function of a flat vector: give the checkpoint as a vector.")
        frozen = getattr(subject, "frozen", {})
        needed = [name for name, _, _ in subject.param_layout + subject.buffer_layout]
        missing = [name for name in needed if name not in checkpoint]
        if missing:
            raise ConfigError(f"The state_dict lacks {missing[:5]}{' ...' if len(missing) > 5 else ''} of "
                              f"{subject.name}'s model; it has {sorted(checkpoint)[:5]} ...")
        model = getattr(subject, "model", None)  # its integer buffers (num_batches_tracked) are no vector's part
        known = set(needed) | set(frozen) | (set(model.state_dict()) if model is not None else set())
        extra = sorted(str(name) for name in checkpoint if name not in known)
        if extra:
            raise ConfigError(f"The state_dict has {extra[:5]}{' ...' if len(extra) > 5 else ''}, which "
                              f"{subject.name}'s model does not have: a checkpoint of another model (or saved with a "
                              "wrapper's prefix such as 'module.')?")
        for name, value in frozen.items():
            if name in checkpoint and not torch.equal(torch.as_tensor(checkpoint[name]).to(value), value):
                raise ConfigError(f"The state_dict changes the frozen parameter {name!r}, which is part of what the "
                                  f"subject {subject.name!r} is: build a subject from this checkpoint instead.")

        def flat(layout):
            pieces = []
            for name, shape, numel in layout:
                tensor = torch.as_tensor(checkpoint[name])
                if tensor.numel() != numel:
                    raise ConfigError(f"The state_dict's {name!r} has shape {tuple(tensor.shape)}; the model's is "
                                      f"{tuple(shape)}.")
                pieces.append(tensor.reshape(-1).to(subject.theta0))
            return torch.cat(pieces) if pieces else subject.buffers0.new_empty(0)

        return subject.as_theta(flat(subject.param_layout)), flat(subject.buffer_layout)
    theta = subject.as_theta(checkpoint.detach().cpu() if torch.is_tensor(checkpoint) else checkpoint)
    return theta, subject.buffers_at(theta, buffers)


def _load_checkpoint(path) -> dict | torch.Tensor:
    """A state_dict or a flat vector saved with torch.save, read with ``weights_only`` (a
    pickle of other objects could run code)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- missing, unreadable, not a torch file, or holding other objects
        raise DataError(f"The checkpoint {path} could not be loaded (is it a file torch.save wrote?): "
                        f"{type(err).__name__}: {' '.join(str(err).split())[:300]}") from err
    if torch.is_tensor(loaded) or (isinstance(loaded, dict) and all(torch.is_tensor(v) for v in loaded.values())):
        return loaded
    keys = f" with keys {sorted(map(str, loaded))[:8]}" if isinstance(loaded, dict) else ""
    raise DataError(f"The checkpoint {path} holds a {type(loaded).__name__}{keys}, not a state_dict or a flat "
                    "parameter vector: load it yourself and pass the model's state_dict.")


@dataclass(frozen=True)
class DescentMinima(Sampler):
    """Minima of a plain function: gradient descent from ``n_starts`` seeded uniform starts in
    ``bounds`` (default theta0 +- 1), all starts at once; ends closer than 1e-4 (relative to the
    box) are one minimum; sorted by loss."""

    kind = "descent_minima"
    n_starts: int = param(20, Interval(int, 1))
    bounds: tuple | None = param(None, Vectors(), "(low, high) per parameter; None: theta0 +- 1")
    gd_lr: float = param(0.01, Interval(float, 0, None, closed="neither"))
    gd_steps: int = param(2000, Interval(int, 1))
    seed: int = param(0, Interval(int, 0))

    def check(self, subject):
        if self.bounds is None:
            return
        bounds = np.array(self.bounds, dtype=float)
        if bounds.shape != (subject.dim, 2) or np.any(bounds[:, 0] >= bounds[:, 1]):
            raise ConfigError(f"bounds must be {subject.dim} pairs (low, high) with low < high; got {self.bounds!r}.")

    def work(self, subject) -> dict:
        """Its work (``lossatlas.planning``): gd_steps batched gradients at the starts, then their
        losses."""
        return {("gradients", self.n_starts): self.gd_steps, ("points", False): self.n_starts}

    def prepare(self, subject, inputs):
        theta0 = subject.theta0.cpu().numpy()
        bounds = np.stack([theta0 - 1, theta0 + 1], 1) if self.bounds is None else np.array(self.bounds, dtype=float)
        return {"bounds": bounds}

    def tasks(self, subject, header):
        return [("minima", None)]

    def run(self, subject, header, progress, task) -> Part:
        bounds = header["bounds"]
        starts = np.random.default_rng(self.seed).uniform(bounds[:, 0], bounds[:, 1], size=(self.n_starts, subject.dim))
        points = subject.as_thetas(starts)
        for _ in range(self.gd_steps):  # plain gradient descent, all starts at once
            points = points - self.gd_lr * subject.grads(points)
        ends = [p for p in points.cpu().numpy() if np.all(np.isfinite(p))]
        ends = [p for p, loss in zip(ends, subject.losses(np.array(ends)) if ends else []) if np.isfinite(loss)]
        if not ends:
            raise ConfigError(f"Gradient descent diverged from every start (gd_lr={self.gd_lr}); lower gd_lr.")
        radius = 1e-4 * float(np.max(bounds[:, 1] - bounds[:, 0]))
        unique: list[np.ndarray] = []
        for end in ends:
            if all(np.linalg.norm(end - u) > radius for u in unique):
                unique.append(end)
        return Part({"minima": np.stack(unique)})

    def assemble(self, subject, header, parts):
        return {"minima": parts["minima"].arrays["minima"]}


@dataclass(frozen=True)
class StoredMinima(Request):
    """The first ``n`` trained minima in the store (train them first); fewer than ``at_least`` is an error."""

    kind = "stored_minima"
    n: int = param(4, Interval(int, 1))
    at_least: int = param(1, Interval(int, 1))

    def minima_needed(self) -> int:
        return self.at_least

    def read(self, store, subject, inputs) -> Sample:
        stored = store.minima(subject.name)[: self.n] if subject.name in store.subjects() else []
        if len(stored) < self.at_least:
            raise StoreError(f"Needs at least {self.at_least} minima of {subject.name!r}; {store.path} holds "
                             f"{len(stored)}. Train them first (lossatlas.train_minima or a config's [minima]).")
        minima = np.stack([m.theta for m in stored])
        return Sample(self.kind, "", {"n": self.n, "sha1": digest(minima)}, {"minima": minima})


@dataclass(frozen=True)
class GivenMinima(Request):
    """Explicit parameter vectors, one per minimum."""

    kind = "given_minima"
    vectors: tuple = param((), Vectors(allow_none=False))

    def check(self, subject):
        lengths = sorted({np.size(m) for m in self.vectors})
        if lengths != [subject.dim]:
            raise ConfigError(f"minima must be vectors of length {subject.dim}; got length(s) {lengths}.")

    def read(self, store, subject, inputs) -> Sample:
        minima = np.asarray(self.vectors, dtype=float).reshape(len(self.vectors), -1)
        return Sample(self.kind, "", {"sha1": digest(minima)}, {"minima": minima})
