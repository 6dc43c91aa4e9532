"""The benchmark report, rebuilt from a store alone (``lossatlas report STORE --out DIR``).

Writes to ``out``: ``metrics.csv`` (one row per trained minimum), ``comparison.csv`` (every
measure against the error and each factor: Kendall's tau, Spearman's rho, permutation and adjusted
p-values, Fisher-z interval), ``variants.csv`` (per-variant means with Student-t intervals),
``table.md`` and ``table.tex`` (per-variant mean ± std, method comparison), ``figures/`` (PNG,
PDF), ``report.md`` and ``index.html``. The text files are a function of the store's
contents only, so regenerating them gives the same bytes.
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
from .collect import Study, benchmark_name, collect
from . import agreement, curvature, invariance, robustness, sensitivity
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
    key = benchmark_name(store, name)
    audited = store.read_audit(key) if key is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with plots.style(quality) if quality != "none" else contextlib.nullcontext():
        return _write(study, store, out, quality != "none", audited)


def _write(study: Study, store: Store, out: Path, figures: bool, audited: dict | None = None) -> dict[str, Path]:
    drawn, notes = write_figures(study, out / "figures", loss_quantities(study, store)) if figures else ([], [])
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
        drawn = drawn + plots.save_pages(summary_figures(study, means, factors(study)[0]), out / "figures" / "summary")
    agreeing, drawn = _agreement(study, texts, out, figures, drawn)
    tables = [variant_table(study), comparison_table(study, evaluated, found, stable), *extra_tables]
    after = [("Agreement between methods", agreeing)] + [("Sensitivity to nuisance choices", t) for t in extra_tables]
    if approximations is not None:
        tables.append(approximations)
        after.append(("Curvature approximations against the Hessian", approximations))
    if audited is not None and audited.get("record_sha1") != invariance.record_digest(study.record):
        after.append(("Reparameterization invariance", "The store's invariance audit was made before the benchmark's "
                      "current results (it was rerun since): run `lossatlas audit-invariance` again."))
    elif audited is not None and audited["rows"]:
        audit_table, drawn = _invariance(study, audited, texts, out, figures, drawn)
        tables.append(audit_table)
        after += [("Reparameterization invariance", invariance.summary(audited)), ("", audit_table)]
    robust, drawn = _robustness(study, found, texts, out, figures, drawn)
    if robust is not None:
        tables.append(robust[1])
        after[:0] = [("Robustness across environments", robust[0]), ("", robust[1])]
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


def _robustness(study: Study, found: list, texts: dict, out: Path, figures: bool, drawn: list):
    """Dziugaite et al. 2020's robust evaluation and Jiang et al. 2019's conditional mutual
    information (``robustness``): (summary, table) and its files, or None without environments."""
    ranked = robustness.analyse(study, compared=found)
    if not any(r.environments for r in ranked):
        return None, drawn
    texts["robustness.csv"] = robustness.robustness_csv(ranked)
    texts["robustness_environments.csv"] = robustness.environments_csv(ranked)
    if figures:
        drawn = drawn + plots.save_figure(robustness.figure(ranked, f"{study.record.name}: robustness", study.display),
                                          out / "figures" / "robustness")
    return (robustness.summary(study, ranked), robustness.table(study, ranked)), drawn


def _invariance(study: Study, audited: dict, texts: dict, out: Path, figures: bool, drawn: list):
    """The invariance audit's files, table and figure (``lossatlas.audit``)."""
    texts.update(invariance.csv_texts(audited))
    title_ = f"{study.record.name} ({study.record.scale} scale): reparameterization invariance (Dinh et al. 2017)"
    table = invariance.table(audited, title_, study.display)
    if figures:
        figure = invariance.figure(audited, f"{study.record.name}: invariance audit", study.display)
        if figure is not None:
            drawn = drawn + plots.save_figure(figure, out / "figures" / "invariance")
    return table, drawn


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


