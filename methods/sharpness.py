"""The ``sharpness`` analyzer: the worst loss increase in a neighbourhood of a minimum.

Three neighbourhoods, each searched by Auto-PGD (Croce & Hein 2020, ``lossatlas.ascent``) from
seeded random starts of ``steps`` steps, the best point any of them reaches counting:

* ``epsilon_sharpness`` (Keskar et al. 2017): the box |d_i| <= epsilon (|w_i| + 1), reported as
  Keskar's 100 x (max L(w + d) - L(w)) / (1 + L(w)). In the full space the box grows with the
  parameter count (an 11M-parameter network gave 588613), so above ``subspace`` (100) parameters
  it lies, as Keskar et al. also measure it, in a seeded random subspace: d = A y, |y_j| <= epsilon
  (|(A^T w)_j| + 1), A with orthonormal columns (``RandomSubspace``);
* ``adaptive_sharpness_l2`` / ``_linf`` (Kwon et al. 2021's neighbourhood, searched as
  Andriushchenko et al. 2023 do): max L(w + d) - L(w) over ||d / (|w| + eta)|| <= rho in the l2 /
  l_inf norm. With eta = 0 (the default) the measure does not change when a ReLU network's layers
  are rescaled; ASAM's eta > 0 lets zero weights move.

``restarts`` starts the l2 ascent; ``box_restarts`` the box and l_inf ascents, which are cheap (each
stops at its first vertex whose signs are its gradient's) and need many starts (see below).

``m`` (Andriushchenko et al. 2023's m-sharpness): the maximum is taken on each batch of m
examples of the evaluation set (consecutive, in index order) and the per-batch values averaged;
``m = None`` takes it on the whole set. The loss is the subject's, with the point's own buffers (a
BatchNorm model keeps its stored running statistics).

Every value is a lower bound of the maximum: an ascent finds a point of the neighbourhood, not a
certificate. For l2 on a quadratic it reaches the closed form; the maximum over a box (l_inf, and
Keskar's box) of even a convex quadratic is NP-hard, and each ascent stops at the first vertex
whose signs are its gradient's, so there restarts, not steps, raise the value. Each restart's
start depends only on (seed, neighbourhood, batch, restart), so more restarts never give less.
"""
from __future__ import annotations

import numpy as np
import torch

from lossatlas import memory
from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.ascent import apgd, random_start
from lossatlas.errors import ConfigError
from lossatlas.memory import Memory
from lossatlas.params import Interval, param
from lossatlas.plots import finite_or_nan, legend_or_no_data, loss_label
from lossatlas.point_analyzer import PointAnalyzer

NEIGHBOURHOODS = ("epsilon", "adaptive_l2", "adaptive_linf")
LOWER_BOUND = " (a lower bound of the maximum: the best of the Auto-PGD restarts)"


def draw_ascent(ax, result) -> None:
    """The loss increase reached at each ascent step, per neighbourhood."""
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="ascent step (iteration)", ylabel=loss_label("loss increase"),
           title="worst-case neighbours (projected ascent)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    params = getattr(result, "params", None) or {}
    labels = {"epsilon": f"ε-box, ε = {params.get('epsilon', '?')}",
              "adaptive_l2": f"adaptive ℓ₂, ρ = {params.get('rho_l2', '?')}",
              "adaptive_linf": f"adaptive ℓ∞, ρ = {params.get('rho_linf', '?')}"}
    drawn = False
    for name in NEIGHBOURHOODS:
        values = finite_or_nan(result.arrays.get(f"{name}_ascent", []))
        if values.size and np.isfinite(values).any():
            ax.plot(np.arange(values.shape[-1]), np.nanmax(values.reshape(-1, values.shape[-1]), axis=0), lw=1,
                    label=labels[name])
            drawn = True
    legend_or_no_data(ax, drawn)


