"""The invariance audit's report section (``lossatlas.audit``): its verdicts, CSV files, table,
figure and summary, all from the audit as the store holds it (``Store.read_audit``).

A measure is ``unchanged`` under a transformation where its largest relative change over the
audited minima is at most ``UNCHANGED`` (rounding and solver tolerance), ``within noise`` where its
median change is at most ``NOISE_FACTOR`` times the largest change of the control (the same method
rerun with its seeds shifted at the untransformed minimum), and ``moves`` otherwise: a
transformation moves a measure when its typical change exceeds what the estimator's randomness did
anywhere (a median against the control's median called a Lanczos tolerance on 16 minima a move)."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math

import numpy as np

from ..provenance import canonical_json
from .comparison import csv_cell
from .tables import Table

UNCHANGED = 1e-3  # largest relative change read as unchanged: float32 rounding through a solver's iterations
NOISE_FACTOR = 2.0  # median change up to this multiple of the control's largest reads as the estimator's noise
CONTROL = "control (seeds shifted)"

MARKS = {"unchanged": "", "within noise": " ≈", "moves": " ✗", "estimator noise": "", "undefined": " ?",
         "breaks": " ✗ (NaN)"}
ROW_COLUMNS = ("subject", "minimum", "transform", "measure", "original", "transformed", "relative_change")
SUMMARY_COLUMNS = ("measure", "transform", "n", "n_compared", "median_abs_change", "max_abs_change", "control_max",
                   "n_broken", "verdict")


def csv_texts(found: dict) -> dict[str, str]:
    """invariance.csv (every value), invariance_summary.csv, function_checks.csv."""
    checks = found["checks"]
    check_columns = list(dict.fromkeys(k for check in checks for k in check))
    return {"invariance.csv": _csv(ROW_COLUMNS, found["rows"]),
            "invariance_summary.csv": _csv(SUMMARY_COLUMNS, summarize(found)),
            "function_checks.csv": _csv(check_columns, checks)}


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def summarize(found: dict) -> list[dict]:
    """Per (measure, transformation): the rows compared, the median and largest |relative change|
    (a change from 0 is infinite), the control's median, how many values turned non-finite, and
    the verdict (``verdict``)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in found["rows"]:
        groups.setdefault((row["measure"], row["transform"]), []).append(row)
    order = list(dict.fromkeys(row["transform"] for row in found["rows"]))
    measures = list(dict.fromkeys(row["measure"] for row in found["rows"]))
    out = []
    for measure in measures:
        control = _compared(groups.get((measure, CONTROL), []))
        noise = float(np.max(control)) if control else None
        for transform in order:
            rows = groups.get((measure, transform))
            if rows is None:
                continue
            changes = _compared(rows)
            broken = sum(1 for r in rows if math.isfinite(r["original"]) and not math.isfinite(r["transformed"]))
            median = float(np.median(changes)) if changes else float("nan")
            largest = float(np.max(changes)) if changes else float("nan")
            out.append({"measure": measure, "transform": transform, "n": len(rows), "n_compared": len(changes),
                        "median_abs_change": median, "max_abs_change": largest, "control_max": noise,
                        "n_broken": broken, "verdict": verdict(median, largest, noise, transform == CONTROL, broken)})
    return out


def verdict(median: float, largest: float, noise: float | None, is_control: bool = False, broken: int = 0) -> str:
    """"breaks" where a finite value turned NaN/inf, "undefined" where nothing could be compared,
    "unchanged" where the largest change is within ``UNCHANGED``, "within noise" where the median is
    within ``NOISE_FACTOR`` times the control's largest, else "moves" (the control: "estimator noise")."""
    if broken:
        return "breaks"
    if math.isnan(median):
        return "undefined"
    if largest <= UNCHANGED:
        return "unchanged"
    if is_control:
        return "estimator noise"
    if noise is not None and noise > UNCHANGED and median <= NOISE_FACTOR * noise:  # a control that moved nothing
        return "within noise"                                                         # is no noise floor
    return "moves"


INVARIANT = ("unchanged", "within noise")


def _compared(rows) -> list[float]:
    """|relative change| of the rows whose values were both defined (inf: from 0 to another value)."""
    return [abs(r["relative_change"]) for r in rows if not math.isnan(r["relative_change"])]


def record_digest(record) -> str:
    """What an audit compared against: the benchmark's runs and their result keys. A report whose
    record no longer matches (the benchmark rerun into the store) leaves the audit out."""
    runs = [dataclasses.asdict(run) for run in record.runs]
    return hashlib.sha1(canonical_json(runs).encode()).hexdigest()


def transforms_of(summary: list[dict]) -> list[str]:
    return list(dict.fromkeys(row["transform"] for row in summary))


