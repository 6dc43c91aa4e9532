"""The landscape store: one HDF5 file per study, readable with plain h5py.

Layout (schema_version 2; the full spec is in README.md, "The store"):

    /                               schema="lossatlas", schema_version=2, encoding-type="store"
    /subjects/<subject>             encoding-type="subject", config (JSON), dim
        theta0, buffers0            the subject's starting parameters / floating buffers
        minima/<000>                encoding-type="minimum", complete: theta, buffers; attrs seed, recipe,
                                    metrics (JSON)
        samples/<kind>/<key>        encoding-type="sample": kind, config (JSON), prepared; the header arrays
            <part>                  encoding-type="part", complete (set last): one task's arrays and attrs
        results/<method>/<key>      encoding-type="result": method, params, seed, versions, created,
                                    wall_time_s, analyzer (JSON: scope, views, metric metadata), complete;
                                    metrics/ (one float attribute each), arrays/ (datasets)

Schema 1 (before the sample protocol: grids with a ``done`` mask, parts without the ``part``
encoding) is refused with its version. Samples are written through ``write_header`` and
``write_part`` only, each with its completion flag last, so an interrupted write reads as missing.
    /benchmarks/<name>              encoding-type="benchmark": record (JSON: the plan and the result keys of every run)

Every node carries ``encoding-type`` and ``encoding-version``; readers refuse what they do not know.
Results, parts (minima among them), subjects' attributes and benchmark records carry a ``checksum`` of
what they hold, checked when read: HDF5 checksums its object headers but neither data nor the strings
that attributes point to, so a flipped byte there would otherwise read as a value.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import io
import json
import os
import shutil
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import StoreError
from .provenance import canonical_json, now, versions

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: HDF5's own locking only
    fcntl = None

_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE
_FLUSH_SLACK = 64 << 10  # metadata HDF5 may still allocate while flushing
try:
    _fallocate = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
except (OSError, AttributeError, TypeError):  # pragma: no cover - not Linux: the free-space check only
    _fallocate = None

SCHEMA = "lossatlas"
SCHEMA_VERSION = 2
ENCODING_VERSION = "1"
_MODES = ("r", "a", "x")  # read; read/write, created if missing; create (refused if it exists)
_COMPRESS_ABOVE = 4096  # elements; smaller arrays are stored contiguous and uncompressed
# HDF5's 1.8 file format (readable by any HDF5 since 2008) for what is written: HDF5 then checksums its own
# metadata (object headers, links), so a flipped byte there is an error rather than a result gone missing
_LIBVER = ("v108", "latest")
_READ_ALONE = ("trajectory",)  # datasets read on their own (Store.trajectory): a checksum of their own


@dataclass
class Result:
    """What an analyzer computed for one subject with one parameter set."""

    method: str
    subject: str
    params: dict
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    wall_time_s: float = float("nan")
    key: str = ""
    analyzer: dict = field(default_factory=dict)  # scope, views, metric metadata: the report reads these
    runtime: dict = field(default_factory=dict)  # device and numerics it ran with (lossatlas.devices.runtime)


@dataclass
class Part:
    """One task's output in a sample: arrays (datasets) and attrs (scalars, strings)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@dataclass
class Minimum:
    """A trained minimum of a subject, as stored."""

    index: int
    theta: np.ndarray
    buffers: np.ndarray
    seed: int
    recipe: dict
    metrics: dict[str, float]
    wall_time_s: float = float("nan")  # training time, for the report's stage timings
    runtime: dict = field(default_factory=dict)  # device and numerics it was trained with
    trajectory: np.ndarray | None = None  # (epochs + 1, dim) when recorded; read with Store.trajectory


def _reader(method):
    """Readers validate what they read: damaged or foreign content (a deleted dataset, bad JSON
    in an attribute, a wrong shape, a link to a missing file, a damaged HDF5 header, JSON nested
    too deep to parse) is a StoreError naming the file and what was read, never a raw KeyError,
    OSError or RecursionError. A full disk (HDF5 may flush while reading) is still handled as
    writers handle it."""
    @functools.wraps(method)
    def read(self, *args, **kwargs):
        try:
            with self._abandoned_if_full(method.__name__):
                return method(self, *args, **kwargs)
        except StoreError:
            raise
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as err:  # RecursionError among them
            what = ", ".join(repr(a) for a in args)
            raise StoreError(f"{self.path}: {method.__name__}({what}) found damaged or foreign content "
                             f"({type(err).__name__}: {err}). Nothing was modified; restore the file from a copy or "
                             "rerun into a new store.") from err
    return read


_OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_OUT_OF_SPACE_TEXT = ("no space left", "file too large", "disk quota", "errno = 28", "errno = 27", "errno = 122")


def _min_free_bytes() -> int:
    return int(float(os.environ.get("LOSSATLAS_MIN_FREE_MB", "64")) * 2**20)


