"""Every node of a store says what it is, and is read by the code registered for exactly that.

Each group carries ``encoding-type`` and ``encoding-version``. A writer is registered for the
current version of every type and a reader for every version this lossatlas reads (after
anndata's ``IOSpec`` registry): reading dispatches on the node's stamp, and a stamp it does not
know -- a type, a version without a reader, a type where the layout has another -- is a StoreError
naming the HDF5 path, what was found and what is read, never a guess. ``validate`` checks a whole
file that way when it is opened, reading attributes only (``unreadable`` lists what it refuses).
``Store`` reads a node's content only through here -- by the registered reader, its ``complete`` /
``prepared`` flags by ``flag`` -- and reads stamps itself only to pick a reader or to refuse a group
of another type; ``Store.tree`` shows raw attributes, for inspection.

Version 2 of subjects, minima, parts, results and benchmarks is version 1 made strict. Version 1
gained attributes during its life (``runtime`` of results and minima, results' ``shapes``,
``checksum`` everywhere) without changing its stamp, so its readers take them where present; a
version 2 node always carries them, and one missing is damage. The layout is unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import h5py
import numpy as np

from ..errors import StoreError
from ..provenance import canonical_json, now, versions
from .integrity import STAMP, checked_attrs, checksum, child, verify
from .records import Part, Result, SubjectRecord

SCHEMA = "lossatlas"
SCHEMA_VERSION = 2
READ_ALONE = ("trajectory",)  # datasets read on their own (Store.trajectory): a checksum of their own
SAMPLES = ("sample", "minima", "surface")  # groups holding a sample's header (and its parts)

# The layout: which group a node of each type holds, by name, or one type for every child group.
CHILDREN: dict[str, dict[str, str] | str] = {
    "store": {"subjects": "subjects", "benchmarks": "benchmarks", "audits": "audits"},
    "subjects": "subject",
    "subject": {"minima": "minima", "samples": "samples", "results": "results", "surface": "surface"},
    "minima": "minimum",
    "samples": "sample-kind",
    "sample-kind": "sample",
    "sample": "part",
    "results": "method-results",
    "method-results": "result",
    "result": {"metrics": "metrics", "arrays": "arrays"},
    "benchmarks": "benchmark",
    "audits": "audit",
}


@dataclass(frozen=True)
class Encoding:
    """How one version of one node type is read, and (the current version only) written."""

    type: str
    version: str
    read: Callable
    write: Callable | None = None


_REGISTRY: dict[tuple[str, str], Encoding] = {}
_CURRENT: dict[str, str] = {}  # type -> the version written


def register(encoding: Encoding) -> None:
    _REGISTRY[(encoding.type, encoding.version)] = encoding
    if encoding.write is not None:
        _CURRENT[encoding.type] = encoding.version


def known_versions(encoding_type: str) -> list[str]:
    return sorted((v for t, v in _REGISTRY if t == encoding_type), key=lambda v: (len(v), v))


def current(encoding_type: str) -> str:
    """The version this lossatlas writes."""
    return _CURRENT[encoding_type]


def registered() -> dict[str, list[str]]:
    """Every node type this lossatlas reads, with the versions it reads."""
    return {encoding_type: known_versions(encoding_type) for encoding_type, _ in sorted(_REGISTRY)}


# -- dispatch ------------------------------------------------------------------------------------
def stamp(node: h5py.Group | h5py.File, encoding_type: str) -> None:
    node.attrs["encoding-type"] = encoding_type
    node.attrs["encoding-version"] = current(encoding_type)


def check(node: h5py.Group, encoding_type: str) -> str:
    """The version of ``node``, which must be an ``encoding_type`` node of a version this lossatlas reads."""
    found, version = (node.attrs.get(key) for key in STAMP)
    problem = _problem(found, version, encoding_type)
    if problem:
        raise StoreError(f"{node.file.filename}:{node.name} {problem}")
    return version


def read(node: h5py.Group, encoding_type: str, **context):
    """``node`` read by the reader registered for its stamp."""
    return _REGISTRY[(encoding_type, check(node, encoding_type))].read(node, **context)


def write(parent: h5py.Group, name: str, encoding_type: str, *args, **context) -> h5py.Group:
    """A new ``encoding_type`` node ``parent/name`` (replacing one there), stamped with the current
    version and written by its writer. The node there goes first: what may fail (serialising a
    record) is done by the caller before, where the node replaced must survive a failure."""
    if name in parent:
        del parent[name]
    node = parent.create_group(name)
    stamp(node, encoding_type)
    _REGISTRY[(encoding_type, current(encoding_type))].write(node, *args, **context)
    return node


def expected_child(parent_type: str | None, name: str) -> str | None:
    """The type a group ``name`` inside a ``parent_type`` node has in the layout (None: no such group)."""
    children = CHILDREN.get(parent_type)
    return children.get(name) if isinstance(children, dict) else children


def _problem(found, version, expected: str | None, parent_type: str | None = None) -> str:
    """What is wrong with a node stamped (``found``, ``version``) where ``expected`` belongs ("" if nothing)."""
    if isinstance(found, str) and found == expected and isinstance(version, str) and (found, version) in _REGISTRY:
        return ""
    if expected is None:
        holds = CHILDREN.get(parent_type)
        allowed = f"only {sorted(holds)}" if isinstance(holds, dict) else "no groups"
        return (f"is a {found!r} node of encoding-version {version!r} inside a {parent_type!r} node, which holds "
                f"{allowed} in this lossatlas. It was written by another program or a newer lossatlas.")
    known = ", ".join(map(repr, known_versions(expected)))
    reads = f"this lossatlas reads {expected!r} nodes of encoding-version {known}"
    if not isinstance(found, str) or found != expected:
        return (f"is a {found!r} node, expected {expected!r} (it says encoding-version {version!r}; {reads}). "
                "It was written by another program or a newer lossatlas: upgrade lossatlas, or use another store.")
    newer = isinstance(version, str) and version.isdigit() and int(version) > max(map(int, known_versions(expected)))
    hint = "Upgrade lossatlas to read it." if newer else "No lossatlas wrote it: the store is damaged or foreign."
    return f"is a {found!r} node of encoding-version {version!r}; {reads}. {hint}"


def validate(file: h5py.File) -> None:
    """Refuse a store that holds a node this lossatlas cannot read (``unreadable``; the first is
    named), before anything is read or written."""
    problems = unreadable(file)
    if problems:
        path, problem = next(iter(problems.items()))
        raise StoreError(f"{file.filename}:{path} {problem} The file was not modified.")


def unreadable(file: h5py.File) -> dict[str, str]:
    """Every group this lossatlas cannot read, by HDF5 path ("/": the root), with what is wrong;
    the groups inside one are not looked at. One walk over every group's stamp, in the layout's
    places, reading no dataset (h5py's low-level visit: about twice as fast as ``visititems`` on
    stores of thousands of groups)."""
    problem = _problem(*(file.attrs.get(key) for key in STAMP), "store")
    if problem:
        return {"/": problem}
    found: dict[str, str] = {}
    types: dict[bytes, str | None] = {b"": "store"}  # None: inside an unreadable group

    def visit(name: bytes, info) -> None:
        if info.type != h5py.h5o.TYPE_GROUP:
            return
        parent, _, base = name.rpartition(b"/")
        if types[parent] is None:
            types[name] = None
            return
        attrs = h5py.Group(h5py.h5o.open(file.id, name)).attrs
        kind, version = attrs.get("encoding-type"), attrs.get("encoding-version")
        problem = _problem(kind, version, expected_child(types[parent], base.decode()), types[parent])
        if problem:
            found[f"/{name.decode()}"] = problem
        types[name] = None if problem else kind

    h5py.h5o.visit(file.id, visit, info=True)
    return found


# -- flags ---------------------------------------------------------------------------------------
def flag(node: h5py.Group, name: str) -> bool:
    """A ``complete`` / ``prepared`` flag, read strictly: a damaged one (the string "False", an
    array) must never read as set. Absent or false means not set -- an interrupted write, redone on
    resume -- unless the content matches the checksum written just before the flag: then it is
    whole (a kill between the two, or a flag damaged later), never silently dropped."""
    value = node.attrs.get(name)
    integer = isinstance(value, (int, np.integer)) and value in (0, 1)  # bool among them
    if value is None or integer or isinstance(value, np.bool_):
        return bool(value) or (name == "complete" and "checksum" in node.attrs and _whole(node))
    problem = f"{value!r}, not a boolean"
    raise StoreError(f"{node.file.filename}:{node.name} is damaged: its {name} flag is {problem}. Nothing was "
                     "modified; restore the file from a copy or rerun into a new store.")


def _whole(node: h5py.Group) -> bool:
    """Whether a result's or part's content matches its checksum (read the way its reader reads it)."""
    try:
        if node.attrs.get("encoding-type") == "result":
            attrs, metrics, arrays = _result_content(node)
            return node.attrs["checksum"] == checksum(node, attrs=attrs, metrics=metrics, arrays=arrays)
        attrs, arrays = _part_content(node, skip=READ_ALONE)
        return node.attrs["checksum"] == checksum(node, attrs=attrs, arrays={
            k: v for k, v in arrays.items() if k not in READ_ALONE})
    except (KeyError, ValueError, TypeError, OSError, RuntimeError, StoreError):
        return False


# -- the root and the groups that only hold others ---------------------------------------------
def _write_root(file: h5py.File) -> None:
    file.attrs["schema"] = SCHEMA
    file.attrs["schema_version"] = SCHEMA_VERSION
    file.attrs["created"] = now()
    file.attrs["lossatlas_version"] = versions().get("lossatlas", "unknown")


def initialize(file: h5py.File) -> None:
    """Stamp a new, empty store: the root is written like every other node."""
    stamp(file, "store")
    _REGISTRY[("store", current("store"))].write(file)


def _names(node: h5py.Group) -> list[str]:
    """The child nodes' names; a link in their place (``child``) is damage, not a node."""
    return [name for name in sorted(node) if child(node, name) is not None]


