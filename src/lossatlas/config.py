"""Benchmark configs (TOML), declared like analyzers and checked in full before any work.

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
                                    # runs one analyzer under several labels (default: the label itself);
                                    # ``analyzer = "package.module:Class"`` runs an Analyzer of your own
    [report]                        # factor = a variant key; error = a row column (e.g. "test_error")
    [[report.claims]]               # metric = "<label>.<metric>" or a model column, direction =
                                    # "increasing" | "decreasing" in the factor, text, source, where = {...},
                                    # factor (default: [report] factor; any problem parameter);
                                    # correction = "holm" (default) | "bh", permutations = 10000 (Monte
                                    # Carlo p-values where n > 8), names = {"<label>.<metric>" = "display
                                    # name"} for tables and figures, table = ["<label>.<metric>", ...]
                                    # for the per-variant table and table.tex (default: the measures)
    [sensitivity.<label>]           # nuisance settings of a method, each rerun one at a time and reported
                                    # in sensitivity.csv: e.g. seed = [1, 2, 3, 4] (direction seeds)
    [audit]                         # the reparameterization-invariance audit (lossatlas.audit): transforms,
                                    # alphas, minima (per variant), methods, control, enabled
    [scales.<smoke|demo|cpu|paper>] # per-scale overrides of seeds, params, variants, minima, methods,
                                    # sensitivity, audit

The tables are declared as dataclasses whose fields carry their constraints (``Config``,
``ScaleOverrides``, and ``lossatlas.record.ReportSettings``, ``Claim`` and ``AuditSettings``), checked with the
messages analyzer parameters get; each method's parameters are checked once, here, into the
analyzer that runs (``Plan.analyzer``).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import devices, problems, registry
from .analyzer import Analyzer
from .errors import ConfigError
from .params import Interval, NumberList, OfType, check_known, check_table, from_table, param, required, table
from .record import AUDIT_TRANSFORMS, AuditSettings, Benchmark, Claim, Method, ReportSettings
from .training import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCALES = ("smoke", "demo", "cpu", "paper")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SEEDS = NumberList(Interval(int, 0), unique=True)  # a repeated seed inflates n


@dataclass(frozen=True, kw_only=True)
class Config:
    """The top level of a benchmark file."""

    name: str = required(OfType(str), "the study's name: its store and report folder are named after it")
    description: str = param("", OfType(str))
    problem: str = required(OfType(str), "a built-in or registered problem, or 'package.module:factory'")
    seeds: tuple = param((0,), SEEDS, "one trained minimum per seed, for every variant")
    params: dict = table("problem parameters shared by every variant")
    variants: dict = table("key -> levels; the subjects are their product")
    minima: dict = table("the training recipe (lossatlas.Recipe fields)")
    methods: dict = table("label -> its analyzer and parameters")
    report: dict = table("what the report compares (lossatlas.record.ReportSettings)")
    scales: dict = table("scale -> what it overrides (ScaleOverrides)")
    device: str = param("auto", OfType(str), "auto, cpu, cuda or cuda:N; `lossatlas run --device` overrides it")
    sensitivity: dict = table("label -> parameter -> values, each rerun one at a time")
    audit: dict = table("the reparameterization-invariance audit (lossatlas.record.AuditSettings)")


@dataclass(frozen=True, kw_only=True)
class ScaleOverrides:
    """``[scales.<scale>]``: what one scale changes; its tables are merged key by key into the top
    level's."""

    seeds: tuple = param((0,), SEEDS)
    params: dict = table()
    variants: dict = table()
    minima: dict = table()
    methods: dict = table()
    sensitivity: dict = table()
    audit: dict = table()


