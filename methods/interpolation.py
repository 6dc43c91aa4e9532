"""The ``interpolation`` analyzer: loss and accuracy along straight lines in parameter space.

Two lines per minimum, evaluated on the subject's full evaluation set:

* minimum -> another minimum (its ``partner``): the *barrier* of linear mode connectivity
  (Frankle et al. 2020), the highest loss along the line minus the mean of the two end losses;
  0 when the line never rises above its ends, so the two minima lie in one linearly connected
  basin. ``error_barrier`` is the same for the classification error (NaN for regressions).
* initialisation -> minimum (Goodfellow et al. 2015): whether the loss falls monotonically, and
  the height of the largest rise on the way, max over s < t of L(t) - L(s) (Lucas et al. 2021's
  measure of non-monotonicity; 0 for a monotone path). A bump narrower than the grid's spacing
  falls between its points, so the line is refined where a rise can hide: the intervals next to
  the three local maxima that rise most, and the lows before them, are halved, round after round, until the
  largest rise changes by less than ``rise_rtol`` (relative) or ``refine`` rounds are spent;
  ``init_rise_change`` says by how much the last round moved it.

Models with BatchNorm get their running statistics re-estimated at every point of a line (one
pass over the training data, ``update_bn``): interpolated weights with either end's statistics
give a meaningless loss (Frankle et al. 2020 and Garipov et al. 2018 do the same). The ends are
evaluated the same way, so a line's ends are comparable with its interior.
"""
from __future__ import annotations

import numpy as np

from lossatlas import memory
from lossatlas.analyzer import Analyzer, diagnostic, measure, view
from lossatlas.errors import NonFiniteLossError
from lossatlas.memory import Memory
from lossatlas.params import Interval, param, same_as
from lossatlas.plots import finite_or_nan, legend_or_no_data, loss_label, metric, plain_log_labels
from lossatlas.samplers import LineEnds


def barrier(values: np.ndarray) -> float:
    """Highest value along a line minus the mean of its two ends (Frankle et al. 2020)."""
    return float(np.max(values) - 0.5 * (values[0] + values[-1]))


def largest_rise(values: np.ndarray) -> float:
    """max over s < t of values[t] - values[s] (0 when the values never rise)."""
    running_low = np.minimum.accumulate(values)
    return float(max(0.0, np.max(values[1:] - running_low[:-1]))) if len(values) > 1 else 0.0


def _rise_candidates(values: np.ndarray, count: int = 3) -> set[int]:
    """The points a larger rise can hide next to: the ``count`` local maxima rising most above the
    lowest point before them, and those lowest points."""
    low = np.minimum.accumulate(values)
    peaks = [i for i in range(1, len(values)) if values[i] >= values[i - 1] and
             (i == len(values) - 1 or values[i] >= values[i + 1])]
    peaks = sorted(peaks, key=lambda i: values[i] - low[i - 1], reverse=True)[:count]
    return set(peaks) | {int(np.argmin(values[:i])) for i in peaks}


