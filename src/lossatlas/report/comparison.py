"""The method comparison: every measure against the error and against every factor, with the
variant as the unit of replication (its seeds averaged): Kendall's tau (the primary statistic, as
in Jiang et al. 2019) and Spearman's rho of the variant means, a permutation p-value of tau over
whole variants (exact for up to 8), the p-values adjusted across the whole comparison (Holm by
default; ``[report] correction = "bh"`` for Benjamini-Hochberg), a Fisher-z 95% interval of tau
(``stats.associate``), Cliff's delta between the two levels of a two-level factor, and Jiang et
al.'s granulated tau where two or more factors vary.

Seeded throughout: the same store gives the same numbers.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass

import numpy as np

from .. import stats
from .collect import Study, is_finite

SEED = 0
RESAMPLES = 2000
COLUMNS = ("measure", "against", "n", "n_minima", "kendall_tau", "spearman_rho", "p_value", "p_adjusted", "ci_low",
           "ci_high", "permutations", "exact", "p_min", "cliffs_delta", "stable", "test", "note")  # comparison.csv


@dataclass
class Association:
    """One measure against one target (the error column, or a factor)."""

    measure: str
    against: str
    n: int  # variants: the unit of replication
    n_minima: int = 0  # the observations averaged into them
    kendall_tau: float = math.nan
    spearman_rho: float = math.nan
    p_value: float = math.nan
    p_adjusted: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    permutations: int = 0
    exact: bool = False
    p_min: float = math.nan  # the smallest p the design allows (see stats.Test)
    cliffs_delta: float = math.nan  # the factor's high level against its low level, where it has two
    test: str = ""  # what the p-value permutes
    note: str = ""  # why a number is missing

    @property
    def defined(self) -> bool:
        return not math.isnan(self.kendall_tau)

    def text(self) -> str:
        if not self.defined:
            return self.note or "–"
        ci = f" [{self.ci_low:+.2f}, {self.ci_high:+.2f}]" if not math.isnan(self.ci_low) else ""
        p = "" if math.isnan(self.p_value) else f" p{_p(self.p_value, self.permutations, self.exact)}" + \
            ("" if math.isnan(self.p_adjusted) else f" (adj. {self.p_adjusted:.2g})")
        unit = f"{self.n_minima} minima of {self.n} variants" if self.test.startswith("observations") else \
            f"{self.n} variants"
        return f"τ {self.kendall_tau:+.2f}{ci}{p}, {unit}"


def settings(study: Study) -> dict:
    report = study.record.report
    return {"correction": report.correction, "permutations": int(report.permutations)}


def factors(study: Study) -> list[str]:
    """The variant keys with two or more numeric levels, the report's factor first."""
    first = study.record.report.factor
    keys = ([first] if first in study.variant_keys else []) + [k for k in study.variant_keys if k != first]
    return [k for k in keys if len({code(r.get(k)) for r in study.rows} - {None}) >= 2]


def measures(study: Study) -> list[str]:
    targets = {study.record.report.error, *study.variant_keys}
    return [c for c in study.model_columns + study.measure_columns if c not in targets]


def compare(study: Study) -> list[Association]:
    """Every measure against the error and every factor, p adjusted across the landscape measures'
    tests (the model's own columns -- train loss, test accuracy -- are shown for reference, with
    unadjusted p: they are not what the comparison tests), and the granulated tau against the error
    where two or more factors vary."""
    error, keys = study.record.report.error, factors(study)
    targets = ([error] if error else []) + keys
    found = [associate_in_design(study, column, target) for column in measures(study) for target in targets]
    adjust([a for a in found if a.measure in study.measure_columns], settings(study)["correction"])
    if error and len(keys) >= 2:
        found += [granulated(study, column, error, keys) for column in measures(study)]
    return found


def associate_in_design(study: Study, column: str, target: str, rows: list[dict] | None = None) -> Association:
    """``associate`` as the comparison tables use it: a factor within the levels of the other
    factors (there its variants differ in it alone), labelled by the factor's name."""
    keys = factors(study)
    association = associate(study, column, target, rows, within=[k for k in keys if k != target]
                            if target in keys else ())
    association.against = target
    return association


def adjust(found: list[Association], correction: str) -> None:
    adjusted = stats.CORRECTIONS[correction]([a.p_value for a in found])
    for association, p in zip(found, adjusted):
        association.p_adjusted = float(p)


def associate(study: Study, column: str, against: str, rows: list[dict] | None = None,
              within: list[str] = ()) -> Association:
    """Kendall's tau of ``column`` against ``against`` with the variant as the unit of replication
    (``stats.associate``): each variant enters once, as the mean over its seeds, and the p-value
    permutes whole variants; seeds of one variant are not independent evidence about a measure
    across variants (permuting minima rejected 17-21 % under a clustered null at alpha = 0.05).
    ``within``: other factors held fixed -- tau over the pairs of variants that agree on them, its
    p shuffling variants only among those (a claim about one factor of a factorial design). For a
    two-level factor, Cliff's delta between the variant means of its levels."""
    observed = [(r.get(column), _target(study, r, against), r["subject"], tuple(code(r.get(k)) for k in within))
                for r in samples(study, column, rows)]
    pairs = [o for o in observed if is_finite(o[0]) and is_finite(o[1])]
    x, y = (np.array([p[i] for p in pairs], dtype=float) for i in (0, 1))
    found = stats.associate(x, y, [p[2] for p in pairs], [p[3] for p in pairs] if within else None,
                            factor=against in study.variant_keys, permutations=settings(study)["permutations"],
                            seed=SEED)
    out = Association(column, f"{against} (within {', '.join(within)})" if within else against, found.n_clusters,
                      n_minima=found.n_observations, test=found.test)
    if math.isnan(found.tau):
        out.note = found.note.replace("clusters", "variants")
        return out
    out.kendall_tau, out.spearman_rho, out.p_value = found.tau, found.spearman, found.p
    out.ci_low, out.ci_high, out.permutations, out.exact, out.p_min = (found.ci_low, found.ci_high, found.permutations,
                                                                      found.exact, found.p_min)
    out.note = found.note.replace("clusters", "variants")
    if against in study.variant_keys and len(set(y)) == 2:  # over the unit the test counted
        if found.test.startswith("observations"):
            out.cliffs_delta = stats.cliffs_delta(x[y == y.max()], x[y == y.min()])
        else:
            means = {}
            for value, level, subject, _ in pairs:
                means.setdefault(subject, ([], level))[0].append(value)
            high, low = ([np.mean(v) for v, level in means.values() if level == wanted]
                         for wanted in (y.max(), y.min()))
            out.cliffs_delta = stats.cliffs_delta(high, low)
    return out


