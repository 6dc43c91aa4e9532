"""The ``jump-retrain`` analyzer (Horoi et al. 2022, §3.1-3.3, §4.4).

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

from lossatlas.analyzer import Analyzer, diagnostic, measure
from lossatlas.params import Boolean, Interval, param, same_as
from lossatlas.plots import draw_diagram_0, draw_diagram_1, draw_phate
from lossatlas.samplers import JumpRetrainRuns, Point, reference_recipe
from lossatlas.topology.graph_persistence import graph_diagrams, total_persistence
from lossatlas.topology.graphs import knn_edges
from lossatlas.training import RECIPE_CONSTRAINTS


class JumpRetrain(Analyzer):
    name = "jump-retrain"
    description = "Jump-and-retrain trajectories, cosine PHATE, kNN-graph loss persistence (Horoi et al. 2022)."
    scope = "minimum"
    metrics = {
        "total_persistence_0": measure("sum (death - birth)^p over D0 of the loss-filtered kNN graph"),
        "total_persistence_1": measure("sum (death - birth)^p over D1 of the loss-filtered kNN graph"),
        "n_points_0": diagnostic("points in D0"),
        "n_points_1": diagnostic("points in D1"),
        "n_points": diagnostic("samples embedded (finite loss)"),
        "n_nonfinite": diagnostic("samples with a NaN/inf loss (diverged runs), left out"),
        "final_loss_mean": measure("mean evaluation loss at the last epoch of the retraining runs (NaN: every "
                                   "run diverged)", higher_is_better=False),
        "final_loss_max": measure("largest evaluation loss at the last epoch of the retraining runs (NaN: every "
                                  "run diverged)", higher_is_better=False),
        "final_loss_min": measure("smallest evaluation loss at the last epoch of the retraining runs (NaN: every "
                                  "run diverged)", higher_is_better=False),
    }
    views = {"phate": draw_phate, "diagram_0": draw_diagram_0, "diagram_1": draw_diagram_1}
    smoke_params = {"at": "theta0", "seeds": [0, 1], "step_sizes": [0.5, 1.0], "epochs": 8, "steps_per_epoch": 5,
                    "knn_k": 5}

    at: str = same_as(Point, "at")
    minimum: int = same_as(Point, "minimum")
    seeds: list = same_as(JumpRetrainRuns, "seeds")
    step_sizes: list = same_as(JumpRetrainRuns, "step_sizes")
    epochs: int = param(40, Interval(int, 1))
    lr: float = param(0.001, RECIPE_CONSTRAINTS["lr"])
    momentum: float = param(0.9, RECIPE_CONSTRAINTS["momentum"])
    weight_decay: float = param(1e-4, RECIPE_CONSTRAINTS["weight_decay"])
    batch_size: int = param(128, Interval(int, 1))
    steps_per_epoch: int = param(100, RECIPE_CONSTRAINTS["steps_per_epoch"])
    include_bn: bool = same_as(JumpRetrainRuns, "include_bn")
    knn_k: int = param(20, Interval(int, 1), "k of the kNN graph on the PHATE potential (Horoi et al.: 20)")
    phate_knn_k: int = param(5, Interval(int, 1), "k of PHATE's own kNN kernel")
    phate_decay: float = param(40.0, Interval(float, 0))
    n_landmark: int = param(2000, Interval(int, 2))
    p: float = param(2.0, Interval(float, 0, None, closed="neither"))
    close_essential: bool = param(True, Boolean())
    flag: bool = param(False, Boolean())
    seed: int = param(0, Interval(int, 0))

    def recipe(self):
        return reference_recipe(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs)

    def check(self):
        self.recipe()  # the retraining recipe must be valid before any minimum is trained

    def requests(self, subject):
        return {"runs": JumpRetrainRuns(point=Point(at=self.at, minimum=self.minimum), seeds=tuple(self.seeds),
                                        step_sizes=tuple(self.step_sizes), recipe=self.recipe(),
                                        include_bn=self.include_bn)}

    def compute(self, subject, samples):
        runs = samples["runs"]
        finite = np.isfinite(runs["losses"])
        thetas, losses = runs["thetas"][finite], runs["losses"][finite]
        embedding, potential = phate_embedding(thetas, self.phate_knn_k, self.phate_decay, self.n_landmark, self.seed)
        edges = potential_knn_edges(potential, self.knn_k)
        d0, d1 = graph_diagrams(losses, edges, self.close_essential, self.flag)
        last = runs["epochs"][finite] == runs["epochs"].max()
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
                  "seeds": runs["seeds"][finite], "step_sizes": runs["step_sizes"][finite],
                  "epochs": runs["epochs"][finite]}
        return metrics, arrays


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