@dataclass(frozen=True)
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
    methods: dict[str, Method] = field(default_factory=dict)
    report: ReportSettings = field(default_factory=ReportSettings)
    device: str = "auto"  # where the subjects live and the work runs; `lossatlas run --device` overrides it
    sensitivity: dict[str, dict[str, dict]] = field(default_factory=dict)  # label -> setting name -> params
    audit: AuditSettings | None = None  # [audit], where the config has one
    analyzers: dict[tuple[str, str | None], Analyzer] = field(default_factory=dict, repr=False)
    # (label, None) -> the method's analyzer; (label, setting) -> the analyzer at a [sensitivity] setting

    @property
    def record_name(self) -> str:
        return f"{self.name}_{self.scale}"

    def analyzer(self, label: str, setting: str | None = None, minimum: int | None = None) -> Analyzer:
        """The analyzer of ``label`` (at a ``[sensitivity]`` setting), checked when the config was
        read; at ``minimum`` for a per-minimum method."""
        analyzer = self.analyzers[(label, setting)]
        return analyzer if minimum is None else dataclasses.replace(analyzer, minimum=minimum)

    def scope(self, label: str) -> str:
        return type(self.analyzers[(label, None)]).scope

    def setup(self, values: dict) -> tuple[dict, Recipe, str]:
        """One subject's problem parameters, its recipe, and the suffix of its name ("" unless the
        training varies: then each level trains its own minima, and the store keeps them apart by name)."""
        training = training_settings(self.problem, values)
        problem = {key: value for key, value in values.items() if key not in training}
        recipe = dataclasses.replace(self.recipe, **training) if training else self.recipe
        return problem, recipe, "".join(f"_{key}{plots_stem(value)}" for key, value in training.items())

    def to_record(self) -> Benchmark:
        """The benchmark record of this plan, before any run."""
        return Benchmark(name=self.name, scale=self.scale, description=self.description, problem=self.problem,
                         seeds=list(self.seeds), variants=self.variants, subjects=self.subjects,
                         recipe=self.recipe.to_dict(), methods=self.methods, report=self.report, device=self.device,
                         sensitivity=self.sensitivity, audit=self.audit)


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
    merged = _at_scale(config, scale, source)
    problem = merged.problem
    variants, levels = _variants(merged.variants, source)
    misplaced = sorted(training_settings(problem, merged.params))
    if misplaced:
        raise ConfigError(f"{source} [params] {misplaced}: training settings go in [minima] (or [variants], to vary "
                          "them).")
    subjects = [{**merged.params, **{k: v for level in combo for k, v in level.items()}}
                for combo in itertools.product(*levels.values())]
    for subject in subjects:
        problems.check_params(problem, {k: v for k, v in subject.items()
                                        if k not in training_settings(problem, subject)})
    recipe = Recipe.from_dict(merged.minima)
    for subject in subjects:  # every level of a training variant is a valid recipe
        try:
            Recipe.from_dict({**merged.minima, **training_settings(problem, subject)})
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"{source} [variants]: {err}") from err
    methods, analyzers = {}, {}
    for label, values in merged.methods.items():
        methods[label], analyzers[(label, None)] = _method(label, check_table(f"{source} [methods]: {label!r}",
                                                                              values))
    _check_figure_names(source, "method labels", list(methods))
    _check_figure_names(source, "variants", [", ".join(f"{k}={v}" for k, v in zip(variants, combo))
                                             for combo in itertools.product(*variants.values())])
    metrics = {label: type(analyzers[(label, None)]).metrics for label in methods}
    report = _report(merged.report, variants,  # [params]: a **kwargs factory declares none
                     {**problems.parameters(problem), **merged.params, **variants}, methods, metrics, source)
    devices.parse(merged.device)  # spelled right; whether the GPU is there is checked where the run starts
    sensitivity = _sensitivity(merged.sensitivity, methods, analyzers, source)
    given = "audit" in config or "audit" in config.get("scales", {}).get(scale, {})  # an empty [audit]: defaults
    audit = _audit(merged.audit, methods, source) if given else None
    return Plan(merged.name, merged.description, scale, problem, list(merged.seeds), variants, subjects, recipe,
                methods, report, merged.device, sensitivity, audit, analyzers)


