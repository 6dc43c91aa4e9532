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

import contextlib
import dataclasses
import logging
import math
from pathlib import Path

import numpy as np

from . import devices, invariance
from .analysis import analyze
from .errors import ConfigError
from .progress import bar as progress_bar
from .provenance import digest, now, versions
from .record import AuditSettings, Benchmark
from .report.invariance import CONTROL, NOISE_FACTOR, UNCHANGED, record_digest
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
          device: str | None = None, progress: bool = True, figures: str = "full") -> dict:
    """Audit benchmark ``name`` (default: the store's only one) of ``store``; returns the audit as
    stored (settings, rows, function checks, notes). ``settings``: default the benchmark's
    ``[audit]``, else ``AuditSettings()``; ``device``: default the benchmark's; ``figures``:
    "full", "draft" or "none" for ``DIR/figures``."""
    from . import harness
    from .report.collect import benchmark_name, collect

    benchmark = benchmark_name(store, name)
    if benchmark is None:
        raise ConfigError(f"{store.path} holds no benchmark record: the audit reruns a benchmark's methods with their "
                          "parameters. Run the benchmark with `lossatlas run` first.")
    study = collect(store, benchmark)
    record = study.record
    settings = settings or record.audit or AuditSettings()
    plan, notes = _plan(record, settings, device)
    if not plan.methods:
        raise ConfigError(f"None of the methods {list(record.methods)} of {benchmark!r} is installed here; the audit "
                          "reruns them.")
    out = Path(out)
    scratch_folder = out / "scratch" / benchmark
    scratch_folder.mkdir(parents=True, exist_ok=True)
    values = {(row["subject"], row["minimum"]): row for row in study.rows}
    # each planned subject with its stored name: the record's JSON sorts the training settings, whose order
    # makes the name's suffix, so the name is read back from the runs, not rebuilt
    subjects = []
    for params in plan.subjects:
        stored = [r.subject for r in record.runs if r.variant == {k: params[k] for k in record.variants}]
        if stored:
            subjects.append((params, stored[0]))
    rows, checks = [], []
    todo = transforms(settings)
    bar = progress_bar(total=len(subjects) * len(todo), desc=f"{benchmark}: invariance audit", enabled=progress,
                       leave=True)
    for params, name in subjects:
        subject, _ = harness.build_subject(plan, params)
        subject.name = name
        every = sorted(r.minimum for r in record.runs if r.subject == subject.name and r.minimum is not None)
        audited = every[:settings.minima]
        if settings.minima > len(every):
            notes.append(f"{name}: {settings.minima} minima asked, {len(every)} stored; all of them audited")
        reasons = invariance.applicable(subject)
        if all(reasons.get(t.kind) is not None for t in todo if t.kind != "control"):
            notes.append(f"{subject.name}: no transformation applies ({'; '.join(sorted(set(reasons.values())))})")
            bar.update(len(todo))
            continue
        for transform in todo:
            reason = None if transform.kind == "control" else reasons.get(transform.kind)
            if reason is not None:
                notes.append(f"{transform.label} on {subject.name}: not applicable ({reason})")
                bar.update(1)
                continue
            runs = reruns(plan, transform)
            if runs:
                with _scratch(scratch_folder / f"{transform.stem}.h5", store, subject, every, transform,
                              settings.seed, checks) as scratch:
                    for label, analyzer in runs:
                        scoped = plan.scope(label) == "minimum"
                        for minimum in (audited if scoped else [None]):
                            run = analyzer if minimum is None else dataclasses.replace(analyzer, minimum=minimum)
                            result = analyze(scratch, subject, run, progress=False)
                            original = values.get((subject.name, audited[0] if minimum is None else minimum), {})
                            rows += _rows(study, label, result.metrics, original, subject.name, minimum, transform)
            bar.update(1)
        del subject
        harness._release()
    bar.close()
    found = {"benchmark": benchmark, "settings": dataclasses.asdict(settings), "rows": rows, "checks": checks,
             "notes": notes, "thresholds": {"unchanged": UNCHANGED, "noise_factor": NOISE_FACTOR,
                                            "seed_shift": SEED_SHIFT},
             "record_sha1": record_digest(record), "versions": versions(), "created": now()}
    store.write_audit(benchmark, found)
    write_files(found, out, figures)
    return found


def reruns(plan, transform: Transform, labels=None) -> list:
    """(label, analyzer) the transformation reruns: every method of ``labels`` (default the plan's;
    seeded ones only for the control), in that order. ``planning`` counts the same runs."""
    out = []
    for label in (labels or plan.methods):
        analyzer = plan.analyzer(label)
        if transform.kind == "control":
            analyzer = reseeded(analyzer)
            if analyzer is None:
                continue  # no seed: the control would repeat the study's own numbers
        out.append((label, analyzer))
    return out


def _plan(record: Benchmark, settings: AuditSettings, device: str | None):
    """A Plan of the recorded benchmark holding the methods to rerun (installed ones that look at
    minima), and notes on those left out."""
    from .config import Plan
    from .report import installed
    from .training import Recipe

    wanted = settings.methods or tuple(record.methods)
    methods, analyzers, notes = {}, {}, []
    for label in wanted:
        if label not in record.methods:
            raise ConfigError(f"[audit] methods: {label!r} is not a method of {record.name!r}; methods: "
                              f"{sorted(record.methods)}.")
        method = record.methods[label]
        cls = installed(method)
        if cls is None:
            notes.append(f"method {label!r}: not rerun, its analyzer {method.reference or method.analyzer!r} is not "
                         "installed here" + (" (import its module and call lossatlas.audit.audit)"
                                             if method.reference else ""))
            continue
        analyzer = cls.from_params(method.params)
        if getattr(analyzer, "at", "minimum") == "theta0":
            notes.append(f"method {label!r}: not rerun, it looks at the initialisation (at = 'theta0'), which the "
                         "audit does not transform")
            continue
        methods[label], analyzers[(label, None)] = method, analyzer
    plan = Plan(record.name, record.description, record.scale, record.problem, list(record.seeds), record.variants,
                list(record.subjects), Recipe.from_dict(record.recipe), methods, record.report,
                device or record.device, {}, settings, analyzers)
    return plan, notes


