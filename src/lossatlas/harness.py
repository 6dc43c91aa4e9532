"""Benchmark configs (TOML): validated in full before any work, then run produce -> analyze.

    name = "resnet_skip"            # study name (store and output file names)
    description = "..."
    problem = "resnet"              # a name from lossatlas.problems.PROBLEMS, one an installed package
                                    # registers (entry points "lossatlas.problems"), or "package.module:factory"
    seeds = [0, 1]                  # one trained minimum per seed, for every variant
    [params]                        # problem parameters shared by every variant
    [variants]                      # lists; the subjects are their product, e.g. skip = [true, false]; a
                                    # Recipe field (lr, schedule, batch_size, ...) varies the training: each
                                    # level then trains its own minima, under a subject name that says it.
                                    # A level may carry settings that go with it: lr = [0.005, { value =
                                    # 0.1, gamma = 0.05 }] (the column shows the value)
    [minima]                        # the training recipe (lossatlas.Recipe fields)
    [methods.<label>]               # an analyzer to run and its parameters; ``analyzer = "merge-tree"``
                                    # runs one analyzer under several labels (default: the label itself)
    [report]                        # factor = a variant key; error = a row column (e.g. "test_error")
    [[report.claims]]               # metric = "<label>.<metric>" or a model column, direction =
                                    # "increasing" | "decreasing" in the factor, text, source, where = {...},
                                    # factor (default: [report] factor; any problem parameter);
                                    # correction = "holm" (default) | "bh", permutations = 10000 (Monte
                                    # Carlo p-values where n > 8), names = {"<label>.<metric>" = "display
                                    # name"} for tables and figures
    [sensitivity.<label>]           # nuisance settings of a method, each rerun one at a time and reported
                                    # in sensitivity.csv: e.g. seed = [1, 2, 3, 4] (direction seeds)
    [scales.<smoke|cpu|paper>]      # per-scale overrides of seeds, params, variants, minima, methods,
                                    # sensitivity

Analyzers of scope "minimum" run at every trained minimum; those of scope "subject" (the loss
barcode, which joins all minima of a subject) once per subject. ``execute`` records the plan and the key
of every result in the store (``/benchmarks/<name>_<scale>``), so the report is rebuilt from the
store alone.
"""
from __future__ import annotations

import itertools
import logging
import re
import sys
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import devices, memory, problems, registry
from .analysis import analyze
from .errors import ConfigError, StoreError
from .params import Interval, NumberList, OfType, Options, check_known, check_table, validate
from .progress import bar as progress_bar
from .samplers import train_minima
from .store import _check_name
from .training import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCALES = ("smoke", "cpu", "paper")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_TOP_KEYS = {"name", "description", "problem", "seeds", "params", "variants", "minima", "methods", "report", "scales",
             "device", "sensitivity"}
_SCALE_KEYS = {"seeds", "params", "variants", "minima", "methods", "sensitivity"}
_REPORT_KEYS = {"factor", "error", "claims", "correction", "permutations", "names"}
_CLAIM_KEYS = {"metric", "direction", "text", "source", "where", "factor"}
DIRECTIONS = ("increasing", "decreasing")
_CONFIG_CONSTRAINTS = {"name": OfType(str), "description": OfType(str), "problem": OfType(str),
                       "seeds": NumberList(Interval(int, 0), unique=True)}  # a repeated seed inflates n
_CLAIM_CONSTRAINTS = {"metric": OfType(str), "direction": Options(DIRECTIONS), "text": OfType(str),
                      "source": OfType(str), "factor": OfType(str)}
log = logging.getLogger("lossatlas.harness")


@dataclass
class Plan:
    """A validated config at one scale: everything needed to run, nothing left to check."""

    name: str
    description: str
    scale: str
    problem: str
    seeds: list[int]
    variants: dict[str, list]
    subjects: list[dict]  # problem parameters and training variants, one dict per subject
    recipe: Recipe
    methods: dict[str, dict] = field(default_factory=dict)  # label -> {"analyzer": name, "params": {...}}
    report: dict = field(default_factory=dict)
    device: str = "auto"  # where the subjects live and the work runs; `lossatlas run --device` overrides it
    sensitivity: dict[str, dict[str, dict]] = field(default_factory=dict)  # label -> setting name -> params

    @property
    def record_name(self) -> str:
        return f"{self.name}_{self.scale}"

    def setup(self, values: dict) -> tuple[dict, Recipe, str]:
        """One subject's problem parameters, its recipe, and the suffix of its name ("" unless the
        training varies: then each level trains its own minima, and the store keeps them apart by name)."""
        training = training_settings(self.problem, values)
        problem = {key: value for key, value in values.items() if key not in training}
        recipe = dataclasses.replace(self.recipe, **training) if training else self.recipe
        return problem, recipe, "".join(f"_{key}{plots_stem(value)}" for key, value in training.items())

    def to_record(self) -> dict:
        record = asdict(self)
        record["recipe"] = self.recipe.to_dict()
        return record


