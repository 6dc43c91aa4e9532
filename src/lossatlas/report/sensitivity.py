"""Sensitivity of each measure to its own nuisance choices: a method of
``[sensitivity]`` is rerun at every listed setting (direction seed, resolution, span,
representation, k, ...), and for each of its measures the report asks whether its verdict holds:
Kendall's tau against the error and against every factor at every setting, and how much the
measure moves at one minimum across settings compared with how much it differs between minima.

A measure is *unstable* when its tau against some target flips between settings (one at or above
+0.2, another at or below -0.2; or constant -- "no change" -- at one setting and |tau| >= 0.4 at
another; settings with too few observations are left out), or when some
setting orders the variants' means no better than at random relative to the base (Kendall tau
<= 0): its verdict then depends on a nuisance choice.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from .collect import Study, is_finite
from .comparison import Association, associate_in_design, csv_cell, factors, samples

BASE = "base"
FLIP = 0.2  # a sign change counts as a flip only between taus beyond +-FLIP: not noise around 0


@dataclass
class Stability:
    """One measure over the settings of its method."""

    measure: str
    settings: list[str]
    taus: dict[str, list[float]] = field(default_factory=dict)  # target -> tau per setting (base first)
    nuisance_sd: float = math.nan  # mean over minima of the sd across settings
    between_sd: float = math.nan  # sd across the minima at the base setting
    order_tau_min: float = math.nan  # the least Kendall tau between a setting's variant means and the base's

    @property
    def holds(self) -> bool | None:
        """No flip of tau against any target -- one setting >= +FLIP and another <= -FLIP, or a
        setting where the measure is constant (tau 0: "no change") and another with |tau| >=
        2 FLIP -- and no setting that orders the variants against the base (least variant-order
        tau <= 0); None where nothing could be compared."""
        taus = [[t for t in values if not math.isnan(t)] for values in self.taus.values()]
        if math.isnan(self.order_tau_min) and not any(len(t) > 1 for t in taus):
            return None
        if not math.isnan(self.order_tau_min) and self.order_tau_min <= 0:
            return False
        return not any(t and ((max(t) >= FLIP and min(t) <= -FLIP) or (0.0 in t and max(map(abs, t)) >= 2 * FLIP))
                       for t in taus)


def analyse(study: Study) -> tuple[list[tuple[str, Association]], list[Stability]]:
    """(setting, association) for every measure of a ``[sensitivity]`` method, setting and target;
    and each measure's stability."""
    error = study.record.report.error
    targets = ([error] if error else []) + factors(study)
    found, stabilities = [], []
    for label, settings in study.sensitivity.items():
        rows_of = {BASE: study.rows, **settings}
        for measure in (c for c in study.measure_columns if c.split(".", 1)[0] == label):
            stability = Stability(measure, list(rows_of))
            for target in targets:
                taus = []
                for setting, rows in rows_of.items():
                    association = associate_in_design(study, measure, target, rows)
                    found.append((setting, association))
                    constant = not association.defined and association.note == "constant"
                    taus.append(0.0 if constant else association.kendall_tau)  # constant: no association
                stability.taus[target] = taus
            _spread(study, stability, rows_of)
            stabilities.append(stability)
    return found, stabilities


def verdicts(stabilities: list[Stability]) -> dict[str, str]:
    """measure -> "yes" / "no": whether its verdicts hold over the settings ("" where nothing could
    be compared); the comparison marks the unstable ones (``comparison_csv``, ``comparison_table``)."""
    return {s.measure: {True: "yes", False: "no", None: ""}[s.holds] for s in stabilities}