def draw_interpolation(ax, result) -> None:
    """Loss along the line from the initialisation and to the partner minimum (log axis; plain
    numbers where it spans less than a decade)."""
    ax.set(xlabel="interpolation coefficient t", ylabel=loss_label(), yscale="log",
           title=f"lines: barrier {metric(result, 'barrier'):.3g}")
    plain_log_labels(ax.yaxis)
    t = finite_or_nan(result.arrays.get("t", []))
    drawn = False
    for name, label in (("init_loss", "initialisation → minimum"), ("partner_loss", "minimum → partner")):
        values = finite_or_nan(result.arrays.get(name, []))
        if values.shape == t.shape and np.isfinite(values).any():
            ax.plot(t, np.maximum(values, 1e-12), lw=1, marker=".", label=label)
            drawn = True
    legend_or_no_data(ax, drawn)


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
        "init_rise_change": diagnostic("relative change of init_largest_rise in the last refinement round (below "
                                       "rise_rtol: converged)"),
        "n_evaluations": diagnostic("points evaluated (each with its own BatchNorm statistics where the model "
                                    "has BatchNorm)"),
    }
    views = {"lines": view(draw_interpolation, shared="y")}
    smoke_params = {"at": "theta0", "n_points": 9, "refine": 1}
    version = 2
    references = ("Goodfellow et al. 2015", "Frankle et al. 2020", "Lucas et al. 2021", "Garipov et al. 2018")

    at: str = same_as(LineEnds, "at")
    minimum: int = same_as(LineEnds, "minimum")
    partner: int | None = same_as(LineEnds, "partner")
    init_seed: int = same_as(LineEnds, "init_seed")
    n_points: int = param(25, Interval(int, 3), "points per line, ends included (odd: the midpoint is one)")
    refine: int = param(6, Interval(int, 0), "rounds halving the intervals next to the initialisation line's local "
                        "extrema (0: the grid alone)")
    rise_rtol: float = param(1e-3, Interval(float, 0, None), "refinement stops once a round moves the largest rise "
                             "by less than this (relative)")

    def requests(self, subject):
        return {"ends": LineEnds(at=self.at, minimum=self.minimum, partner=self.partner, init_seed=self.init_seed)}

    def memory(self, subject):
        """A line of n points (``_line``): both ends scaled along it and their sum, in float64 (n x
        dim each), the points again on the device in the subject's dtype, and the evaluation of a
        chunk; a refinement round adds at most 12 points. Plus the ends."""
        n = max(self.n_points, 12)
        line = Memory(host=memory.vectors(subject, 3 * n), device=memory.vectors(subject, n, memory.itemsize(subject)),
                      lower="n_points")
        return line + memory.evaluation(subject, n) + memory.requested(self, subject)

    def work(self, subject):
        """Its work (``lossatlas.planning``): two lines of n_points, BatchNorm re-estimated at every
        point, and the refinement's rounds (at most 12 points each; typically two rounds)."""
        return {("points", True): 2 * self.n_points + 12 * min(self.refine, 2)}

    def compute(self, subject, samples):
        ends = samples["ends"]
        ts = np.linspace(0.0, 1.0, self.n_points)
        start = self._line(subject, ends["init_theta"], ends["theta"], ends["buffers"], ts)
        fine_t, fine, change = self._refined(subject, ends, ts, start["loss"])
        metrics = {"init_monotonic": float(np.all(np.diff(fine) <= 0)),
                   "init_largest_rise": largest_rise(fine), "init_loss": float(start["loss"][0]),
                   "init_rise_change": change, "barrier": float("nan"), "error_barrier": float("nan"),
                   "n_evaluations": float(len(fine_t))}
        arrays = {"t": ts, "init_loss": start["loss"], "init_accuracy": start["accuracy"], "init_refined_t": fine_t,
                  "init_refined_loss": fine}
        if ends["partner_theta"].size:
            across = self._line(subject, ends["theta"], ends["partner_theta"], ends["buffers"], ts)
            metrics.update(barrier=barrier(across["loss"]), n_evaluations=metrics["n_evaluations"] + len(ts))
            if np.isfinite(across["accuracy"]).all():
                metrics["error_barrier"] = barrier(1.0 - across["accuracy"])
            arrays.update(partner_loss=across["loss"], partner_accuracy=across["accuracy"])
        return metrics, arrays

    def _refined(self, subject, ends, ts, losses) -> tuple[np.ndarray, np.ndarray, float]:
        """The initialisation line refined next to its local extrema: (t, loss, the last round's
        relative change of the largest rise)."""
        change = 0.0
        for _ in range(self.refine):
            middles = sorted({0.5 * (ts[j] + ts[j + 1]) for i in _rise_candidates(losses) for j in (i - 1, i)
                              if 0 <= j < len(ts) - 1})
            if not middles:
                break
            new = self._line(subject, ends["init_theta"], ends["theta"], ends["buffers"], np.array(middles))["loss"]
            before = largest_rise(losses)
            order = np.argsort(np.concatenate([ts, middles]), kind="stable")
            ts, losses = np.concatenate([ts, middles])[order], np.concatenate([losses, new])[order]
            after = largest_rise(losses)
            change = abs(after - before) / max(abs(after), 1e-300) if after or before else 0.0
            if change < self.rise_rtol:
                break
        return ts, losses, change

    def _line(self, subject, first, last, buffers, ts) -> dict[str, np.ndarray]:
        thetas = (1.0 - ts)[:, None] * first[None, :] + ts[:, None] * last[None, :]
        found = subject.evaluate_many(thetas, buffers, recompute_bn=True)
        if not np.isfinite(found["loss"]).all():
            bad = ts[~np.isfinite(found["loss"])]
            raise NonFiniteLossError(f"The loss of {subject.name!r} is not finite at t = {np.round(bad, 3).tolist()} "
                                     "of an interpolation line: its barrier would be meaningless. Nothing was "
                                     "written; check the model and its minima.")
        return {"loss": found["loss"], "accuracy": found.get("accuracy", np.full(len(ts), np.nan))}
