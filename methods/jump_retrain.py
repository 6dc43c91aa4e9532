"""The ``jump-retrain`` analyzer (seed 004, Horoi et al. §3.1-3.3, §4.4).

Jump-and-retrain trajectories around a minimum (lossatlas.samplers.jump_retrain) are embedded
with PHATE using cosine distances for the kNN graph and for MDS (§3.2). A kNN graph (k = 20,
§3.3) is built on the *potential distances* — Euclidean distances between rows of PHATE's
diffusion potential, the distance PHATE's MDS embeds (rows are n x landmarks above
``n_landmark`` samples) — and filtered by each sample's own loss. Its diagrams D0 and D1 (gudhi)
give the total persistence sum (death - birth)^p, p = 2.

The authors' released code (KrishnaswamyLab/NN-LossLandscape-PHATE) instead takes the 20
*largest* entries of each potential row (the farthest points) and shifts losses by one vertex;
lossatlas does not reproduce those defects. The starting minimum is stored but, as in the
reference, not embedded. Samples with non-finite loss are left out of the embedding and counted.
"""
from __future__ import annotations

import numpy as np

from lossatlas.analyzer import Analyzer
from lossatlas.params import Boolean, Interval, NumberList, Options
from lossatlas.samplers.jump_retrain import jump_and_retrain
from lossatlas.topology.graph_persistence import graph_diagrams, total_persistence
from lossatlas.topology.graphs import knn_edges


class JumpRetrain(Analyzer):
    name = "jump-retrain"
    description = "Jump-and-retrain trajectories, cosine PHATE, kNN-graph loss persistence (seed 004)."
    needs = ("minima", "jump_retrain")
    constraints = {
        "center": Options(("minimum", "theta0")),
        "minimum": Interval(int, 0),
        "seeds": NumberList(Interval(int, 0)),
        "steps": NumberList(Interval(float, 0)),
        "epochs": Interval(int, 1),
        "lr": Interval(float, 0),
        "momentum": Interval(float, 0, 1),
        "weight_decay": Interval(float, 0),
        "batch_size": Interval(int, 1),
        "steps_per_epoch": Interval(int, 1),
        "include_bn": Boolean(),
        "n_neighbors": Interval(int, 1),
        "phate_knn": Interval(int, 1),
        "phate_decay": Interval(float, 0),
        "n_landmark": Interval(int, 2),
        "p": Interval(float, 0),
        "close_essential": Boolean(),
        "flag": Boolean(),
        "seed": Interval(int, 0),
    }
    smoke_params = {"center": "theta0", "seeds": [0, 1], "steps": [0.5, 1.0], "epochs": 8, "steps_per_epoch": 5,
                    "n_neighbors": 5}

    def __init__(self, center: str = "minimum", minimum: int = 0, seeds: list = (0, 1, 2, 3),
                 steps: list = (0.25, 0.5, 0.75, 1.0), epochs: int = 40, lr: float = 0.001, momentum: float = 0.9,
                 weight_decay: float = 1e-4, batch_size: int = 128, steps_per_epoch: int = 100,
                 include_bn: bool = False, n_neighbors: int = 20, phate_knn: int = 5, phate_decay: float = 40.0,
                 n_landmark: int = 2000, p: float = 2.0, close_essential: bool = True, flag: bool = False,
                 seed: int = 0):
        self.center = center
        self.minimum = minimum
        self.seeds = seeds
        self.steps = steps
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.include_bn = include_bn
        self.n_neighbors = n_neighbors
        self.phate_knn = phate_knn
        self.phate_decay = phate_decay
        self.n_landmark = n_landmark
        self.p = p
        self.close_essential = close_essential
        self.flag = flag
        self.seed = seed

    def _trajectories(self, store, subject, progress=True):
        recipe = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                  "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch}
        return jump_and_retrain(store, subject, self.seeds, self.steps, self.epochs, recipe, self.center,
                                self.minimum, self.include_bn, progress)

    def produce(self, store, subject):
        self._trajectories(store, subject)

    def run(self, store, subject):
        samples = self._trajectories(store, subject, progress=False)
        finite = np.isfinite(samples.losses)
        thetas, losses = samples.thetas[finite], samples.losses[finite]
        embedding, potential = phate_embedding(thetas, self.phate_knn, self.phate_decay, self.n_landmark, self.seed)
        edges = potential_knn_edges(potential, self.n_neighbors)
        d0, d1 = graph_diagrams(losses, edges, self.close_essential, self.flag)
        last = samples.epochs[finite] == samples.epochs.max()
        metrics = {
            "total_persistence_0": total_persistence(d0, self.p),
            "total_persistence_1": total_persistence(d1, self.p),
            "n_points_0": float(len(d0)),
            "n_points_1": float(len(d1)),
            "n_points": float(len(losses)),
            "n_nonfinite": float((~finite).sum()),
            "final_loss_mean": float(losses[last].mean()) if last.any() else float("nan"),
            "final_loss_max": float(losses[last].max()) if last.any() else float("nan"),
            "final_loss_min": float(losses[last].min()) if last.any() else float("nan"),
        }
        arrays = {"embedding": embedding, "diagram_0": d0, "diagram_1": d1, "edges": edges, "losses": losses,
                  "seeds": samples.seeds[finite], "steps": samples.steps[finite], "epochs": samples.epochs[finite]}
        return metrics, arrays

    def plot(self, result, ax=None):
        """PHATE embedding of the runs, and the diagrams D0 and D1 of the kNN graph."""
        import matplotlib.pyplot as plt

        from lossatlas.plots import draw_diagram, draw_phate, prefix_title

        figure, (ax_map, ax_d0, ax_d1) = plt.subplots(1, 3, figsize=(14, 4))
        draw_phate(ax_map, result)
        prefix_title(ax_map, result.subject, "\n")
        for axis, name in ((ax_d0, "diagram_0"), (ax_d1, "diagram_1")):
            draw_diagram(axis, result.arrays[name])
        ax_d0.set_title(f"D0: total persistence {result.metrics['total_persistence_0']:.3g}")
        ax_d1.set_title(f"D1: total persistence {result.metrics['total_persistence_1']:.3g}")
        figure.tight_layout()
        return figure


def phate_embedding(thetas: np.ndarray, knn: int, decay: float, n_landmark: int, seed: int):
    """2-D PHATE with cosine distances for the kNN graph and MDS; returns (embedding, potential)."""
    import phate

    operator = phate.PHATE(n_components=2, knn=min(knn, len(thetas) - 1), decay=decay, n_landmark=n_landmark,
                           knn_dist="cosine", mds_dist="cosine", random_state=seed, n_jobs=1, verbose=0)
    embedding = operator.fit_transform(thetas)
    return np.asarray(embedding), np.asarray(operator.diff_potential)


def potential_knn_edges(potential: np.ndarray, k: int) -> np.ndarray:
    """Edges to each sample's k nearest neighbours in potential distance (Euclidean between
    rows of the diffusion potential), symmetrized."""
    return knn_edges(potential, k)