def _nothing(node: h5py.Group) -> None:
    """Groups that only hold others: the stamp is all they carry."""


# -- subjects ------------------------------------------------------------------------------------
def _write_subject(node: h5py.Group, config: str, theta0, buffers0, put: Callable) -> None:
    """``config`` (canonical JSON) and the starting point; the checksum covers the attributes
    (theta0 and buffers0 are compared whole on every registration)."""
    node.attrs["config"] = config
    node.attrs["dim"] = int(np.asarray(theta0).size)
    node.attrs["created"] = now()
    node.attrs["checksum"] = checksum(node, attrs=checked_attrs(node))
    put(node, "theta0", np.asarray(theta0))
    put(node, "buffers0", np.asarray(buffers0))


def _subject_reader(strict: bool) -> Callable:
    """``only``: "theta0" or "buffers0", the stored array (None where missing), which registration
    compares whole with the subject's."""
    def read_subject(node: h5py.Group, only: str | None = None) -> SubjectRecord | np.ndarray | None:
        if only is not None:
            return node[only][()] if only in node else None
        attrs = checked_attrs(node)
        record = SubjectRecord(json.loads(attrs["config"]), int(attrs["dim"]))
        verify(node, "checksum", strict, attrs=attrs)
        return record
    return read_subject


# -- samples: a header (arrays the tasks share, ``prepared`` last), then one part per task -------
def _write_sample(node: h5py.Group, kind: str | None = None, config: dict | None = None) -> None:
    """A sample's identity (a stored minima group has none: its parts say what they are)."""
    if config is not None:
        node.attrs["kind"] = kind
        node.attrs["config"] = canonical_json(config)
        node.attrs["created"] = now()
        node.attrs["versions"] = canonical_json(versions())