def table(found: dict, title: str, display=str) -> Table:
    """Measures down, transformations across: the median |relative change| over the audited minima,
    marked where it moves (✗) or stays within the estimator's noise (≈); a verdict per measure."""
    summary = summarize(found)
    columns = transforms_of(summary)
    cells = {(row["measure"], row["transform"]): row for row in summary}
    rows = []
    for measure in dict.fromkeys(row["measure"] for row in summary):
        line = [display(measure)]
        for transform in columns:
            row = cells.get((measure, transform))
            line.append("–" if row is None else _cell_text(row))
        moved = [t for t in columns if t != CONTROL and cells.get((measure, t), {}).get("verdict") not in INVARIANT
                 and (measure, t) in cells]
        line.append("invariant" if not moved else "moves: " + ", ".join(
            t + ("" if cells[(measure, t)]["verdict"] == "moves" else f" ({cells[(measure, t)]['verdict']})")
            for t in moved))
        rows.append(line)
    n = len({(row["subject"], row["minimum"]) for row in found["rows"] if row["minimum"] is not None})
    minima = f"{n} audited minim{'um' if n == 1 else 'a'}" + (
        " (a measure of a whole variant, as the barcode, once per variant)"
        if any(row["minimum"] is None for row in found["rows"]) else "")
    notes = [f"Median |relative change| of each measure over the {minima} when the network is transformed "
             "without changing its function (every transformation's loss and outputs checked "
             "unchanged to rounding: function_checks.csv). ✗ moves; ≈ within the estimator's own noise (median at "
             f"most {NOISE_FACTOR:g} × the control's largest change); unmarked: unchanged (largest change ≤ "
             f"{UNCHANGED:g}), or the control itself.",
             f"{CONTROL}: every seeded method rerun at the untransformed minimum with its seeds shifted, the change "
             "randomness alone makes (Lanczos starts, Hutchinson probes, ascent starts, random directions); a "
             "permuted network meets the same random numbers in other coordinates, so an invariant measure moves by "
             "about this much. Every value: invariance.csv."]
    notes += [f"Not audited: {note}." for note in found.get("notes", [])[:8]]
    if len(found.get("notes", [])) > 8:
        notes.append(f"… and {len(found['notes']) - 8} more (the store's audit record lists them).")
    return Table(title, ["measure", *columns, "verdict"], rows, notes)


def _cell_text(row: dict) -> str:
    """The median change and its mark; where the median is unchanged but some minima moved, the
    largest change too (a median of 0 marked ✗ would read as a contradiction)."""
    text = _change(row["median_abs_change"])
    if row["transform"] == CONTROL or (row["verdict"] in ("moves", "breaks", "within noise")
                                       and row["median_abs_change"] <= UNCHANGED):
        text += f" (max {_change(row['max_abs_change'])})"
    return text + MARKS[row["verdict"]]


def _change(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if value == 0:
        return "0"
    if math.isinf(value):
        return "from 0"
    return f"{value:.2g}" if value < 1000 else f"{value:.1e}"


def summary(found: dict) -> str:
    """Which measures survive the audit, in a few sentences."""
    rows = summarize(found)
    columns = [t for t in transforms_of(rows) if t != CONTROL]
    measures = list(dict.fromkeys(row["measure"] for row in rows))
    moving = {m: [r["transform"] for r in rows if r["measure"] == m and r["transform"] != CONTROL
                  and r["verdict"] not in INVARIANT] for m in measures}
    scalings = {r["transform"] for r in found["rows"] if r["kind"] in ("rescale", "scale_before_norm")}
    exact = [m for m in measures if not moving[m] and all(
        r["verdict"] == "unchanged" for r in rows if r["measure"] == m and r["transform"] in scalings)]
    noisy = [m for m in measures if not moving[m] and m not in exact]
    checks = [c for c in found["checks"] if c["transform"] != CONTROL]
    worst = max((c.get("loss_difference", 0.0) for c in checks), default=0.0)
    text = [f"{len(checks)} transformed minima, each with its function unchanged (largest evaluation-loss change "
            f"{worst:.2g}); {len(measures)} measures rerun under {len(columns)} transformations."]
    if scalings:
        text.append(f"Unchanged to rounding under every rescaling, and under permutations at most by the "
                    f"estimator's noise ({len(exact)}): " + (", ".join(f"`{m}`" for m in exact) or "none") + ".")
    text.append(("Not moved beyond the estimator's noise" if scalings else "Invariant") + f" ({len(noisy)}): "
                + (", ".join(f"`{m}`" for m in noisy) or "none") + (
                    " (their seeds move them as much: the audit cannot tell)" if noisy and scalings else "")
                + ".")
    moved = [m for m in measures if moving[m]]
    if moved:
        text.append("Move (" + str(len(moved)) + "): " + "; ".join(f"`{m}` under {', '.join(moving[m])}"
                                                                  for m in moved) + ".")
    return " ".join(text)


def figure(found: dict, title: str = "invariance audit", display=str):
    """The median |relative change| per measure and transformation on a log colour scale, the
    verdict marked in each cell; None without rows."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from .. import plots

    rows = summarize(found)
    if not rows:
        return None
    columns = transforms_of(rows)
    measures = list(dict.fromkeys(row["measure"] for row in rows))
    grid = np.full((len(measures), len(columns)), np.nan)
    verdicts = {}
    for row in rows:
        i, j = measures.index(row["measure"]), columns.index(row["transform"])
        grid[i, j] = row["median_abs_change"]
        verdicts[(i, j)] = row["verdict"]
    floor = 1e-7
    shown = np.where(np.isfinite(grid), np.clip(grid, floor, None), np.nan)
    height = min(9.0, 1.2 + 0.17 * len(measures))
    fig, ax = plt.subplots(figsize=(plots.PAGE if len(columns) > 4 else plots.COLUMN + 1.5, height),
                           layout="constrained")
    top = max(1.0, float(np.nanmax(shown))) if np.isfinite(shown).any() else 1.0
    image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=floor, vmax=top), aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(measures)), [display(m) for m in measures], fontsize=6)
    for (i, j), verdict in verdicts.items():
        mark = {"moves": "✗", "breaks": "✗", "within noise": "≈", "undefined": "?"}.get(verdict, "")
        if mark:
            ax.text(j, i, mark, ha="center", va="center", fontsize=6,
                    color="white" if shown[i, j] < math.sqrt(floor * top) else "black")
    ax.set_title(f"{title}\n✗ moves, ≈ within the estimator's noise, unmarked: unchanged", fontsize=8)
    fig.colorbar(image, ax=ax, label=f"median |relative change| (floor {floor:g})", shrink=0.8)
    return fig
