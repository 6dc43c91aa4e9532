"""The ``jump-retrain`` analyzer (Horoi et al. 2022, §3.1-3.3, §4.4).

Jump-and-retrain trajectories around a minimum (lossatlas.samplers.jump_retrain) are embedded
with PHATE using cosine distances for the kNN graph and for MDS (§3.2). A kNN graph (k = 20,
§3.3) is built on the *potential distances* — Euclidean distances between rows of PHATE's
diffusion potential, the distance PHATE's MDS embeds (rows are n x landmarks above
``n_landmark`` samples) — and filtered by each sample's own loss: the training (evaluation) loss,
or with ``loss_split="test"`` the test loss, which the released code uses. Its diagrams D0 and
D1 (gudhi) give the total persistence pers(D) = sum (death - birth)^p, p = 2.

A kNN graph can fall into pieces, one per retraining run, when the runs stay apart (an MLP on
digits with k = 20 over 16 runs: 16 components); then D0 sees only the runs, and its finite
total is 0. By default (``connect="nearest"``) the pieces are joined by the shortest potential
distances between them, one edge per extra piece (a minimum spanning tree over the pieces), and
``knn_components`` records how many there were.

Over a graph the essential classes never die (lossatlas.topology.graph_persistence), so the
headline totals are over the finite pairs: D0's mergers of components, and D1's cycles filled
by a triangle of the kNN graph's clique complex (``flag=True``, the default: three mutually
neighbouring samples bound a triangle; without triangles no cycle dies and D1 has no finite
point). The released code's totals, with the plain graph's essential classes closed at the
maximum loss, are kept as ``*_closed`` for comparison; they mostly measure the jump height.

The authors' released code (KrishnaswamyLab/NN-LossLandscape-PHATE) instead takes the 20
*largest* entries of each potential row (the farthest points) and shifts losses by one vertex;
lossatlas does not reproduce those defects. The starting minimum is stored but, as in the
reference, not embedded. Samples with non-finite loss are left out of the embedding and counted.
"""
from __future__ import annotations

import warnings

import numpy as np

from lossatlas import memory
from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.errors import ConfigError, NonFiniteLossError
from lossatlas.memory import Memory
from lossatlas.params import Boolean, Interval, Options, param, same_as
from lossatlas.plots import draw_diagram, finite_or_nan, metric, no_data, rows
from lossatlas.point_analyzer import PointAnalyzer
from lossatlas.samplers import JumpRetrainRuns, reference_recipe
from lossatlas.topology.graph_persistence import closed, graph_diagrams, n_essential, total_persistence
from lossatlas.topology.graphs import knn_edges
from lossatlas.training import RECIPE_CONSTRAINTS


MIN_SAMPLES = 4  # PHATE divides by zero below 4 points


def draw_phate(ax, result) -> None:
    """PHATE embedding coloured by log10 loss, each run a line, jumps as stars (size ~ step)."""
    ax.set(xticks=[], yticks=[], xlabel="PHATE 1", ylabel="PHATE 2",
           title=f"PHATE: TP0 {metric(result, 'total_persistence_0_finite'):.3g}, "
                                       f"TP1 {metric(result, 'total_persistence_1_finite'):.3g} (finite)")
    embedding = rows(result.arrays.get("embedding"), 2)
    if not np.isfinite(embedding).all(axis=1).any():
        no_data(ax)
        return
    n = len(embedding)
    losses = np.asarray(result.arrays.get("filtration", result.arrays["losses"]), dtype=float)
    split = (getattr(result, "params", None) or {}).get("loss_split", "train")
    with np.errstate(invalid="ignore", divide="ignore"):
        colors = finite_or_nan(np.log10(np.maximum(losses, 1e-12)))
    if np.isfinite(colors).any():
        points = ax.scatter(embedding[:, 0], embedding[:, 1], c=colors, s=8, cmap="viridis", zorder=2,
                            plotnonfinite=True)
        ax.figure.colorbar(points, ax=ax, label=f"log10 {split} loss (the filtration)")
    else:
        ax.scatter(embedding[:, 0], embedding[:, 1], c="gray", s=8, zorder=2)
    seeds = np.asarray(result.arrays.get("seeds", np.zeros(n)))
    steps = np.asarray(result.arrays.get("step_sizes", np.zeros(n)), dtype=float)
    epochs = np.asarray(result.arrays.get("epochs", np.ones(n)))
    for seed in np.unique(seeds):
        for step in np.unique(steps):
            run = (seeds == seed) & (steps == step)
            ax.plot(embedding[run, 0], embedding[run, 1], lw=0.6, c=f"C{int(seed) % 10}", zorder=1)
    jumps = epochs == 0
    if jumps.any():
        sizes = 40 + 120 * np.nan_to_num(steps[jumps], nan=0.0, posinf=1.0, neginf=0.0)
        ax.scatter(embedding[jumps, 0], embedding[jumps, 1], marker="*", s=sizes, c="k", zorder=3,
                   label="jumps (size ~ step)")
        ax.legend(fontsize=7)


