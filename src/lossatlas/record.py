"""The benchmark record: what a run planned and which stored results it produced, typed.

``lossatlas run`` writes it to the store after every subject (``/benchmarks/<name>_<scale>``);
``lossatlas report`` reads it back and builds every table from it and the results it names, so a
report needs the store alone. ``collect.record_from_results`` makes one for a store filled by
``lossatlas.analyze`` calls. Its JSON carries ``record_version``: a record without one has the
layout of version 1, and a newer version is refused with a message saying to upgrade.

``ReportSettings`` and ``Claim`` are also the declarations of a config's ``[report]`` and
``[[report.claims]]`` tables: their fields carry the constraints the config is checked against.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import StoreError
from .params import Array, Boolean, Interval, NumberList, OfType, Options, param, required, table
from .stats import PERMUTATIONS

RECORD_VERSION = 1
DIRECTIONS = ("increasing", "decreasing")
AUDIT_TRANSFORMS = ("rescale", "scale_before_norm", "permute", "permute_heads")


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A paper's claim about how a metric moves with a factor (``[[report.claims]]``)."""

    metric: str = required(OfType(str), '"<label>.<metric>" or a model column (e.g. "test_error")')
    direction: str = required(Options(DIRECTIONS), "how the metric moves as the factor grows")
    text: str = required(OfType(str), "the claim in words")
    source: str = param("", OfType(str), "where the paper says it")
    where: dict = table("problem parameter -> value: the rows the claim is about")
    factor: str | None = param(None, OfType(str, allow_none=True), "default: [report] factor; any problem parameter")


@dataclass(frozen=True, kw_only=True)
class ReportSettings:
    """What the report compares and how (``[report]``)."""

    factor: str | None = param(None, OfType(str, allow_none=True), "the variant the claims are about by default")
    error: str | None = param(None, OfType(str, allow_none=True), 'the row column measures track, e.g. "test_error"')
    claims: tuple[Claim, ...] = param((), Array("tables ([[report.claims]])"), "the papers' claims, tested")
    correction: str = param("holm", Options(("holm", "bh")), "multiple-testing correction across the comparison")
    permutations: int = param(PERMUTATIONS, Interval(int, 1000), "Monte Carlo orders where n > 8")
    names: dict = table('"<label>.<metric>" -> the name tables and figures show')
    table: tuple = param((), Array('"<label>.<metric>" names'), "the metrics of the per-variant table and "
                         "table.tex, in order (default: every measure; diagnostics stay in metrics.csv); the "
                         "comparison table also keeps every measure a claim is about")

    def claim_factor(self, claim: Claim) -> str | None:
        return self.factor if claim.factor is None else claim.factor


@dataclass(frozen=True, kw_only=True)
class AuditSettings:
    """The reparameterization-invariance audit (``[audit]``, ``lossatlas.audit``): which
    function-preserving transformations are applied to which minima, and which methods rerun."""

    enabled: bool = param(True, Boolean(), "run the audit after the benchmark (a scale can set it false)")
    transforms: tuple = param(AUDIT_TRANSFORMS, Array(f"names, each one of {list(AUDIT_TRANSFORMS)}"),
                              "the transformations; those a model does not have are reported as not applicable")
    alphas: tuple = param((0.5, 2.0, 10.0), NumberList(Interval(float, 0, None, closed="neither")),
                          "the factors of the layer rescaling (and of the scaling before BatchNorm)")
    minima: int = param(1, Interval(int, 1), "the first N minima of every variant are audited")
    methods: tuple = param((), Array("method labels"), "the methods rerun (default: every method of the benchmark)")
    control: bool = param(True, Boolean(), "also rerun every seeded method at the untransformed minimum with its "
                          "seeds shifted: the change an estimator's own randomness makes, beside the transformations'")
    seed: int = param(0, Interval(int, 0), "seed of the permutations")