def load(path: str | Path, scale: str = "cpu") -> Plan:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No benchmark config at {path}.")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:  # TOML is UTF-8 by definition
        raise ConfigError(f"{path} is not UTF-8 text, as TOML must be: byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}. Save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{path} nests arrays or inline tables too deeply to read; a benchmark config needs a few "
                          "levels.") from None
    return plan(config, scale, source=str(path))


def plan(config: dict, scale: str = "cpu", source: str = "config") -> Plan:
    """Check every key, problem, method, parameter and claim, then apply the scale's overrides."""
    _known(source, config, _TOP_KEYS, "key")
    if scale not in SCALES:
        raise ConfigError(f"Unknown scale {scale!r}; valid scales: {list(SCALES)}.")
    scales = _table(config, "scales", source)
    _known(f"{source} [scales]", scales, SCALES, "scale")
    for name in scales:
        _known(f"{source} [scales.{name}]", _table(scales, name, f"{source} [scales]"), _SCALE_KEYS, "key")
    for required in ("name", "problem"):
        if required not in config:
            raise ConfigError(f"{source} needs a top-level {required!r} key.")
    validate(source, {"name": config["name"]}, {"name": OfType(str)})
    if not _NAME.fullmatch(config["name"]):
        raise ConfigError(f"{source}: name {config['name']!r} must be 1-100 letters, digits, '_', '-' or '.', starting "
                          "with a letter or digit: it names the store and the report folder under --out.")
    merged = _merge(config, scales.get(scale, {}))
    problem = config["problem"]
    params = _table(merged, "params", source)
    variants, levels = _variants(_table(merged, "variants", source), source)
    misplaced = sorted(training_settings(problem, params))
    if misplaced:
        raise ConfigError(f"{source} [params] {misplaced}: training settings go in [minima] (or [variants], to vary "
                          "them).")
    subjects = [{**params, **{k: v for level in combo for k, v in level.items()}}
                for combo in itertools.product(*levels.values())]
    for subject in subjects:
        problems.check_params(problem, {k: v for k, v in subject.items()
                                        if k not in training_settings(problem, subject)})
    seeds = merged.get("seeds", [0])
    validate(source, {**config, "seeds": seeds}, _CONFIG_CONSTRAINTS)
    recipe = Recipe.from_dict(_table(merged, "minima", source))
    for subject in subjects:  # every level of a training variant is a valid recipe
        try:
            Recipe.from_dict({**_table(merged, "minima", source), **training_settings(problem, subject)})
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"{source} [variants]: {err}") from err
    methods = {label: _method(label, _table(_table(merged, "methods", source), label, f"{source} [methods]"))
               for label in _table(merged, "methods", source)}
    _check_figure_names(source, "method labels", list(methods))
    _check_figure_names(source, "variants", [", ".join(f"{k}={v}" for k, v in zip(variants, combo))
                                             for combo in itertools.product(*variants.values())])
    report = _report(_table(config, "report", source), variants,  # [params]: a **kwargs factory declares none
                     {**problems.parameters(problem), **params, **variants}, methods, source)
    device = config.get("device", "auto")
    devices.parse(device)  # spelled right; whether the GPU is there is checked where the run starts
    sensitivity = _sensitivity(_table(merged, "sensitivity", source), methods, source)
    return Plan(config["name"], config.get("description", ""), scale, problem, seeds, variants, subjects, recipe,
                methods, report, str(device), sensitivity)


