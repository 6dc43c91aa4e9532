"""How far the curvature approximations are from the Hessian on every model of a study.

A ``hessian`` method of the benchmark computed with the Hessian itself and rerun in
``[sensitivity.<label>]`` with ``curvature = ["ggn", "ef"]`` gives, at the same minima, the
generalized Gauss-Newton and empirical-Fisher spectra beside the Hessian's. Per variant the table
shows the median over its minima of each approximation's top eigenvalue and trace as a multiple of
the Hessian's, and the smallest eigenvalues side by side: the GGN is positive semi-definite where
the loss is convex in the outputs, so the Hessian's negative curvature is what it cannot show
(Kunstner et al. 2019 on the empirical Fisher's scale and direction).
"""
from __future__ import annotations

import math
import statistics

from .collect import Study, is_finite
from .tables import Table

RATIOS = ("top_eigenvalue", "trace")


def table(study: Study) -> Table | None:
    """The table, or None where no ``hessian`` method of the study has a curvature setting."""
    rows = []
    for label, settings in study.sensitivity.items():
        method = study.record.methods[label]
        if method.analyzer != "hessian" or method.params.get("curvature", "hessian") != "hessian":
            continue
        for setting, approximated in settings.items():
            if not setting.startswith("curvature="):
                continue
            at = {(row["subject"], row["minimum"]): row for row in approximated}
            for subject, variant in study.variants():
                pairs = [(row, at.get((row["subject"], row["minimum"]))) for row in study.rows
                         if row["subject"] == subject]
                pairs = [(exact, other) for exact, other in pairs if other is not None]
                cells = [label, variant, setting.split("=", 1)[1], str(len(pairs))]
                for metric in RATIOS:
                    cells.append(_median([_ratio(other.get(f"{label}.{metric}"), exact.get(f"{label}.{metric}"))
                                          for exact, other in pairs], "×"))
                for source in (1, 0):  # the approximation's smallest eigenvalue, then the Hessian's
                    cells.append(_median([pair[source].get(f"{label}.bottom_eigenvalue") for pair in pairs]))
                rows.append(cells)
    if not rows:
        return None
    header = ["method", "variant", "curvature", "minima", "top eigenvalue / Hessian's", "trace / Hessian's",
              "smallest eigenvalue", "Hessian's smallest"]
    notes = ["Medians over each variant's minima of the approximation's value divided by the Hessian's at the same "
             "minimum (1×: the same); ggn: generalized Gauss-Newton (Schraudolph 2002), ef: empirical Fisher. "
             "From the method's [sensitivity] settings; – where a value is missing or not finite."]
    return Table(f"{study.record.name} ({study.record.scale} scale): curvature approximations against the Hessian",
                 header, rows, notes)


def _ratio(value, reference) -> float:
    if not (is_finite(value) and is_finite(reference)) or reference == 0:
        return math.nan
    return value / reference


def _median(values, unit: str = "") -> str:
    finite = [v for v in values if is_finite(v)]
    return f"{statistics.median(finite):.3g}{unit}" if finite else "–"