def _at_scale(config: dict, scale: str, source: str) -> Config:
    """The top level and every scale's overrides checked, then the config as ``scale`` sees it."""
    declared = from_table(Config, config, source, needs="{owner} needs a top-level {name!r} key.")
    if scale not in SCALES:
        raise ConfigError(f"Unknown scale {scale!r}; valid scales: {list(SCALES)}.")
    check_known(f"{source} [scales]", declared.scales, SCALES, "scale")
    for name, overrides in declared.scales.items():
        from_table(ScaleOverrides, check_table(f"{source} [scales]: {name!r}", overrides), f"{source} [scales.{name}]")
    if not _NAME.fullmatch(declared.name):
        raise ConfigError(f"{source}: name {declared.name!r} must be 1-100 letters, digits, '_', '-' or '.', starting "
                          "with a letter or digit: it names the store and the report folder under --out.")
    return from_table(Config, _merge(config, declared.scales.get(scale, {})), source)


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


def _method(label: str, table: dict) -> tuple[Method, Analyzer]:
    """``[methods.<label>]``: the analyzer (a registered name or ``"package.module:Class"``,
    resolved as ``problem = "package.module:factory"`` is) built from its parameters, which checks them."""
    params = dict(table)
    name = params.pop("analyzer", label)
    if not isinstance(name, str):
        raise ConfigError(f"[methods.{label}] 'analyzer' must be a method name; got {name!r}.")
    if "." in label:
        raise ConfigError(f"Method label {label!r} must not contain '.' (metric columns are '<label>.<metric>').")
    cls = registry.get(name)
    if cls.scope == "minimum" and "minimum" in params:
        raise ConfigError(f"[methods.{label}] sets 'minimum', which a benchmark chooses itself: {name!r} runs at "
                          "every trained minimum. Remove it.")
    analyzer = cls.from_params(params)
    if ":" in name:  # the store files results under the analyzer's own name
        return Method(cls.name, params, reference=name), analyzer
    return Method(name, params), analyzer


def _audit(values: dict, methods: dict[str, Method], source: str) -> AuditSettings:
    """``[audit]``: known transformations, the benchmark's own method labels."""
    where = f"{source} [audit]"
    audit = from_table(AuditSettings, values, where)
    unknown = [t for t in audit.transforms if t not in AUDIT_TRANSFORMS]
    if unknown or not audit.transforms:
        raise ConfigError(f"{where} transforms {list(audit.transforms)}: each must be one of {list(AUDIT_TRANSFORMS)}, "
                          "at least one.")
    missing = [label for label in audit.methods if label not in methods]
    if missing:
        raise ConfigError(f"{where} methods {missing} are not methods of this benchmark; methods: {sorted(methods)}.")
    return dataclasses.replace(audit, transforms=tuple(audit.transforms), alphas=tuple(audit.alphas),
                               methods=tuple(audit.methods))


def _sensitivity(table: dict, methods: dict[str, Method], analyzers: dict, source: str) -> dict[str, dict[str, dict]]:
    """``[sensitivity.<label>]``: for each parameter of the method a list of values, each rerun
    with that one parameter changed (one at a time, not their product); named "<key>=<value>"."""
    out = {}
    for label in table:
        where = f"{source} [sensitivity.{label}]"
        if label not in methods:
            raise ConfigError(f"{where} names no method; methods: {sorted(methods)}.")
        out[label] = {}
        for key, values in check_table(f"{source} [sensitivity]: {label!r}", table[label]).items():
            out[label].update(_settings(where, label, key, values, methods[label].params, analyzers))
    return out


