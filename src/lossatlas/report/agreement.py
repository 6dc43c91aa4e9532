"""Agreement between methods: Kendall's tau between every pair of measures, across the
trained minima (per-minimum measures) and across the variants (per-variant means, every measure),
hierarchically clustered so that measures which rank the minima alike sit together.

Orientation: two measures that rank the minima in opposite order carry the same information, so
groups are formed on |tau|. Whether they *agree* is read from the analyzers' ``higher_is_better``:
"disagree" means that, both oriented so that higher is better, they rank the minima in opposite
order (tau <= -``STRONG``) -- one calls flatter what the other calls sharper.
"""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from .. import stats
from .collect import Study, is_finite
from .comparison import samples

STRONG = 0.6  # |tau| within a group (complete linkage: every pair), and for a disagreeing pair
MIN_N = 5  # below it even tau = +-1 has a two-sided exact p above 0.05 (n = 4: 2/24; n = 3: 2/6)


def matrix(study: Study, across: str = "minima") -> tuple[list[str], np.ndarray, int]:
    """(names, tau matrix, n observations) across ``"minima"`` (per-minimum measures and the error)
    or ``"variants"`` (every measure's per-variant mean). Constant measures are left out."""
    error = study.record.report.error
    columns = [c for c in ([error] if error else []) + study.measure_columns
               if across == "variants" or study.scopes.get(c.split(".", 1)[0], "minimum") == "minimum"]
    if across == "variants":
        table = [[_variant_mean(study, c, subject) for c in columns] for subject, _ in study.variants()]
    else:
        table = [[row.get(c) if is_finite(row.get(c)) else math.nan for c in columns] for row in study.rows]
    values = np.array(table, dtype=float).reshape(len(table), len(columns))
    keep = [i for i in range(len(columns)) if np.nanmax(values[:, i], initial=-np.inf) > np.nanmin(values[:, i],
                                                                                                  initial=np.inf)]
    names, values = [columns[i] for i in keep], values[:, keep]
    taus = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            taus[i, j] = taus[j, i] = stats.kendall_tau(values[:, i], values[:, j])
    return names, taus, len(values)


def cluster_order(taus: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Leaf order of average-linkage clustering on 1 - |tau|, and flat groups of complete linkage
    cut at 1 - STRONG (every pair in a group has |tau| >= STRONG)."""
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(taus) < 2:
        return list(range(len(taus))), np.ones(len(taus), dtype=int)
    distance = 1 - np.abs(np.nan_to_num(taus, nan=0.0))
    np.fill_diagonal(distance, 0)
    condensed = squareform(np.clip(distance, 0, 1), checks=False)
    order = leaves_list(linkage(condensed, "average"))
    groups = fcluster(linkage(condensed, "complete"), t=1 - STRONG + 1e-12, criterion="distance")
    return [int(i) for i in order], groups


def agreement_csv(names: list[str], taus: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["measure", *names])
    for name, row in zip(names, taus):
        writer.writerow([name, *("" if math.isnan(v) else repr(float(v)) for v in row)])
    return buffer.getvalue()


def summary(study: Study, names: list[str], taus: np.ndarray, n: int, across: str) -> str:
    """The groups of measures that rank alike and the pairs that disagree, in words."""
    if len(names) < 2:
        return f"Across the {across}: fewer than two non-constant measures, nothing to compare."
    if n < MIN_N:
        smallest = 2 / math.factorial(n) if n >= 2 else 1.0
        return (f"Across the {across} (n = {n}): too few to tell agreement from chance -- even τ = ±1 has a "
                f"two-sided p of {smallest:.2g} over {n} -- so no groups or disagreements are named; the matrix is in "
                "agreement.csv.")
    _, groups = cluster_order(taus)
    lines = [f"Across the {across} (n = {n}; Kendall's τ). Groups of measures that rank them alike, every pair with "
             f"|τ| ≥ {STRONG} (complete linkage; \"reversed\": in the opposite order to the first of its group):"]
    found = False
    for group in sorted(set(groups)):
        members = [i for i in range(len(names)) if groups[i] == group]
        if len(members) < 2:
            continue
        found = True
        first = members[0]
        signs = ", ".join(f"`{names[i]}`" + ("" if i == first or taus[first, i] >= 0 else " (reversed)")
                          for i in members)
        lines.append(f"- one group: {signs}")
    if not found:
        lines.append(f"- no two measures rank the {across} alike (|τ| < {STRONG} for every pair).")
    opposed = _disagreeing(study, names, taus)
    lines += [f"- disagree (oriented so that higher is better, τ = {tau:+.2f}): `{a}` vs `{b}`"
              for a, b, tau in opposed] or ["- no pair of measures with a declared better direction ranks "
                                            f"the {across} in opposite order (oriented τ ≤ -{STRONG})."]
    return "\n".join(lines)


def figure(names: list[str], taus: np.ndarray, title: str):
    """The clustered heatmap, one diverging colour scale fixed at [-1, 1] (red-blue: no red/green
    pair), one paper column wide for a few measures, two for more; tau written in the cells while
    they are large enough to read."""
    import matplotlib.pyplot as plt

    from .. import plots

    order, _ = cluster_order(taus)
    ordered = taus[np.ix_(order, order)]
    n = len(names)
    width = plots.COLUMN if n <= 8 else plots.PAGE
    cell = 72 * (width - 2.6) / max(n, 1)  # points a row gets, the labels and colour bar taking ~2.6 in
    fontsize = float(np.clip(0.55 * cell, 4.5, 7))
    fig, ax = plt.subplots(figsize=(width, width - 0.6 if n > 8 else width + 0.4), layout="constrained")
    image = ax.imshow(ordered, cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [names[i] for i in order]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    ax.set(xlabel="measure", ylabel="measure")
    if cell >= 16:
        for (i, j), tau in np.ndenumerate(ordered):
            if np.isfinite(tau):
                ax.text(j, i, f"{tau:.2f}", ha="center", va="center", fontsize=min(fontsize, 6),
                        color="white" if abs(tau) > 0.6 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="Kendall's τ (rank correlation, −1 to 1)", shrink=0.8)
    return fig


def _disagreeing(study: Study, names: list[str], taus: np.ndarray) -> list[tuple[str, str, float]]:
    better = {name: study.metric_info.get(name, {}).get("higher_is_better") for name in names}
    error = study.record.report.error
    if error in better:
        better[error] = False  # an error is lower-is-better by name
    out = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            if better[a] is None or better[b] is None or math.isnan(taus[i, j]):
                continue
            oriented = taus[i, j] * (1 if better[a] else -1) * (1 if better[b] else -1)
            if oriented <= -STRONG:
                out.append((a, b, float(oriented)))
    return out


def _variant_mean(study: Study, column: str, subject: str) -> float:
    values = [r[column] for r in samples(study, column) if r["subject"] == subject and is_finite(r.get(column))]
    return float(np.mean(values)) if values else math.nan