def draw_diagram_0(ax, result) -> None:
    """The diagram D0 of the loss-filtered kNN graph."""
    draw_diagram(ax, result.arrays.get("diagram_0"))
    ax.set_title(f"D0: total persistence {metric(result, 'total_persistence_0_finite'):.3g} (finite pairs)")


def draw_diagram_1(ax, result) -> None:
    """The diagram D1 of the loss-filtered kNN graph."""
    draw_diagram(ax, result.arrays.get("diagram_1"))
    ax.set_title(f"D1: total persistence {metric(result, 'total_persistence_1_finite'):.3g} (finite pairs)")


class JumpRetrain(PointAnalyzer):
    name = "jump-retrain"
    description = "Jump-and-retrain trajectories, cosine PHATE, kNN-graph loss persistence (Horoi et al. 2022)."
    scope = "minimum"
    metrics = {
        "total_persistence_0_finite": measure("sum (death - birth)^p over the finite pairs of D0 (components "
                                              "merging as the loss threshold rises)", higher_is_better=False),
        "total_persistence_1_finite": measure("sum (death - birth)^p over the finite pairs of D1 (cycles filled by "
                                              "triangles of the kNN clique complex; 0 with flag=False)",
                                              higher_is_better=False),
        "total_persistence_0_closed": measure("the released code's convention: D0 of the plain kNN graph, essential "
                                              "classes closed at the maximum loss (mostly (max - min)^p)",
                                              higher_is_better=False),
        "total_persistence_1_closed": measure("the released code's convention: D1 of the plain kNN graph, every "
                                              "cycle closed at the maximum loss", higher_is_better=False),
        "n_essential_0": diagnostic("connected components of the graph that was filtered (D0 classes that never "
                                    "die); 1 once connect='nearest' has joined the kNN graph's pieces"),
        "knn_components": diagnostic("connected components of the kNN graph itself; above 1 its pieces are usually "
                                     "the retraining runs, and a graph of runs measures nothing of the landscape "
                                     "between them (connect='nearest' joins them, connect='none' leaves them)"),
        "connecting_edges": diagnostic("edges connect='nearest' added between the kNN graph's components"),
        "n_essential_1": diagnostic("cycles that are never filled (D1 classes that never die)"),
        "n_points_0": diagnostic("finite points in D0"),
        "n_points_1": diagnostic("finite points in D1"),
        "n_points": diagnostic("samples embedded (finite loss)"),
        "n_nonfinite": diagnostic("samples with a NaN/inf loss (diverged runs), left out"),
        "final_loss_mean": measure("mean evaluation loss at the last epoch of the retraining runs (NaN: every "
                                   "run diverged)", higher_is_better=False),
        "final_loss_max": measure("largest evaluation loss at the last epoch of the retraining runs (NaN: every "
                                  "run diverged)", higher_is_better=False),
        "final_loss_min": measure("smallest evaluation loss at the last epoch of the retraining runs (NaN: every "
                                  "run diverged)", higher_is_better=False),
    }
    views = {"phate": view(draw_phate), "diagram_0": view(draw_diagram_0, shared="xy"),
             "diagram_1": view(draw_diagram_1, shared="xy")}
    smoke_params = {"at": "theta0", "seeds": [0, 1], "step_sizes": [0.5, 1.0], "epochs": 8, "steps_per_epoch": 5,
                    "knn_k": 5}
    version = 3  # the kNN graph's components joined (connect='nearest'), and counted

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
    flag: bool = param(True, Boolean(), "add the triangles of the kNN graph, so that cycles can die")
    connect: str = param("nearest", Options(("nearest", "none")),
                         "join the kNN graph's components by their shortest potential distances (a minimum spanning "
                         "tree over the components), so its persistence sees one landscape; 'none': leave them")
    loss_split: str = param("train", Options(("train", "test")),
                            "the loss that filters the graph: training (evaluation) loss or test loss")
    seed: int = param(0, Interval(int, 0))

    def recipe(self):
        return reference_recipe(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs)

    def check(self):
        self.recipe()  # the retraining recipe must be valid before any minimum is trained
        samples = len(self.seeds) * len(self.step_sizes) * (self.epochs + 1)
        if samples < MIN_SAMPLES:
            raise ConfigError(f"jump-retrain would record {samples} samples (seeds x step_sizes x (epochs + 1)); PHATE "
                              f"needs at least {MIN_SAMPLES}: add seeds, step sizes or epochs.")

    def requests(self, subject):
        return {"runs": JumpRetrainRuns(point=self.point(), seeds=tuple(self.seeds),
                                        step_sizes=tuple(self.step_sizes), recipe=self.recipe(),
                                        include_bn=self.include_bn, record_test=self.loss_split == "test")}

    def memory(self, subject):
        """The runs (``JumpRetrainRuns.memory``), then on the host: the finite records copied out
        (n x dim, the subject's dtype) and PHATE on them -- above 100 records and dimensions a
        randomized PCA to 100 components, which copies and centers the records and draws 110
        parameter-sized vectors in float64, cast and multiplied twice over (``sklearn``); the
        diffusion operator, potential and distances, about six n x min(n, n_landmark) float64
        matrices."""
        n, size = len(self.seeds) * len(self.step_sizes) * (self.epochs + 1), memory.itemsize(subject)
        pca = 110 * (8 + 3 * size) * subject.dim + memory.vectors(subject, n, size) \
            if min(n, subject.dim) > 100 else 0
        phate = memory.vectors(subject, n, size) + pca + 6 * 8 * n * min(n, self.n_landmark)
        return memory.requested(self, subject) + Memory(host=phate, lower="epochs, seeds or step_sizes")

    def work(self, subject):
        """Its work (``lossatlas.planning``) beyond its runs: PHATE on every recorded sample, timed on
        as many random points (at most 100 coordinates each: its PCA's components)."""
        n = len(self.seeds) * len(self.step_sizes) * (self.epochs + 1)

        def embed():
            points = np.random.default_rng(self.seed).normal(size=(n, min(subject.dim, 100)))
            phate_embedding(points, self.phate_knn_k, self.phate_decay, self.n_landmark, self.seed)

        return {("timed", f"PHATE of {n} samples", embed): 1}

    def compute(self, subject, samples):
        runs = samples["runs"]
        filtration = runs["test_losses"] if self.loss_split == "test" else runs["losses"]
        finite = np.isfinite(runs["losses"]) & np.isfinite(filtration)
        if finite.sum() < MIN_SAMPLES:
            raise NonFiniteLossError(f"Only {int(finite.sum())} of {len(finite)} jump-and-retrain samples of "
                                     f"{subject.name} have a finite loss; PHATE needs at least {MIN_SAMPLES}. The "
                                     "jumps diverged: use smaller step_sizes or a smaller lr.")
        thetas, losses = runs["thetas"][finite], runs["losses"][finite]
        embedding, potential = phate_embedding(thetas, self.phate_knn_k, self.phate_decay, self.n_landmark, self.seed)
        edges = potential_knn_edges(potential, self.knn_k)
        pieces = n_components(len(potential), edges)
        bridges = connecting_edges(potential, edges) if self.connect == "nearest" else np.zeros((0, 2), dtype=int)
        if pieces > 1:
            warnings.warn(f"{subject.name}: the jump-and-retrain kNN graph (k={self.knn_k}) has {pieces} components; "
                          + (f"joined by their {len(bridges)} shortest potential distances (connect='nearest')."
                             if len(bridges) else "left apart (connect='none'): its persistence sees pieces."),
                          stacklevel=2)
        edges = np.unique(np.sort(np.concatenate([edges, bridges]), axis=1), axis=0)
        metrics, diagrams = persistence_metrics(filtration[finite], edges, self.flag, self.p)
        metrics.update(knn_components=float(pieces), connecting_edges=float(len(bridges)))
        last = runs["epochs"][finite] == runs["epochs"].max()
        metrics.update({
            "n_points": float(len(losses)),
            "n_nonfinite": float((~finite).sum()),
            "final_loss_mean": float(losses[last].mean()) if last.any() else float("nan"),
            "final_loss_max": float(losses[last].max()) if last.any() else float("nan"),
            "final_loss_min": float(losses[last].min()) if last.any() else float("nan"),
        })
        arrays = {"embedding": embedding, **diagrams, "edges": edges, "losses": losses,
                  "filtration": filtration[finite],
                  "seeds": runs["seeds"][finite], "step_sizes": runs["step_sizes"][finite],
                  "epochs": runs["epochs"][finite]}
        return metrics, arrays


