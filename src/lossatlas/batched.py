"""Many small training runs at once: K independent runs of one subject as one batched computation.

The K parameter vectors are the rows of one (K, dim) leaf; each step evaluates every run's
training loss on its own batch with ``torch.func.vmap`` over ``subject.train_loss`` (modules go
through ``functional_call``, so BatchNorm in training mode normalizes each run by its own batch
and updates its own running statistics, a row of the (K, buffers) tensor), and one optimizer
steps all rows. SGD (momentum, Nesterov, weight decay) and Adam act elementwise, so a row moves
exactly as the run would alone; each run draws its shuffling and augmentation from its own seeded
generator, as ``Subject.train`` does. The result equals K separate ``train`` calls up to the
rounding of batched kernels (tests/test_batched.py, float64).

Batching pays where one run leaves the hardware idle: small models (the PINN, MLPs) on a CPU and
everything small on a GPU. vmap turns convolutions into grouped convolutions, which on a CPU are
slower than a loop (benchmarks/perf), so convolutional models on a CPU, L-BFGS (a line search per
run) and subjects whose loss cannot be vmapped run one at a time (``runs_at_once`` says how many).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from . import devices
from . import inputs as batches
from .batchnorm import running_statistics_by_hand
from .errors import LossatlasError
from .progress import bar as progress_bar
from .training import Recipe, make_optimizer, make_schedule

ManyEpochCallback = Callable[[int, torch.Tensor, torch.Tensor, np.ndarray], None]
_MEMORY_SHARE = 0.25  # of the free memory a group of runs may take


def runs_at_once(subject, recipe: Recipe, wanted: int, vectors_per_run: int = 4) -> int:
    """How many of ``wanted`` runs to train together: 1 where batching does not pay or cannot run,
    else as many as fit in a quarter of the free memory, from a measurement of one run's training
    step (``vectors_per_run`` parameter-sized vectors -- parameters, gradient, two optimizer states
    -- and the activations autograd saves)."""
    if wanted <= 1 or recipe.optimizer == "lbfgs" or os.environ.get("LOSSATLAS_BATCHED_TRAINING", "1") == "0":
        return 1
    if getattr(subject, "_vmap_choice", None) is False or getattr(subject, "_train_vmap_failed", False):
        return 1  # vmap=False on the subject, or its training loss could not be vmapped
    if subject.device.type == "cpu" and not subject._vmap_ok:
        return 1  # convolutions (grouped under vmap) or a loss vmap cannot batch: one at a time is faster
    if any(m.momentum is None for m in getattr(subject, "_bn_modules", [])):
        return 1  # cumulative BatchNorm averages count batches per module: kept to the plain loop
    per_run = bytes_per_run(subject, recipe, vectors_per_run)
    return int(max(1, min(wanted, _free_memory(subject.device) * _MEMORY_SHARE // max(per_run, 1))))


def or_one_at_a_time(subject, batched: Callable[[], list], alone: Callable[[], list],
                     remember: str = "_train_vmap_failed") -> list:
    """``batched()``, or ``alone()`` where the subject's training loss cannot be vmapped (data-
    dependent control flow, an op without a batching rule): remembered for the subject (attribute
    ``remember``), so later groups go straight to one at a time. Running out of memory and
    lossatlas's own errors pass."""
    try:
        return batched()
    except LossatlasError:
        raise
    except (RuntimeError, NotImplementedError, ValueError) as err:
        if "out of memory" in str(err).lower():
            raise
        setattr(subject, remember, True)
        return alone()