def _writer(method):
    """A write that leaves the store as it was when the disk fills up.

    HDF5 has no journal: a flush that fails half-way (ENOSPC) leaves metadata on disk that points
    past the end of the file, and the store can no longer be opened. So a write is refused up front
    when less than LOSSATLAS_MIN_FREE_MB (default 64) is free, and if the disk fills during it
    anyway, the write is abandoned (``Store._abandon``): the file keeps its state after the last
    finished write, and a rerun resumes from there once space is freed."""
    @functools.wraps(method)
    def write(self, *args, **kwargs):
        if self._failed:
            raise StoreError(f"{self.path} was closed after a failed write; open it again (rerun) to go on.")
        self._check_free_space()
        with self._abandoned_if_full(method.__name__):
            return method(self, *args, **kwargs)
    return write


def _out_of_space(err: OSError) -> bool:
    text = str(err).lower()
    return err.errno in _OUT_OF_SPACE or any(mark in text for mark in _OUT_OF_SPACE_TEXT)


class Store:
    """An HDF5 landscape store, used as a context manager.

    ``mode``: "r" read only, "a" read/write (created if missing), "x" create (fails if it exists).
    Opening a file that is not a lossatlas store of this schema version fails without touching it.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "a"):
        if mode not in _MODES:
            raise StoreError(f"Store mode must be one of {sorted(_MODES)}; got {mode!r}.")
        self.path = Path(path)
        self.mode = mode
        self._failed = False
        self._registered: dict[str, object] = {}  # name -> the subject object checked against it
        if mode == "r" and not self.path.exists():
            raise StoreError(f"No store at {self.path}.")
        self._lock = _lock(self.path, shared=mode == "r")  # before creating: one creator wins, the other is refused
        self._release = weakref.finalize(self, _unlock, self._lock)  # also when a Store is dropped unclosed
        try:
            if self.path.exists():
                if mode == "x":
                    raise StoreError(f"{self.path} already exists; open it with mode 'a' to add to it.")
                _check_existing(self.path)
            else:
                _create(self.path)
            self._file = _open(self.path, "r" if mode == "r" else "a")
        except BaseException:
            self._release()
            raise

    @classmethod
    def memory(cls) -> "Store":
        """A throwaway store held in memory (nothing is written to disk)."""
        store = cls.__new__(cls)
        store.path = Path(":memory:")
        store.mode = "a"
        store._failed = False
        store._registered = {}
        store._lock = None
        store._release = None
        store._file = h5py.File(io.BytesIO(), "w", libver=_LIBVER)
        _stamp(store._file)
        return store

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file.id.valid and not self._failed:
            if self.mode != "r":
                with self._abandoned_if_full("close"):
                    self.flush()
            self._file.close()
        if self._release is not None:
            self._release()  # runs once

    @contextlib.contextmanager
    def _abandoned_if_full(self, what: str):
        try:
            yield
        except OSError as err:
            if not _out_of_space(err):
                raise
            self._abandon()
            raise StoreError(
                f"The disk holding {self.path} is full ({err}). The write ({what}) was abandoned: the store keeps "
                "everything finished before it and stays readable. Free space, then rerun the same command to "
                "resume.") from None

    def flush(self) -> None:
        if self.mode != "r":
            self._reserve()
            self._file.flush()

    def _check_free_space(self) -> None:
        if self.path == Path(":memory:"):
            return
        free = _free_bytes(self.path.parent)
        if free is not None and free < _min_free_bytes():
            raise StoreError(
                f"The disk holding {self.path} is (nearly) full: {free / 2**20:.1f} MiB free. lossatlas stops before "
                f"writing below {_min_free_bytes() / 2**20:g} MiB (LOSSATLAS_MIN_FREE_MB) so that a write never "
                "fails half-way and damages the store; everything finished so far is kept. Free space, then rerun "
                "the same command to resume.")

    def _reserve(self, extra: int = 0) -> None:
        """Allocate the disk blocks the next flush (and ``extra`` bytes of array data) will write past
        the end of the file, so that the write cannot run out of space half-way (Linux fallocate,
        keeping the file size): HDF5 does not survive a dataset whose close fails for lack of space."""
        if self.path == Path(":memory:") or _fallocate is None:
            return
        fd = self._file.id.get_vfd_handle()
        end = os.fstat(fd).st_size
        needed = self._file.id.get_filesize() + _FLUSH_SLACK + extra - end
        if needed > 0 and _fallocate(fd, _KEEP_SIZE, end, needed) != 0:
            code = ctypes.get_errno()
            if code in _OUT_OF_SPACE:
                raise OSError(code, os.strerror(code))

    def _abandon(self) -> None:
        """Close the HDF5 file without letting it write anything more: its descriptor is pointed at
        /dev/null first, so the metadata it still holds for the failed write goes nowhere and the file
        on disk stays as the last finished write left it."""
        self._failed = True
        if self._file.driver == "sec2":  # the default on-disk driver, whose handle is a descriptor
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, self._file.id.get_vfd_handle())
            finally:
                os.close(null)
        try:
            self._file.close()
        except Exception:  # noqa: BLE001 -- HDF5 complains about the writes it could not do
            pass
        if self._release is not None:
            self._release()

    @property
    def file(self) -> h5py.File:
        """The underlying h5py file, for readers that want raw access."""
        return self._file

    # -- nodes -----------------------------------------------------------------------------------
    @_reader
    def finished(self, path: str) -> bool:
        """Whether the sample part at ``path`` (a grid block, a path pair, a minimum) was written
        whole: its ``complete`` attribute is set last, so an interrupted write reads as unfinished."""
        return path in self._file and _flag(self._file[path], "complete")

    def node(self, path: str, encoding_type: str, **attrs) -> h5py.Group:
        """The group at ``path``, created with its ``encoding-type`` (and attrs) if missing.

        An existing group of another encoding-type is refused, naming the path.
        """
        if path in self._file:
            group = self._file[path]
            found = group.attrs.get("encoding-type")
            if found != encoding_type:
                raise StoreError(f"{self.path}:{path} is a {found!r} node, expected {encoding_type!r}.")
            return group
        self._writable(path)
        group = self._file.require_group(path)
        group.attrs["encoding-type"] = encoding_type
        group.attrs["encoding-version"] = ENCODING_VERSION
        for key, value in attrs.items():
            group.attrs[key] = value
        return group

    def write_array(self, group: h5py.Group, name: str, data) -> h5py.Dataset:
        """Write (or replace) a dataset; large arrays are chunked and gzip-compressed."""
        self._writable(f"{group.name}/{name}")
        data = np.asarray(data)
        self._reserve(extra=data.nbytes)  # room for the data before HDF5 starts writing it
        if name in group:
            del group[name]
        if data.size > _COMPRESS_ABOVE:
            return group.create_dataset(name, data=data, compression="gzip", compression_opts=4, shuffle=True)
        return group.create_dataset(name, data=data)

    # -- subjects --------------------------------------------------------------------------------
    @_reader
    def subjects(self) -> list[str]:
        """The subjects' names; a link in their place (``_child``) is damage, not a subject."""
        group = _child(self._file, "subjects")
        return [] if group is None else [name for name in sorted(group) if _child(group, name) is not None]

    def add_subject(self, name: str, config: dict, theta0, buffers0) -> h5py.Group:
        """Register a subject; the same name with a different config is refused."""
        _check_name(name, "subject")
        text = canonical_json(config)
        path = f"subjects/{name}"
        if path in self._file:
            stored = self._file[path].attrs["config"]
            if stored != text:
                raise StoreError(
                    f"{self.path} already holds a subject {name!r} with another config.\n"
                    f"  stored: {stored}\n  given:  {text}\n"
                    "Use another subject name or another store."
                )
            self._check_same_start(name, theta0, buffers0)
            return self._file[path]
        return self._create_subject(path, text, theta0, buffers0)

    @_writer
    def _create_subject(self, path: str, text: str, theta0, buffers0) -> h5py.Group:
        self.node("subjects", "subjects")
        group = self.node(path, "subject", config=text, dim=int(np.asarray(theta0).size), created=now())
        group.attrs["checksum"] = _checksum(group, attrs=_checked_attrs(group))  # theta0, buffers0: compared on use
        self.write_array(group, "theta0", np.asarray(theta0))
        self.write_array(group, "buffers0", np.asarray(buffers0))
        self.flush()
        return group

    def _check_same_start(self, name: str, theta0, buffers0) -> None:
        """A name stands for one landscape: the same config *and* the same starting point (a model
        with another checkpoint loaded has the same config; its results must not be read as this
        one's)."""
        group = self._file[f"subjects/{name}"]
        for label, given in (("theta0", theta0), ("buffers0", buffers0)):
            given = np.asarray(given)
            stored = group[label][()] if label in group else None
            if stored is not None and stored.shape == given.shape and np.array_equal(stored, given, equal_nan=True):
                continue
            if stored is None or stored.shape != given.shape:
                what = f"stored shape {None if stored is None else stored.shape}, given {given.shape}"
            else:
                what = f"{int((stored != given).sum())} of {given.size} entries, largest difference " \
                       f"{float(np.nanmax(np.abs(stored.astype(float) - given.astype(float)))):.3g}"
            raise StoreError(
                f"{self.path} already holds a subject {name!r} with the same config but another starting point: "
                f"its {label} differs ({what}). A subject name stands for one landscape, e.g. one checkpoint: "
                "use another subject name (name=... when building the subject) or another store.")

    @_reader
    def subject_config(self, name: str) -> dict:
        node = self._subject(name)
        attrs = _checked_attrs(node)
        config = json.loads(attrs["config"])
        _verify(node, "checksum", attrs=attrs)
        return config

    def _subject(self, name: str) -> h5py.Group:
        group = _child(self._file, "subjects")
        node = None if group is None else _child(group, name)
        if node is None:
            raise StoreError(f"{self.path} has no subject {name!r}; it has {self.subjects()}.")
        return node

    # -- subjects as objects -----------------------------------------------------------------------
    def register(self, subject) -> None:
        """Record ``subject`` (its config, theta0 and buffers0); the same name with another config
        is refused, naming both. The check runs once per subject object and open store: a
        subject's config hashes its whole dataset (hundreds of MB for CIFAR-10), and the samplers
        register before every write."""
        if self._registered.get(subject.name) is subject:
            return
        self.add_subject(subject.name, subject.config(), subject.theta0.cpu().numpy(),
                         subject.buffers0.cpu().numpy())
        self._registered[subject.name] = subject

    # -- minima ----------------------------------------------------------------------------------
    def write_minimum(self, subject: str, minimum: Minimum) -> None:
        """Store a minimum of a registered subject (one the trained-minima sampler did not make,
        e.g. a user's own checkpoint) as the sampler stores its own: one ``minimum`` part."""
        self._subject(subject)
        root = self.sample_root(f"subjects/{subject}/minima", "minima")
        self.write_part(root, f"{minimum.index:03d}", minimum_part(minimum), "minimum")

    @_reader
    def minima(self, subject: str) -> list[Minimum]:
        """The finished minima of ``subject`` (one interrupted while being written is left out)."""
        group = _child(self._subject(subject), "minima")
        if group is None:
            return []
        dim = int(self._subject(subject).attrs["dim"])
        nodes = [_child(group, name) for name in sorted(group)]
        return [self._read_minimum(node, dim) for node in nodes if _flag(node, "complete")]

    @staticmethod
    def _read_minimum(node: h5py.Group, dim: int) -> Minimum:
        """A minimum, its checksum checked last: the checks before it say more precisely what is wrong."""
        _expect(node, "minimum")
        attrs, arrays = _part_content(node, skip=_READ_ALONE)
        minimum = Minimum(
            index=int(node.name.rsplit("/", 1)[1]),
            theta=arrays["theta"],
            buffers=arrays["buffers"],
            seed=int(attrs["seed"]),
            recipe=json.loads(attrs["recipe"]),
            metrics=json.loads(attrs["metrics"]),
            wall_time_s=float(attrs.get("wall_time_s", float("nan"))),
            runtime=json.loads(attrs.get("runtime", "{}")),
        )
        if minimum.theta.shape != (dim,):
            raise ValueError(f"minimum {minimum.index} has parameters of shape {minimum.theta.shape}, the subject "
                             f"has {dim}")
        _verify_part(node, attrs, arrays)
        return minimum

    @_reader
    def has_trajectory(self, subject: str, index: int) -> bool:
        minima = _child(self._subject(subject), "minima")
        node = None if minima is None else _child(minima, f"{index:03d}")
        return node is not None and _flag(node, "complete") and _child(node, "trajectory") is not None

    @_reader
    def trajectory(self, subject: str, index: int) -> np.ndarray | None:
        """The recorded training trajectory of minimum ``index`` (initialisation, then every
        epoch), or None when it was trained without recording one. Kept out of ``minima``,
        which every reader calls: a ResNet's trajectory is tens of MB."""
        if not self.has_trajectory(subject, index):
            return None
        node = self._subject(subject)[f"minima/{index:03d}"]
        trajectory = node["trajectory"][()]
        _verify(node, "checksum-trajectory", arrays={"trajectory": trajectory})
        return trajectory.astype(np.float64)

    # -- samples ---------------------------------------------------------------------------------
    def sample_root(self, path: str, encoding_type: str = "sample", config: dict | None = None) -> h5py.Group:
        """The group holding one sample (its header and parts), created if missing. ``path`` is
        relative to the store root; the parents ``samples`` and ``samples/<kind>`` are stamped."""
        parts = path.split("/")
        if len(parts) == 5 and parts[2] == "samples":
            self.node("/".join(parts[:3]), "samples")
            self.node("/".join(parts[:4]), "sample-kind")
        attrs = {} if config is None else {"kind": parts[-2], "config": canonical_json(config), "created": now(),
                                           "versions": canonical_json(versions())}
        return self.node(path, encoding_type, **attrs)

    @_reader
    def has_header(self, path: str) -> bool:
        return path in self._file and _flag(self._file[path], "prepared")

    @_writer
    def write_header(self, root: h5py.Group, arrays: dict) -> None:
        """The arrays a sample's tasks share (directions, a center, the minima to join); the
        ``prepared`` flag is set last."""
        for name, value in arrays.items():
            self.write_array(root, name, value)
        root.attrs["prepared"] = True
        self.flush()

    @_reader
    def read_header(self, path: str) -> dict[str, np.ndarray]:
        node = self._file[path]
        return {name: node[name][()] for name in node if isinstance(node[name], h5py.Dataset)}

    @_writer
    def write_part(self, root: h5py.Group, name: str, part: "Part", encoding_type: str = "part") -> None:
        """One task's output, replacing an unfinished earlier attempt; ``complete`` is set last."""
        path = f"{root.name}/{name}"
        if path in self._file:
            del self._file[path]
        node = self.node(path, encoding_type, complete=False)
        for key, value in part.attrs.items():
            node.attrs[key] = value
        for key, value in part.arrays.items():
            self.write_array(node, key, value)
        node.attrs["checksum"] = _checksum(node, attrs=_checked_attrs(node), arrays={
            key: value for key, value in part.arrays.items() if key not in _READ_ALONE})
        for key in _READ_ALONE:
            if key in part.arrays:
                node.attrs[f"checksum-{key}"] = _checksum(node, arrays={key: part.arrays[key]})
        node.attrs["complete"] = True
        self.flush()

    @_reader
    def read_part(self, path: str, encoding_type: str = "part", skip: tuple = ()) -> "Part":
        """A finished part, checked against its checksum; ``skip``: datasets left unread (a minimum's
        trajectory)."""
        if not self.finished(path):
            raise StoreError(f"{self.path}:{path} is missing or was not written whole.")
        node = self._file[path]
        _expect(node, encoding_type)
        attrs, arrays = _part_content(node, skip)
        _verify_part(node, attrs, arrays)
        return Part({k: v for k, v in arrays.items() if k not in skip},
                    {k: v for k, v in attrs.items() if k not in ("encoding-type", "encoding-version")})

    # -- results ---------------------------------------------------------------------------------
    @_reader
    def has_result(self, subject: str, method: str, key: str) -> bool:
        """Whether the result was written whole (``complete`` is set last, as for sample parts)."""
        return self.finished(f"subjects/{subject}/results/{method}/{key}")

    @_writer
    def write_result(self, result: Result) -> None:
        path = f"subjects/{result.subject}/results/{result.method}/{result.key}"
        self.node(f"subjects/{result.subject}/results", "results")
        self.node(f"subjects/{result.subject}/results/{result.method}", "method-results")
        if path in self._file:
            del self._file[path]
        self.node(
            path,
            "result",
            method=result.method,
            params=canonical_json(result.params),
            seed=-1 if result.seed is None else int(result.seed),
            versions=canonical_json(result.versions),
            runtime=canonical_json(result.runtime),
            created=result.created,
            wall_time_s=float(result.wall_time_s),
            analyzer=canonical_json(result.analyzer),
            shapes=canonical_json({name: list(np.shape(value)) for name, value in result.arrays.items()}),
            complete=False,
        )
        metrics = self.node(f"{path}/metrics", "metrics")
        for name, value in result.metrics.items():
            metrics.attrs[name] = float(value)
        arrays = self.node(f"{path}/arrays", "arrays")
        for name, value in result.arrays.items():
            self.write_array(arrays, name, value)
        node = self._file[path]
        node.attrs["checksum"] = _checksum(node, attrs=_checked_attrs(node), metrics=dict(metrics.attrs),
                                           arrays=result.arrays)
        node.attrs["complete"] = True
        self.flush()

    @_reader
    def read_result(self, subject: str, method: str, key: str) -> Result:
        """A finished result, checked against its checksum last, so the checks before it say more
        precisely what is wrong (results written before checksums were stored have none: read unchecked)."""
        path = f"subjects/{subject}/results/{method}/{key}"
        if path not in self._file:
            raise StoreError(f"{self.path} has no result at {path}.")
        if not self.finished(path):
            raise StoreError(f"{self.path}:{path} was interrupted while being written; rerun the analysis.")
        node = self._file[path]
        _expect(node, "result")
        attrs, metrics, arrays = _result_content(node)
        seed = int(attrs["seed"])
        if "shapes" in attrs:  # written by newer versions: every array is there, with its shape
            found = {name: list(array.shape) for name, array in node["arrays"].items()}
            expected = json.loads(attrs["shapes"])
            if found != expected:
                wrong = sorted(n for n in set(found) | set(expected) if found.get(n) != expected.get(n))
                raise ValueError(f"arrays {wrong} are missing or have another shape than written "
                                 f"(written {[expected.get(n) for n in wrong]}, found {[found.get(n) for n in wrong]})")
        result = Result(
            method=method,
            subject=subject,
            params=json.loads(attrs["params"]),
            metrics={k: float(v) for k, v in metrics.items() if not k.startswith("encoding-")},
            arrays=arrays,
            seed=None if seed < 0 else seed,
            versions=json.loads(attrs["versions"]),
            created=str(attrs["created"]),
            wall_time_s=float(attrs["wall_time_s"]),
            key=key,
            analyzer=json.loads(attrs.get("analyzer", "{}")),
            runtime=json.loads(attrs.get("runtime", "{}")),
        )
        _verify(node, "checksum", attrs=attrs, metrics=metrics, arrays=arrays)
        return result

    @_reader
    def results(self, subject: str, method: str | None = None) -> list[Result]:
        group = _child(self._subject(subject), "results")
        if group is None:
            return []
        methods = sorted(group) if not method else [method] if method in group else []
        keys = {m: _child(group, m) for m in methods}
        return [self.read_result(subject, m, k) for m in methods for k in sorted(keys[m])
                if _flag(_child(keys[m], k), "complete")]

    def to_dataframe(self):
        """One row per result with its parameters and metrics (pandas; the ``export`` extra)."""
        from .export import results_frame

        return results_frame(self)

    # -- benchmarks ------------------------------------------------------------------------------
    @_writer
    def write_benchmark(self, name: str, record: dict) -> None:
        """Record (or update) what a benchmark run planned and which results it produced, so the
        report can be rebuilt from the store alone."""
        _check_name(name, "benchmark")
        self.node("benchmarks", "benchmarks")
        node = self.node(f"benchmarks/{name}", "benchmark", created=now())
        node.attrs["record"] = canonical_json(record)
        node.attrs["checksum"] = _checksum(node, attrs=_checked_attrs(node))
        self.flush()

    @_reader
    def benchmarks(self) -> list[str]:
        group = _child(self._file, "benchmarks")
        return [] if group is None else sorted(group)

    @_reader
    def read_benchmark(self, name: str) -> dict:
        if f"benchmarks/{name}" not in self._file:
            raise StoreError(f"{self.path} has no benchmark {name!r}; it has {self.benchmarks()}.")
        node = self._file[f"benchmarks/{name}"]
        _expect(node, "benchmark")
        attrs = _checked_attrs(node)
        record = json.loads(attrs["record"])
        _verify(node, "checksum", attrs=attrs)
        return record

    # -- inspection ------------------------------------------------------------------------------
    def tree(self, max_attr_chars: int = 80) -> str:
        """A readable tree of every group, dataset and attribute."""
        lines = [f"{self.path}  " + _attrs_text(self._file.attrs, max_attr_chars)]

        def visit(name, obj):
            depth = name.count("/") + 1
            label = name.rsplit("/", 1)[-1]
            if isinstance(obj, h5py.Dataset):
                lines.append(f"{'  ' * depth}{label}  {obj.dtype} {obj.shape}")
            else:
                lines.append(f"{'  ' * depth}{label}/  " + _attrs_text(obj.attrs, max_attr_chars))

        self._file.visititems(visit)
        return "\n".join(lines)

    def _writable(self, path: str) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path} is open read-only; cannot write {path}. Open it with mode 'a'.")