def summary_figures(study: Study, means: list[dict], factor: str) -> list:
    """Every measure against the factor: per-variant means with their 95% intervals, one small
    panel per measure, the error first, then the measures a claim is about, then the rest; at most
    ``plots.MAX_PANELS`` panels a figure (legible in print), so many measures give several figures.
    Variants at their factor levels (a log axis where the levels are multiplicative, ``log_levels``),
    one line per combination of the other variant keys."""
    error = study.record.report.error
    claimed = {c.metric: c.direction for c in study.record.report.claims
               if study.record.report.claim_factor(c) == factor}
    measures = study.measure_columns
    columns = list(dict.fromkeys(([error] if error in study.model_columns else [])
                                 + [c.metric for c in study.record.report.claims if c.metric in measures]
                                 + measures))
    if not columns:  # nothing to draw against the factor: no empty figure
        return []
    chunks = plots.pages(columns)
    return [_summary_page(study, means, factor, chunk, claimed, f" ({index + 1} of {len(chunks)})"
                          if len(chunks) > 1 else "") for index, chunk in enumerate(chunks)]


def log_levels(levels) -> bool:
    """Whether factor levels are multiplicative, drawn on a log axis: all positive, and spanning a
    factor of 8 or more, or three or more in a geometric progression (width 16, 32, 64)."""
    levels = np.unique(np.asarray([v for v in levels if v is not None and np.isfinite(v)], dtype=float))
    if len(levels) < 2 or levels[0] <= 0:
        return False
    ratios = levels[1:] / levels[:-1]
    return bool(levels[-1] / levels[0] >= 8 or (len(levels) >= 3 and np.allclose(ratios, ratios[0], rtol=0.05)))


_CLAIM_MARKS = {"increasing": "claim: ↑", "decreasing": "claim: ↓"}