class Sharpness(PointAnalyzer):
    name = "sharpness"
    description = ("Worst-case loss increase near a minimum by Auto-PGD with restarts: epsilon-sharpness (Keskar et "
                   "al. 2017) and adaptive sharpness in l2 and l_inf (Kwon et al. 2021; Andriushchenko et al. 2023).")
    scope = "minimum"
    version = 2
    references = ("Keskar et al. 2017", "Kwon et al. 2021, ASAM", "Andriushchenko et al. 2023",
                  "Croce & Hein 2020, Auto-PGD")
    metrics = {
        "epsilon_sharpness": measure("Keskar et al. 2017: 100 (max L(w+d) - L(w)) / (1 + L(w)) over the box "
                                     "|d_i| <= epsilon (|w_i| + 1), in a random subspace of `subspace` dimensions "
                                     "for larger models" + LOWER_BOUND, higher_is_better=False),
        "adaptive_sharpness_l2": measure("Kwon et al. 2021: max L(w+d) - L(w) over ||d / (|w| + eta)||_2 <= rho_l2"
                                         + LOWER_BOUND, higher_is_better=False),
        "adaptive_sharpness_linf": measure("Kwon et al. 2021: max L(w+d) - L(w) over ||d / (|w| + eta)||_inf <= "
                                           "rho_linf" + LOWER_BOUND, higher_is_better=False),
        "loss": diagnostic("loss at the point (full evaluation set)"),
        "m_batches": diagnostic("batches of m examples averaged (m-sharpness); 0 for the whole set (m = None)"),
        "gradient_evaluations": diagnostic("loss-and-gradient evaluations of the ascents (of a batch of m examples "
                                           "with m-sharpness, of the whole set otherwise)"),
    }
    views = {"ascent": view(draw_ascent)}
    smoke_params = {"at": "theta0", "steps": 5, "restarts": 2, "box_restarts": 2, "epsilon": 0.05, "rho_l2": 0.05,
                    "rho_linf": 0.05}

    epsilon: float = param(1e-3, Interval(float, 0, None, closed="neither"), "Keskar et al. 2017's box size")
    rho_l2: float = param(0.5, Interval(float, 0, None, closed="neither"), "adaptive l2 radius (Kwon et al. 2021's)")
    rho_linf: float = param(1e-3, Interval(float, 0, None, closed="neither"), "adaptive l_inf radius")
    eta: float = param(0.0, Interval(float, 0, None), "ASAM's |w| + eta scaling (Kwon et al. 2021 use 0.01); 0 keeps "
                       "the measure invariant to layer rescaling")
    m: int | None = param(None, Interval(int, 1, allow_none=True),
                          "m-sharpness: maximize per batch of m examples and average; None: the whole set")
    subspace: int | None = param(100, Interval(int, 1, allow_none=True),
                                 "Keskar et al. 2017's random subspace of p dimensions for the box (when the model has "
                                 "more parameters); None: the full space, whose box grows with the parameter count")
    steps: int = param(20, Interval(int, 1), "Auto-PGD steps per start")
    restarts: int = param(5, Interval(int, 1), "seeded random starts of the l2 ascent (per batch with m)")
    box_restarts: int = param(40, Interval(int, 1), "seeded random starts of the box and l_inf ascents (per batch with "
                              "m): each stops at its first sign-stable vertex, after ~4 evaluations on a quadratic")
    seed: int = param(0, Interval(int, 0))

    def check_subject(self, subject):
        super().check_subject(subject)
        if self.m is not None:
            if not hasattr(subject, "example_batches"):
                raise ConfigError(f"m-sharpness (m={self.m}) needs a subject with examples (a ModuleSubject); "
                                  f"{subject.name!r} is a {type(subject).__name__}. Use m=None.")
            if not subject.example_batches(self.m):
                raise ConfigError(f"m={self.m} exceeds the {subject.name!r} evaluation set; choose m at most its size.")

    def memory(self, subject):
        """On the device, parameter-sized in the subject's dtype: the point, the three neighbourhoods'
        scales, Auto-PGD's state (x, previous, gradient, best point and its gradient) and up to 8
        temporaries of a step, the objective's move and point, a gradient pass (leaf, sum, gradient)
        and a pulled-back gradient: 24 vectors, plus Keskar's int64 subspace index and the
        activations of a batch (of m examples with m-sharpness). On the host: a random start drawn
        in float64 with two temporaries, and the subspace's permutation."""
        batches = max(1.0, self.m / getattr(subject, "eval_batch_size", self.m)) if self.m else 1.0
        device = memory.vectors(subject, 24, memory.itemsize(subject)) + memory.vectors(subject, 1) \
            + int(batches * memory.batch_bytes(subject))
        return Memory(host=memory.vectors(subject, 4), device=device) + memory.requested(self, subject)

    def work(self, subject):
        """Its work (``lossatlas.planning``): the loss at the point, and at most steps + 1 gradient
        evaluations per Auto-PGD start (restarts for l2, box_restarts for the box and l_inf), each a
        pass over the evaluation set (with m, its batches of m examples together)."""
        return {("gradient",): (self.restarts + 2 * self.box_restarts) * (self.steps + 1), ("loss",): 1}

    def compute(self, subject, samples):
        theta = subject.as_theta(samples["point"]["theta"])
        buffers = subject.buffers_at(theta, samples["point"]["buffers"])
        base = self.finite_loss(subject, theta, buffers, "the sharpness")
        maps = {"epsilon": self._keskar_box(theta), "adaptive_l2": _Diagonal(self.rho_l2 * (theta.abs() + self.eta)),
                "adaptive_linf": _Diagonal(self.rho_linf * (theta.abs() + self.eta))}
        if self.m is None:
            losses = [lambda point: subject.loss_and_grad(point, buffers)]
            bases = [base]
        else:
            losses = [lambda point, batch=batch: subject.batch_loss_and_grad(point, buffers, batch)
                      for batch in subject.example_batches(self.m)]
            bases = [loss(theta)[0] for loss in losses]
        metrics, arrays, evaluations = {"loss": base, "m_batches": 0 if self.m is None else len(losses)}, {}, 0
        for index, name in enumerate(NEIGHBOURHOODS):
            lift = maps[name]  # scaled coordinates u (the unit ball) -> a move d of the parameters
            restarts = self.restarts if name == "adaptive_l2" else self.box_restarts
            curves = np.zeros((restarts, self.steps + 1))
            values = []
            for batch, (loss, start_loss) in enumerate(zip(losses, bases)):
                def objective(u, loss=loss, lift=lift):
                    value, gradient = loss(theta + lift(u))
                    return value, lift.pull(gradient)

                best = 0.0  # d = 0 is in every neighbourhood
                for restart in range(restarts):
                    found = apgd(objective, self._start(lift.dim, theta, name, index, batch, restart), _norm(name),
                                 self.steps)
                    evaluations += found.evaluations
                    best = max(best, found.best - start_loss)
                    curve = np.asarray(found.curve) - start_loss
                    curves[restart] += np.pad(curve, (0, self.steps + 1 - len(curve)), mode="edge") / len(losses)
                values.append(100 * best / (1 + start_loss) if name == "epsilon" else best)
            arrays[f"{name}_ascent"] = curves
            metrics[name] = float(np.mean(values))
        metrics["epsilon_sharpness"] = metrics.pop("epsilon")
        metrics["adaptive_sharpness_l2"] = metrics.pop("adaptive_l2")
        metrics["adaptive_sharpness_linf"] = metrics.pop("adaptive_linf")
        metrics["gradient_evaluations"] = float(evaluations)
        return metrics, arrays

    def _start(self, dim, theta, name, index, batch, restart) -> torch.Tensor:
        """The random start of one ascent, from (seed, neighbourhood, batch, restart) alone."""
        entropy = np.random.SeedSequence([self.seed, index, batch, restart]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(entropy))
        return random_start(dim, _norm(name), generator).to(theta)

    def _keskar_box(self, theta):
        """Keskar et al. 2017's box: |d_i| <= epsilon (|w_i| + 1) in the full space, or in a random
        ``subspace`` of p dimensions, d = A y with |y_j| <= epsilon (|(A^T w)_j| + 1)."""
        if self.subspace is None or self.subspace >= theta.numel():
            return _Diagonal(self.epsilon * (theta.abs() + 1))
        basis = RandomSubspace(theta.numel(), self.subspace, self.seed, theta)
        return _Through(basis, self.epsilon * (basis.down(theta).abs() + 1))