def minimum_part(minimum: Minimum) -> Part:
    """How a minimum is stored: theta and buffers, and its seed, recipe, metrics and provenance."""
    attrs = {"seed": int(minimum.seed), "recipe": canonical_json(minimum.recipe),
             "metrics": canonical_json(minimum.metrics), "created": now(), "versions": canonical_json(versions()),
             "wall_time_s": float(minimum.wall_time_s), "runtime": canonical_json(minimum.runtime)}
    arrays = {"theta": np.asarray(minimum.theta), "buffers": np.asarray(minimum.buffers)}
    if minimum.trajectory is not None:  # float32: it only feeds a PCA (Li et al. 2018 §7)
        arrays["trajectory"] = np.asarray(minimum.trajectory, dtype=np.float32)
    return Part(arrays, attrs)


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise StoreError(f"Invalid {what} name {name!r}: use a non-empty name without '/' or surrounding spaces.")


def _expect(node: h5py.Group, encoding_type: str) -> None:
    found = node.attrs.get("encoding-type")
    if found != encoding_type:
        raise StoreError(f"{node.file.filename}:{node.name} is a {found!r} node, expected {encoding_type!r}.")
    version = node.attrs.get("encoding-version")
    if version != ENCODING_VERSION:
        raise StoreError(
            f"{node.file.filename}:{node.name} has encoding-version {version!r}; this lossatlas reads "
            f"{ENCODING_VERSION!r}. Upgrade lossatlas."
        )


