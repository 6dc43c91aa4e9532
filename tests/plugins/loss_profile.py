"""A plugin whose views declare how reports lay them out: one on a 3-D axes with a colour scale
shared across variants, one with a shared y range.

The loss along each coordinate axis through a point, theta + t e_i for t in [-span, span]: a
``PointAnalyzer`` (the point, its request and the finite-loss check are declared there). ``bowl``
is a problem whose variants (``scale``) span different loss ranges.
"""
from __future__ import annotations

import numpy as np
import torch

from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.params import Interval, param
from lossatlas.plots import finite_or_nan, finite_range, metric, no_data
from lossatlas.point_analyzer import PointAnalyzer
from lossatlas.subjects import FunctionSubject


def bowl(scale: float = 1.0) -> FunctionSubject:
    """scale * |t|^2 around (1, -0.5)."""
    return FunctionSubject(lambda t: scale * (t**2).sum(), torch.tensor([1.0, -0.5], dtype=torch.float64),
                           name=f"bowl_{scale:g}")


def loss_range(result) -> tuple[float, float] | None:
    """The colour range of a result: its finite profile losses."""
    return finite_range(result.arrays.get("profiles"))


def draw_profiles(ax, result) -> None:
    """The loss along every axis, one line each."""
    ax.set(xlabel="t", ylabel="loss", title=f"profiles: rise {metric(result, 'largest_rise'):.3g}")
    t, profiles = finite_or_nan(result.arrays.get("t", [])), finite_or_nan(result.arrays.get("profiles", []))
    if profiles.ndim != 2 or profiles.shape[1] != len(t) or not np.isfinite(profiles).any():
        no_data(ax)
        return
    for axis, losses in enumerate(profiles):
        ax.plot(t, losses, lw=1, label=f"axis {axis}")


def draw_ribbon(ax3d, result, limits: tuple | None = None) -> None:
    """The profiles in 3-D (axis, t, loss), coloured by loss on ``limits`` (the panels' shared scale)."""
    ax3d.set(xlabel="axis", ylabel="t", zlabel="loss", title="ribbon")
    t, profiles = finite_or_nan(result.arrays.get("t", [])), finite_or_nan(result.arrays.get("profiles", []))
    if profiles.ndim != 2 or profiles.shape[1] != len(t) or not np.isfinite(profiles).any():
        no_data(ax3d)
        return
    low, high = limits if limits is not None else loss_range(result)
    for axis, losses in enumerate(profiles):
        ax3d.scatter(np.full(len(t), axis), t, losses, c=losses, vmin=low, vmax=high, cmap="viridis", s=6)


class LossProfile(PointAnalyzer):
    name = "loss-profile"
    description = "Loss along each coordinate axis through a point."
    metrics = {
        "largest_rise": measure("highest loss on the axes minus the loss at the point", higher_is_better=False),
        "loss": diagnostic("loss at the point"),
    }
    views = {"profiles": view(draw_profiles, shared="y"),
             "ribbon": view(draw_ribbon, projection="3d", shared="colour", limits_of=loss_range)}
    smoke_params = {"at": "theta0"}

    span: float = param(1.0, Interval(float, 0, None, closed="neither"), "how far along each axis")
    n_points: int = param(9, Interval(int, 3), "points per axis")

    def compute(self, subject, samples):
        theta, buffers = samples["point"]["theta"], samples["point"]["buffers"]
        loss = self.finite_loss(subject, theta, buffers, "a loss profile")
        t = np.linspace(-self.span, self.span, self.n_points)
        steps = np.eye(len(theta))[:, None, :] * t[None, :, None]  # (axis, t, parameter)
        profiles = subject.losses((theta + steps).reshape(-1, len(theta)), buffers).reshape(len(theta), len(t))
        return {"largest_rise": float(np.max(profiles) - loss), "loss": loss}, {"t": t, "profiles": profiles}
