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

import contextlib
import logging
import warnings

import numpy as np

from lossatlas import memory
from lossatlas.analyzer import diagnostic, measure, view
from lossatlas.errors import ConfigError, NonFiniteLossError
from lossatlas.memory import Memory
from lossatlas.params import Boolean, Interval, Options, param, same_as
from lossatlas.plots import colorbar, draw_diagram, finite_or_nan, finite_range, loss_label, metric, no_data, rows
from lossatlas.point_analyzer import PointAnalyzer
from lossatlas.samplers import JumpRetrainRuns, reference_recipe
from lossatlas.topology.graph_persistence import closed, graph_diagrams, n_essential, total_persistence
from lossatlas.topology.graphs import knn_edges
from lossatlas.training import RECIPE_CONSTRAINTS


MIN_SAMPLES = 4  # PHATE divides by zero below 4 points
log = logging.getLogger(__name__)  # "lossatlas.methods.jump_retrain": what PHATE reported, in one line per result


def log_loss_limits(result) -> tuple[float, float] | None:
    """The (low, high) of log10 of the filtering losses: the colour scale side-by-side panels share."""
    losses = np.asarray(result.arrays.get("filtration", result.arrays.get("losses", [])), dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return finite_range(np.log10(np.maximum(losses, 1e-12)))


def draw_phate(ax, result, limits: tuple | None = None) -> None:
    """PHATE embedding coloured by log10 loss (on ``limits`` where panels share one scale), each run
    a line, jumps as stars (size ~ step)."""
    ax.set(xticks=[], yticks=[], xlabel="PHATE 1 (arbitrary units)", ylabel="PHATE 2 (arbitrary units)",
           title=f"PHATE: TP0 {metric(result, 'total_persistence_0_finite'):.3g}, "
                                       f"TP1 {metric(result, 'total_persistence_1_finite'):.3g} (finite)")
    embedding = rows(result.arrays.get("embedding"), 2)
    if not np.isfinite(embedding).all(axis=1).any():
        no_data(ax)
        return
    n = len(embedding)
    losses = np.asarray(result.arrays.get("filtration", result.arrays["losses"]), dtype=float)
    split = _split(result)
    with np.errstate(invalid="ignore", divide="ignore"):
        colors = finite_or_nan(np.log10(np.maximum(losses, 1e-12)))
    if np.isfinite(colors).any():
        low, high = limits if limits is not None else (None, None)
        points = ax.scatter(embedding[:, 0], embedding[:, 1], c=colors, s=8, cmap="viridis", zorder=2,
                            plotnonfinite=True, vmin=low, vmax=high)
        colorbar(ax, points, f"log₁₀ {loss_label(split + ' loss')}")
    else:
        ax.scatter(embedding[:, 0], embedding[:, 1], c="gray", s=8, zorder=2)
    seeds = np.asarray(result.arrays.get("seeds", np.zeros(n)))
    steps = np.asarray(result.arrays.get("step_sizes", np.zeros(n)), dtype=float)
    epochs = np.asarray(result.arrays.get("epochs", np.ones(n)))
    for seed in np.unique(seeds):
        for step in np.unique(steps):
            run = (seeds == seed) & (steps == step)
            ax.plot(embedding[run, 0], embedding[run, 1], lw=0.6, c=f"C{int(seed) % 8}", zorder=1,
                    label="a retraining run (colour: seed)" if seed == seeds[0] and step == steps[0] else None)
    jumps = epochs == 0
    if jumps.any():
        sizes = 20 + 60 * np.nan_to_num(steps[jumps], nan=0.0, posinf=1.0, neginf=0.0)
        ax.scatter(embedding[jumps, 0], embedding[jumps, 1], marker="*", s=sizes, c="k", zorder=3,
                   label="jump (size ∝ step)")
    ax.legend(loc="best", frameon=True, framealpha=0.8)  # framed: the cloud may run under it


def _split(result) -> str:
    """The split whose loss filters the graph (and colours the embedding)."""
    return (getattr(result, "params", None) or {}).get("loss_split", "train")


def draw_diagram_0(ax, result) -> None:
    """The diagram D0 of the loss-filtered kNN graph."""
    draw_diagram(ax, result.arrays.get("diagram_0"))
    ax.set_title(f"D0 of the {_split(result)} loss: TP {metric(result, 'total_persistence_0_finite'):.3g} (finite)")


def draw_diagram_1(ax, result) -> None:
    """The diagram D1 of the loss-filtered kNN graph."""
    draw_diagram(ax, result.arrays.get("diagram_1"))
    ax.set_title(f"D1 of the {_split(result)} loss: TP {metric(result, 'total_persistence_1_finite'):.3g} (finite)")


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
        "phate_components": diagnostic("connected components of PHATE's own kNN kernel graph; above 1 the embedding "
                                       "(the figure) places the pieces arbitrarily relative to each other"),
        "phate_mds_converged": diagnostic("0 where PHATE's SGD-MDS stopped with its stress still changing: the 2-D "
                                          "embedding (the figure only; no measure reads it) may be unsettled"),
        "final_loss_mean": measure("mean evaluation loss at the last epoch of the retraining runs (NaN: every "
                                   "run diverged)", higher_is_better=False),
        "final_loss_max": measure("largest evaluation loss at the last epoch of the retraining runs (NaN: every "
                                  "run diverged)", higher_is_better=False),
        "final_loss_min": measure("smallest evaluation loss at the last epoch of the retraining runs (NaN: every "
                                  "run diverged)", higher_is_better=False),
    }
    views = {"phate": view(draw_phate, shared="colour", limits_of=log_loss_limits),
             "diagram_0": view(draw_diagram_0, shared="xy"), "diagram_1": view(draw_diagram_1, shared="xy")}
    smoke_params = {"at": "theta0", "seeds": [0, 1], "step_sizes": [0.5, 1.0], "epochs": 8, "steps_per_epoch": 5,
                    "knn_k": 5}
    version = 3  # the kNN graph's components joined (connect='nearest'), and counted
    references = ("Horoi et al. 2022, Exploring the Geometry and Topology of NN Loss Landscapes",)

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
            with quiet_phate():
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
        phate_info = {}
        with quiet_phate() as said:
            embedding, potential = phate_embedding(thetas, self.phate_knn_k, self.phate_decay, self.n_landmark,
                                                   self.seed, info=phate_info)
        edges = potential_knn_edges(potential, self.knn_k)
        pieces = n_components(len(potential), edges)
        bridges = connecting_edges(potential, edges) if self.connect == "nearest" else np.zeros((0, 2), dtype=int)
        edges = np.unique(np.sort(np.concatenate([edges, bridges]), axis=1), axis=0)
        metrics, diagrams = persistence_metrics(filtration[finite], edges, self.flag, self.p)
        unsettled = any("may not have converged" in text for text in said)
        components = phate_info.get("components", -1)  # -1: this PHATE does not say
        metrics.update(knn_components=float(pieces), connecting_edges=float(len(bridges)),
                       phate_components=float(components) if components >= 0 else float("nan"),
                       phate_mds_converged=0.0 if unsettled else 1.0)
        where = f"{subject.name} minimum {self.minimum}" if self.at == "minimum" else f"{subject.name} at {self.at}"
        _report_phate(where, self, pieces, len(bridges), phate_info, unsettled, thetas.shape, said)
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