def _flag(node: h5py.Group, name: str) -> bool:
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


def _child(group: h5py.Group, name: str) -> h5py.Group | h5py.Dataset | None:
    """``group[name]``, or None where there is no such name. lossatlas writes only nodes of the
    store's own file, so a link (to another file, perhaps missing) is damaged or foreign content,
    never read as absent (h5py's ``get`` would)."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{group.name.rstrip('/')}/{name} is a {type(link).__name__}, not a node of this store")
    return group[name]


def _whole(node: h5py.Group) -> bool:
    """Whether a result's or part's content matches its checksum (read the way its reader reads it)."""
    try:
        if node.attrs.get("encoding-type") == "result":
            attrs, metrics, arrays = _result_content(node)
            return node.attrs["checksum"] == _checksum(node, attrs=attrs, metrics=metrics, arrays=arrays)
        attrs, arrays = _part_content(node, skip=_READ_ALONE)
        return node.attrs["checksum"] == _checksum(node, attrs=attrs, arrays={
            k: v for k, v in arrays.items() if k not in _READ_ALONE})
    except (KeyError, ValueError, TypeError, OSError, RuntimeError):
        return False


def _result_content(node: h5py.Group) -> tuple[dict, dict, dict]:
    """A result's attributes, metrics and arrays, as its checksum covers them."""
    return _checked_attrs(node), dict(node["metrics"].attrs), {k: v[()] for k, v in node["arrays"].items()}


