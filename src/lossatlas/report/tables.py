"""The report's tables: per-variant mean ± std over seeds, the method comparison (Spearman
correlations and the seeds' claims), stage timings; each rendered as Markdown, LaTeX (booktabs)
and HTML from one cell grid, so the three never disagree."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np

from .collect import Study, is_finite

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


@dataclass
class Correlation:
    rho: float | None
    p: float | None
    n: int
    why: str = ""  # why there is no rho

    def text(self) -> str:
        return f"{self.rho:+.2f} (p={self.p:.2g}, n={self.n})" if self.rho is not None else self.why


def spearman(x: list, y: list) -> Correlation:
    """Spearman's rho over the pairs where both are finite (scipy); None with a reason otherwise."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if is_finite(a) and is_finite(b)]
    if len(pairs) < 3:
        return Correlation(None, None, len(pairs), f"n={len(pairs)} < 3")
    a, b = np.array(pairs, dtype=float).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return Correlation(None, None, len(pairs), "constant")
    rho, p = spearmanr(a, b)
    return Correlation(float(rho), float(p), len(pairs))


# -- what is compared ------------------------------------------------------------------------------
def _code(value):
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


def correlate(study: Study, column: str, against: str, rows: list[dict] | None = None) -> Correlation:
    observed = samples(study, column, rows)
    other = [_code(r.get(against)) if against in study.variant_keys else r.get(against) for r in observed]
    return spearman([r.get(column) for r in observed], other)


def evaluate_claim(study: Study, claim: dict) -> dict:
    """Does the metric move with the factor the way the seed says? Spearman's rho gives the
    direction and its p-value the strength; with fewer than 3 observations the level means do."""
    factor, column = claim_factor(study, claim), claim["metric"]
    rows = [r for r in study.rows if all(r.get(k) == v for k, v in claim.get("where", {}).items())]
    out = {"claim": claim, "observed": "", "verdict": ""}
    if not any(column in r for r in rows):
        out["verdict"] = "not available (metric not computed)"
        return out
    observed = samples(study, column, rows)
    levels = sorted({_code(r[factor]) for r in observed if _code(r.get(factor)) is not None})
    if len(levels) < 2:
        out["verdict"] = f"not testable at this scale ({factor} has one level)"
        return out
    means = {}
    for level in levels:
        values = [r[column] for r in observed if _code(r[factor]) == level and is_finite(r.get(column))]
        means[level] = float(np.mean(values)) if values else float("nan")
    correlation = correlate(study, column, factor, rows)
    shown = " → ".join(f"{_level_text(study, factor, lv)}: {number(m)}" for lv, m in means.items())
    out["observed"] = f"{shown}; ρ {correlation.text()}"
    if correlation.rho is not None:
        sign = np.sign(correlation.rho)
    else:
        first, last = means[levels[0]], means[levels[-1]]
        sign = np.sign(last - first) if math.isfinite(first) and math.isfinite(last) else 0.0
    wanted = 1.0 if claim["direction"] == "increasing" else -1.0
    if sign == 0:
        out["verdict"] = "not reproduced (no change)"
    elif sign != wanted:
        strength = f", p={correlation.p:.2g}" if correlation.p is not None else ""
        out["verdict"] = f"not reproduced (opposite direction{strength})"
    elif correlation.p is not None and correlation.p < SIGNIFICANCE:
        out["verdict"] = "reproduced"
    else:
        strength = f"p={correlation.p:.2g}" if correlation.p is not None else correlation.why
        out["verdict"] = f"same direction, not significant ({strength})"
    return out


def claim_factor(study: Study, claim: dict) -> str:
    return claim.get("factor", study.record["report"]["factor"])


def _level_text(study: Study, factor: str, level: float) -> str:
    for row in study.rows:
        if _code(row.get(factor)) == level:
            return f"{factor}={row[factor]}"
    return f"{factor}={level:g}"