def _summary_page(study: Study, means: list[dict], factor: str, columns: list[str], claimed: dict, page: str):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from .comparison import code

    others = [k for k in study.variant_keys if k != factor and len({str(m.get(k)) for m in means}) > 1]
    groups = list(dict.fromkeys(tuple(m.get(k) for k in others) for m in means))
    styles = {group: (f"C{i % 8}", "osD^v<>p"[(i // 8) % 8]) for i, group in enumerate(groups)}
    ncols = min(4, max(1, len(columns)))
    nrows = max(1, math.ceil(len(columns) / ncols))
    legend_rows = math.ceil(len(groups) / 3) if len(groups) > 1 else 0
    fig, axes = plt.subplots(nrows, ncols, figsize=(plots.PAGE if ncols > 1 else plots.COLUMN,
                                                    1.75 * nrows + 0.45 + 0.14 * legend_rows),
                             squeeze=False, layout="constrained")
    levels = sorted({code(m.get(factor)) for m in means} - {None})
    logarithmic = log_levels(levels)
    boolean = all(isinstance(m.get(factor), bool) for m in means if m.get(factor) is not None)
    dodge = 0.03 * (max(levels) - min(levels) if len(levels) > 1 else 1.0)  # groups side by side, not on top
    for ax, column in zip(axes.flat, columns):
        for index, group in enumerate(groups):
            rows = [m for m in means if m["measure"] == column and code(m.get(factor)) is not None
                    and tuple(m.get(k) for k in others) == group]
            if not rows:
                continue
            rows.sort(key=lambda m: code(m[factor]))
            offset = index - (len(groups) - 1) / 2
            x = np.array([code(m[factor]) for m in rows])
            x = x * 1.04 ** offset if logarithmic else x + offset * dodge
            y = np.array([m["mean"] for m in rows], dtype=float)
            low, high = (np.array([m[k] for m in rows], dtype=float) for k in ("ci_low", "ci_high"))
            colour, marker = styles[group]
            interval = np.isfinite(low) & np.isfinite(high)
            ax.errorbar(x[interval], y[interval], yerr=[y[interval] - low[interval], high[interval] - y[interval]],
                        fmt="none", ecolor=colour, elinewidth=0.8, capsize=1.5)
            ax.plot(x, y, marker=marker, ms=3, lw=0.8, color=colour, label=_group_label(others, group))
        ax.set_ylabel(_wrapped(study.display(column)), fontsize=7)
        ax.set_xlabel(f"{factor} (log scale)" if logarithmic else factor)
        ax.margins(x=0.12)
        if logarithmic:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        if boolean:
            ax.set_xticks(levels, [str(bool(level)) for level in levels])
        elif len(levels) <= 8:
            ax.set_xticks(levels, [f"{level:g}" for level in levels])
        if column in claimed:
            ax.set_title(_CLAIM_MARKS.get(claimed[column], "claim"), loc="right", fontsize=6.5, color="0.3")
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    if len(groups) > 1:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(groups)))
    marked = "; claim ↑/↓: how a paper says it moves" if any(c in claimed for c in columns) else ""
    fig.suptitle(f"{study.record.name} ({study.record.scale} scale): each measure against {factor}{page}\n"
                 f"per-variant mean over seeds, Student-t 95% interval{marked}", fontsize=8)
    return fig


def _wrapped(name: str, width: int = 24) -> str:
    """A measure's name on at most two lines: broken after its method's label ("hessian." /
    "top_eigenvalue"), else at spaces."""
    import textwrap

    if len(name) <= width:
        return name
    label, dot, rest = name.partition(".")
    if dot and rest:
        return f"{label}.\n{rest}"
    return "\n".join(textwrap.wrap(name, width, max_lines=2, placeholder="…"))


def _group_label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all variants"


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


def _panel_labels(study: Study) -> dict[str, str]:
    """Each variant's label in a comparison panel: only the variant keys whose levels differ (the
    others are alike in every panel), on lines short enough for a panel's width."""
    import textwrap

    first = {}
    for row in study.rows:
        first.setdefault(row["subject"], row)
    varying = [k for k in study.variant_keys if len({str(r.get(k)) for r in first.values()}) > 1]
    return {subject: "\n".join(textwrap.wrap(", ".join(f"{k}={row.get(k)}" for k in varying), 30))
            or study.variant_label(row) for subject, row in first.items()}


def loss_quantities(study: Study, store: Store) -> dict[str, tuple[str, str | None]]:
    """Each subject's loss as (name, unit) from its stored config (``plots.loss_quantity``), for
    the figures' loss axes; a subject the store does not describe has a plain "loss"."""
    from ..errors import StoreError

    out = {}
    for subject, _ in study.variants():
        try:
            out[subject] = plots.loss_quantity(store.subject_config(subject))
        except (StoreError, KeyError):
            out[subject] = ("loss", None)
    return out


def write_figures(study: Study, folder: Path, losses: dict | None = None) -> tuple[list[Path], list[str]]:
    """Per variant one panel of every view of every method (at its first minimum; eight a figure,
    two columns by four rows of a page, more views go to ``variant_<v>_2`` and on); per view one
    side-by-side comparison across variants (skip vs no-skip, the beta sweep). Views come from
    the analyzers' own declarations (recorded in the store); an analyzer that is not installed
    here has its figures skipped, with a note. ``losses``: subject -> (loss name, unit) for the
    loss axes (``loss_quantities``). Returns (files, notes)."""
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
    losses = losses or {}
    common = set(losses.values())
    common = common.pop() if len(common) == 1 else ("loss", None)  # variants of one benchmark share a loss
    for subject, variant in study.variants():
        panels = [(f"{label}", draw, study.first_results[(subject, label)]) for label, _, draw in views
                  if (subject, label) in study.first_results]
        with plots.losses_named(*losses.get(subject, common)):
            paths += plots.save_pages((plots.panel_figure(f"{study.record.name}: {variant}", page)  # 2 x 4: a page
                                       for page in (plots.pages(panels, 8) if panels else [])),
                                      folder / f"variant_{variant_stems[variant]}")
        bar.update(1)
    short = _panel_labels(study)
    for label, view, draw in views:
        columns = [(short[subject], study.first_results.get((subject, label))) for subject, _ in study.variants()]
        with plots.losses_named(*common):
            figure = plots.comparison_figure(f"{label}: {view}", draw, columns)
        paths += plots.save_figure(figure, folder / f"compare_{label_stems[label]}_{view}")
        bar.update(1)
    bar.close()
    return paths, notes