def write_header(node: h5py.Group, arrays: dict, put: Callable) -> None:
    for name, value in arrays.items():
        put(node, name, value)
    node.attrs["prepared"] = True


def _read_header(node: h5py.Group, config: bool = False) -> dict:
    """The header arrays; ``config``: the config the sample was created with instead ({} where none)."""
    if config:
        return json.loads(node.attrs["config"]) if "config" in node.attrs else {}
    return {name: node[name][()] for name in node if isinstance(node[name], h5py.Dataset)}


def sample_type(node: h5py.Group) -> str:
    """The type a group holding a sample's header is read as: its own where it is one of those
    (``SAMPLES``), else "sample" (``read`` then names what it is)."""
    found = node.attrs.get("encoding-type")
    return found if found in SAMPLES else "sample"


def _write_part(node: h5py.Group, part: Part, put: Callable) -> None:
    """One task's output; ``complete`` is set last, after the checksums."""
    node.attrs["complete"] = False
    for key, value in part.attrs.items():
        node.attrs[key] = value
    for key, value in part.arrays.items():
        put(node, key, value)
    node.attrs["checksum"] = checksum(node, attrs=checked_attrs(node), arrays={
        key: value for key, value in part.arrays.items() if key not in READ_ALONE})
    for key in READ_ALONE:
        if key in part.arrays:
            node.attrs[f"checksum-{key}"] = checksum(node, arrays={key: part.arrays[key]})
    node.attrs["complete"] = True