# -- the tables -------------------------------------------------------------------------------------
def variant_table(study: Study) -> Table:
    variants = study.variants()
    header = ["metric"] + [label for _, label in variants]
    rows = []
    for column in study.model_columns + study.metric_columns + study.time_columns:
        label = column.split(".", 1)[0]
        once = column in study.metric_columns and study.scopes.get(label) == "subject"
        cells = [column + (" †" if once else "")]
        for subject, _ in variants:
            values = [r[column] for r in study.rows if r["subject"] == subject and column in r]
            cells.append(number(values[0]) if once and values else mean_std(values))
        rows.append(cells)
    seeds = len(study.record["seeds"])
    notes = [f"Mean ± sample std over {seeds} seed(s) per variant (one trained minimum each).",
             "† one value per variant: computed from all its minima together (the barcode of minima).",
             "train_* = the landscape's own data (the training set or the PINN's collocation points); "
             "time.* = wall-clock seconds per minimum or per run, as stored."]
    return Table(f"{study.record['name']} ({study.record['scale']} scale): metrics per variant", header, rows, notes)


def evaluate_claims(study: Study) -> list[dict]:
    return [evaluate_claim(study, claim) for claim in study.record["report"].get("claims", [])]


def comparison_table(study: Study, evaluated: list[dict]) -> Table:
    """``evaluated``: ``evaluate_claims(study)``, shown beside the metrics they are about."""
    report = study.record["report"]
    factor, error = report.get("factor"), report.get("error")
    claims: dict[str, list[dict]] = {}
    for found in evaluated:
        claims.setdefault(found["claim"]["metric"], []).append(found)
    header = ["metric"] + ([f"ρ vs {error}"] if error else []) + ([f"ρ vs {factor}"] if factor else []) + \
        ["paper claim", "verdict"]
    rows = []
    for column in study.model_columns + study.measure_columns:
        if column in (error, factor):
            continue
        cells = [column]
        if error:
            cells.append(correlate(study, column, error).text())
        if factor:
            cells.append(correlate(study, column, factor).text())
        found = claims.get(column, [])
        cells.append("; ".join(_claim_text(c["claim"], claim_factor(study, c["claim"])) for c in found) or "–")
        cells.append("; ".join(c["verdict"] for c in found) or "–")
        rows.append(cells)
    notes = [f"Spearman's ρ over seeds × variants (per-variant metrics: over variants, against the variant's mean "
             f"{error}); {factor} coded as its value (booleans: false=0, true=1).",
             f"reproduced = the claimed direction with p < {SIGNIFICANCE}; 'same direction, not significant' = the "
             "sign agrees but the evidence is weak (few seeds or variants).",
             "Measures only: metrics their analyzers declare as diagnostics (counts, thresholds) are in metrics.csv "
             "and the per-variant table."]
    return Table(f"{study.record['name']} ({study.record['scale']} scale): method comparison", header, rows, notes)


def claims_table(study: Study, evaluated: list[dict]) -> Table:
    """``evaluated``: ``evaluate_claim`` of every claim of the benchmark, in order."""
    rows = []
    for found in evaluated:
        claim = found["claim"]
        rows.append([claim["text"], claim.get("source", ""), _claim_text(claim, claim_factor(study, claim)),
                     found["observed"] or "–",
                     found["verdict"]])
    return Table(f"{study.record['name']} ({study.record['scale']} scale): the papers' claims",
                 ["claim", "source", "expected", "observed", "verdict"], rows)


def timing_table(study: Study) -> Table:
    rows = []
    for column in study.time_columns:
        values = {}
        for row in study.rows:  # a per-subject result is counted once
            if is_finite(row.get(column)):
                key = row["subject"] if study.scopes.get(column[5:-2]) == "subject" else (row["subject"], row["seed"])
                values[key] = row[column]
        total = float(sum(values.values()))
        stage = "train minima" if column == "time.minimum_s" else column[5:-2]
        rows.append([stage, str(len(values)), f"{total:.1f}", f"{total / len(values):.1f}" if values else "–"])
    total = sum(float(r[2]) for r in rows)
    rows.append(["total", "", f"{total:.1f}", ""])
    return Table("Stage timings (wall-clock seconds, as recorded in the store)", ["stage", "runs", "total s",
                                                                                   "mean s per run"], rows)


def _claim_text(claim: dict, factor: str | None) -> str:
    where = ", ".join(f"{k}={v}" for k, v in claim.get("where", {}).items())
    return f"{ARROW[claim['direction']]} with {factor}" + (f" ({where})" if where else "")


_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
        "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "±": "$\\pm$", "ρ": "$\\rho$",
        "→": "$\\to$", "↑": "$\\uparrow$", "↓": "$\\downarrow$", "†": "$^\\dagger$", "×": "$\\times$",
        "–": "--"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)
