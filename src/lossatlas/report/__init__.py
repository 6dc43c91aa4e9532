"""The benchmark report, rebuilt from a store alone (``lossatlas report STORE --out DIR``).

Writes to ``out``: ``metrics.csv`` (one row per trained minimum), ``table.md`` and ``table.tex``
(per-variant mean ± std, method comparison), ``figures/`` (PNG and PDF), ``report.md`` and
``index.html``. The text files are a function of the store's contents only, so regenerating
them gives the same bytes.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .. import plots, registry
from ..progress import bar as progress_bar
from ..store import Store
from .collect import Study, collect
from .document import index_html, markdown, sections, title
from .tables import comparison_table, evaluate_claims, variant_table

__all__ = ["write_report", "collect", "Study"]


def write_report(store: Store, out: str | Path, name: str | None = None, figures: bool = True) -> dict[str, Path]:
    """Write every report file for benchmark ``name`` (default: the store's only one) to ``out``."""
    study = collect(store, name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn, notes = write_figures(study, out / "figures") if figures else ([], [])
    names = [f"figures/{p.name}" for p in drawn]
    evaluated = evaluate_claims(study)
    tables = [variant_table(study), comparison_table(study, evaluated)]
    parts = sections(study, store.path.name, evaluated, *tables) + ([("Figures skipped", "\n".join(notes))]
                                                                   if notes else [])
    texts = {
        "metrics.csv": metrics_csv(study),
        "table.md": "\n".join(t.markdown() for t in tables),
        "table.tex": "% needs \\usepackage{booktabs}\n" + "\n".join(t.latex() for t in tables),
        "report.md": markdown(title(study), parts, names),
        "index.html": index_html(title(study), parts, names),
    }
    written = {}
    for filename, text in texts.items():
        (out / filename).write_text(text, encoding="utf-8")
        written[filename] = out / filename
    return written


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


def write_figures(study: Study, folder: Path) -> tuple[list[Path], list[str]]:
    """Per variant one panel of every view of every method (at its first minimum); per view one
    side-by-side comparison across variants (skip vs no-skip, the beta sweep). Views come from
    the analyzers' own declarations (recorded in the store); an analyzer that is not installed
    here has its figures skipped, with a note. Returns (files, notes)."""
    methods = study.record["methods"]
    views, notes = [], []
    for label, method in methods.items():
        cls = registry.find(method["analyzer"])
        recorded = next((r.analyzer.get("views", {}) for (_, lab), r in study.first_results.items() if lab == label),
                        {})
        if cls is None:
            if recorded:
                notes.append(f"Figures of `{label}` ({', '.join(recorded)}) skipped: the analyzer "
                             f"{method['analyzer']!r} is not installed here.")
            continue
        views += [(label, view, draw) for view, draw in cls.views.items()]
    paths = []
    bar = progress_bar(total=len(study.variants()) + len(views), desc=f"{study.record['name']}: figures")
    for subject, variant in study.variants():
        panels = [(f"{label}", draw, study.first_results[(subject, label)]) for label, _, draw in views
                  if (subject, label) in study.first_results]
        if panels:
            figure = plots.panel_figure(f"{study.record['name']}: {variant}", panels)
            paths += plots.save_figure(figure, folder / f"variant_{plots.file_stem(variant)}")
        bar.update(1)
    for label, view, draw in views:
        columns = [(variant, study.first_results.get((subject, label))) for subject, variant in study.variants()]
        figure = plots.comparison_figure(f"{label}: {view}", draw, columns)
        paths += plots.save_figure(figure, folder / f"compare_{plots.file_stem(label)}_{view}")
        bar.update(1)
    bar.close()
    return paths, notes


