"""Benchmark configs (TOML): validated in full before any work, then run produce -> analyze.

    name = "resnet_skip"            # study name (store and output file names)
    description = "..."
    problem = "resnet"              # a name from lossatlas.problems.PROBLEMS
    seeds = [0, 1]                  # one trained minimum per seed, for every variant
    [params]                        # problem parameters shared by every variant
    [variants]                      # lists; the subjects are their product, e.g. skip = [true, false]
    [minima]                        # the training recipe (lossatlas.Recipe fields)
    [methods.<name>]                # analyzers to run and their parameters
    [scales.<smoke|cpu|paper>]      # per-scale overrides of seeds, params, variants, minima, methods

Later issues add the report; ``run`` here trains the minima, runs the methods and prints a summary.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import problems, registry
from .errors import ConfigError
from .training import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCALES = ("smoke", "cpu", "paper")
_TOP_KEYS = {"name", "description", "problem", "seeds", "params", "variants", "minima", "methods", "scales"}
_SCALE_KEYS = {"seeds", "params", "variants", "minima", "methods"}


@dataclass
class Plan:
    """A validated config at one scale: everything needed to run, nothing left to check."""

    name: str
    description: str
    scale: str
    problem: str
    seeds: list[int]
    subjects: list[dict]  # problem parameters, one dict per subject
    recipe: Recipe
    methods: dict[str, dict] = field(default_factory=dict)


def load(path: str | Path, scale: str = "cpu") -> Plan:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No benchmark config at {path}.")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    return plan(config, scale, source=str(path))


def plan(config: dict, scale: str = "cpu", source: str = "config") -> Plan:
    """Check every key, problem, method and parameter, then apply the scale's overrides."""
    _known(source, config, _TOP_KEYS, "key")
    if scale not in SCALES:
        raise ConfigError(f"Unknown scale {scale!r}; valid scales: {list(SCALES)}.")
    scales = _table(config, "scales", source)
    _known(f"{source} [scales]", scales, SCALES, "scale")
    for name, overrides in scales.items():
        _known(f"{source} [scales.{name}]", _table(scales, name, f"{source} [scales]"), _SCALE_KEYS, "key")
    for required in ("name", "problem"):
        if required not in config:
            raise ConfigError(f"{source} needs a top-level {required!r} key.")
    merged = _merge(config, scales.get(scale, {}))
    problem = config["problem"]
    params = _table(merged, "params", source)
    variants = _table(merged, "variants", source)
    for key, values in variants.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source} [variants] {key!r} must be a non-empty list; got {values!r}.")
    subjects = [{**params, **dict(zip(variants, combo))} for combo in itertools.product(*variants.values())]
    for subject in subjects:
        problems.check_params(problem, subject)
    seeds = merged.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{source} 'seeds' must be a non-empty list of ints >= 0; got {seeds!r}.")
    recipe = Recipe.from_dict(_table(merged, "minima", source))
    methods = _table(merged, "methods", source)
    for method, method_params in methods.items():
        registry.get(method).from_params(_table(methods, method, f"{source} [methods]"))
    return Plan(config["name"], config.get("description", ""), scale, problem, seeds, subjects, recipe, methods)


def execute(plan: Plan, store) -> list[dict]:
    """Train the minima of every subject and run every method at each of them (methods with a
    ``minimum`` parameter); one summary row per minimum."""
    from .analyzer import analyze
    from .samplers import train_minima

    rows = []
    for params in plan.subjects:
        subject = problems.build(plan.problem, **params)
        for minimum in train_minima(store, subject, plan.recipe, plan.seeds):
            row = {"subject": subject.name, "seed": minimum.seed, **minimum.metrics}
            for method, method_params in plan.methods.items():
                at_minimum = {"minimum": minimum.index} if "minimum" in registry.get(method).defaults() else {}
                result = analyze(store, subject, method, **{**at_minimum, **method_params})
                row.update({f"{method}.{k}": v for k, v in result.metrics.items()})
            rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain Markdown table of the summary rows."""
    if not rows:
        return "(nothing was run)"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _table(config: dict, key: str, source: str) -> dict:
    value = config.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key!r} must be a table; got {type(value).__name__}.")
    return value


def _known(where: str, given: dict, valid, what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {unknown}; valid: {sorted(valid)}.")
