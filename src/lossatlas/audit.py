"""The reparameterization-invariance audit (``lossatlas audit-invariance STORE --out DIR``).

Dinh et al. 2017 showed that a ReLU network's sharpness can be changed at will without changing
its function: scale a layer by alpha and the next by 1/alpha. The audit asks, for every measure of
a study, whether it moves under such transformations (``lossatlas.invariance``): for the first
``minima`` minima of every variant it applies each transformation, checks that the function (the
evaluation loss and the model's outputs) is unchanged to rounding, stores the transformed minima
in a scratch store of their own (``DIR/scratch/<transform>.h5``, so a rerun resumes) and reruns
every method there with the study's own parameters. A method of scope "subject" (the loss barcode)
joins every minimum of its subject, so all of them are transformed alike for it.

Estimators are random (Lanczos starts, Hutchinson probes, ascent starts, random directions), and a
permuted network meets the same random numbers in other coordinates: its values differ by the
estimator's own noise even for an invariant measure. The ``control`` reruns every seeded method at
the untransformed minimum with its seeds shifted by ``SEED_SHIFT``: the change that noise alone
makes. ``lossatlas.report.invariance.verdict`` reads each measure's changes as unchanged, within
noise or moving.

The audit is written to the study's store (``/audits/<benchmark>``, read by the report) and to
``DIR``: ``invariance.csv`` (every value), ``invariance_summary.csv`` (per measure and
transformation), ``function_checks.csv`` and ``figures/invariance.{png,pdf}``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np

from . import devices, invariance
from .analysis import analyze
from .errors import ConfigError
from .progress import bar as progress_bar
from .provenance import now, versions
from .record import AuditSettings, Benchmark
from .report.invariance import CONTROL, NOISE_FACTOR, UNCHANGED
from .samplers.minima import minimum_metrics
from .store import Store

log = logging.getLogger("lossatlas.audit")
SEED_SHIFT = 1000  # the control's seeds: far from the study's own (seeds = [0, 1, 2] -> [1000, 1001, 1002])


@dataclasses.dataclass(frozen=True)
class Transform:
    """One transformation as the audit applies it: its kind (``invariance``'s function name), its
    factor (rescalings) and the label tables show."""

    kind: str
    factor: float | None = None

    @property
    def label(self) -> str:
        if self.kind == "control":
            return CONTROL
        names = {"rescale": "rescale", "scale_before_norm": "scale before BN", "permute": "permute units",
                 "permute_heads": "permute heads"}
        return names[self.kind] + (f" ×{self.factor:g}" if self.factor is not None else "")

    @property
    def stem(self) -> str:
        return self.kind + (f"_{self.factor:g}".replace(".", "p") if self.factor is not None else "")

    def apply(self, subject, theta, buffers, seed: int):
        if self.kind == "control":
            return theta, buffers
        function = getattr(invariance, self.kind)
        done = function(subject, theta, buffers, self.factor if self.factor is not None else seed)
        return done.theta, done.buffers


def transforms(settings: AuditSettings) -> list[Transform]:
    """The settings' transformations, each rescaling at every alpha, then the control."""
    out = []
    for kind in settings.transforms:
        scaled = kind in ("rescale", "scale_before_norm")
        out += [Transform(kind, float(a)) for a in settings.alphas] if scaled else [Transform(kind)]
    return out + ([Transform("control")] if settings.control else [])


def audit(store: Store, out: str | Path, name: str | None = None, settings: AuditSettings | None = None,
          device: str | None = None, progress: bool = True) -> dict:
    """Audit benchmark ``name`` (default: the store's only one) of ``store``; returns the audit as
    stored (settings, rows, function checks, notes). ``settings``: default the benchmark's
    ``[audit]``, else ``AuditSettings()``; ``device``: default the benchmark's."""
    from . import harness
    from .report.collect import benchmark_name, collect

    benchmark = benchmark_name(store, name)
    if benchmark is None:
        raise ConfigError(f"{store.path} holds no benchmark record: the audit reruns a benchmark's methods with their "
                          "parameters. Run the benchmark with `lossatlas run` first.")
    study = collect(store, benchmark)
    record = study.record
    settings = settings or record.audit or AuditSettings()
    plan, skipped = _plan(record, settings, device)
    if not plan.methods:
        raise ConfigError(f"None of the methods {list(record.methods)} of {benchmark!r} is installed here; the audit "
                          "reruns them.")
    out = Path(out)
    (out / "scratch").mkdir(parents=True, exist_ok=True)
    values = {(row["subject"], row["minimum"]): row for row in study.rows}
    subjects = [s for s in plan.subjects if any(r.variant == {k: s[k] for k in record.variants} for r in record.runs)]
    rows, checks, notes = [], [], [f"method {label!r} is not installed here: not rerun" for label in skipped]
    todo = transforms(settings)
    bar = progress_bar(total=len(subjects) * len(todo), desc=f"{benchmark}: invariance audit", enabled=progress,
                       leave=True)
    for params in subjects:
        subject, _ = harness.build_subject(plan, params)
        runs = sorted((r for r in record.runs if r.subject == subject.name and r.minimum is not None),
                      key=lambda r: r.minimum)
        audited = [r.minimum for r in runs][:settings.minima]
        every = [r.minimum for r in runs]
        reasons = invariance.applicable(subject)
        for transform in todo:
            reason = None if transform.kind == "control" else reasons.get(transform.kind)
            if reason is not None:
                notes.append(f"{transform.label} on {subject.name}: not applicable ({reason})")
                bar.update(1)
                continue
            scratch_path = out / "scratch" / f"{transform.stem}.h5"
            with Store(scratch_path, "a") as scratch:
                subject_scope = any(plan.scope(label) == "subject" for label in plan.methods)
                stored = _transformed_minima(scratch, store, subject, every if subject_scope else audited,
                                             transform, settings.seed, checks)
                for label in plan.methods:
                    analyzer = plan.analyzer(label)
                    if transform.kind == "control":
                        analyzer = reseeded(analyzer)
                        if analyzer is None:
                            continue  # no seed: the control would repeat the study's own numbers
                    at = audited if plan.scope(label) == "minimum" else [None]
                    for minimum in at:
                        if minimum is not None and minimum not in stored:
                            continue
                        run = analyzer if minimum is None else dataclasses.replace(analyzer, minimum=minimum)
                        result = analyze(scratch, subject, run, progress=False)
                        for index in (audited if minimum is None else [minimum]):
                            original = values.get((subject.name, index), {})
                            rows += _rows(study, label, result.metrics, original, subject.name, index, transform)
            bar.update(1)
        del subject
        harness._release()
    bar.close()
    found = {"benchmark": benchmark, "settings": dataclasses.asdict(settings), "rows": rows, "checks": checks,
             "notes": notes, "thresholds": {"unchanged": UNCHANGED, "noise_factor": NOISE_FACTOR,
                                            "seed_shift": SEED_SHIFT},
             "versions": versions(), "created": now()}
    store.write_audit(benchmark, found)
    write_files(found, out)
    return found


def _plan(record: Benchmark, settings: AuditSettings, device: str | None):
    """A Plan of the recorded benchmark holding the methods to rerun (installed ones only) and
    the labels left out."""
    from .config import Plan
    from .report import installed
    from .training import Recipe

    wanted = settings.methods or tuple(record.methods)
    methods, analyzers, skipped = {}, {}, []
    for label in wanted:
        if label not in record.methods:
            raise ConfigError(f"[audit] methods: {label!r} is not a method of {record.name!r}; methods: "
                              f"{sorted(record.methods)}.")
        cls = installed(record.methods[label])
        if cls is None:
            skipped.append(label)
            continue
        methods[label] = record.methods[label]
        analyzers[(label, None)] = cls.from_params(record.methods[label].params)
    plan = Plan(record.name, record.description, record.scale, record.problem, list(record.seeds), record.variants,
                list(record.subjects), Recipe.from_dict(record.recipe), methods, record.report,
                device or record.device, {}, settings, analyzers)
    return plan, skipped


def _transformed_minima(scratch: Store, store: Store, subject, indices: list[int], transform: Transform, seed: int,
                        checks: list[dict]) -> set[int]:
    """Each minimum in ``indices`` transformed, checked and written to ``scratch`` (those there
    already are kept: a rerun resumes). A transformation that changes the function is an error:
    measures of another function say nothing about invariance."""
    minima = {m.index: m for m in store.minima(subject.name)}
    held = {m.index for m in scratch.minima(subject.name)} if subject.name in scratch.subjects() else set()
    for index in indices:
        minimum = minima[index]
        theta = subject.as_theta(minimum.theta)
        buffers = subject.buffers_at(theta, minimum.buffers)
        new_theta, new_buffers = transform.apply(subject, theta, buffers, seed)
        with devices.numerics("float32", subject.device):  # TF32 rounds at 1e-3, far above the check's tolerance
            check = invariance.check_function(subject, theta, buffers, new_theta, new_buffers)
        checks.append({"subject": subject.name, "minimum": index, "transform": transform.label,
                       **{k: (float(v) if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
                              else v) for k, v in check.items()}})
        if not check["unchanged"]:
            raise ConfigError(f"{transform.label} changed the function of {subject.name!r} at minimum {index} "
                              f"({check}); the audit compares measures of one function, so nothing was audited.")
        if index in held:
            continue
        scratch.register(subject)
        metrics = minimum_metrics(subject, new_theta, new_buffers, f"minimum {index} after {transform.label}")
        scratch.write_minimum(subject.name, dataclasses.replace(
            minimum, theta=new_theta.cpu().numpy(), buffers=new_buffers.cpu().numpy(), metrics=metrics,
            trajectory=None, recipe={**minimum.recipe, "audit_transform": transform.label}))
    return set(indices)


def reseeded(analyzer):
    """The analyzer with every seed shifted by SEED_SHIFT, or None if it takes no seed."""
    params = analyzer.get_params()
    changed = {}
    if isinstance(params.get("seed"), int) and not isinstance(params.get("seed"), bool):
        changed["seed"] = params["seed"] + SEED_SHIFT
    if isinstance(params.get("seeds"), (list, tuple)) and all(isinstance(s, int) for s in params["seeds"]):
        changed["seeds"] = [s + SEED_SHIFT for s in params["seeds"]]
    return type(analyzer).from_params({**params, **changed}) if changed else None


def _rows(study, label: str, metrics: dict, original: dict, subject: str, minimum: int,
          transform: Transform) -> list[dict]:
    """One row per measure of ``label``: the study's value, the transformed one, the relative change."""
    out = []
    for metric, value in metrics.items():
        column = f"{label}.{metric}"
        if study.metric_info.get(column, {}).get("kind", "measure") != "measure":
            continue
        before = original.get(column, float("nan"))
        out.append({"subject": subject, "minimum": minimum, "transform": transform.label, "kind": transform.kind,
                    "factor": transform.factor, "measure": column, "original": _number(before),
                    "transformed": _number(value), "relative_change": relative_change(before, value)})
    return out


def relative_change(before, after) -> float:
    """(after - before) / |before|; 0 when both are 0, +-inf from 0, NaN where either is not finite."""
    before, after = float(before), float(after)
    if not (math.isfinite(before) and math.isfinite(after)):
        return float("nan")
    if before == 0:
        return 0.0 if after == 0 else math.copysign(math.inf, after)
    return (after - before) / abs(before)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def write_files(found: dict, out: Path) -> list[Path]:
    """invariance.csv, invariance_summary.csv, function_checks.csv and the figure in ``out``."""
    from .report import invariance as section

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in section.csv_texts(found).items():
        (out / filename).write_text(text, encoding="utf-8")
        written.append(out / filename)
    from . import plots

    with plots.style("full"):
        figure = section.figure(found)
        if figure is not None:
            written += plots.save_figure(figure, out / "figures" / "invariance")
    return written