def _checked_attrs(node: h5py.Group) -> dict:
    """A node's attributes as its checksum covers them: all but the flag set after it and the checksums."""
    return {k: v for k, v in node.attrs.items() if k != "complete" and not k.startswith("checksum")}


def _checksum(node: h5py.Group, **sections: dict) -> str:
    """sha256 of a node's path and content: per section (attrs, metrics, arrays) each name with its
    value, strings as UTF-8, anything else as numpy dtype, shape and bytes."""
    digest = hashlib.sha256()

    def feed(*pieces: bytes) -> None:
        for piece in pieces:
            digest.update(len(piece).to_bytes(8, "little") + piece)

    feed(node.name.encode())
    for section in sorted(sections):
        for name in sorted(sections[section]):
            value = sections[section][name]
            if isinstance(value, (str, bytes)):
                kind, data = type(value).__name__, value.encode() if isinstance(value, str) else value
            else:
                array = np.asarray(value)
                kind = f"{array.dtype.str} {array.shape}"
                data = array.tobytes() if not array.dtype.hasobject else repr(  # strings: h5py reads them as bytes
                    [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]).encode()
            feed(section.encode(), name.encode(), kind.encode(), data)
    return "sha256:" + digest.hexdigest()


def _verify(node: h5py.Group, attr: str, **sections: dict) -> None:
    """Compare what was read with the checksum written with it; content written before checksums
    were stored has none and is read unchecked."""
    stored = node.attrs.get(attr)
    if stored is None:
        return
    if not isinstance(stored, str) or stored != _checksum(node, **sections):
        raise StoreError(f"{node.file.filename}:{node.name} is damaged: its content does not match the checksum "
                         "written with it, so it was changed after it was written (a disk, copy or transfer error). "
                         "Nothing was modified; restore the file from a copy or rerun into a new store.")


