"""Persistence of a loss-filtered graph (Horoi et al. 2022, §2.2, §3.3): vertices at their loss,
edges at the larger endpoint loss; diagrams D0 and D1 by gudhi; total persistence.

Horoi et al. 2022 define pers(D) = sum over (c, d) in D of |d - c|^2 (§3.3). Over a graph two
kinds of class never die: one component per connected piece (D0) and every independent cycle
(D1, a graph has no 2-cells to fill it). Their death is infinite, so the total over them is not
defined; the authors' released code closes them at the maximum loss, which makes the total mostly
a measure of the loss range (the jump height), not of the graph. lossatlas therefore reports:

- the total over the **finite** pairs (mergers of components, cycles filled by triangles);
- the number of essential classes per dimension;
- the released code's **closed** totals (plain graph, essential classes die at the maximum loss),
  under names that say so, for comparison.

``flag=True`` adds the triangles of the graph (gudhi ``expansion(2)``: the 2-skeleton of its
clique complex), each entering at its largest vertex loss, so a cycle dies when it is filled;
without them D1 has no finite point.
"""
from __future__ import annotations

import numpy as np

from .graphs import lower_star_tree


def graph_diagrams(values, edges, flag: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(D0, D1) as (k, 2) birth/death arrays; essential classes die at inf."""
    values = np.asarray(values, dtype=float)
    tree = lower_star_tree(values, edges)
    if flag:
        tree.expansion(2)
        tree.make_filtration_non_decreasing()
    tree.compute_persistence(persistence_dim_max=True)
    return tuple(np.asarray(tree.persistence_intervals_in_dimension(dim), dtype=float).reshape(-1, 2)
                 for dim in (0, 1))


def closed(diagram: np.ndarray, at: float) -> np.ndarray:
    """The diagram with its essential classes dying at ``at`` (the released code's convention)."""
    diagram = np.array(diagram, dtype=float).reshape(-1, 2)
    diagram[np.isinf(diagram[:, 1]), 1] = at
    return diagram


def total_persistence(diagram: np.ndarray, p: float = 2.0) -> float:
    """pers(D) = sum (death - birth)^p over the finite points of D (Horoi et al. 2022, §3.3, p = 2)."""
    finite = diagram[np.isfinite(diagram[:, 1])]
    return float(np.sum((finite[:, 1] - finite[:, 0]) ** p))


def n_essential(diagram: np.ndarray) -> int:
    """Classes that never die."""
    return int(np.isinf(diagram[:, 1]).sum())
