"""The benchmark report, rebuilt from a store alone (``lossatlas report STORE --out DIR``).

Writes to ``out``: ``metrics.csv`` (one row per trained minimum), ``comparison.csv`` (every
measure against the error and each factor: Kendall's tau, Spearman's rho, permutation and adjusted
p-values, bootstrap interval), ``variants.csv`` (per-variant means with bootstrap intervals),
``table.md`` and ``table.tex`` (per-variant mean ± std, method comparison), ``figures/`` (PNG
and PDF), ``report.md`` and ``index.html``. The text files are a function of the store's contents only, so regenerating
them gives the same bytes.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import sys
from pathlib import Path

import numpy as np

from .. import plots, registry
from ..progress import bar as progress_bar
from ..record import Method
from ..store import Store
from .collect import Study, collect
from . import agreement, curvature, sensitivity
from .comparison import compare, comparison_csv, factors, variant_means, variants_csv
from .document import index_html, markdown, sections, title
from .tables import Table, comparison_table, evaluate_claims, ranking_table, variant_table

__all__ = ["write_report", "collect", "Study"]


def write_report(store: Store, out: str | Path, name: str | None = None, figures: bool | str = True
                 ) -> dict[str, Path]:
    """Write every report file for benchmark ``name`` (default: the store's only one) to ``out``.
    ``figures``: "full" (True: 300-dpi PNG and PDF), "draft" (100-dpi PNG) or "none" (False)."""
    quality = {True: "full", False: "none"}.get(figures, figures)
    if quality not in plots.FIGURE_QUALITIES:
        raise ValueError(f"figures must be one of {plots.FIGURE_QUALITIES}, not {figures!r}")
    study = collect(store, name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with plots.style(quality) if quality != "none" else contextlib.nullcontext():
        return _write(study, store, out, quality != "none")


def _write(study: Study, store: Store, out: Path, figures: bool) -> dict[str, Path]:
    drawn, notes = write_figures(study, out / "figures") if figures else ([], [])
    evaluated = evaluate_claims(study)
    found = compare(study)
    texts = {"metrics.csv": metrics_csv(study)}
    extra_tables, stable = [], {}
    if study.sensitivity:
        per_setting, stabilities = sensitivity.analyse(study)
        stable = sensitivity.verdicts(stabilities)  # the comparison marks the unstable measures
        texts["sensitivity.csv"], table, drawn = _sensitivity(study, per_setting, stabilities, out, figures, drawn)
        extra_tables.append(table)
    approximations = curvature.table(study)
    means = variant_means(study)
    texts["comparison.csv"], texts["variants.csv"] = comparison_csv(found, stable), variants_csv(study, means)
    if figures and factors(study):
        drawn = drawn + plots.save_figure(summary_figure(study, means, factors(study)[0]), out / "figures" / "summary")
    agreeing, drawn = _agreement(study, texts, out, figures, drawn)
    tables = [variant_table(study), comparison_table(study, evaluated, found, stable), *extra_tables]
    after = [("Agreement between methods", agreeing)] + [("Sensitivity to nuisance choices", t) for t in extra_tables]
    if approximations is not None:
        tables.append(approximations)
        after.append(("Curvature approximations against the Hessian", approximations))
    ranked = ranking_table(study, found)
    before = [] if ranked is None else [(f"Which measure tracks {study.record.report.error}", ranked)]
    tables += [] if ranked is None else [ranked]
    parts = sections(study, store.path.name, evaluated, *tables[:2], after, before) + (
        [("Figures skipped", "\n".join(notes))] if notes else [])
    names = [f"figures/{p.name}" for p in drawn]
    texts.update({
        "table.md": "\n".join(t.markdown() for t in tables),
        "table.tex": "% needs \\usepackage{booktabs}\n" + "\n".join(t.latex() for t in tables),
        "report.md": markdown(title(study), parts, names),
        "index.html": index_html(title(study), parts, names),
    })
    written = {}
    for filename, text in texts.items():
        (out / filename).write_text(text, encoding="utf-8")
        written[filename] = out / filename
    return written


def _agreement(study: Study, texts: dict, out: Path, figures: bool, drawn: list) -> tuple[str, list]:
    """agreement.csv (across minima), agreement_variants.csv (three or more variants), their
    heatmaps, and the text that names the groups."""
    paragraphs = []
    for across, filename in (("minima", "agreement.csv"), ("variants", "agreement_variants.csv")):
        measures, taus, n = agreement.matrix(study, across)
        if across == "variants" and n < 3:
            continue  # two variants: every tau is +-1
        texts[filename] = agreement.agreement_csv(measures, taus)
        paragraphs.append(agreement.summary(study, measures, taus, n, across))
        if figures and len(measures) >= 2:
            title_ = f"{study.record.name}: agreement across the {across} (n = {n})"
            drawn = drawn + plots.save_figure(agreement.figure([study.display(m) for m in measures], taus, title_),
                                              out / "figures" / f"agreement_{across}")
    return "\n\n".join(paragraphs), drawn


def _sensitivity(study: Study, per_setting: list, stabilities: list, out: Path, figures: bool, drawn: list):
    """sensitivity.csv, its table and figure, from ``sensitivity.analyse(study)``."""
    header, rows = sensitivity.stability_rows(stabilities)
    settings = "; ".join(f"`{label}`: base, " + ", ".join(s) for label, s in study.sensitivity.items())
    notes = [f"Settings ({settings}) rerun one at a time; base = the method's own. τ: Kendall's τ at the base "
             "setting; range: over all settings (per-setting values with p-values and intervals in sensitivity.csv).",
             "nuisance sd / between-minima sd: how far a minimum's value moves across settings, relative to how much "
             "the minima differ at the base setting (above 1: the nuisance choice matters more than the minimum).",
             "variant order: the least Kendall τ between a setting's per-variant means and the base's (+1: every "
             "setting orders the variants alike). verdict holds: τ against no target flips between settings (one "
             f"≥ +{sensitivity.FLIP}, another ≤ -{sensitivity.FLIP}; or constant at one, |τ| ≥ "
             f"{2 * sensitivity.FLIP:g} at another) and no setting orders the variants against the base (τ ≤ 0); "
             "otherwise the measure is marked unstable in the comparison."]
    table = Table(f"{study.record.name} ({study.record.scale} scale): sensitivity to nuisance choices",
                  header, rows, notes)
    if figures and per_setting:
        drawn = drawn + plots.save_figure(sensitivity.figure(per_setting, f"{study.record.name}: sensitivity",
                                                             study.display),
                                          out / "figures" / "sensitivity")
    return sensitivity.sensitivity_csv(per_setting), table, drawn


def summary_figure(study: Study, means: list[dict], factor: str):
    """Every measure against the factor: per-variant means with their bootstrap 95% intervals, one
    small panel per measure (the error first), variants at their factor levels."""
    import matplotlib.pyplot as plt

    from .comparison import code

    error = study.record.report.error
    columns = ([error] if error in study.model_columns else []) + study.measure_columns
    ncols = 5
    nrows = max(1, math.ceil(len(columns) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.1 * nrows + 0.5), squeeze=False,
                             layout="constrained")
    for ax, column in zip(axes.flat, columns):
        rows = [m for m in means if m["measure"] == column and code(m.get(factor)) is not None]
        x = np.array([code(m[factor]) for m in rows])
        y = np.array([m["mean"] for m in rows])
        low = np.array([m["ci_low"] for m in rows])
        high = np.array([m["ci_high"] for m in rows])
        interval = np.isfinite(low) & np.isfinite(high)
        ax.errorbar(x[interval], y[interval], yerr=[y[interval] - low[interval], high[interval] - y[interval]],
                    fmt="o", ms=3, capsize=2, lw=0.8)
        ax.plot(x[~interval], y[~interval], "o", ms=3, color="tab:blue")
        ax.plot(x[np.argsort(x)], y[np.argsort(x)], lw=0.6, color="grey", zorder=0)
        ax.set_title(study.display(column), fontsize=7)
        ax.set_xlabel(factor, fontsize=7)
        ax.tick_params(labelsize=6)
        levels = sorted(set(x))
        if all(isinstance(m.get(factor), bool) for m in rows):
            ax.set_xticks(levels, [str(bool(level)) for level in levels])
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.suptitle(f"{study.record.name} ({study.record.scale} scale): each measure against {factor} "
                 "(per-variant mean, bootstrap 95% interval over seeds)")
    return fig


def metrics_csv(study: Study) -> str:
    columns = ["subject", *study.variant_keys, "seed", "minimum", *study.model_columns, *study.metric_columns,
               *study.time_columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in study.rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    return buffer.getvalue()


def _cell(value):
    return repr(value) if isinstance(value, float) else value


def installed(method: Method) -> type | None:
    """The analyzer class of a recorded method where it is at hand here, else None (its figures are
    then skipped): a registered name, or the user's own ``package.module:Class`` when that module
    is already imported. A report never imports a module because a store names it: reporting a
    store someone else made must not run their code."""
    if method.reference is None:
        return registry.find(method.analyzer)
    module, _, name = method.reference.partition(":")
    cls = getattr(sys.modules.get(module), name, None)
    return cls if isinstance(cls, type) and getattr(cls, "name", None) == method.analyzer else None


def write_figures(study: Study, folder: Path) -> tuple[list[Path], list[str]]:
    """Per variant one panel of every view of every method (at its first minimum); per view one
    side-by-side comparison across variants (skip vs no-skip, the beta sweep). Views come from
    the analyzers' own declarations (recorded in the store); an analyzer that is not installed
    here has its figures skipped, with a note. Returns (files, notes)."""
    methods = study.record.methods
    views, notes = [], []
    for label, method in methods.items():
        cls = installed(method)
        recorded = next((r.analyzer.get("views", {}) for (_, lab), r in study.first_results.items() if lab == label),
                        {})
        if cls is None:
            if recorded:
                why = (f"its module is not imported (a report does not import code a store names: import "
                       f"{method.reference.partition(':')[0]} and call lossatlas.report.write_report)"
                       if method.reference else "is not installed here")
                notes.append(f"Figures of `{label}` ({', '.join(recorded)}) skipped: the analyzer "
                             f"{method.reference or method.analyzer!r} {why}.")
            continue
        views += [(label, view, draw) for view, draw in cls.views.items()]
    paths = []
    variant_stems = plots.file_stems(variant for _, variant in study.variants())
    label_stems = plots.file_stems(label for label, _, _ in views)
    bar = progress_bar(total=len(study.variants()) + len(views), desc=f"{study.record.name}: figures")
    for subject, variant in study.variants():
        panels = [(f"{label}", draw, study.first_results[(subject, label)]) for label, _, draw in views
                  if (subject, label) in study.first_results]
        if panels:
            figure = plots.panel_figure(f"{study.record.name}: {variant}", panels)
            paths += plots.save_figure(figure, folder / f"variant_{variant_stems[variant]}")
        bar.update(1)
    for label, view, draw in views:
        columns = [(variant, study.first_results.get((subject, label))) for subject, variant in study.variants()]
        figure = plots.comparison_figure(f"{label}: {view}", draw, columns)
        paths += plots.save_figure(figure, folder / f"compare_{label_stems[label]}_{view}")
        bar.update(1)
    bar.close()
    return paths, notes


