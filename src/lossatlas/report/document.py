"""report.md and index.html: what was run, at what scale, what it cost, which paper claims held.

Both are built only from the store (through ``Study``), so regenerating them reproduces them.
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter

from ..record import Benchmark
from .collect import Study, is_finite
from .tables import Table, claims_table, timing_table


def non_finite(study: Study) -> list[tuple[str, str, str, str]]:
    """(variant, row name, column, why) for every metric that is not a finite number, and every
    ``<label>.n_nonfinite`` count above zero (samples with NaN/inf losses, even where the
    method's metrics stayed finite)."""
    found = []
    for row in study.rows:
        for column in study.model_columns + study.metric_columns:
            value = row.get(column)
            if column in row and not is_finite(value):
                found.append((study.variant_label(row), study.row_name(row), column, _why(study, row, column, value)))
            elif column in row and column.endswith(".n_nonfinite") and value > 0:
                found.append((study.variant_label(row), study.row_name(row), column,
                              f"{value:g}: the samples held {int(value)} NaN/inf loss value(s), which the method "
                              "counted as +inf or left out (see its documentation)"))
    return found


def _why(study: Study, row: dict, column: str, value) -> str:
    label, _, metric = column.partition(".")
    bad = row.get(f"{label}.n_nonfinite")
    meaning = study.metric_info.get(column, {}).get("description")
    if is_finite(bad) and bad > 0:
        return f"{value}: the sampled landscape held {int(bad)} non-finite loss value(s)" + \
            (f" ({metric}: {meaning})" if meaning else "")
    if meaning:
        return f"{value}: {meaning}"
    return f"{value}: returned by the method as is; inspect the result in the store (`lossatlas inspect`)"


def claim_summary(evaluated: list[dict]) -> str:
    verdicts = Counter(found["verdict"].split(" (")[0] for found in evaluated)
    if not verdicts:
        return "No paper claims were declared for this benchmark."
    parts = [f"{count} {verdict}" for verdict, count in sorted(verdicts.items())]
    return f"Of {sum(verdicts.values())} paper claims: " + ", ".join(parts) + "."


def sections(study: Study, store_name: str, evaluated: list[dict], per_variant: Table,
             comparison: Table, after_comparison: list[tuple[str, object]] = (),
             before_comparison: list[tuple[str, object]] = ()) -> list[tuple[str, object]]:
    """The report as (heading, body) pairs; a body is Markdown text or a Table. ``evaluated`` (the
    claims' verdicts), ``per_variant`` and ``comparison`` (also written to table.md) are built once;
    ``after_comparison``: the sections that follow the comparison (how to read it, agreement)."""
    record = study.record
    versions = ", ".join(f"{k} {v}" for k, v in sorted(study.versions.items()))
    variants = ", ".join(label for _, label in study.variants())
    methods = "\n".join(f"  - `{label}`: {m.analyzer}" + (f" ({m.reference})" if m.reference else "")
                        + f" {json.dumps(m.params, sort_keys=True)}" for label, m in record.methods.items())
    scale_note = ("These are the papers' settings." if record.scale == "paper" else
                  f"This is the `{record.scale}` scale: smaller data, shorter training and coarser sampling than "
                  "the papers (see the settings above and the config's [scales.paper] for theirs), so an effect "
                  "that does not show here is not refuted by it." if record.scale in ("smoke", "cpu") else
                  DEMO_NOTE if record.scale == "demo" else
                  "No benchmark config: no factor and no claims; the measures are compared with each other and "
                  "with the error where the minima recorded one (each minimum's recipe is in the store).")
    overview = (f"{record.description}\n\n"
                f"- Scale: `{record.scale}`; problem `{record.problem}`; store `{store_name}`\n"
                f"- Variants ({len(study.variants())}): {variants}; shared parameters "
                f"{json.dumps(_shared(record), sort_keys=True)}\n"
                f"- {_minima_line(record, len(study.rows))}\n"
                f"- {_recipe_line(record)}\n"
                f"- Methods:\n{methods}\n- Versions: {versions}\n\n{scale_note}")
    bad = non_finite(study)
    bad_text = ("Every metric is finite." if not bad else
                "\n".join(f"- {variant}, {name}: `{column}` = {why}" for variant, name, column, why in bad))
    missing = missing_variants(record)
    incomplete = []
    if missing:
        incomplete = [("Incomplete run", f"The run stopped before it finished: {len(missing)} of "
                                         f"{len(record.subjects)} variants have no results ({'; '.join(missing)}). "
                                         "Everything below covers only the variants that finished; rerun the same "
                                         "command to resume.")]
    return incomplete + [
        ("What was run", overview),
        ("Paper claims", claims_table(study, evaluated)),
        ("", claim_summary(evaluated)),
        *before_comparison,
        ("Method comparison", comparison),
        ("How to read the comparison", HOW_TO_READ),
        *after_comparison,
        ("Metrics per variant", per_variant),
        ("Stage timings", timing_table(study)),
        ("Non-finite values", bad_text),
    ]


DEMO_NOTE = (
    "This is the `demo` scale: every method on the study in minutes on a CPU. The minima are trained to "
    "convergence on small data, with enough seeds per variant that a factor's claim can reach significance "
    "(each verdict says the smallest p its design allows); the grids, paths, jump-and-retrain runs and Hessian "
    "budgets are coarse. It shows what each method says and how the report reads; it cannot establish an effect "
    "that needs the papers' data and sampling (see the config's [scales.paper]) -- nor refute one -- and a "
    "per-subject measure (the loss barcode, one value per variant) cannot reach significance with two variants. "
    "`--scale cpu` runs the fuller CPU study.")


HOW_TO_READ = """\
Each cell gives Kendall's τ of the measure against the error or against a factor (its levels coded
as numbers), its 95% interval, the permutation p-value and the p-value adjusted for the number of
tests in the table, and the unit it counts.

- τ = +1: the measure orders the variants exactly as the error (or the factor) does; 0: no
  relation; -1: the reverse order. Which sign is "good" depends on the measure (see
  `higher_is_better` in the analyzers' metadata): a sharpness measure that tracks the error has τ > 0.
- Against the error the unit is the variant: its seeds share everything the variant sets, so they
  are averaged, and the p-value permutes whole variants. Counting seeds as independent makes p far
  too small (under a null with per-variant offsets it rejected 17-21 % at 0.05).
- Against a factor, τ runs over the minima within the levels of the other factors: there the
  variants differ in that factor alone, so under the null every minimum has one distribution, the
  seeds are the replicates, and shuffling minima within those levels is exact.
- p is exact (all orders enumerated) up to n = 8, so a perfect order of few points is *not* p = 0:
  with 4 variants against the error no result can reach p < 0.083; with 3 seeds at each of two
  levels of a factor, none can reach p < 0.1.
- The adjusted p (Holm by default) controls the chance of any false finding across all rows;
  a verdict of "reproduced" needs adjusted p < 0.05 in the claimed direction.
- The interval is Fisher's z of τ (Bonett & Wright's variance or the jackknife's, the larger);
  it held its coverage in simulations from 5 variants and is not given below that, nor within strata.
- comparison.csv holds every number (with Spearman's ρ, the permutation count, the smallest p the
  design allows, the number of minima behind each variant and the test); variants.csv the
  per-variant means with Student's t intervals."""


def _minima_line(record: Benchmark, rows: int) -> str:
    added = record.checkpoints
    seeds = f"Seeds: {record.seeds} (one trained minimum each)" if record.seeds else "No trained minima"
    return seeds + (f"; {added} added checkpoint(s) (no training seed)" if added else "") + f"; {rows} minima in all"


def missing_variants(record: Benchmark) -> list[str]:
    """The planned variants without a finished run (a run killed half-way), as "key=value" labels."""
    keys = list(record.variants)
    done = {json.dumps({key: run.variant[key] for key in keys}, sort_keys=True) for run in record.runs}
    return [_variant_text(keys, subject) for subject in record.subjects
            if json.dumps({key: subject[key] for key in keys}, sort_keys=True) not in done]


def _variant_text(keys: list[str], subject: dict) -> str:
    """A planned subject as its variant: "lr=0.04, schedule=multistep"."""
    return ", ".join(f"{key}={subject.get(key)}" for key in keys) or "(the only variant)"


def title(study: Study) -> str:
    return f"{study.record.name} — lossatlas benchmark report"


def markdown(title: str, parts: list[tuple[str, object]], figures: list[str]) -> str:
    out = [f"# {title}", ""]
    for heading, body in parts:
        if heading:
            out += [f"## {heading}", ""]
        out += [body.markdown() if isinstance(body, Table) else body, ""]
    out += ["## Figures", ""] + [f"![{name}]({name})" for name in figures if name.endswith(".png")]
    out += ["", "Files: `metrics.csv` (one row per minimum), `comparison.csv` (every measure against every "
            "target), `variants.csv` (per-variant means with intervals), `agreement.csv` (Kendall's τ between "
            "measures), `table.md` / `table.tex` (the tables above), `figures/` (PNG; PDF too unless drafted), "
            "`index.html`.", ""]
    return "\n".join(out)


def index_html(title: str, parts: list[tuple[str, object]], figures: list[str]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in parts:
        if heading:
            body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(content.html() if isinstance(content, Table) else _paragraphs(content))
    body.append("<h2>Figures</h2>")
    body += [_figure(n, [f"{n[:-4]}.{ext}" for ext in ("pdf", "svg") if f"{n[:-4]}.{ext}" in figures])
             for n in figures if n.endswith(".png")]
    style = ("body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:13px}td,th{border-bottom:1px solid #ccc;padding:2px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}.note{font-size:12px;color:#555}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def variant_recipes(record: Benchmark) -> list[tuple[str, dict]]:
    """(variant label, the recipe its minima were trained with) per planned subject: the base
    recipe with what the variant's level sets (lr, and what a level carries, e.g. its schedule)."""
    return [(_variant_text(list(record.variants), subject),
             {**record.recipe, **{k: v for k, v in subject.items() if k in record.recipe}})
            for subject in record.subjects]


def _recipe_line(record: Benchmark) -> str:
    """The training recipe as the minima used it: what every variant shares, then per variant the
    values that differ between variants (never a base value that no variant trained with)."""
    if not record.recipe:
        return "Training recipe: not recorded (each minimum's own is in the store)"
    recipes = variant_recipes(record)
    differ = sorted({key for _, recipe in recipes for key in recipe
                     if any(other.get(key) != recipe.get(key) for _, other in recipes)})
    shared = {k: v for k, v in record.recipe.items() if k not in differ}
    line = f"Training recipe{' (every variant)' if differ else ''}: {json.dumps(shared, sort_keys=True)}"
    if differ:
        line += "; per variant: " + "; ".join(
            f"{label}: {json.dumps({k: recipe.get(k) for k in differ}, sort_keys=True)}" for label, recipe in recipes)
    return line


def _figure(png: str, vectors: list[str]) -> str:
    """The PNG shown in the page, with a caption that says what it is and links to its vector
    files (PDF, SVG) where they were drawn (draft reports have none)."""
    image = f"<img src=\"{html.escape(png)}\" alt=\"{html.escape(caption(png))}\" loading=\"lazy\">"
    if vectors:
        image = f"<a href=\"{html.escape(vectors[0])}\">{image}</a>"
    links = "".join(f" <a href=\"{html.escape(v)}\">{html.escape(v.rsplit('.', 1)[1].upper())}</a>" for v in vectors)
    return (f"<figure>{image}<figcaption>{html.escape(caption(png))} (<code>{html.escape(png)}</code>)"
            f"{' ·' + links if links else ''}</figcaption></figure>")


def caption(path: str) -> str:
    """What a report figure shows, from its file name (``report.write_figures`` and the report's
    own figures name them so)."""
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    paged = re.fullmatch(r"(.+)_(\d+)", stem) if stem.startswith(("variant_", "summary")) else None
    stem, page = (paged.group(1), f" (page {paged.group(2)})") if paged else (stem, "")
    kind, _, rest = stem.partition("_")
    if kind == "variant":
        return f"Every method's views at the first minimum of variant {rest}{page}"
    if kind == "compare":
        return f"{rest.replace('_', ' ')}: the variants side by side"
    if kind == "agreement":
        return f"Agreement between the measures across the {rest} (Kendall's τ)"
    if kind == "summary":
        return f"Each measure against the factor: per-variant means with 95% intervals{page}"
    if kind == "sensitivity":
        return "Sensitivity of the measures to nuisance settings"
    return stem.replace("_", " ")


def _paragraphs(text: str) -> str:
    lines, out, items = text.splitlines(), [], []
    for line in lines + [""]:
        if line.lstrip().startswith("- "):
            items.append(f"<li>{html.escape(line.lstrip()[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def _shared(record: Benchmark) -> dict:
    """The problem parameters every subject has alike (a level's own settings are not shared)."""
    subjects = record.subjects
    first = subjects[0] if subjects else {}
    return {k: v for k, v in first.items()
            if k not in record.variants and all(k in s and s[k] == v for s in subjects)}
