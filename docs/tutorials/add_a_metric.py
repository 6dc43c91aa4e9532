"""Add a metric

A new landscape metric is one class: an `Analyzer` subclass that declares its parameters (with
their constraints), its metrics (what each means, and which way is better), the samples it
needs, the figures it draws, and a pure `compute` step. lossatlas does the rest: checking the
parameters, producing and storing the samples, storing the result under a key of its
parameters (a rerun returns it), and putting the metrics into reports and comparisons.

The metric built here is *random flatness*: the mean loss increase when every parameter is
moved by Gaussian noise of relative size sigma, θ + σ |θ| ⊙ ε with ε ~ N(0, I), a cheap
average-case companion to the worst-case sharpness (Keskar et al. 2017) and close to the
perturbation measures of Jiang et al. 2019.

The docs build runs this page at *smoke* settings; run the file yourself for the real ones.
"""

# %%
# ## Settings
import os

import matplotlib.pyplot as plt
import numpy as np

import lossatlas

SMOKE = os.environ.get("LOSSATLAS_DOCS_BUILD") == "1"
N_SAMPLES = 16 if SMOKE else 200      # perturbations per minimum
EPOCHS = 3 if SMOKE else 30           # training of the minima it is tried on
SEEDS = [0, 1, 2] if SMOKE else [0, 1, 2, 3, 4, 5]
print(f"smoke={SMOKE}: {N_SAMPLES} perturbations, {EPOCHS} epochs, seeds {SEEDS}")

# %%
# ## The view: how a result is drawn
#
# A view is a function `draw(ax, result)` that draws on the axes it is given. Reports call it
# for every variant, and for diverged runs too, so it must not fail on NaN, inf or empty
# arrays: where nothing is finite it says so with `lossatlas.plots.no_data`.
from lossatlas.plots import metric, no_data