def persistence_metrics(values: np.ndarray, edges: np.ndarray, flag: bool, p: float):
    """Total persistence of the finite pairs, essential counts and the released code's closed totals
    of the graph filtered by ``values``; returns (metrics, {"diagram_0", "diagram_1"})."""
    d0, d1 = graph_diagrams(values, edges, flag)
    plain_d0, plain_d1 = (d0, d1) if not flag else graph_diagrams(values, edges, flag=False)
    top = float(values.max()) if len(values) else 0.0
    metrics = {
        "total_persistence_0_finite": total_persistence(d0, p),
        "total_persistence_1_finite": total_persistence(d1, p),
        "total_persistence_0_closed": total_persistence(closed(plain_d0, top), p),
        "total_persistence_1_closed": total_persistence(closed(plain_d1, top), p),
        "n_essential_0": float(n_essential(d0)),
        "n_essential_1": float(n_essential(d1)),
        "n_points_0": float(np.isfinite(d0[:, 1]).sum()),
        "n_points_1": float(np.isfinite(d1[:, 1]).sum()),
    }
    return metrics, {"diagram_0": d0, "diagram_1": d1}


def phate_embedding(thetas: np.ndarray, knn: int, decay: float, n_landmark: int, seed: int):
    """2-D PHATE with cosine distances for the kNN graph and MDS; returns (embedding, potential)."""
    import phate

    operator = phate.PHATE(n_components=2, knn=min(knn, len(thetas) - 1), decay=decay, n_landmark=n_landmark,
                           knn_dist="cosine", mds_dist="cosine", random_state=seed, n_jobs=1, verbose=0)
    embedding = operator.fit_transform(thetas)
    return np.asarray(embedding), np.asarray(operator.diff_potential)


