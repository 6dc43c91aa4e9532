"""The ``loss-barcode`` analyzer (seed 002, Barannikov et al.): barcode of minima and TO-score.

Minima: for a FunctionSubject, gradient descent from ``n_starts`` seeded uniform starts in
``bounds`` (default theta0 +- 1), deduplicated; for a ModuleSubject, the first ``n_minima``
stored minima (train them first); or explicit parameter vectors via ``minima``. Every pair is
joined by an optimized path (``path="string"``, the paper's gradient flow, default for
functions; ``"polychain"``/``"bezier"``, Garipov et al.'s curves, default for modules; see
lossatlas.samplers.paths for when to use which), the edge weight is the maximum loss along the
path on the full evaluation set (BatchNorm statistics re-estimated at every point), and the
barcode is the 0-dim persistence of that graph. The straight-line maxima give a baseline.
NaN/inf losses on a path make it impassable (the TO-score is then inf): ``n_nonfinite`` counts
them along the optimized paths, ``n_impassable`` (``n_impassable_linear``) the paths (lines) so cut.
"""
from __future__ import annotations

import numpy as np
import torch

from lossatlas.analyzer import Analyzer
from lossatlas.errors import ConfigError, StoreError
from lossatlas.params import Interval, Options
from lossatlas.samplers.paths import connect_minima
from lossatlas.subjects import FunctionSubject
from lossatlas.topology.barcode import barcode_scores, minima_barcode