class _Diagonal:
    """d = s * u: a box or ball scaled coordinate by coordinate."""

    def __init__(self, scale: torch.Tensor):
        self.scale, self.dim = scale, scale.numel()

    def __call__(self, u):
        return self.scale * u

    def pull(self, gradient):
        return self.scale * gradient


class _Through:
    """d = A (s * y): a box in the coordinates of a subspace."""

    def __init__(self, basis: "RandomSubspace", scale: torch.Tensor):
        self.basis, self.scale, self.dim = basis, scale, scale.numel()

    def __call__(self, y):
        return self.basis.up(self.scale * y)

    def pull(self, gradient):
        return self.scale * self.basis.down(gradient)


class RandomSubspace:
    """A seeded random p-dimensional subspace of the parameters with orthonormal columns A, in
    O(dim) memory: the coordinates are split at random into p near-equal groups and column j is
    the group's indicator with random signs, normalized. Keskar et al. 2017 use a dense random A
    (their p = 100), which at 11M parameters would take 4 GB; this A keeps A^+ = A^T exact."""

    def __init__(self, dim: int, p: int, seed: int, like: torch.Tensor):
        generator = torch.Generator().manual_seed(int(seed))
        self.p = p
        self.group = torch.empty(dim, dtype=torch.long)
        self.group[torch.randperm(dim, generator=generator)] = torch.arange(dim) % p
        signs = torch.randint(0, 2, (dim,), generator=generator, dtype=like.dtype) * 2 - 1
        sizes = torch.bincount(self.group, minlength=p).to(like.dtype)
        self.weights = (signs / sizes[self.group].sqrt()).to(like.device)
        self.group = self.group.to(like.device)

    def up(self, y: torch.Tensor) -> torch.Tensor:
        """A y."""
        return y[self.group] * self.weights

    def down(self, v: torch.Tensor) -> torch.Tensor:
        """A^T v."""
        return torch.zeros(self.p, dtype=v.dtype, device=v.device).index_add_(0, self.group, v * self.weights)


def _norm(name: str) -> str:
    return "l2" if name.endswith("l2") else "linf"