def _variants(table: dict, source: str) -> tuple[dict[str, list], dict[str, list[dict]]]:
    """``[variants]``: each key's level values (what the rows and the statistics show) and each
    level's settings (the value under its key, plus what the level carries: ``{ value = 0.1,
    gamma = 0.05 }``)."""
    values, levels = {}, {}
    for key, entries in table.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{source} [variants] {key!r} must be a non-empty list; got {entries!r}.")
        values[key], levels[key] = [], []
        for entry in entries:
            if isinstance(entry, dict):
                if "value" not in entry:
                    raise ConfigError(f"{source} [variants] {key!r}: a level given as a table needs 'value' (what the "
                                      f"{key} column shows) next to the settings it carries; got {entry!r}.")
                extra = {k: v for k, v in entry.items() if k != "value"}
                if set(extra) & set(table):
                    raise ConfigError(f"{source} [variants] {key!r}: a level sets {sorted(set(extra) & set(table))}, "
                                      f"which [variants] varies itself; got {entry!r}.")
                values[key].append(entry["value"])
                levels[key].append({key: entry["value"], **extra})
            else:
                values[key].append(entry)
                levels[key].append({key: entry})
        if len({repr(v) for v in values[key]}) < len(entries):
            raise ConfigError(f"{source} [variants] {key!r} repeats a value ({values[key]!r}): each level must be "
                              "distinct, or the statistics would count one variant twice.")
    return values, levels


def training_settings(problem: str, values: dict) -> dict:
    """The settings among ``values`` that are training-recipe fields (and not problem parameters)."""
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    return {key: value for key, value in values.items()
            if key in recipe_fields and key not in problems.parameters(problem)}


def plots_stem(value) -> str:
    """A level as part of a subject name: file-name safe, a minus sign kept as "m"."""
    from .plots import file_stem

    return ("m" if str(value).startswith("-") else "") + file_stem(str(value))


def _sensitivity(table: dict, methods: dict, source: str) -> dict[str, dict[str, dict]]:
    """``[sensitivity.<label>]``: for each parameter of the method a list of values, each rerun
    with that one parameter changed (one at a time, not their product); named "<key>=<value>"."""
    out = {}
    for label in table:
        where = f"{source} [sensitivity.{label}]"
        if label not in methods:
            raise ConfigError(f"{where} names no method; methods: {sorted(methods)}.")
        settings = {}
        base, cls = methods[label]["params"], registry.get(methods[label]["analyzer"])
        for key, values in _table(table, label, f"{source} [sensitivity]").items():
            if key == "minimum" and cls.scope == "minimum":
                raise ConfigError(f"{where} varies 'minimum', which a benchmark chooses itself ({label!r} runs at "
                                  "every trained minimum). Remove it.")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where} {key!r} must be a non-empty list of values; got {values!r}.")
            for value in values:
                params = {**base, key: value}
                try:
                    same = cls.from_params(params) == cls.from_params(base)
                except ConfigError as err:
                    raise ConfigError(f"{where}: {err}") from err
                if not same:  # the method's own setting is the base every other setting is compared with
                    settings[f"{key}={value}"] = params
        out[label] = settings
    return out


def _check_figure_names(source: str, what: str, names: list[str]) -> None:
    """Two labels whose figure files would have one name (case-insensitive file systems included)
    would overwrite each other's figures."""
    from .plots import file_stem

    seen: dict[str, str] = {}
    for name in names:
        stem = file_stem(name).lower()
        if stem in seen:
            raise ConfigError(f"{source}: the {what} {seen[stem]!r} and {name!r} would write figure files of the same "
                              f"name ('{file_stem(name)}'), one over the other; rename one.")
        seen[stem] = name


def _method(label: str, table: dict) -> dict:
    params = dict(table)
    analyzer = params.pop("analyzer", label)
    if not isinstance(analyzer, str):
        raise ConfigError(f"[methods.{label}] 'analyzer' must be a method name; got {analyzer!r}.")
    if "." in label:
        raise ConfigError(f"Method label {label!r} must not contain '.' (metric columns are '<label>.<metric>').")
    cls = registry.get(analyzer)
    if cls.scope == "minimum" and "minimum" in params:
        raise ConfigError(f"[methods.{label}] sets 'minimum', which a benchmark chooses itself: {analyzer!r} runs at "
                          "every trained minimum. Remove it.")
    cls.from_params(params)
    return {"analyzer": analyzer, "params": params}