def n_components(n: int, edges: np.ndarray) -> int:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)) if len(edges) else \
        coo_matrix((n, n))
    return int(connected_components(graph, directed=False)[0])


def connecting_edges(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The fewest, shortest edges that join a graph's components: between every two components the
    closest pair of points, then a minimum spanning tree over the components (Kruskal's on those
    pairs), so one more edge per extra component and none inside a component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
    from scipy.spatial.distance import cdist

    n = len(points)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    if count < 2:
        return np.zeros((0, 2), dtype=int)
    members = [np.flatnonzero(labels == c) for c in range(count)]
    weights, pairs = np.zeros((count, count)), {}
    for a in range(count):
        for b in range(a + 1, count):
            distances = cdist(points[members[a]], points[members[b]])
            i, j = np.unravel_index(np.argmin(distances), distances.shape)
            weights[a, b] = max(distances[i, j], 1e-300)  # a zero weight would read as no edge
            pairs[a, b] = (members[a][i], members[b][j])
    tree = minimum_spanning_tree(weights).tocoo()
    return np.array([sorted(pairs[min(a, b), max(a, b)]) for a, b in zip(tree.row, tree.col)], dtype=int)


def potential_knn_edges(potential: np.ndarray, k: int) -> np.ndarray:
    """Edges to each sample's k nearest neighbours in potential distance (Euclidean between
    rows of the diffusion potential), symmetrized."""
    return knn_edges(potential, k)