def _part_content(node: h5py.Group, skip: tuple = ()) -> tuple[dict, dict]:
    """A part's attributes and datasets; those in ``skip`` are left unread where they have a checksum
    of their own (a trajectory), else read for the part's checksum."""
    return checked_attrs(node), {k: v[()] for k, v in node.items() if k not in skip or k not in READ_ALONE}


def _part_reader(strict: bool, defaults: dict | None = None) -> Callable:
    """Parts and minima. ``convert`` makes the record the caller wants from the part, before the
    checksum is compared: its checks (a minimum's length) say more precisely what is wrong.
    ``only``: one dataset kept out of the part (a trajectory), checked against its own checksum.
    ``defaults``: attributes older writers of this version left out."""
    def read_part(node: h5py.Group, skip: tuple = (), convert: Callable | None = None, only: str | None = None):
        if only is not None:
            value = node[only][()]
            verify(node, f"checksum-{only}", strict, arrays={only: value})
            return value
        attrs, arrays = _part_content(node, skip)
        part = Part({k: v for k, v in arrays.items() if k not in skip},
                    {**(defaults or {}), **{k: v for k, v in attrs.items() if k not in STAMP}})
        value = part if convert is None else convert(part)
        verify(node, "checksum", strict, attrs=attrs, arrays={k: v for k, v in arrays.items() if k not in READ_ALONE})
        for key in READ_ALONE:
            if key in arrays:
                verify(node, f"checksum-{key}", strict, arrays={key: arrays[key]})
        return value
    return read_part


# -- results -------------------------------------------------------------------------------------
def _write_result(node: h5py.Group, result: Result, put: Callable) -> None:
    """A result's attributes, metrics and arrays; ``complete`` is set last, after the checksum."""
    attrs = dict(method=result.method, params=canonical_json(result.params),
                 seed=-1 if result.seed is None else int(result.seed), versions=canonical_json(result.versions),
                 runtime=canonical_json(result.runtime), created=result.created,
                 wall_time_s=float(result.wall_time_s), analyzer=canonical_json(result.analyzer),
                 shapes=canonical_json({name: list(np.shape(value)) for name, value in result.arrays.items()}),
                 complete=False)
    for key, value in attrs.items():
        node.attrs[key] = value
    metrics = write(node, "metrics", "metrics", result.metrics)
    write(node, "arrays", "arrays", result.arrays, put=put)
    node.attrs["checksum"] = checksum(node, attrs=checked_attrs(node), metrics=dict(metrics.attrs),
                                      arrays=result.arrays)
    node.attrs["complete"] = True


def _write_metrics(node: h5py.Group, metrics: dict) -> None:
    for name, value in metrics.items():
        node.attrs[name] = float(value)


def _read_metrics(node: h5py.Group) -> dict:
    """The metrics as stored (the result's checksum covers these values, and the stamp)."""
    return {k: v for k, v in node.attrs.items() if k not in STAMP}


def _write_arrays(node: h5py.Group, arrays: dict, put: Callable) -> None:
    for name, value in arrays.items():
        put(node, name, value)


def _read_arrays(node: h5py.Group) -> dict:
    return {k: v[()] for k, v in node.items()}