@contextlib.contextmanager
def _scratch(path: Path, store: Store, subject, indices: list[int], transform: Transform, seed: int,
             checks: list[dict]):
    """The scratch store of one transformation holding every minimum of ``subject`` transformed
    (methods that read other minima -- paths, partners -- see one landscape), each checked
    (``_transform_minimum``). Minima stored there from other originals (another benchmark's, or
    before a retraining) or another seed make the scratch store start afresh: a rerun resumes only
    what it would compute again."""
    minima = {m.index: m for m in store.minima(subject.name)}
    wanted = {index: {"audit_transform": transform.label, "audit_seed": seed,
                      "audit_source_sha1": digest(minima[index].theta)} for index in indices}
    with Store(path, "a") as scratch:
        held = {m.index: m for m in scratch.minima(subject.name)} if subject.name in scratch.subjects() else {}
        stale = any(any(m.recipe.get(k) != v for k, v in wanted[i].items()) for i, m in held.items() if i in wanted)
    if stale:
        log.info("%s holds minima of other originals or settings: started afresh", path)
        path.unlink()  # the audit's own scratch file: nothing in it is worth keeping
        held = {}
    with Store(path, "a") as scratch:
        scratch.register(subject)
        for index in indices:
            _transform_minimum(scratch, store, subject, minima[index], transform, seed, checks, wanted[index],
                               written=index in held)
        yield scratch


def _transform_minimum(scratch: Store, store: Store, subject, minimum, transform: Transform, seed: int,
                       checks: list[dict], recipe: dict, written: bool) -> None:
    """One minimum transformed, checked and (unless ``written``) stored with its transformed
    training trajectory, if it has one (PCA directions follow it). A transformation that changes
    the function is an error: measures of another function say nothing about invariance."""
    theta = subject.as_theta(minimum.theta)
    buffers = subject.buffers_at(theta, minimum.buffers)
    new_theta, new_buffers = transform.apply(subject, theta, buffers, seed)
    if transform.kind != "control":
        with devices.numerics("float32", subject.device):  # TF32 rounds at 1e-3, far above the check's tolerance
            check = invariance.check_function(subject, theta, buffers, new_theta, new_buffers)
        checks.append({"subject": subject.name, "minimum": minimum.index, "transform": transform.label,
                       **{k: (float(v) if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
                              else v) for k, v in check.items()}})
        if not check["unchanged"]:
            raise ConfigError(f"{transform.label} changed the function of {subject.name!r} at minimum "
                              f"{minimum.index} ({check}); the audit compares measures of one function, so nothing "
                              "was audited.")
    if written:
        return
    path = store.trajectory(subject.name, minimum.index)
    trajectory = None if path is None else np.stack([
        transform.apply(subject, subject.as_theta(point), buffers, seed)[0].cpu().numpy() for point in path])
    metrics = minimum_metrics(subject, new_theta, new_buffers, f"minimum {minimum.index} after {transform.label}")
    scratch.write_minimum(subject.name, dataclasses.replace(
        minimum, theta=new_theta.cpu().numpy(), buffers=new_buffers.cpu().numpy(), metrics=metrics,
        trajectory=trajectory, recipe={**minimum.recipe, **recipe}))


def reseeded(analyzer):
    """The analyzer with every seed (a parameter ``seed``, ``<what>_seed`` or a list ``seeds``)
    shifted by SEED_SHIFT, or None if it takes no seed."""
    params = analyzer.get_params()
    changed = {}
    for name, value in params.items():
        if (name == "seed" or name.endswith("_seed")) and isinstance(value, int) and not isinstance(value, bool):
            changed[name] = value + SEED_SHIFT
        elif name == "seeds" and isinstance(value, (list, tuple)) and all(isinstance(s, int) for s in value):
            changed[name] = [s + SEED_SHIFT for s in value]
    return type(analyzer).from_params({**params, **changed}) if changed else None


def _rows(study, label: str, metrics: dict, original: dict, subject: str, minimum: int | None,
          transform: Transform) -> list[dict]:
    """One row per measure of ``label`` in the study's column order: the study's value, the
    transformed one, the relative change (``minimum`` None: a measure of the whole subject)."""
    out = []
    for column in study.measure_columns:
        if not column.startswith(f"{label}.") or column[len(label) + 1:] not in metrics:
            continue
        before, after = original.get(column, float("nan")), metrics[column[len(label) + 1:]]
        out.append({"subject": subject, "minimum": minimum, "transform": transform.label, "kind": transform.kind,
                    "factor": transform.factor, "measure": column, "original": _number(before),
                    "transformed": _number(after), "relative_change": relative_change(before, after)})
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


def write_files(found: dict, out: Path, figures: str = "full") -> list[Path]:
    """invariance.csv, invariance_summary.csv, function_checks.csv and the figure in ``out``."""
    from .report import invariance as section

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in section.csv_texts(found).items():
        (out / filename).write_text(text, encoding="utf-8")
        written.append(out / filename)
    if figures == "none":
        return written
    from . import plots

    with plots.style(figures):
        figure = section.figure(found)
        if figure is not None:
            written += plots.save_figure(figure, out / "figures" / "invariance")
    return written
