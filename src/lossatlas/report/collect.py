"""Read one benchmark back from the store: one row per trained minimum, every metric a column.

Everything the report shows comes from here, and everything here comes from the store, so
``lossatlas report STORE`` rebuilds the tables of a run byte for byte.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import StoreError
from ..record import Benchmark, Method, ReportSettings, Run
from ..store import Result, Store


@dataclass
class Study:
    record: Benchmark  # the plan and the result keys of every run
    rows: list[dict]  # one per (subject, minimum): variant, seed, model metrics, "<label>.<metric>", "time.*"
    model_columns: list[str]
    metric_columns: list[str]  # "<label>.<metric>", in method order
    time_columns: list[str]
    scopes: dict[str, str]  # label -> "minimum" (one result per minimum) or "subject" (one per subject)
    first_results: dict[tuple[str, str], Result]  # (subject, label) -> the result at its first minimum
    versions: dict[str, str]
    metric_info: dict[str, dict] = field(default_factory=dict)  # "<label>.<metric>" -> description,
    # higher_is_better, kind, as the analyzer declared them when the result was written
    sensitivity: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # label -> setting -> rows:
    # the benchmark's rows with that label's metrics as computed at the setting ([sensitivity] in the config)

    @property
    def measure_columns(self) -> list[str]:
        """Metric columns their analyzers declare as measures (diagnostics left out of comparisons)."""
        return [c for c in self.metric_columns if self.metric_info.get(c, {}).get("kind", "measure") == "measure"]

    def display(self, column: str) -> str:
        """The name tables and figures show: ``[report] names``, else the column itself."""
        return self.record.report.names.get(column, column)

    @property
    def variant_keys(self) -> list[str]:
        return list(self.record.variants)

    def variant_label(self, row: dict) -> str:
        return ", ".join(f"{key}={row[key]}" for key in self.variant_keys) or row["subject"]

    def row_name(self, row: dict) -> str:
        """"seed 3" for a trained minimum, "minimum 2" for an added checkpoint (no training seed)."""
        seed = row.get("seed")
        return f"seed {seed}" if isinstance(seed, int) and seed >= 0 else f"minimum {row.get('minimum')}"

    def variants(self) -> list[tuple[str, str]]:
        """(subject, label) of every variant, in plan order."""
        seen = {}
        for row in self.rows:
            seen.setdefault(row["subject"], self.variant_label(row))
        return list(seen.items())


def collect(store: Store, name: str | None = None) -> Study:
    benchmark = benchmark_name(store, name)
    record = (Benchmark.from_dict(store.read_benchmark(benchmark), f"{store.path}: benchmark {benchmark!r}")
              if benchmark is not None else record_from_results(store))
    methods = record.methods
    scopes, info = {}, {}
    cache: dict[tuple, Result] = {}
    minima: dict[str, dict] = {}
    rows, model_columns, metric_columns, first = [], {}, {}, {}
    sensitivity: dict[str, dict[str, list[dict]]] = {}
    for run in record.runs:
        if run.subject not in minima:
            minima[run.subject] = {m.index: m for m in store.minima(run.subject)}
        minimum = minima[run.subject].get(run.minimum)
        if minimum is None and run.minimum is not None:
            raise StoreError(f"{store.path}: the benchmark record names minimum {run.minimum} of "
                             f"{run.subject!r}, which is missing.")
        row = {"subject": run.subject, **run.variant, "seed": run.seed, "minimum": run.minimum}
        model = {_model_name(k): v for k, v in sorted(minimum.metrics.items())} if minimum else {}
        if "test_accuracy" in model:
            model["test_error"] = 1.0 - model["test_accuracy"]
            if "train_accuracy" in model:  # Jiang et al. 2019: test error minus training error
                model["generalization_gap"] = model["train_accuracy"] - model["test_accuracy"]
        row.update(model)
        model_columns.update(dict.fromkeys(model))
        row["time.minimum_s"] = minimum.wall_time_s if minimum else float("nan")
        for label, key in run.results.items():
            result = _read(store, cache, run.subject, methods[label].analyzer, key)
            scopes.setdefault(label, result.analyzer.get("scope", "minimum"))
            first.setdefault((run.subject, label), result)
            for metric, value in result.metrics.items():
                row[f"{label}.{metric}"] = value
                metric_columns.setdefault(f"{label}.{metric}", label)
                info.setdefault(f"{label}.{metric}", result.analyzer.get("metrics", {}).get(metric, {}))
            row[f"time.{label}_s"] = result.wall_time_s
        rows.append(row)
        for label, settings in run.sensitivity.items():
            for setting, key in settings.items():
                result = _read(store, cache, run.subject, methods[label].analyzer, key)
                metrics = {f"{label}.{metric}": value for metric, value in result.metrics.items()}
                others = {k: v for k, v in row.items() if not k.startswith(f"{label}.")}  # no base value stays in
                sensitivity.setdefault(label, {}).setdefault(setting, []).append({**others, **metrics})
    ordered = [c for label in methods for c, owner in metric_columns.items() if owner == label]
    times = ["time.minimum_s"] + [f"time.{label}_s" for label in methods]
    versions = next(iter(cache.values())).versions if cache else {}
    return Study(record, rows, list(model_columns), ordered, times, scopes, first, versions, info, sensitivity)


def _read(store: Store, cache: dict, subject: str, analyzer: str, key: str) -> Result:
    if (subject, analyzer, key) not in cache:
        cache[(subject, analyzer, key)] = store.read_result(subject, analyzer, key)
    return cache[(subject, analyzer, key)]


def benchmark_name(store: Store, name: str | None) -> str | None:
    """The benchmark to report: ``name``, or the store's only one; None for a store without any
    (filled by ``lossatlas.analyze`` calls: ``record_from_results``)."""
    names = store.benchmarks()
    if name is not None:
        return name
    if len(names) > 1:
        raise StoreError(f"{store.path} holds benchmarks {names}; name the one to report (--benchmark).")
    return names[0] if names else None


def record_from_results(store: Store) -> Benchmark:
    """A benchmark record for a store filled by ``lossatlas.analyze`` calls alone, so that the
    report shows what is there: every subject a variant, every stored minimum a row, and every
    method with one set of parameters (the minimum aside) a label ("hessian", or "hessian-2" for a
    second set). Results at points other than a stored minimum (``at="theta0"``) have no row and
    are left out. An imported surface (``lossatlas import-surface``) is one row of its own."""
    methods: dict[str, Method] = {}
    runs, seeds, error, checkpoints = [], set(), None, 0
    for subject in store.subjects():
        at_minimum: dict[int, dict] = {}
        once: dict[str, str] = {}
        surface = store.subject_config(subject).get("kind") == "surface"
        for result in store.results(subject):
            label = _label(methods, result.method, {k: v for k, v in result.params.items() if k != "minimum"})
            if surface:
                once[label] = result.key
                continue
            if result.analyzer.get("scope", "minimum") == "subject":
                once[label] = result.key
            elif result.params.get("at", "minimum") == "minimum":
                at_minimum.setdefault(int(result.params.get("minimum", 0)), {})[label] = result.key
        if surface and once:
            runs.append(Run(subject=subject, variant={}, seed=None, minimum=None, results=once))
        for minimum in store.minima(subject):
            if minimum.recipe.get("source") == "checkpoint":
                checkpoints += 1
            else:
                seeds.add(minimum.seed)
            error = error or ("test_error" if "test_accuracy" in minimum.metrics else None)
            runs.append(Run(subject=subject, variant={}, seed=minimum.seed, minimum=minimum.index,
                            results={**at_minimum.get(minimum.index, {}), **once}))
    if not runs:
        raise StoreError(f"{store.path} holds no benchmark run, no trained or added minima and no analyzed "
                         "imported surface: the report is made of one row per minimum or surface. Train minima "
                         "(`lossatlas.train_minima`), add your checkpoints (`lossatlas.add_minimum`) or surfaces "
                         "(`lossatlas import-surface`), or run a benchmark with `lossatlas run`.")
    used = {label for run in runs for label in run.results}
    return Benchmark(name=store.path.stem, scale="as analysed", problem="(lossatlas.analyze calls)",
                     description=f"The results stored in {store.path.name} by lossatlas.analyze calls (no benchmark "
                                 "record): every subject as a variant, one row per stored minimum.",
                     seeds=sorted(seeds), checkpoints=checkpoints, subjects=[{} for _ in store.subjects()],
                     methods={label: m for label, m in methods.items() if label in used},
                     report=ReportSettings(error=error), runs=tuple(runs))


def _label(methods: dict[str, Method], method: str, params: dict) -> str:
    for label, known in methods.items():
        if known == Method(method, params):
            return label
    count = sum(m.analyzer == method for m in methods.values())
    label = f"{method}-{count + 1}" if count else method
    methods[label] = Method(method, params)
    return label


def is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _model_name(key: str) -> str:
    """Minima metrics are stored per split; "eval" is the landscape's own (training) data."""
    return "train_" + key[len("eval_"):] if key.startswith("eval_") else key