def _result_content(node: h5py.Group) -> tuple[dict, dict, dict]:
    """A result's attributes, metrics (with their group's stamp) and arrays, as its checksum covers them."""
    metrics = node["metrics"]
    stamped = {**read(metrics, "metrics"), **{key: metrics.attrs[key] for key in STAMP}}
    return checked_attrs(node), stamped, read(node["arrays"], "arrays")


def _check_shapes(shapes: str, arrays: dict) -> None:
    found = {name: list(np.shape(value)) for name, value in arrays.items()}
    expected = json.loads(shapes)
    if found != expected:
        wrong = sorted(n for n in set(found) | set(expected) if found.get(n) != expected.get(n))
        raise ValueError(f"arrays {wrong} are missing or have another shape than written "
                         f"(written {[expected.get(n) for n in wrong]}, found {[found.get(n) for n in wrong]})")


def _result_reader(strict: bool) -> Callable:
    """Results, checked against their checksum last, so the checks before it say more precisely
    what is wrong. Version 1: ``analyzer`` and ``runtime`` default to unknown, and ``shapes`` and
    the checksum are checked where its writer recorded them."""
    def read_result(node: h5py.Group, subject: str, method: str, key: str) -> Result:
        attrs, metrics, arrays = _result_content(node)
        values = attrs if strict else {"analyzer": "{}", "runtime": "{}", **attrs}
        if strict or "shapes" in attrs:
            _check_shapes(attrs["shapes"], arrays)
        seed = int(values["seed"])
        result = Result(
            method=method,
            subject=subject,
            params=json.loads(values["params"]),
            metrics={k: float(v) for k, v in metrics.items() if k not in STAMP},
            arrays=arrays,
            seed=None if seed < 0 else seed,
            versions=json.loads(values["versions"]),
            created=str(values["created"]),
            wall_time_s=float(values["wall_time_s"]),
            key=key,
            analyzer=json.loads(values["analyzer"]),
            runtime=json.loads(values["runtime"]),
        )
        verify(node, "checksum", strict, attrs=attrs, metrics=metrics, arrays=arrays)
        return result
    return read_result


# -- benchmarks ----------------------------------------------------------------------------------
def _write_benchmark(node: h5py.Group, record: str, created: str) -> None:
    """``record`` as canonical JSON: serialised by the caller before an earlier record is replaced."""
    node.attrs["created"] = created
    node.attrs["record"] = record
    node.attrs["checksum"] = checksum(node, attrs=checked_attrs(node))


def _benchmark_reader(strict: bool) -> Callable:
    def read_benchmark(node: h5py.Group) -> dict:
        attrs = checked_attrs(node)
        record = json.loads(attrs["record"])
        verify(node, "checksum", strict, attrs=attrs)
        return record
    return read_benchmark


# -- the registry ----------------------------------------------------------------------------------
register(Encoding("store", "1", _names, _write_root))
for _type in ("subjects", "samples", "sample-kind", "results", "method-results", "benchmarks", "audits"):
    register(Encoding(_type, "1", _names, _nothing))
for _type in SAMPLES:
    register(Encoding(_type, "1", _read_header, _write_sample))
register(Encoding("subject", "1", _subject_reader(strict=False)))
register(Encoding("subject", "2", _subject_reader(strict=True), _write_subject))
register(Encoding("part", "1", _part_reader(strict=False)))
register(Encoding("part", "2", _part_reader(strict=True), _write_part))
register(Encoding("minimum", "1", _part_reader(strict=False, defaults={"wall_time_s": float("nan"), "runtime": "{}"})))
register(Encoding("minimum", "2", _part_reader(strict=True), _write_part))
register(Encoding("result", "1", _result_reader(strict=False)))
register(Encoding("result", "2", _result_reader(strict=True), _write_result))
register(Encoding("metrics", "1", _read_metrics, _write_metrics))
register(Encoding("arrays", "1", _read_arrays, _write_arrays))
register(Encoding("benchmark", "1", _benchmark_reader(strict=False)))
register(Encoding("benchmark", "2", _benchmark_reader(strict=True), _write_benchmark))
register(Encoding("audit", "1", _benchmark_reader(strict=True), _write_benchmark))  # a JSON record too
