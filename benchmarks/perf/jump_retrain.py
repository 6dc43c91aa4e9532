"""Jump-and-retrain cost relative to training one minimum, and its time split: retraining vs
PHATE vs persistence (ResNet-20, digits).

    python -m benchmarks.perf --only jump_retrain

4 seeds x 4 step sizes x ``epochs`` retraining epochs from one trained minimum (10 epochs), then
cosine PHATE, the k = 20 potential-distance kNN graph and its persistence. Part of
``python -m benchmarks.perf``.
"""
from __future__ import annotations

import warnings

from lossatlas import Recipe, Store, train_minima
from lossatlas.methods.jump_retrain import phate_embedding, potential_knn_edges
from lossatlas.problems import resnet
from lossatlas.samplers.jump_retrain import jump_and_retrain
from lossatlas.topology.graph_persistence import graph_diagrams, total_persistence

from .common import Section, log, table, timed


def run(quick: bool = False, epochs: int | None = None) -> Section:
    epochs = epochs or (2 if quick else 10)
    minimum_epochs = 2 if quick else 10
    warnings.simplefilter("ignore", RuntimeWarning)
    subject = resnet(skip=True)
    log(f"jump and retrain: {subject.name}")
    with Store.memory() as store:
        recipe = Recipe(lr=0.05, epochs=minimum_epochs, batch_size=64, schedule="cosine")
        t_minimum, _ = timed(lambda: train_minima(store, subject, recipe, seeds=[0], progress=False))
        t_retrain, samples = timed(lambda: jump_and_retrain(store, subject, epochs=epochs, recipe={"batch_size": 64},
                                                            progress=False))
    t_phate, (_, potential) = timed(lambda: phate_embedding(samples["thetas"], 5, 40.0, 2000, 0))

    def topology():
        d0, d1 = graph_diagrams(samples["losses"], potential_knn_edges(potential, 20), flag=True)
        return total_persistence(d0), total_persistence(d1)

    t_topology, persistence = timed(topology)
    total = t_retrain + t_phate + t_topology
    section = Section("jump_retrain", "Jump and retrain vs training one minimum")
    section.text.append(
        f"ResNet-20 (skip) on digits: training the minimum ({minimum_epochs} epochs, SGD, cosine) took "
        f"{t_minimum:.1f} s; jump and retrain from it, 16 runs (4 seeds × 4 step sizes) of {epochs} epochs, "
        f"{len(samples['losses'])} samples, then PHATE and the kNN-graph persistence, took {total:.1f} s: "
        f"**{total / t_minimum:.1f}× one minimum** ({t_retrain / t_minimum:.1f}× for the retraining alone; "
        f"16 runs of {epochs} epochs are {16 * epochs / minimum_epochs:.0f} minima's worth of epochs). "
        f"Total persistence of the finite pairs (triangles added) D0 {persistence[0]:.4g}, "
        f"D1 {persistence[1]:.4g}. No target: the issue asks for the ratio.")
    rows = [[name, f"{seconds:.2f}", f"{seconds / total:.1%}", f"{seconds / t_minimum:.2f}"]
            for name, seconds in (("retraining (16 runs)", t_retrain), ("PHATE (cosine)", t_phate),
                                  ("kNN graph + persistence", t_topology))]
    section.tables.append(table(["stage", "seconds", "share", "÷ one minimum"], rows))
    return section