def _part_content(node: h5py.Group, skip: tuple = ()) -> tuple[dict, dict]:
    """A part's attributes and datasets; those in ``skip`` are left unread where they have a checksum
    of their own (a trajectory), else read for the part's checksum."""
    return _checked_attrs(node), {k: v[()] for k, v in node.items() if k not in skip or k not in _READ_ALONE}


def _verify_part(node: h5py.Group, attrs: dict, arrays: dict) -> None:
    _verify(node, "checksum", attrs=attrs, arrays={k: v for k, v in arrays.items() if k not in _READ_ALONE})
    for key in _READ_ALONE:
        if key in arrays:
            _verify(node, f"checksum-{key}", arrays={key: arrays[key]})


_HELD: dict[str, list] = {}  # lock file -> [open handle, holders in this process, exclusive?]
_BUSY = {errno.EAGAIN, errno.EACCES}  # lockf's "another process holds it"; other errors: no locking there


def _lock(path: Path, shared: bool) -> str | None:
    """Lock ``path`` through ``<path>.lock`` with POSIX record locks (exclusive for writers,
    shared for readers), independent of HDF5's own file locking, which clusters often disable
    (HDF5_USE_FILE_LOCKING=FALSE on network filesystems). Opens within this process share the
    lock, a writer upgrading a reader's (HDF5 itself arbitrates opens within a process). None
    where fcntl is missing, LOSSATLAS_FILE_LOCKING=0, the filesystem has no locks (a warning),
    or a reader cannot open the lock file."""
    if fcntl is None or os.environ.get("LOSSATLAS_FILE_LOCKING", "1") == "0":
        return None
    lock_path = path.with_name(path.name + ".lock")
    key = str(lock_path.resolve())
    if key in _HELD:
        handle, _, exclusive = _HELD[key]
        if not shared and not exclusive:
            _take(handle, path, shared=False)
            _HELD[key][2] = True
        _HELD[key][1] += 1
        return key
    handle = _lock_file(path, lock_path, shared)
    if handle is None:
        return None
    try:
        if not _take(handle, path, shared):
            handle.close()
            return None
    except BaseException:
        handle.close()
        raise
    _HELD[key] = [handle, 1, not shared]
    return key