def _report(report: dict, variants: dict, params: dict, methods: dict, source: str) -> dict:
    """``params``: every parameter of the problem and every variant (training ones included); a
    claim about one that this scale does not vary (depth, width) is reported as not testable
    rather than refused."""
    where = f"{source} [report]"
    _known(where, report, _REPORT_KEYS, "key")
    factor = report.get("factor")
    if factor is not None and factor not in variants:
        raise ConfigError(f"{where} factor {factor!r} is not a variant; variants: {sorted(variants)}.")
    validate(where, report, {"error": OfType(str, allow_none=True), "correction": Options(("holm", "bh")),
                             "permutations": Interval(int, 1000)})
    error = report.get("error")
    claims = report.get("claims", [])
    if not isinstance(claims, list):
        raise ConfigError(f"{where} claims must be an array of tables ([[report.claims]]).")
    for index, claim in enumerate(claims):
        at = f"{where} claims[{index}]"
        if not isinstance(claim, dict):
            raise ConfigError(f"{at} must be a table.")
        _known(at, claim, _CLAIM_KEYS, "key")
        for required in ("metric", "direction", "text"):
            if required not in claim:
                raise ConfigError(f"{at} needs {required!r}.")
        validate(at, claim, _CLAIM_CONSTRAINTS)
        label, _, metric = claim["metric"].partition(".") if "." in claim["metric"] else (None, "", "")
        if label is not None and label not in methods:
            raise ConfigError(f"{at} metric {claim['metric']!r} names no method; methods: {sorted(methods)}.")
        declared = registry.get(methods[label]["analyzer"]).metrics if label is not None else {}
        if label is not None and metric not in declared:
            raise ConfigError(f"{at} metric {claim['metric']!r}: {methods[label]['analyzer']!r} has no metric "
                              f"{metric!r}; its metrics: {sorted(declared)}.")
        _known(f"{at} where", _table(claim, "where", at), set(params), "problem parameter")
        claim_factor = claim.get("factor", factor)
        if claim_factor is None:
            raise ConfigError(f"{at} needs a factor (its own or [report] factor).")
        if claim_factor not in params:
            raise ConfigError(f"{at} factor {claim_factor!r} is neither a problem parameter nor a variant; valid: "
                              f"{sorted(params)}.")
    names = _table(report, "names", where)
    for column, shown in names.items():
        if not isinstance(shown, str) or not shown:
            raise ConfigError(f"{where} names: the display name of {column!r} must be a non-empty string; "
                              f"got {shown!r}.")
        label, _, metric = column.partition(".")
        if metric and (label not in methods or metric not in registry.get(methods[label]["analyzer"]).metrics):
            raise ConfigError(f"{where} names: {column!r} is no metric of this benchmark's methods "
                              f"({sorted(methods)}).")
    extra = {key: report[key] for key in ("correction", "permutations", "names") if key in report}
    return {"factor": factor, "error": error, "claims": claims, **extra}


def check_subjects(plan: Plan) -> None:
    """Build every subject (a missing dataset fails here) and check every method against it, so
    what needs the subject (directions="axes" needs 2 parameters, the pyhessian backend a plain
    criterion) is rejected before any minimum is trained."""
    for params in plan.subjects:
        subject = build_subject(plan, params, "cpu")[0]  # checks need no GPU
        try:
            _check_name(subject.name, "subject")  # the store's rule, which `run` meets only when it writes
        except StoreError as err:
            raise ConfigError(f"Problem {plan.problem!r} with {params}: {err}") from None
        _check_methods(plan, subject, devices.resolve(plan.device))  # memory: where the run will be


def build_subject(plan: Plan, params: dict, device: str):
    """The subject of one entry of ``plan.subjects`` and the recipe that trains its minima."""
    problem_params, recipe, suffix = plan.setup(params)
    subject = problems.build(plan.problem, device=device, **problem_params)
    subject.name += suffix
    return subject, recipe


def _check_methods(plan: Plan, subject, device=None) -> None:
    for label, method in plan.methods.items():
        cls = registry.get(method["analyzer"])
        last = {"minimum": len(plan.seeds) - 1} if cls.scope == "minimum" else {}  # the run asks for every one
        try:
            analyzer = cls.from_params({**method["params"], **last})
            analyzer.check_subject(subject)
            for params in [method["params"], *plan.sensitivity.get(label, {}).values()]:
                memory.check(cls.from_params({**params, **last}), subject, device)  # refused now, not after hours
        except ConfigError as err:
            raise ConfigError(f"[methods.{label}] on {subject.name}: {err}") from err
        needed = max([r.minima_needed() for r in analyzer.requests(subject).values()], default=0)
        if needed > len(plan.seeds):
            raise ConfigError(f"[methods.{label}] on {subject.name} needs at least {needed} trained minima; the "
                              f"benchmark trains {len(plan.seeds)} (seeds {plan.seeds}). Add seeds.")


