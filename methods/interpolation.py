"""The ``interpolation`` analyzer: loss and accuracy along straight lines in parameter space.

Two lines per minimum, evaluated on the subject's full evaluation set:

* minimum -> another minimum (its ``partner``): the *barrier* of linear mode connectivity
  (Frankle et al. 2020), the highest loss along the line minus the mean of the two end losses;
  0 when the line never rises above its ends, so the two minima lie in one linearly connected
  basin. ``error_barrier`` is the same for the classification error (NaN for regressions).
* initialisation -> minimum (Goodfellow et al. 2015): whether the loss falls monotonically, and
  the height of the largest rise on the way, max over s < t of L(t) - L(s) (Lucas et al. 2021's
  measure of non-monotonicity; 0 for a monotone path).

Models with BatchNorm get their running statistics re-estimated at every point of a line (one
pass over the training data, ``update_bn``): interpolated weights with either end's statistics
give a meaningless loss (Frankle et al. 2020 and Garipov et al. 2018 do the same). The ends are
evaluated the same way, so a line's ends are comparable with its interior.
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import Analyzer, diagnostic, measure
from lossatlas.errors import NonFiniteLossError
from lossatlas.params import Interval, param, same_as
from lossatlas.plots import draw_interpolation
from lossatlas.samplers import LineEnds


def barrier(values: np.ndarray) -> float:
    """Highest value along a line minus the mean of its two ends (Frankle et al. 2020)."""
    return float(np.max(values) - 0.5 * (values[0] + values[-1]))


def largest_rise(values: np.ndarray) -> float:
    """max over s < t of values[t] - values[s] (0 when the values never rise)."""
    running_low = np.minimum.accumulate(values)
    return float(max(0.0, np.max(values[1:] - running_low[:-1]))) if len(values) > 1 else 0.0


class Interpolation(Analyzer):
    name = "interpolation"
    description = ("Loss along straight lines: the barrier between two minima (Frankle et al. 2020) and the "
                   "monotonicity of the path from initialisation (Goodfellow et al. 2015).")
    scope = "minimum"
    metrics = {
        "barrier": measure("highest loss on the line to the partner minimum minus the mean of its end losses "
                           "(Frankle et al. 2020); NaN without a partner", higher_is_better=False),
        "error_barrier": measure("the same for the classification error (NaN for a regression or without a "
                                 "partner)", higher_is_better=False),
        "init_monotonic": measure("1 if the loss never rises on the line from the initialisation, else 0 "
                                  "(Goodfellow et al. 2015)"),
        "init_largest_rise": measure("largest rise of the loss on the line from the initialisation, max over "
                                     "s < t of L(t) - L(s) (Lucas et al. 2021)"),
        "init_loss": diagnostic("loss at the initialisation"),
        "n_evaluations": diagnostic("points evaluated (each with its own BatchNorm statistics where the model "
                                    "has BatchNorm)"),
    }
    views = {"lines": draw_interpolation}
    smoke_params = {"at": "theta0", "n_points": 9}

    at: str = same_as(LineEnds, "at")
    minimum: int = same_as(LineEnds, "minimum")
    partner: int | None = same_as(LineEnds, "partner")
    init_seed: int = same_as(LineEnds, "init_seed")
    n_points: int = param(25, Interval(int, 3), "points per line, ends included (odd: the midpoint is one)")

    def requests(self, subject):
        return {"ends": LineEnds(at=self.at, minimum=self.minimum, partner=self.partner, init_seed=self.init_seed)}

    def compute(self, subject, samples):
        ends = samples["ends"]
        ts = np.linspace(0.0, 1.0, self.n_points)
        start = self._line(subject, ends["init_theta"], ends["theta"], ends["buffers"], ts)
        metrics = {"init_monotonic": float(np.all(np.diff(start["loss"]) <= 0)),
                   "init_largest_rise": largest_rise(start["loss"]), "init_loss": float(start["loss"][0]),
                   "barrier": float("nan"), "error_barrier": float("nan"), "n_evaluations": float(len(ts))}
        arrays = {"t": ts, "init_loss": start["loss"], "init_accuracy": start["accuracy"]}
        if ends["partner_theta"].size:
            across = self._line(subject, ends["theta"], ends["partner_theta"], ends["buffers"], ts)
            metrics.update(barrier=barrier(across["loss"]), n_evaluations=float(2 * len(ts)))
            if np.isfinite(across["accuracy"]).all():
                metrics["error_barrier"] = barrier(1.0 - across["accuracy"])
            arrays.update(partner_loss=across["loss"], partner_accuracy=across["accuracy"])
        return metrics, arrays

    def _line(self, subject, first, last, buffers, ts) -> dict[str, np.ndarray]:
        thetas = (1.0 - ts)[:, None] * first[None, :] + ts[:, None] * last[None, :]
        found = subject.evaluate_many(thetas, buffers, recompute_bn=True)
        if not np.isfinite(found["loss"]).all():
            bad = ts[~np.isfinite(found["loss"])]
            raise NonFiniteLossError(f"The loss of {subject.name!r} is not finite at t = {np.round(bad, 3).tolist()} "
                                     "of an interpolation line: its barrier would be meaningless. Nothing was "
                                     "written; check the model and its minima.")
        return {"loss": found["loss"], "accuracy": found.get("accuracy", np.full(len(ts), np.nan))}