def train_many(subject, thetas, recipe: Recipe, seeds, buffers=None, on_epoch: ManyEpochCallback | None = None,
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Train the rows of ``thetas`` (K, dim) together, run k with seed ``seeds[k]`` and buffers
    ``buffers[k]`` (or one buffer vector for all; default: the subject's); returns the final (K, dim) parameters, (K, n)
    buffers, and per run the epoch in which its training loss became non-finite (0: never).

    A diverged run is carried along (its rows turn NaN without touching the others, the optimizer
    being elementwise) and reported, where ``Subject.train`` would raise. ``on_epoch(epoch,
    thetas, buffers, diverged)`` is called after every epoch."""
    start = subject.as_thetas(thetas)
    count = len(start)
    if len(seeds) != count:
        raise ValueError(f"{count} runs need {count} seeds; got {len(seeds)}.")
    param = nn.Parameter(start.clone())
    base = subject.buffers0 if buffers is None else torch.as_tensor(buffers).to(param)
    state = (base.expand(count, -1) if base.ndim == 1 else base).clone()
    optimizer = make_optimizer(recipe, [param])
    schedule = make_schedule(recipe, optimizer)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    diverged = np.zeros(count, dtype=np.int64)
    with running_statistics_by_hand(subject):
        bar = progress_bar(range(1, recipe.epochs + 1), desc=f"{subject.name}: train {count} runs", enabled=progress)
        for epoch in bar:
            bad = torch.zeros(count, dtype=torch.bool, device=param.device)  # read once per epoch: no sync per step
            for steps in zip(*(subject.train_batches(recipe, generator) for generator in generators)):
                optimizer.zero_grad()
                with devices.numerics(recipe.precision, subject.device):
                    losses = run_losses(subject, param, state, steps)
                bad |= ~torch.isfinite(losses.detach())
                with devices.numerics("tf32" if recipe.precision == "tf32" else "float32", subject.device):
                    losses.sum().backward()
                optimizer.step()
            bad = bad.cpu().numpy()
            diverged[bad & (diverged == 0)] = epoch
            schedule.step()
            if on_epoch is not None:
                on_epoch(epoch, param.detach().clone(), state.clone(), diverged.copy())
    return param.detach().clone(), state, diverged


def run_losses(subject, param: torch.Tensor, state: torch.Tensor, steps: tuple) -> torch.Tensor:
    """Every run's training loss at its row of ``param`` (K, dim) on its own batch, as one vmapped
    call; run inside ``running_statistics_by_hand``."""
    first = steps[0]
    if isinstance(first, (torch.Tensor, tuple, list, dict)) and batches.leaves(first):
        stacked = _stack(steps)
        by_hand = getattr(subject, "batched_train_loss", None)  # a subject's own batched loss (the PINN's)
        losses = None if by_hand is None else by_hand(param, state, stacked)
        if losses is not None:
            return losses
        return vmap(subject.train_loss, in_dims=(0, 0, 0), randomness="different")(param, state, stacked)
    # batches that are not data (a function's step counter): every run sees the same
    return vmap(lambda theta, buffers: subject.train_loss(theta, buffers, first), randomness="different")(param, state)


def _stack(steps: tuple):
    first = steps[0]
    if isinstance(first, dict):
        return {key: _stack(tuple(step[key] for step in steps)) for key in first}
    if isinstance(first, (tuple, list)):
        items = [_stack(tuple(step[i] for step in steps)) for i in range(len(first))]
        return type(first)(*items) if hasattr(first, "_fields") else type(first)(items)
    return torch.stack(steps)


def bytes_per_run(subject, recipe: Recipe, vectors: int = 4) -> int:
    """One run's memory: ``vectors`` parameter-sized vectors, buffers, one batch of data, and what
    autograd saves for the backward pass of one training step (measured with saved-tensor hooks
    on the subject's first batch)."""
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    theta = subject.theta0.clone().requires_grad_(True)
    batch = next(iter(subject.train_batches(recipe, torch.Generator().manual_seed(0))))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        subject.train_loss(theta, subject.buffers0.clone(), batch)
    data = sum(t.numel() * t.element_size() for t in batches.leaves(batch) if torch.is_tensor(t)) \
        if not isinstance(batch, int) else 0
    item = subject.theta0.element_size()
    return vectors * subject.dim * item + subject.buffers0.numel() * item + data + saved[0]


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**31