def _lock_file(path: Path, lock_path: Path, shared: bool):
    """The lock file, created with the store's permission bits (a group-writable store stays
    writable by the group); a reader that cannot create it opens it read-only, or goes without."""
    mode = (path.stat().st_mode & 0o666) if path.exists() else 0o644
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, mode)
        return os.fdopen(descriptor, "r+")
    except OSError as err:
        if not shared:
            raise StoreError(f"Cannot write beside the store {path} (lock file {lock_path}: {err.strerror}); "
                             "is the folder writable?") from err
    try:
        return open(lock_path)
    except OSError:
        return None


def _take(handle, path: Path, shared: bool) -> bool:
    """Take the lock; False where the filesystem has no locks (then HDF5's own locking applies)."""
    try:
        fcntl.lockf(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in _BUSY:
            warnings.warn(f"{path}: file locks are not supported here ({err.strerror}); relying on HDF5's own "
                          "locking. Run one writer per store.", stacklevel=3)
            return False
        holder = "for writing" if shared else "(a writer, or a reader while you want to write)"
        raise StoreError(f"The store {path} is locked: another process has it open {holder}. "
                         "Wait for it to finish, or open a copy.") from err
    return True


def _unlock(key: str | None) -> None:
    if key is None or key not in _HELD:
        return
    _HELD[key][1] -= 1
    if _HELD[key][1] == 0:
        _HELD.pop(key)[0].close()  # closing the handle releases the lock


def remove_if_empty(path: Path) -> bool:
    """Delete the store at ``path`` if it holds no subject and no benchmark (a run that failed
    before storing anything), under the exclusive lock, so a run opening it meanwhile is never
    written into a deleted file. The lock file stays."""
    try:
        key = _lock(path, shared=False)
    except StoreError:  # another run has it: not ours to remove
        return False
    try:
        with Store(path, "r") as store:  # shares this process's exclusive lock
            empty = not store.subjects() and not store.benchmarks()
        if empty:
            path.unlink()
        return empty
    except StoreError:  # foreign or damaged: not ours to remove
        return False
    finally:
        _unlock(key)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _create(path: Path) -> None:
    """A new, stamped store appears at ``path`` whole or not at all: written beside it, then renamed,
    so a kill while creating it never leaves a truncated file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(partial, "w", libver=_LIBVER) as file:
            _stamp(file)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _stamp(file: h5py.File) -> None:
    file.attrs["schema"] = SCHEMA
    file.attrs["schema_version"] = SCHEMA_VERSION
    file.attrs["encoding-type"] = "store"
    file.attrs["encoding-version"] = ENCODING_VERSION
    file.attrs["created"] = now()
    file.attrs["lossatlas_version"] = versions().get("lossatlas", "unknown")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode) if mode == "r" else h5py.File(path, mode, libver=_LIBVER)
    except (OSError, ValueError, RuntimeError) as err:
        text = str(err).lower()
        denied = getattr(err, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS)
        if mode != "r" and (denied or "permission denied" in text or "read-only file system" in text):
            raise StoreError(f"Cannot open the store {path} for writing: {err}. Make the file and its folder "
                             "writable, or copy the store somewhere writable; `lossatlas inspect` and `lossatlas "
                             "report` only read it.") from err
        if "unable to lock" in text:
            holder = "for writing" if mode == "r" else "(a writer, or a reader while you want to write)"
            raise StoreError(
                f"The store {path} is locked: another process has it open {holder}. "
                "Wait for it to finish, or open a copy."
            ) from err
        raise StoreError(
            f"{path} is not a readable HDF5 file (corrupt or truncated?): {err}. It was not modified."
        ) from err


def _check_existing(path: Path) -> None:
    """Validate an existing file read-only, so a foreign or damaged file is never modified."""
    with _open(path, "r") as file:
        try:
            schema, version = file.attrs.get("schema"), file.attrs.get("schema_version", -1)
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as err:
            raise StoreError(f"{path} is not a readable HDF5 file (corrupt?): {err}. It was not modified.") from err
        if not isinstance(schema, str) or schema != SCHEMA:
            raise StoreError(
                f"{path} is an HDF5 file but not a lossatlas store (schema attribute: {schema!r}). "
                "It was not modified; choose another path."
            )
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise StoreError(f"{path} has a schema_version that is not a number "
                             f"({version!r}); it was not modified.") from None
        if version != SCHEMA_VERSION:
            hint = "Upgrade lossatlas." if version > SCHEMA_VERSION else "Re-create the store with this version."
            raise StoreError(
                f"{path} has lossatlas schema_version {version}; this lossatlas reads version "
                f"{SCHEMA_VERSION}. {hint} The file was not modified."
            )


def _attrs_text(attrs, limit: int) -> str:
    parts = []
    for key, value in attrs.items():
        text = value.decode() if isinstance(value, bytes) else str(value)
        parts.append(f"{key}={text if len(text) <= limit else text[: limit - 3] + '...'}")
    return "  ".join(parts)