class LossBarcode(Analyzer):
    name = "loss-barcode"
    description = "Barcode of minima over optimized paths and the TO-score (seed 002)."
    needs = ("minima", "paths")
    constraints = {
        "path": Options(("auto", "string", "polychain", "bezier")),
        "n_minima": Interval(int, 2),
        "n_starts": Interval(int, 1),
        "gd_lr": Interval(float, 0),
        "gd_steps": Interval(int, 1),
        "n_images": Interval(int, 3),
        "string_steps": Interval(int, 1),
        "string_lr": Interval(float, 0),
        "bends": Interval(int, 1),
        "curve_epochs": Interval(int, 1),
        "curve_lr": Interval(float, 0),
        "weight_decay": Interval(float, 0),
        "batch_size": Interval(int, 1),
        "n_eval": Interval(int, 3),
        "seed": Interval(int, 0),
    }
    smoke_params = {"n_starts": 6, "gd_steps": 300, "n_images": 11, "string_steps": 150}

    def __init__(self, path: str = "auto", n_minima: int = 4, n_starts: int = 20, bounds: list | None = None,
                 gd_lr: float = 0.01, gd_steps: int = 2000, n_images: int = 21, string_steps: int = 2000,
                 string_lr: float = 0.01, bends: int = 1, curve_epochs: int = 10, curve_lr: float = 0.01,
                 weight_decay: float = 0.0, batch_size: int = 128, n_eval: int = 61, seed: int = 0,
                 minima: list | None = None):
        self.path = path
        self.n_minima = n_minima
        self.n_starts = n_starts
        self.bounds = bounds
        self.gd_lr = gd_lr
        self.gd_steps = gd_steps
        self.n_images = n_images
        self.string_steps = string_steps
        self.string_lr = string_lr
        self.bends = bends
        self.curve_epochs = curve_epochs
        self.curve_lr = curve_lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_eval = n_eval
        self.seed = seed
        self.minima = minima

    def path_kind(self, subject) -> str:
        if self.path != "auto":
            return self.path
        return "string" if isinstance(subject, FunctionSubject) else "polychain"

    def find_minima(self, store, subject) -> np.ndarray:
        """The minima to connect, (K, dim), sorted by loss (computed once per analyzer and subject)."""
        cache = self.__dict__.setdefault("_found", {})
        if subject.name not in cache:
            cache[subject.name] = self._find_minima(store, subject)
        return cache[subject.name]

    def _find_minima(self, store, subject) -> np.ndarray:
        if self.minima is not None:
            lengths = sorted({np.size(m) for m in self.minima})
            if lengths != [subject.dim]:
                raise ConfigError(f"minima must be vectors of length {subject.dim}; got length(s) {lengths}.")
            found = np.asarray(self.minima, dtype=float).reshape(len(self.minima), -1)
        elif isinstance(subject, FunctionSubject):
            found = self._descend(subject)
        else:
            stored = store.minima(subject.name)[: self.n_minima]
            if len(stored) < 2:
                raise StoreError(f"The loss barcode needs at least 2 minima of {subject.name!r}; {store.path} holds "
                                 f"{len(stored)}. Train them first (lossatlas.train_minima or a config's [minima]).")
            found = np.stack([m.theta for m in stored])
        return found[np.argsort(subject.losses(found), kind="stable")]

    def _descend(self, subject) -> np.ndarray:
        """Gradient descent from seeded uniform starts in ``bounds``; minima closer than 1e-4
        (relative to the box) are one."""
        theta0 = subject.theta0.numpy()
        bounds = np.array(self.bounds, dtype=float) if self.bounds is not None else np.stack([theta0 - 1, theta0 + 1], 1)
        if bounds.shape != (subject.dim, 2) or np.any(bounds[:, 0] >= bounds[:, 1]):
            raise ConfigError(f"bounds must be {subject.dim} pairs (low, high) with low < high; got {self.bounds!r}.")
        starts = np.random.default_rng(self.seed).uniform(bounds[:, 0], bounds[:, 1], size=(self.n_starts, subject.dim))
        points = torch.as_tensor(starts, dtype=subject.theta0.dtype)
        for _ in range(self.gd_steps):  # plain gradient descent, all starts at once
            points = points - self.gd_lr * subject.grads(points)
        ends = [p for p in points.numpy() if np.all(np.isfinite(p))]
        ends = [p for p, loss in zip(ends, subject.losses(np.array(ends)) if ends else []) if np.isfinite(loss)]
        if not ends:
            raise ConfigError(f"Gradient descent diverged from every start (gd_lr={self.gd_lr}); lower gd_lr.")
        radius = 1e-4 * float(np.max(bounds[:, 1] - bounds[:, 0]))
        unique: list[np.ndarray] = []
        for end in ends:
            if all(np.linalg.norm(end - u) > radius for u in unique):
                unique.append(end)
        return np.stack(unique)

    def _config(self, subject) -> dict:
        return {"path": self.path_kind(subject), "n_images": self.n_images, "string_steps": self.string_steps,
                "string_lr": self.string_lr, "bends": self.bends, "curve_epochs": self.curve_epochs,
                "curve_lr": self.curve_lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "n_eval": self.n_eval, "seed": self.seed}

    def produce(self, store, subject):
        minima = self.find_minima(store, subject)
        if len(minima) >= 2:
            connect_minima(store, subject, minima, self._config(subject))

    def run(self, store, subject):
        minima = self.find_minima(store, subject)
        if len(minima) < 2:  # one basin: the ideal barcode
            barcode = minima_barcode(subject.losses(minima), np.empty((0, 2)), np.empty(0))
            metrics = {**barcode_scores(barcode), "n_minima": 1.0}
            linear = {f"{k}_linear": v for k, v in metrics.items() if k != "n_minima"}
            return {**metrics, **linear, "n_nonfinite": 0.0}, {"bars": barcode.bars}
        paths = connect_minima(store, subject, minima, self._config(subject), progress=False)
        pairs, values = paths["pairs"], paths["vertex_losses"]
        edges = paths["path_max"][pairs[:, 0], pairs[:, 1]]
        linear = paths["linear_max"][pairs[:, 0], pairs[:, 1]]
        barcode, baseline = minima_barcode(values, pairs, edges), minima_barcode(values, pairs, linear)
        metrics = {**barcode_scores(barcode), "n_minima": float(len(minima)),
                   "n_nonfinite": float(sum((~np.isfinite(curve)).sum() for curve in paths["losses"]))}
        metrics.update({f"{k}_linear": v for k, v in barcode_scores(baseline).items()})
        width = max(len(t) for t in paths["t"])
        pad = lambda rows: np.array([np.pad(r, (0, width - len(r)), constant_values=np.nan) for r in rows])  # noqa: E731
        arrays = {"bars": barcode.bars, "bar_minima": barcode.minima, "bars_linear": baseline.bars,
                  "minima_losses": values, "path_max": paths["path_max"], "linear_max": paths["linear_max"],
                  "pairs": pairs, "path_t": pad(paths["t"]), "path_losses": pad(paths["losses"])}
        if subject.dim <= 10_000:
            arrays["minima"] = minima
        return metrics, arrays

    def plot(self, result, ax=None):
        """The barcode of minima, and the loss along the optimized paths."""
        import matplotlib.pyplot as plt

        from lossatlas.plots import draw_barcode_view, draw_paths, prefix_title

        figure, (ax_bars, ax_paths) = plt.subplots(1, 2, figsize=(10, 4))
        draw_barcode_view(ax_bars, result)
        prefix_title(ax_bars, result.subject)
        draw_paths(ax_paths, result)
        figure.tight_layout()
        return figure