def execute(plan: Plan, store, progress: bool = True) -> dict:
    """Train the minima of every subject and run every method at each of them (or once per
    subject); returns the benchmark record, which is also written to the store after every step.
    Independent work inside each step runs on the current executor (``lossatlas.executor``)."""
    per_minimum = [label for label, m in plan.methods.items() if registry.get(m["analyzer"]).scope == "minimum"]
    per_subject = [label for label in plan.methods if label not in per_minimum]
    reruns = {label: len(settings) for label, settings in plan.sensitivity.items()}
    tasks = len(plan.subjects) * (len(plan.seeds) * (1 + len(per_minimum) + sum(reruns[x] for x in per_minimum
                                                                                if x in reruns))
                                  + len(per_subject) + sum(reruns[x] for x in per_subject if x in reruns))
    record = {**plan.to_record(), "runs": []}
    overall = progress_bar(total=tasks, desc=plan.record_name, enabled=progress, leave=True, position=0)

    def step(stage: str, tasks: int, work, /, *args, **kwargs):
        overall.set_postfix_str(stage)
        start = time.perf_counter()
        log.info("start %s", stage)
        value = work(*args, **kwargs)
        log.info("done  %s (%.1f s)", stage, time.perf_counter() - start)
        overall.update(tasks)
        return value

    for params in plan.subjects:
        subject, recipe = build_subject(plan, params, plan.device)
        _check_methods(plan, subject)
        variant = {key: params[key] for key in plan.variants}
        minima = step(f"{subject.name} minima", len(plan.seeds), train_minima, store, subject, recipe, plan.seeds,
                      progress=progress, record_trajectory=_needs_trajectory(plan))
        subject_results = {}
        runs = [{"subject": subject.name, "variant": variant, "seed": m.seed, "minimum": m.index, "results": {}}
                for m in minima]
        for run in runs:
            for label in per_minimum:
                method = plan.methods[label]
                result = step(f"{subject.name} {label} @ minimum {run['minimum']}", 1, analyze, store, subject,
                              method["analyzer"], progress, **{**method["params"], "minimum": run["minimum"]})
                run["results"][label] = result.key
        for label in per_subject:
            method = plan.methods[label]
            subject_results[label] = step(f"{subject.name} {label}", 1, analyze, store, subject, method["analyzer"],
                                          progress, **method["params"]).key
        for run in runs:
            run["results"].update(subject_results)
        _sensitivity_runs(plan, store, subject, runs, step, progress)
        record["runs"] += runs
        store.write_benchmark(plan.record_name, record)
    overall.close()
    return record


def _needs_trajectory(plan: Plan) -> bool:
    """Whether a method (or a sensitivity setting) grids along PCA directions of the training path."""
    settings = [m["params"] for m in plan.methods.values()]
    settings += [params for by_setting in plan.sensitivity.values() for params in by_setting.values()]
    return any(params.get("directions") == "pca" for params in settings)


def _sensitivity_runs(plan: Plan, store, subject, runs: list[dict], step, progress: bool) -> None:
    """Rerun each method of ``[sensitivity]`` at each of its settings; the keys go to
    ``run["sensitivity"][label][setting]``. Samples shared with the base setting (the same grid
    under another threshold) come from the store."""
    for label, settings in plan.sensitivity.items():
        analyzer = plan.methods[label]["analyzer"]
        for setting, params in settings.items():
            if registry.get(analyzer).scope == "minimum":
                for run in runs:
                    result = step(f"{subject.name} {label} [{setting}] @ minimum {run['minimum']}", 1, analyze, store,
                                  subject, analyzer, progress, **{**params, "minimum": run["minimum"]})
                    run.setdefault("sensitivity", {}).setdefault(label, {})[setting] = result.key
            else:
                key = step(f"{subject.name} {label} [{setting}]", 1, analyze, store, subject, analyzer, progress,
                           **params).key
                for run in runs:
                    run.setdefault("sensitivity", {}).setdefault(label, {})[setting] = key


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _table(config: dict, key: str, source: str) -> dict:
    return check_table(f"{source}: {key!r}", config.get(key, {}))


def _known(where: str, given: dict, valid, what: str) -> None:
    check_known(where, given, valid, what)