def _settings(where: str, label: str, key: str, values, given: dict, analyzers: dict) -> dict[str, dict]:
    """The settings ``key = values`` of ``[sensitivity.<label>]`` that differ from the method's own
    (the base every other setting is compared with): name -> parameters; each setting's analyzer
    joins ``analyzers`` under (label, name)."""
    base = analyzers[(label, None)]
    if key == "minimum" and base.scope == "minimum":
        raise ConfigError(f"{where} varies 'minimum', which a benchmark chooses itself ({label!r} runs at "
                          "every trained minimum). Remove it.")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where} {key!r} must be a non-empty list of values; got {values!r}.")
    settings = {}
    for value in values:
        params = {**given, key: value}
        try:
            analyzer = type(base).from_params(params)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err
        if analyzer != base:
            settings[f"{key}={value}"] = params
            analyzers[(label, f"{key}={value}")] = analyzer
    return settings


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


def _report(values: dict, variants: dict, params: dict, methods: dict[str, Method], metrics: dict[str, dict],
            source: str) -> ReportSettings:
    """``[report]``. ``params``: every parameter of the problem and every variant (training ones
    included); a claim about one that this scale does not vary (depth, width) is reported as not
    testable rather than refused. ``metrics``: label -> the metrics its analyzer declares."""
    where = f"{source} [report]"
    report = from_table(ReportSettings, values, where)
    if report.factor is not None and report.factor not in variants:
        raise ConfigError(f"{where} factor {report.factor!r} is not a variant; variants: {sorted(variants)}.")
    claims = tuple(_claim(claim, f"{where} claims[{index}]", report, params, methods, metrics)
                   for index, claim in enumerate(report.claims))
    for column, shown in report.names.items():
        if not isinstance(shown, str) or not shown:
            raise ConfigError(f"{where} names: the display name of {column!r} must be a non-empty string; "
                              f"got {shown!r}.")
        label, _, metric = column.partition(".")
        if metric and (label not in methods or metric not in metrics[label]):
            raise ConfigError(f"{where} names: {column!r} is no metric of this benchmark's methods "
                              f"({sorted(methods)}).")
    return dataclasses.replace(report, claims=claims, table=_table_metrics(report.table, metrics, where))


def _table_metrics(chosen, metrics: dict[str, dict], where: str) -> tuple[str, ...]:
    """``[report] table``: "<label>.<metric>" names of this benchmark's methods, each once."""
    valid = [f"{label}.{name}" for label, declared in metrics.items() for name in declared]
    unknown = [c for c in chosen if not isinstance(c, str) or c not in valid]
    if unknown:
        raise ConfigError(f"{where} table: {unknown} {'is' if len(unknown) == 1 else 'are'} not a metric of this "
                          f"benchmark's methods; valid: {', '.join(valid)}. (The model's own columns, e.g. "
                          "train_loss, are always shown.)")
    twice = sorted({c for c in chosen if list(chosen).count(c) > 1})
    if twice:
        raise ConfigError(f"{where} table lists {twice} more than once.")
    return tuple(chosen)


def _claim(values, at: str, report: ReportSettings, params: dict, methods: dict[str, Method],
           metrics: dict[str, dict]) -> Claim:
    if not isinstance(values, dict):
        raise ConfigError(f"{at} must be a table.")
    claim = from_table(Claim, values, at)
    label, _, metric = claim.metric.partition(".") if "." in claim.metric else (None, "", "")
    if label is not None and label not in methods:
        raise ConfigError(f"{at} metric {claim.metric!r} names no method; methods: {sorted(methods)}.")
    if label is not None and metric not in metrics[label]:
        raise ConfigError(f"{at} metric {claim.metric!r}: {methods[label].analyzer!r} has no metric "
                          f"{metric!r}; its metrics: {sorted(metrics[label])}.")
    check_known(f"{at} where", claim.where, set(params), "problem parameter")
    factor = report.claim_factor(claim)
    if factor is None:
        raise ConfigError(f"{at} needs a factor (its own or [report] factor).")
    if factor not in params:
        raise ConfigError(f"{at} factor {factor!r} is neither a problem parameter nor a variant; valid: "
                          f"{sorted(params)}.")
    return claim


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out
