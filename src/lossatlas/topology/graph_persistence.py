"""Persistence of a loss-filtered graph (Horoi et al. 2022, §2.2, §3.3): vertices at their loss,
edges at the larger endpoint loss; diagrams D0 and D1 by gudhi; total persistence.

In a graph no 1-cycle ever dies, and one component per connected piece never dies: with
``close_essential`` (default) those classes are closed at the maximum loss, as is usual for
graph filtrations, so they contribute to total persistence. ``flag=True`` adds the triangles
of the graph (gudhi ``expansion(2)``), where a triangle enters at its largest vertex loss and
can kill a cycle.
"""
from __future__ import annotations

import numpy as np

from .graphs import lower_star_tree


def graph_diagrams(values, edges, close_essential: bool = True, flag: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(D0, D1) as (k, 2) birth/death arrays; essential deaths are inf unless closed."""
    values = np.asarray(values, dtype=float)
    tree = lower_star_tree(values, edges)
    if flag:
        tree.expansion(2)
        tree.make_filtration_non_decreasing()
    tree.compute_persistence(persistence_dim_max=True)
    diagrams = []
    for dim in (0, 1):
        diagram = np.asarray(tree.persistence_intervals_in_dimension(dim), dtype=float).reshape(-1, 2)
        if close_essential and len(values):
            diagram[:, 1] = np.where(np.isinf(diagram[:, 1]), values.max(), diagram[:, 1])
        diagrams.append(diagram)
    return diagrams[0], diagrams[1]


def total_persistence(diagram: np.ndarray, p: float = 2.0) -> float:
    """pers(D) = sum (death - birth)^p over the finite points of D (Horoi et al. 2022, §3.3, p = 2)."""
    finite = diagram[np.isfinite(diagram[:, 1])]
    return float(np.sum((finite[:, 1] - finite[:, 0]) ** p))