def granulated(study: Study, column: str, error: str, keys: list[str]) -> Association:
    """Jiang et al. 2019's granulated tau against the error over the factors ``keys``; its
    interval resamples seeds within variants. No p-value: the granulated tau has no exchangeable
    null here (it is an average of within-slice taus of a few settings each)."""
    rows = [r for r in samples(study, column) if is_finite(r.get(column)) and is_finite(r.get(error))]
    out = Association(column, f"{error} (granulated over {', '.join(keys)})", len(rows))
    by_setting: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        by_setting.setdefault(tuple(code(r[k]) for k in keys), []).append((r[column], r[error]))
    settings_ = list(by_setting)
    if len(settings_) < 2:
        out.note = "fewer than two settings"
        return out
    groups = [np.array(by_setting[s]) for s in settings_]

    def statistic(drawn):
        means = np.stack([g.mean(axis=1) for g in drawn], axis=1)  # (B, settings, 2)
        return stats.granulated_tau_of_means(means[..., 0], means[..., 1], settings_)[0]

    out.kendall_tau = float(statistic([g[None] for g in groups])[0])
    if any(len(g) > 1 for g in groups):
        low, high = stats.bootstrap_ci(groups, statistic, RESAMPLES, seed=SEED)
        if not math.isnan(low) and not math.isnan(out.kendall_tau) and not low <= out.kendall_tau <= high:
            out.note = "percentile interval widened to its estimate (resampled seeds tie)"
            low, high = min(low, out.kendall_tau), max(high, out.kendall_tau)
        out.ci_low, out.ci_high = low, high
    if not out.defined:
        out.note = "no two settings differ in one factor alone"
    return out


def comparison_csv(found: list[Association], stable: dict[str, str] | None = None) -> str:
    """``stable``: measure -> "yes" / "no", whether its verdicts hold over the [sensitivity]
    settings (``sensitivity.verdicts``); a measure not tested has an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for association in found:
        row = {**asdict(association), "stable": (stable or {}).get(association.measure, "")}
        writer.writerow([csv_cell(row[name]) for name in COLUMNS])
    return buffer.getvalue()


def variant_means(study: Study) -> list[dict]:
    """Per variant and measure (and the model's columns): n, the mean over seeds, its sample std
    and Student's t 95% interval of the mean (a percentile bootstrap of 3 seeds covers far less
    than 95 %)."""
    out = []
    for subject, _ in study.variants():
        first = next(r for r in study.rows if r["subject"] == subject)
        for column in study.model_columns + study.measure_columns:
            values = np.array([r[column] for r in samples(study, column) if r["subject"] == subject
                               and is_finite(r.get(column))], dtype=float)
            low, high = stats.t_interval(values)
            out.append({"subject": subject, **{k: first[k] for k in study.variant_keys}, "measure": column,
                        "n": len(values), "mean": float(values.mean()) if len(values) else math.nan,
                        "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                        "ci_low": low, "ci_high": high})
    return out


def variants_csv(study: Study, means: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["subject", *study.variant_keys, "measure", "n", "mean", "std", "ci_low", "ci_high"]
    writer.writerow(columns)
    for row in means:
        writer.writerow([csv_cell(row[c]) for c in columns])
    return buffer.getvalue()


# -- helpers -------------------------------------------------------------------------------------
def code(value):
    """Factor levels as numbers: booleans 0/1 (skip: False < True), numbers as they are."""
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def samples(study: Study, column: str, rows: list[dict] | None = None) -> list[dict]:
    """The independent observations of ``column``: every row for a per-minimum metric, one per
    variant for a per-subject one (the loss barcode), with that variant's mean of the other columns."""
    rows = study.rows if rows is None else rows
    label = column.split(".", 1)[0] if "." in column else None
    if label is None or study.scopes.get(label) != "subject":
        return rows
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["subject"], []).append(row)
    merged = []
    for group in grouped.values():
        first = dict(group[0])
        for key, value in first.items():
            if is_finite(value) and key not in study.variant_keys and key not in ("seed", "minimum"):
                values = [r.get(key) for r in group if is_finite(r.get(key))]
                first[key] = float(np.mean(values)) if values else value
        merged.append(first)
    return merged


def _target(study: Study, row: dict, against: str):
    return code(row.get(against)) if against in study.variant_keys else row.get(against)


def _p(p: float, permutations: int, exact: bool) -> str:
    """"=0.012", or "<1e-04" where no drawn order was as extreme (the estimate 1/(permutations+1))."""
    if not exact and p <= 1 / (permutations + 1) + 1e-15:
        return f"<{1 / (permutations + 1):.2g}"
    return f"={p:.2g}"


def csv_cell(value):
    """A CSV cell: floats as repr (round-trip exact), nan as an empty cell."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