@dataclass(frozen=True)
class Method:
    """A labelled method: its analyzer's name (what the store files its results under), the
    parameters the config gives, and ``reference`` ("package.module:Class") for a user's own
    analyzer that no package registers."""

    analyzer: str
    params: dict = field(default_factory=dict)
    reference: str | None = None


@dataclass(frozen=True, kw_only=True)
class Run:
    """One trained minimum of one subject (or an imported surface: no minimum) and the store keys
    of the results at it: ``results`` label -> key, ``sensitivity`` label -> setting -> key."""

    subject: str
    variant: dict
    seed: int | None
    minimum: int | None
    results: dict[str, str] = field(default_factory=dict)
    sensitivity: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """A benchmark as planned at one scale, and the runs done so far."""

    name: str
    scale: str
    description: str = ""
    problem: str = ""
    seeds: list[int] = field(default_factory=list)
    variants: dict[str, list] = field(default_factory=dict)  # key -> levels, in the config's order
    subjects: list[dict] = field(default_factory=list)  # problem parameters and training variants, per subject
    recipe: dict = field(default_factory=dict)  # the training recipe (lossatlas.Recipe.to_dict)
    methods: dict[str, Method] = field(default_factory=dict)
    report: ReportSettings = field(default_factory=ReportSettings)
    device: str = "auto"
    sensitivity: dict[str, dict[str, dict]] = field(default_factory=dict)  # label -> setting -> parameters
    checkpoints: int = 0  # minima added from checkpoints (no training seed)
    audit: AuditSettings | None = None  # [audit], where the config has one
    runs: tuple[Run, ...] = ()

    def to_dict(self) -> dict:
        """The record as JSON values, stamped with its version."""
        return {"record_version": RECORD_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "the benchmark record") -> "Benchmark":
        """Read a stored record: any version up to this lossatlas's own (none = version 1)."""
        if not isinstance(data, dict):
            raise StoreError(f"{where} is a {type(data).__name__}, not a benchmark record (a JSON object).")
        data = dict(data)
        version = data.pop("record_version", 1)
        if version != RECORD_VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > RECORD_VERSION
            raise StoreError(f"{where} has record_version {version!r}; this lossatlas reads version "
                             f"{RECORD_VERSION}" + (": upgrade lossatlas to read it." if newer else "."))
        report = _typed(ReportSettings, data.get("report", {}), f"{where} report")
        values = {**data,
                  "methods": {label: _typed(Method, method, f"{where} methods.{label}")
                              for label, method in _table(data.get("methods", {}), f"{where} methods").items()},
                  "report": dataclasses.replace(report, claims=tuple(
                      _typed(Claim, claim, f"{where} report claims[{index}]")
                      for index, claim in enumerate(report.claims)), table=tuple(report.table)),
                  "audit": None if data.get("audit") is None else _audit(data["audit"], f"{where} audit"),
                  "runs": tuple(_typed(Run, run, f"{where} runs[{index}]")
                                for index, run in enumerate(data.get("runs", [])))}
        return _typed(cls, values, where)


def _audit(values, where: str) -> AuditSettings:
    audit = _typed(AuditSettings, values, where)
    return dataclasses.replace(audit, transforms=tuple(audit.transforms), alphas=tuple(audit.alphas),
                               methods=tuple(audit.methods))


def _typed(cls, values, where: str):
    """``cls`` from a stored JSON object; a field it does not have, or a missing required one, is
    a StoreError naming where."""
    values = _table(values, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    missing = sorted(name for name, f in fields.items() if name not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise StoreError(f"{where} is not a benchmark record of version {RECORD_VERSION}: "
                         + "; ".join(([f"unknown field(s) {unknown}"] if unknown else [])
                                     + ([f"missing field(s) {missing}"] if missing else [])) + ".")
    return cls(**values)


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise StoreError(f"{where} must be a JSON object; got {type(value).__name__}.")
    return value
