"""The report's tables: per-variant mean ± std over seeds, the method comparison (Kendall's tau
with permutation p-values and bootstrap intervals from ``comparison.py``; the seeds' claims),
stage timings; each rendered as Markdown, LaTeX (booktabs) and HTML from one cell grid, so the
three never disagree."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from ..record import Claim
from .collect import Study, is_finite
from .comparison import Association, adjust, associate, code, measures, samples, settings

SIGNIFICANCE = 0.05
ARROW = {"increasing": "↑", "decreasing": "↓"}


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        lines += [""] + [f"{note}  " for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def latex(self) -> str:
        lines = ["\\begin{table}[ht]", "\\centering", f"\\caption{{{_tex(self.title)}}}", "\\small",
                 "\\begin{tabular}{l" + "r" * (len(self.header) - 1) + "}", "\\toprule",
                 " & ".join(_tex(h) for h in self.header) + " \\\\", "\\midrule"]
        lines += [" & ".join(_tex(cell) for cell in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.notes:
            lines += ["\\par\\smallskip\\footnotesize " + " ".join(_tex(n) for n in self.notes)]
        lines += ["\\end{table}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in self.rows)
        notes = "".join(f"<p class=\"note\">{html.escape(n)}</p>" for n in self.notes)
        return (f"<h3>{html.escape(self.title)}</h3>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}"
                f"</tbody>\n</table>\n{notes}\n")


# -- numbers -------------------------------------------------------------------------------------
def number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def mean_std(values: list) -> str:
    finite = [v for v in values if is_finite(v)]
    bad = len(values) - len(finite)
    if not finite:
        text = number(values[0]) if values else "–"
    elif len(finite) == 1:
        text = number(finite[0])
    else:
        text = f"{np.mean(finite):.4g} ± {np.std(finite, ddof=1):.2g}"
    return text + (f" ({bad} non-finite)" if bad and finite else "")


def evaluate_claim(study: Study, claim: Claim) -> dict:
    """Does the metric move with the factor the way the seed says? Kendall's tau gives the
    direction and its permutation p-value the strength (adjusted across the benchmark's claims by
    ``evaluate_claims``); with fewer than 3 observations the level means give the direction."""
    factor, column = claim_factor(study, claim), claim.metric
    rows = [r for r in study.rows if all(r.get(k) == v for k, v in claim.where.items())]
    out = {"claim": claim, "observed": "", "verdict": "", "association": None}
    if not any(column in r for r in rows):
        out["verdict"] = "not available (metric not computed)"
        return out
    observed = samples(study, column, rows)
    levels = sorted({code(r[factor]) for r in observed if code(r.get(factor)) is not None})
    if len(levels) < 2:
        out["verdict"] = f"not testable at this scale ({factor} has one level)"
        return out
    means = {}
    for level in levels:
        values = [r[column] for r in observed if code(r[factor]) == level and is_finite(r.get(column))]
        means[level] = float(np.mean(values)) if values else float("nan")
    fixed = set(claim.where)
    others = [k for k in study.variant_keys if k != factor and k not in fixed
              and len({code(r.get(k)) for r in observed} - {None}) >= 2]
    out["association"] = associate(study, column, factor, rows, within=others)
    out["within"] = others
    out["levels"] = " → ".join(f"{_level_text(study, factor, lv)}: {number(m)}" for lv, m in means.items())
    out["means"] = (means[levels[0]], means[levels[-1]])
    return out


def _verdict(found: dict) -> str:
    """The verdict of an evaluated claim whose association has its adjusted p."""
    association, claim = found["association"], found["claim"]
    if association.defined:
        sign = np.sign(association.kendall_tau)
    else:
        first, last = found["means"]
        sign = np.sign(last - first) if math.isfinite(first) and math.isfinite(last) else 0.0
    wanted = 1.0 if claim.direction == "increasing" else -1.0
    strength = (f"p={association.p_value:.2g}, adjusted {association.p_adjusted:.2g}" if association.defined
                else association.note)
    if association.defined and association.p_min >= SIGNIFICANCE:
        strength += f"; no order of this design reaches p < {association.p_min:.2g}"
    if sign == 0:
        return "not reproduced (no change)"
    if sign != wanted:
        return "not reproduced (opposite direction" + (f", {strength})" if association.defined else ")")
    if association.defined and association.p_adjusted < SIGNIFICANCE:
        return "reproduced"
    return f"same direction, not significant ({strength})"


def claim_factor(study: Study, claim: Claim) -> str | None:
    return study.record.report.claim_factor(claim)


def _level_text(study: Study, factor: str, level: float) -> str:
    for row in study.rows:
        if code(row.get(factor)) == level:
            return f"{factor}={row[factor]}"
    return f"{factor}={level:g}"


# -- the tables -------------------------------------------------------------------------------------
def table_columns(study: Study) -> list[str]:
    """The metric columns the tables show: ``[report] table`` in its order, else every measure
    (diagnostics -- Hessian-vector counts, thresholds -- and times stay in metrics.csv)."""
    chosen = study.record.report.table
    if chosen:
        return [c for c in chosen if c in study.metric_columns]
    return study.measure_columns


def variant_table(study: Study) -> Table:
    variants = study.variants()
    header = ["metric"] + [label for _, label in variants]
    rows = []
    for column in study.model_columns + table_columns(study):
        label = column.split(".", 1)[0]
        once = column in study.metric_columns and study.scopes.get(label) == "subject"
        cells = [study.display(column) + (" †" if once else "")]
        for subject, _ in variants:
            values = [r[column] for r in study.rows if r["subject"] == subject and column in r]
            cells.append(number(values[0]) if once and values else mean_std(values))
        rows.append(cells)
    counts = sorted({sum(r["subject"] == subject for r in study.rows) for subject, _ in variants})
    per = f"{counts[0]}–{counts[-1]}" if len(counts) > 1 else str(counts[0] if counts else 0)
    notes = [f"Mean ± sample std over the {per} minima of each variant (trained from seeds or added as checkpoints).",
             "† one value per variant: computed from all its minima together (the barcode of minima).",
             "train_* = the landscape's own data (the training set or the PINN's collocation points).",
             ("The metrics of [report] table." if study.record.report.table else "The measures only: diagnostics "
              "(counts, thresholds) are in metrics.csv, with every time; [report] table = [...] chooses others.")]
    return Table(f"{study.record.name} ({study.record.scale} scale): metrics per variant", header, rows, notes)


def evaluate_claims(study: Study) -> list[dict]:
    """Every claim of the benchmark, its p-value adjusted across the claims (one family: the
    hypotheses the config states in advance; the correction of ``[report] correction``)."""
    evaluated = [evaluate_claim(study, claim) for claim in study.record.report.claims]
    tested = [found["association"] for found in evaluated if found["association"] is not None]
    adjust(tested, settings(study)["correction"])
    for found in evaluated:
        if found["association"] is not None:
            within = f" within {', '.join(found['within'])}" if found.get("within") else ""
            found["observed"] = f"{found['levels']}; {found['association'].text()}{within}"
            found["verdict"] = _verdict(found)
    return evaluated


def comparison_table(study: Study, evaluated: list[dict], found: list[Association],
                     stable: dict[str, str] | None = None) -> Table:
    """``evaluated``: ``evaluate_claims(study)``; ``found``: ``compare(study)``, one cell per target;
    ``stable``: measure -> "yes" / "no" over the [sensitivity] settings (``sensitivity.verdicts``)."""
    report = study.record.report
    claims: dict[str, list[dict]] = {}
    for claim in evaluated:
        claims.setdefault(claim["claim"].metric, []).append(claim)
    targets = list(dict.fromkeys(a.against for a in found))
    cells = {(a.measure, a.against): a for a in found}
    two_level = [t for t in targets if t in study.variant_keys and any(not math.isnan(a.cliffs_delta)
                                                                        for a in found if a.against == t)]
    header = ["measure"] + [f"vs {t}" for t in targets] + [f"Cliff's δ ({t})" for t in two_level] + \
        ["paper claim", "verdict"]
    rows = []
    unstable = {measure for measure, holds in (stable or {}).items() if holds == "no"}
    shown = set(study.model_columns) | set(table_columns(study)) | set(claims)  # [report] table, and every
    # measure a claim is about; comparison.csv holds all
    for column in (c for c in measures(study) if c in shown):
        row = [study.display(column) + (" (unstable)" if column in unstable else "")]
        row += [cells[(column, t)].text() for t in targets]
        row += [_delta(cells.get((column, t))) for t in two_level]
        mine = claims.get(column, [])
        row.append("; ".join(_claim_text(c["claim"], claim_factor(study, c["claim"])) for c in mine) or "–")
        row.append("; ".join(c["verdict"] for c in mine) or "–")
        rows.append(row)
    correction = {"holm": "Holm's step-down (family-wise)", "bh": "Benjamini-Hochberg (false discovery rate)"}
    n_tests = sum(1 for a in found if not math.isnan(a.p_adjusted))
    against = f"against the variant's mean {report.error}" if report.error else "(no error column)"
    notes = [f"Unit of replication: the variant. Against the error, Kendall's τ (tau-b) of the variant means "
             f"(each the mean over its seeds) {against}: seeds of one variant share its offsets and are averaged, "
             "not counted. Against a factor (coded as its values; booleans false=0, true=1), within the levels of "
             "the other factors: there the variants differ in that factor alone, so under the null all their "
             "minima share one distribution and the seeds are the replicates (τ over the minima).",
             f"[lo, hi]: 95% interval of τ, Fisher's z with the larger of Bonett & Wright's variance and the "
             f"jackknife's (coverage checked by simulation); none below {stats.MIN_INTERVAL_CLUSTERS} variants "
             "(minima for a factor) and none within strata.",
             "p: two-sided permutation p-value of τ (whole variants permuted; minima within the other factors' "
             "levels for a factor), exact (all n! orders) for n ≤ 8, else "
             f"{settings(study)['permutations']} seeded random orders (then never below 1/(permutations+1)); adj.: "
             f"{correction[settings(study)['correction']]} across the {n_tests} tests of the landscape measures "
             "(the model's own columns, shown for reference, are not adjusted).",
             "Cliff's δ: P(high level > low level) - P(high < low) of the measure, for two-level factors.",
             f"reproduced = the claimed direction with adjusted p < {SIGNIFICANCE}, the claims adjusted as their own "
             "family (the adjusted p in a verdict is the claims'; the one in a cell, the table's); 'same direction, "
             "not significant' = the sign agrees but the evidence is weak.",
             "Measures only: metrics their analyzers declare as diagnostics (counts, thresholds) are in metrics.csv "
             "and the per-variant table; all numbers are in comparison.csv."]
    if study.sensitivity:
        notes.append("(unstable): the sign of τ against the error or a factor changes between the nuisance settings "
                     "of [sensitivity], or a setting reverses the order of the variants (see that section).")
    return Table(f"{study.record.name} ({study.record.scale} scale): method comparison", header, rows, notes)


def ranking_table(study: Study, found: list[Association]) -> Table | None:
    """The landscape measures ranked by |granulated τ| against the error (Jiang et al. 2019's
    headline), where the study varies two or more factors; None otherwise."""
    granulated = [a for a in found if "(granulated over" in a.against and "." in a.measure]
    if not granulated:
        return None
    error = study.record.report.error
    plain = {a.measure: a for a in found if a.against == error}
    ranked = sorted(granulated, key=lambda a: (not a.defined, -abs(a.kendall_tau) if a.defined else 0, a.measure))
    rows = []
    for place, a in enumerate(ranked, 1):
        sure = "–" if math.isnan(a.ci_low) else ("yes" if a.ci_low > 0 or a.ci_high < 0 else "no")
        tau = "–" if not a.defined else f"{a.kendall_tau:+.2f}" + (
            "" if math.isnan(a.ci_low) else f" [{a.ci_low:+.2f}, {a.ci_high:+.2f}]")
        rows.append([str(place) if a.defined else "–", study.display(a.measure), tau, sure,
                     plain[a.measure].text() if a.measure in plain else "–"])
    header = ["rank", "measure", f"granulated τ vs {error} [95% CI]", "interval excludes 0",
              f"τ vs {error} (all models)"]
    notes = [f"Jiang et al. 2019's granulated Kendall τ: for each factor ({a.against.split('over ', 1)[1].rstrip(')')}"
             ") the τ between the measure and the error within every group of models that differ in that factor "
             "alone (means over seeds), averaged over the groups, then over the factors. Within a group τ is their "
             "tau-a, the mean of sign(Δmeasure)·sign(Δerror) over pairs: a measure that does not move counts 0. "
             "Ranked by |τ| (the sign says which way the measure moves with the error): a measure near the top "
             "tracks the error whichever hyperparameter changes it; 'interval excludes 0': the "
             "bootstrap interval (seeds resampled within settings) leaves out no association. That interval is "
             "conditional on the settings: it shows how much seed noise moves the granulated τ, not how τ would vary "
             "over other settings. The granulated τ has no permutation p here (see the method comparison for the "
             "plain τ over variants, its p and its adjusted p)."]
    return Table(f"{study.record.name} ({study.record.scale} scale): which measure tracks {error}", header, rows,
                 notes)


def _delta(association: Association | None) -> str:
    return "–" if association is None or math.isnan(association.cliffs_delta) else f"{association.cliffs_delta:+.2f}"


def claims_table(study: Study, evaluated: list[dict]) -> Table:
    """``evaluated``: ``evaluate_claim`` of every claim of the benchmark, in order."""
    rows = []
    for found in evaluated:
        claim = found["claim"]
        rows.append([claim.text, claim.source, _claim_text(claim, claim_factor(study, claim)),
                     found["observed"] or "–",
                     found["verdict"]])
    notes = []
    if any(found.get("within") for found in evaluated):
        notes.append("'within <factors>': the study varies other factors too; τ counts only the pairs of "
                     "observations that agree on them, and its permutation p shuffles the claim's factor only "
                     "among those (exact where the orders number at most 40 320): the claim is tested with the "
                     "other factors held fixed, as a blocked design. The level means pool over them.")
    return Table(f"{study.record.name} ({study.record.scale} scale): the papers' claims",
                 ["claim", "source", "expected", "observed", "verdict"], rows, notes)


def timing_table(study: Study) -> Table:
    rows = []
    for column in study.time_columns:
        values = {}
        for row in study.rows:  # a per-subject result is counted once
            if is_finite(row.get(column)):
                once = study.scopes.get(column[5:-2]) == "subject"
                key = row["subject"] if once else (row["subject"], row["minimum"])
                values[key] = row[column]
        total = float(sum(values.values()))
        stage = "train minima" if column == "time.minimum_s" else column[5:-2]
        rows.append([stage, str(len(values)), f"{total:.1f}", f"{total / len(values):.1f}" if values else "–"])
    total = sum(float(r[2]) for r in rows)
    rows.append(["total", "", f"{total:.1f}", ""])
    return Table("Stage timings (wall-clock seconds, as recorded in the store)", ["stage", "runs", "total s",
                                                                                   "mean s per run"], rows)


def _claim_text(claim: Claim, factor: str | None) -> str:
    where = ", ".join(f"{k}={v}" for k, v in claim.where.items())
    return f"{ARROW[claim.direction]} with {factor}" + (f" ({where})" if where else "")


_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
        "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "±": "$\\pm$", "ρ": "$\\rho$",
        "→": "$\\to$", "τ": "$\\tau$", "δ": "$\\delta$", "≤": "$\\le$", "↑": "$\\uparrow$", "↓": "$\\downarrow$",
        "†": "$^\\dagger$", "×": "$\\times$", "–": "--"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)
