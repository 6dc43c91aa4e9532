"""Training: recipes (which optimizer, schedule and epochs move a parameter vector downhill) and
the loop that runs one.

Training always acts on the subject's flat parameter vector (one leaf tensor), so the same
loop serves analytic functions, ResNets and PINNs, and the user's model is never touched. A
subject supplies one epoch's batches (``train_batches``) and the differentiable loss on one
(``train_loss``); ``train`` does the rest. Many runs at once: ``lossatlas.batched``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import devices
from .errors import NonFiniteLossError
from .params import Boolean, Interval, NumberList, Options, check_known, constraints_of, param, validate_fields
from .progress import bar as progress_bar

EpochCallback = Callable[[int, torch.Tensor, torch.Tensor, float], None]

OPTIMIZERS = ("sgd", "adam", "lbfgs")
SCHEDULES = ("constant", "multistep", "cosine", "cyclic")


@dataclass(frozen=True)
class Recipe:
    """How to train. Epoch = one pass over the training set (modules) or ``steps_per_epoch``
    gradient steps (functions); for L-BFGS one epoch is one ``step`` of at most ``max_iter``
    iterations on the full batch, as in Krishnapriyan et al.'s reference code."""

    optimizer: str = param("sgd", Options(OPTIMIZERS))
    lr: float = param(0.1, Interval(float, 0, None, closed="neither"))
    momentum: float = param(0.9, Interval(float, 0, 1, closed="left"))
    nesterov: bool = param(False, Boolean())
    weight_decay: float = param(0.0, Interval(float, 0))
    epochs: int = param(10, Interval(int, 0))
    batch_size: int | None = param(128, Interval(int, 1, allow_none=True), "None: full batch")
    schedule: str = param("constant", Options(SCHEDULES))
    milestones: tuple[int, ...] = param((), NumberList(Interval(int, 0), min_len=0))
    gamma: float = param(0.1, Interval(float, 0, None, closed="neither"))
    steps_per_epoch: int = param(100, Interval(int, 1))
    max_iter: int = param(20, Interval(int, 1))
    history_size: int = param(50, Interval(int, 1))
    augment: bool = param(False, Boolean())
    cycle_epochs: int = param(2, Interval(int, 1), "cyclic: epochs from the lowest to the highest rate")
    cycle_base: float = param(0.1, Interval(float, 0, 1, closed="right"), "cyclic: lowest rate as a fraction of lr")
    precision: str = param("float32", Options(("float32", "tf32", "bf16")),
                           "training numerics: float32 (TF32 off), tf32, or bf16 autocast; measurements stay float32")

    def __post_init__(self):
        validate_fields(self)
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """Build from a config table; unknown keys are an error that lists the valid ones."""
        check_known("the training recipe", values, [f.name for f in dataclasses.fields(cls)])
        return cls(**values)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        if out["precision"] == "float32":  # the default stays out: recipes stored before it keep their keys
            del out["precision"]
        if self.schedule != "cyclic":  # only the cyclic schedule reads them; other recipes keep their keys
            del out["cycle_epochs"], out["cycle_base"]
        return out


RECIPE_CONSTRAINTS = constraints_of(Recipe)


def make_optimizer(recipe: Recipe, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.LBFGS(
        params, lr=recipe.lr, max_iter=recipe.max_iter, history_size=recipe.history_size,
        line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12,
    )


def make_schedule(recipe: Recipe, optimizer: torch.optim.Optimizer):
    """A per-epoch learning-rate schedule (stepped once after every epoch)."""
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones), recipe.gamma)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(recipe.epochs, 1))
    if recipe.schedule == "cyclic":  # Smith 2017's triangular policy, one step per epoch (Barannikov et al. 2025)
        return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=recipe.cycle_base * recipe.lr, max_lr=recipe.lr,
                                                 step_size_up=recipe.cycle_epochs, cycle_momentum=False)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def train(subject, theta, recipe: Recipe, seed: int, buffers=None, on_epoch: EpochCallback | None = None,
          progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``subject`` from ``theta`` with ``recipe``; ``seed`` fixes shuffling and augmentation.
    Returns the final (parameters, buffers).

    Calls ``on_epoch(epoch, theta, buffers, train_loss)`` after every epoch. Raises
    NonFiniteLossError (naming the epoch) if training diverges.
    """
    param = nn.Parameter(subject.as_theta(theta).clone())
    state = (subject.buffers0 if buffers is None else torch.as_tensor(buffers)).clone().to(param)
    optimizer = make_optimizer(recipe, [param])
    schedule = make_schedule(recipe, optimizer)
    generator = torch.Generator().manual_seed(int(seed))
    bar = progress_bar(range(1, recipe.epochs + 1), desc=f"{subject.name}: train", enabled=progress)
    for epoch in bar:
        total, count = 0.0, 0
        for batch in subject.train_batches(recipe, generator):

            def closure(batch=batch):
                optimizer.zero_grad()
                with devices.numerics(recipe.precision, subject.device):
                    value = subject.train_loss(param, state, batch)
                with devices.numerics("tf32" if recipe.precision == "tf32" else "float32", subject.device):
                    value.backward()
                return value

            value = float(optimizer.step(closure).detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"Training {subject.name} diverged: loss {value} in epoch {epoch} "
                    f"(recipe {recipe.to_dict()}). Lower the learning rate."
                )
            total, count = total + value, count + 1
        schedule.step()
        bar.set_postfix(loss=f"{total / count:.4g}")
        if on_epoch is not None:
            on_epoch(epoch, param.detach().clone(), state.clone(), total / count)
    return param.detach().clone(), state


def augment_images(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip (the standard CIFAR recipe)."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    device = images.device  # offsets drawn on the CPU (one augmentation per seed on every device), applied there
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    rows = (dy[:, None] + torch.arange(height, device=device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device)[None, :])
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[batch, channel, rows, cols]
