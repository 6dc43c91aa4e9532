"""Training recipes: which optimizer, schedule and epochs move a parameter vector downhill.

Training always acts on the subject's flat parameter vector (one leaf tensor), so the same
loop serves analytic functions, ResNets and PINNs, and the user's model is never touched.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .params import Boolean, Interval, NumberList, Options, check_known, constraints_of, param, validate_fields

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