def draw_increases(ax, result) -> None:
    """Histogram of the loss increases, with their mean."""
    ax.set(xlabel="loss increase", ylabel="perturbations",
           title=f"random flatness: mean {metric(result, 'mean_increase'):.3g}")
    increases = np.asarray(result.arrays.get("increases", []), dtype=float)
    increases = increases[np.isfinite(increases)]
    if not len(increases):
        no_data(ax)
        return
    ax.hist(increases, bins=min(30, max(5, len(increases) // 4)), color="tab:blue", alpha=0.8)
    ax.axvline(increases.mean(), color="black", lw=1, ls="--", label="mean")
    ax.legend(fontsize=7)


# %%
# ## The analyzer
#
# * `name` is what users type (`lossatlas.analyze(..., "random-flatness")`, a config's
#   `[methods.random-flatness]`); `scope = "minimum"` means one result per stored minimum
#   ("subject": one result from all minima of a subject, as the loss barcode).
# * `metrics`: a `measure` is a landscape property the report compares with the error and the
#   factors (`higher_is_better` orients it); a `diagnostic` is bookkeeping that stays in
#   `metrics.csv` only.
# * `views`: name -> `view(draw, projection=None | "3d", shared=None | "y" | "xy" | "colour",
#   limits_of=...)`; `shared="xy"` makes the report draw the variants' panels on one x and one y
#   range, so that their histograms compare.
# * Parameters are annotated class attributes: `param(default, constraint, doc)`. The class
#   becomes a frozen dataclass, and every value is checked on construction, with messages such as
#   "The 'sigma' parameter of RandomFlatness must be a float in (0, inf). Got -1."
#   `same_as(Point, "at")` declares a parameter exactly as the `Point` sampler declares it.
# * `requests(subject)` names the samples the analyzer needs; the framework produces them (or
#   reads them from the store) before `compute`. The `Point(at, minimum)` request arrives as
#   `samples["point"]`, a `Sample` holding two arrays: `["theta"]`, the flat parameter vector (a
#   numpy array of `subject.dim` numbers: `subject.theta0` for `at="theta0"`, else stored minimum
#   `minimum`), and `["buffers"]`, the model's floating buffers at that point, flattened
#   (BatchNorm running statistics; an empty array for a model without any). Its `.config`
#   records `at`, `minimum` and digests of both arrays, which enter the result's key. Other
#   requests in `lossatlas.samplers`: `Grid`, `Paths`, `LineEnds`, `TrainedMinima`,
#   `StoredMinima`, `GivenMinima`, `DescentMinima`, `JumpRetrainRuns`.
# * `compute(subject, samples)` must be pure: the same samples give the same output. It returns
#   `(metrics, arrays)`: floats by metric name, and numpy arrays stored with the result (the
#   views read them).
# * Optional: `check(self)` for rules across parameters, `check_subject(self, subject)` for
#   rules that need the subject; both run before any work.
# * `memory(subject)` declares the peak bytes, so that `analyze` and `lossatlas run` refuse what
#   cannot fit before any work, naming the parameter to lower. The default counts the samples, a
#   few parameter vectors and a gradient pass; this analyzer adds its noise and perturbed points.
from lossatlas.analyzer import Analyzer, diagnostic, measure, view
from lossatlas.memory import Memory, vectors
from lossatlas.params import Boolean, Interval, param, same_as
from lossatlas.samplers import Point, finite_loss


class RandomFlatness(Analyzer):
    name = "random-flatness"
    description = "Mean and largest loss increase under random Gaussian perturbations of relative size sigma."
    scope = "minimum"
    metrics = {
        "mean_increase": measure("mean loss increase over the perturbations", higher_is_better=False),
        "max_increase": measure("largest loss increase over the perturbations", higher_is_better=False),
        "loss": diagnostic("loss at the point"),
        "n_nonfinite": diagnostic("perturbations whose loss was not finite (left out of the mean)"),
    }
    views = {"histogram": view(draw_increases, shared="xy")}
    smoke_params = {"at": "theta0", "n_samples": 8}  # what the conformance checks run

    at: str = same_as(Point, "at")
    minimum: int = same_as(Point, "minimum")
    sigma: float = param(0.05, Interval(float, 0, None, closed="neither"), "perturbation size")
    relative: bool = param(True, Boolean(), "scale each parameter's noise by its |value| (else absolute)")
    n_samples: int = param(64, Interval(int, 2), "number of perturbations")
    seed: int = param(0, Interval(int, 0), "seed of the perturbations")

    def requests(self, subject):
        return {"point": Point(at=self.at, minimum=self.minimum)}

    def memory(self, subject) -> Memory:
        extra = Memory(host=vectors(subject, 2 * self.n_samples), lower="n_samples")  # noise and points, float64
        return super().memory(subject) + extra

    def compute(self, subject, samples):
        theta, buffers = samples["point"]["theta"], samples["point"]["buffers"]
        loss = finite_loss(subject, theta, buffers, self.at, self.minimum, "random flatness")
        noise = np.random.default_rng(self.seed).standard_normal((self.n_samples, len(theta)))
        scale = self.sigma * (np.abs(theta) if self.relative else 1.0)
        losses = subject.losses(theta + noise * scale, buffers)  # all perturbations, batched
        increases = losses - loss
        finite = increases[np.isfinite(increases)]
        metrics = {"mean_increase": float(finite.mean()) if len(finite) else float("nan"),
                   "max_increase": float(finite.max()) if len(finite) else float("nan"),
                   "loss": loss, "n_nonfinite": float(len(increases) - len(finite))}
        return metrics, {"increases": increases}


print(RandomFlatness.defaults())
try:
    RandomFlatness(sigma=-1)
except lossatlas.ConfigError as err:
    print("refused:", err)

# %%
# ## Check it against the contract
#
# `lossatlas.testing.analyzer_checks` is the conformance suite every built-in analyzer passes:
# parameters declared and frozen, metric metadata complete, `compute` pure, the result written
# and read back with its declarations, a rerun that is a no-op, and every view drawing on a
# normal, an empty and an all-NaN result. They run on a small analytic subject; the default,
# Himmelblau's function, finds its four minima by Newton's method each time it is built (about
# a second), so here a two-parameter double well built once stands in. In a test file:
#
# ```python
# @pytest.mark.parametrize("check", analyzer_checks(RandomFlatness), ids=lambda c: c.__name__)
# def test_conformance(check):
#     check()
# ```
import torch

from lossatlas.testing import analyzer_checks

well = lossatlas.FunctionSubject(lambda t: ((t**2 - 1) ** 2).sum(), torch.tensor([0.5, -0.3], dtype=torch.float64),
                                 name="double_well")
for check in analyzer_checks(RandomFlatness, subject_factory=lambda: well):
    check()
    print("passed", check.__name__)
plt.close("all")  # the view checks leave their figures open

# %%
# ## Run it on a model
#
# A small built-in problem (an MLP on the offline digits set), a few trained minima, and the new
# analyzer at each, next to the top Hessian eigenvalue for comparison. The class itself is
# passed to `analyze`; once it is installed as an entry point (below) its name is enough.
subject = lossatlas.problems.mlp(depth=1, width=16, n_train=300, device="cpu")
store = lossatlas.Store("add_a_metric.h5")
recipe = lossatlas.Recipe(optimizer="adam", lr=0.01, epochs=EPOCHS, batch_size=32)
minima = lossatlas.train_minima(store, subject, recipe, seeds=SEEDS, progress=False)
for m in minima:
    flat = lossatlas.analyze(store, subject, RandomFlatness, minimum=m.index, n_samples=N_SAMPLES, progress=False)
    top = lossatlas.analyze(store, subject, "hessian", minimum=m.index, trace_max_probes=10, density_runs=0,
                            progress=False)
    print(f"minimum {m.index}: random flatness {flat.metrics['mean_increase']:.4f}, "
          f"top eigenvalue {top.metrics['top_eigenvalue']:.3f}, test loss {m.metrics['test_loss']:.3f}")

# %%
# ## Its figure
#
# `Analyzer.plot(result)` draws every view of a result (or one view on the axes you pass).
RandomFlatness(n_samples=N_SAMPLES).plot(flat)

# %%
# ## In a report
#
# `write_report` on a store filled by `analyze` calls makes every subject a variant and every
# stored minimum a row; the new analyzer's measures join the tables and the comparisons like
# the built-in ones (its diagnostics stay in `metrics.csv`). With one model there is nothing to
# test against the error; the agreement table still ranks the minima by every pair of measures.
from lossatlas.report import write_report

write_report(store, "report", figures="none")
store.close()
table = open("report/table.md").read().split("\n\n")[1]  # the per-variant table: mean ± std over the minima
print(table)
agreement = open("report/agreement.csv").read().splitlines()  # Kendall's tau between measures, over the minima
print(agreement[0])
print(next(line for line in agreement if line.startswith("random-flatness.mean_increase")))

# %%
# The report draws an analyzer's views only where it can find the class without importing code
# a store names: an installed entry point, or a config's `analyzer = "package.module:Class"` whose
# module is imported. So, to get `random-flatness` figures in reports, package it.
#
# ## Package it as an entry point
#
# Put the class (and its view) in a module of your package, say `mypkg/random_flatness.py`,
# and declare it in the package's `pyproject.toml`:
#
# ```toml
# [project.entry-points."lossatlas.methods"]
# random-flatness = "mypkg.random_flatness:RandomFlatness"
# ```
#
# After `pip install -e .`, `lossatlas methods` lists it with its parameters, configs can name
# it (`[methods.random-flatness]` with `sigma = 0.1`), `lossatlas.analyze(store, subject,
# "random-flatness")` finds it by name, and reports draw its `histogram` view for every variant.
# Without packaging, a benchmark config can still run it: `[methods.flat]` with
# `analyzer = "mypkg.random_flatness:RandomFlatness"`, importable where lossatlas runs.
#
# When the meaning of a metric changes later, raise the class attribute `version` (default 1):
# stored results of the old definition are then recomputed instead of returned.