def sensitivity_csv(found: list[tuple[str, Association]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["n", "kendall_tau", "spearman_rho", "p_value", "ci_low", "ci_high"]
    writer.writerow(["measure", "setting", "against", *columns])
    for setting, a in found:
        writer.writerow([a.measure, setting, a.against, *(csv_cell(getattr(a, c)) for c in columns)])
    return buffer.getvalue()


def stability_rows(stabilities: list[Stability]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report's sensitivity table."""
    targets = list(stabilities[0].taus) if stabilities else []
    header = ["measure", "settings"] + [f"τ vs {t} (base; range)" for t in targets] + \
        ["nuisance sd / between-minima sd", "variant order (least τ)", "verdict holds"]
    rows = []
    for s in stabilities:
        cells = [s.measure, str(len(s.settings))]
        for target in targets:
            taus = [t for t in s.taus[target] if not math.isnan(t)]
            base = s.taus[target][0]
            cells.append(("–" if math.isnan(base) else f"{base:+.2f}") +
                         (f"; {min(taus):+.2f} … {max(taus):+.2f}" if taus else ""))
        ratio = s.nuisance_sd / s.between_sd if s.between_sd > 0 else (math.inf if s.nuisance_sd > 0 else math.nan)
        cells.append("–" if math.isnan(ratio) else f"{ratio:.2f}")
        cells.append("–" if math.isnan(s.order_tau_min) else f"{s.order_tau_min:+.2f}")
        cells.append({True: "yes", False: "**no (unstable)**", None: "–"}[s.holds])
        rows.append(cells)
    return header, rows


def figure(found: list[tuple[str, Association]], title: str, display=str):
    """Kendall's tau of each measure at each setting (the base in black, every other setting its
    own colour and marker, named in the legend), one panel per target, with the 95% intervals;
    one x-axis [-1, 1] for all panels; two paper columns wide."""
    import matplotlib.pyplot as plt

    from .. import plots

    targets = list(dict.fromkeys(a.against for _, a in found))
    measures = list(dict.fromkeys(a.measure for _, a in found))
    settings = list(dict.fromkeys(setting for setting, _ in found))
    offset = {s: 0.5 * (i - (len(settings) - 1) / 2) / max(len(settings), 1) for i, s in enumerate(settings)}
    others = [s for s in settings if s != BASE]
    style = {BASE: ("black", "o")} | {s: (f"C{i % 6}", "sD^v<>"[i % 6]) for i, s in enumerate(others)}
    names = [display(m) for m in measures]
    label_in = max((len(n) for n in names), default=10) * 0.055  # inches the measure names take at 7 pt
    width = plots.PAGE if len(targets) > 1 or label_in > 1.2 else plots.COLUMN
    fig, axes = plt.subplots(1, len(targets), figsize=(width, 0.28 * len(measures) + 1.3), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, target in zip(axes[0], targets):
        for setting, a in found:
            if a.against != target or math.isnan(a.kendall_tau):
                continue
            y = measures.index(a.measure) + offset[setting]  # settings side by side, not on top of each other
            colour, marker = style[setting]
            if not math.isnan(a.ci_low):
                ax.plot([a.ci_low, a.ci_high], [y, y], color=colour, alpha=0.3, lw=2.5, solid_capstyle="butt")
            ax.plot(a.kendall_tau, y, marker, color=colour, ms=4 if setting == BASE else 3.5,
                    label=f"{setting} (the method's own)" if setting == BASE else setting)
        if not ax.lines:
            plots.no_data(ax, "no τ defined (constant or too few observations)")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel(f"Kendall's τ vs {target}")
        ax.set_yticks(range(len(measures)), names, fontsize=7)
        ax.invert_yaxis()
    axes[0][0].set_ylabel("measure")
    handles = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(4, len(handles)),
                   title="setting")
    fig.suptitle(title)
    return fig


def _spread(study: Study, stability: Stability, rows_of: dict[str, list[dict]]) -> None:
    measure = stability.measure
    by_point: dict[tuple, list[float]] = {}
    means: dict[str, dict[str, float]] = {}
    for setting, rows in rows_of.items():
        observed = samples(study, measure, rows)
        for r in observed:
            if is_finite(r.get(measure)):
                by_point.setdefault((r["subject"], r["minimum"]), []).append(float(r[measure]))
        per_variant: dict[str, list[float]] = {}
        for r in observed:
            if is_finite(r.get(measure)):
                per_variant.setdefault(r["subject"], []).append(float(r[measure]))
        means[setting] = {subject: float(np.mean(v)) for subject, v in per_variant.items()}
    sds = [np.std(v, ddof=1) for v in by_point.values() if len(v) > 1]
    stability.nuisance_sd = float(np.mean(sds)) if sds else math.nan
    base = [float(r[measure]) for r in samples(study, measure, rows_of[BASE]) if is_finite(r.get(measure))]
    stability.between_sd = float(np.std(base, ddof=1)) if len(base) > 1 else math.nan
    subjects = list(means[BASE])
    orders = [stats.kendall_tau([means[BASE][s] for s in subjects], [means[setting].get(s, math.nan)
                                                                      for s in subjects])
              for setting in rows_of if setting != BASE]
    orders = [t for t in orders if not math.isnan(t)]
    stability.order_tau_min = min(orders) if orders else math.nan