def phate_embedding(thetas: np.ndarray, knn: int, decay: float, n_landmark: int, seed: int,
                    info: dict | None = None):
    """2-D PHATE with cosine distances for the kNN graph and MDS; returns (embedding, potential).
    ``info``, when given, receives ``components``: the connected components of PHATE's kernel graph."""
    import phate

    operator = phate.PHATE(n_components=2, knn=min(knn, len(thetas) - 1), decay=decay, n_landmark=n_landmark,
                           knn_dist="cosine", mds_dist="cosine", random_state=seed, n_jobs=1, verbose=0)
    embedding = operator.fit_transform(thetas)
    if info is not None:
        info["components"] = int(getattr(operator.graph, "n_connected_components", -1))
    return np.asarray(embedding), np.asarray(operator.diff_potential)


_PHATE_KNOWN = ("Graph is disconnected", "may not have converged", "is expensive")


@contextlib.contextmanager
def quiet_phate():
    """What PHATE and graphtools print while embedding, caught and yielded as a list of messages
    (filled when the block ends): PHATE warns through ``warnings`` (a disconnected graph),
    graphtools too (a kNN graph on raw coordinates, "expensive"), and SGD-MDS logs through
    graphtools' own logger, which writes to stdout. ``compute`` turns them into diagnostics and one
    line of the lossatlas log, so nothing raw reaches the console."""
    said: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        said.append(record.getMessage().strip())
        return False  # dropped: graphtools' handler never prints it

    graphtools = logging.getLogger("graphtools")
    graphtools.addFilter(keep)
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            yield said
    finally:
        graphtools.removeFilter(keep)
    said.extend(str(w.message).strip() for w in raised)


def _report_phate(where: str, analyzer: JumpRetrain, pieces: int, bridges: int, info: dict, unsettled: bool,
                  shape: tuple, said: list[str]) -> None:
    """One line of the lossatlas log for what the kNN graphs and PHATE did (``quiet_phate``); what
    PHATE said that lossatlas does not recognise is kept, at debug level."""
    notes = []
    if pieces > 1:
        notes.append(f"the kNN graph (k={analyzer.knn_k}) fell into {pieces} pieces (knn_components), "
                     + (f"joined by {bridges} shortest potential distances" if bridges else
                        "left apart (connect='none'): its persistence sees pieces"))
    if info.get("components", 1) > 1:
        notes.append(f"PHATE's kernel graph (phate_knn_k={analyzer.phate_knn_k}) has {info['components']} components "
                     "(phate_components): the figure places them arbitrarily")
    if unsettled:
        notes.append("the 2-D embedding (figure only) had not settled (phate_mds_converged = 0)")
    level = logging.WARNING if notes else logging.INFO
    if any("is expensive" in text for text in said):
        notes.append(f"PHATE built its neighbour graph on all {shape[1]} coordinates of the {shape[0]} samples (fine "
                     "here; slow for many samples)")
    if notes:
        log.log(level, "jump-retrain on %s: %s.", where, "; ".join(notes))
    for text in said:
        if not any(known in text for known in _PHATE_KNOWN):
            log.debug("jump-retrain on %s: PHATE said: %s", where, text)


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
