"""Training recipes: which optimizer, schedule and epochs move a parameter vector downhill.

Training always acts on the subject's flat parameter vector (one leaf tensor), so the same
loop serves analytic functions, ResNets and PINNs, and the user's model is never touched.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .params import check_known

OPTIMIZERS = ("sgd", "adam", "lbfgs")
SCHEDULES = ("constant", "multistep", "cosine")


@dataclass(frozen=True)
class Recipe:
    """How to train. Epoch = one pass over the training set (modules) or ``steps_per_epoch``
    gradient steps (functions); for L-BFGS one epoch is one ``step`` of at most ``max_iter``
    iterations on the full batch, as in Krishnapriyan et al.'s reference code."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int | None = 128
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    steps_per_epoch: int = 100
    max_iter: int = 20
    history_size: int = 50
    augment: bool = False

    def __post_init__(self):
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        _check(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", self.schedule)
        number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
        integer = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
        _check(number(self.lr) and self.lr > 0, "lr", "a float in (0, inf)", self.lr)
        _check(number(self.momentum) and 0 <= self.momentum < 1, "momentum", "a float in [0, 1)", self.momentum)
        _check(number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a float in [0, inf)",
               self.weight_decay)
        _check(number(self.gamma) and self.gamma > 0, "gamma", "a float in (0, inf)", self.gamma)
        _check(integer(self.epochs) and self.epochs >= 0, "epochs", "an int in [0, inf)", self.epochs)
        _check(
            self.batch_size is None or (integer(self.batch_size) and self.batch_size >= 1),
            "batch_size", "an int in [1, inf) or None (full batch)", self.batch_size,
        )
        _check(integer(self.steps_per_epoch) and self.steps_per_epoch >= 1, "steps_per_epoch", "an int in [1, inf)",
               self.steps_per_epoch)
        _check(integer(self.max_iter) and self.max_iter >= 1, "max_iter", "an int in [1, inf)", self.max_iter)
        _check(integer(self.history_size) and self.history_size >= 1, "history_size", "an int in [1, inf)",
               self.history_size)
        _check(isinstance(self.nesterov, bool), "nesterov", "true or false", self.nesterov)
        _check(isinstance(self.augment, bool), "augment", "true or false", self.augment)
        _check(isinstance(self.milestones, (list, tuple)) and all(integer(m) for m in self.milestones),
               "milestones", "a list of ints", self.milestones)
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """Build from a config table; unknown keys are an error that lists the valid ones."""
        check_known("the training recipe", values, [f.name for f in dataclasses.fields(cls)])
        return cls(**values)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out


def _check(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        raise ConfigError(f"The {name!r} parameter of Recipe must be {expected}. Got {got!r}.")


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
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


