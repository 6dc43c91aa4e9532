"""The store as the rest of lossatlas uses it: one study's subjects, minima, samples, results and
benchmarks, read and written as records. Every node is written by the writer and its content read
by the reader that ``encoding`` registers for its type, its ``complete`` / ``prepared`` flags by
``encoding.flag``; stamps are read here only to pick a reader or refuse a group of another type,
and only ``tree`` (inspection) and ``file`` (raw h5py access for callers who ask for it) see nodes
as they are. Every write is made durable (``durability``); what is read is validated, so damaged or
foreign content is a StoreError naming the file, never a raw KeyError or OSError.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import time
import weakref
from pathlib import Path

import h5py
import numpy as np

from ..errors import StoreError
from ..provenance import canonical_json, now
from . import durability, encoding, inspection
from .encoding import READ_ALONE, SCHEMA, SCHEMA_VERSION
from .integrity import child
from .records import Minimum, Part, Result, minimum_part, part_minimum

_MODES = ("r", "a", "x")  # read; read/write, created if missing; create (refused if it exists)
_COMPRESS_ABOVE = 4096  # elements; smaller arrays are stored contiguous and uncompressed
_MEMORY = Path(":memory:")


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


class Store:
    """An HDF5 landscape store, used as a context manager.

    ``mode``: "r" read only, "a" read/write (created if missing), "x" create (fails if it exists).
    Opening a file that is not a lossatlas store of this schema version, or that holds a node this
    lossatlas cannot read, fails without touching it. ``validate=False`` (read only) skips the
    second check, so that ``lossatlas inspect`` shows the store it is asked to diagnose, its
    unreadable nodes marked (``tree``). ``concurrent=True`` (read only) takes no lock, neither
    lossatlas's nor HDF5's, so that a store another process is writing (a running ``lossatlas
    run``) can be read: what is read is the file as last flushed, a result or minimum still being
    written reads as unfinished, and a read that meets a write half-done fails (``read_while_written``
    retries it).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "a", validate: bool = True, concurrent: bool = False):
        if mode not in _MODES:
            raise StoreError(f"Store mode must be one of {sorted(_MODES)}; got {mode!r}.")
        if not validate and mode != "r":
            raise StoreError(f"A store opened without validation is read only (mode 'r'); got mode {mode!r}.")
        if concurrent and mode != "r":
            raise StoreError(f"A store opened without locks is read only (mode 'r'); got mode {mode!r}.")
        self.path = Path(path)
        self.mode = mode
        self.concurrent = concurrent
        self._failed = False
        self._registered = weakref.WeakValueDictionary()  # name -> the subject object checked against it
        if mode == "r" and not self.path.exists():
            raise StoreError(f"No store at {self.path}.")
        # before creating: one creator wins; a concurrent reader takes none (it never writes)
        self._lock = None if concurrent else durability.lock(self.path, shared=mode == "r")
        self._release = weakref.finalize(self, durability.unlock, self._lock)  # also when dropped unclosed
        try:
            if self.path.exists():
                if mode == "x":
                    raise StoreError(f"{self.path} already exists; open it with mode 'a' to add to it.")
                _check_existing(self.path, validate, locking=not concurrent)
            else:
                durability.create_atomically(self.path, encoding.initialize)
            self._file = durability.open_hdf5(self.path, "r" if mode == "r" else "a", locking=not concurrent)
        except BaseException:
            self._release()
            raise

    @classmethod
    def memory(cls) -> "Store":
        """A throwaway store held in memory: read/write, no file, no lock, gone when closed.

        For trying a method or testing one without leaving files behind::

            with Store.memory() as store:
                result = lossatlas.analyze(store, subject, "hessian", at="theta0")

        Everything a file store does works on it (``path`` is ":memory:"); nothing is written to disk."""
        store = cls.__new__(cls)
        store.path = _MEMORY
        store.mode = "a"
        store.concurrent = False
        store._failed = False
        store._registered = weakref.WeakValueDictionary()
        store._lock = None
        store._release = None
        store._file = h5py.File(io.BytesIO(), "w", libver=durability.LIBVER)
        encoding.initialize(store._file)
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
            if not durability.out_of_space(err):
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
        if self.path != _MEMORY:
            durability.check_free_space(self.path)

    def _reserve(self, extra: int = 0) -> None:
        if self.path != _MEMORY:
            durability.reserve(self._file, extra)

    def _abandon(self) -> None:
        self._failed = True
        durability.abandon(self._file)
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
        return path in self._file and encoding.flag(self._file[path], "complete")

    def node(self, path: str, encoding_type: str) -> h5py.Group:
        """The group at ``path`` (one that holds others), created and stamped if missing.

        An existing group of another encoding-type is refused, naming the path.
        """
        if path in self._file:
            group = self._file[path]
            found = group.attrs.get("encoding-type")
            if found != encoding_type:
                raise StoreError(f"{self.path}:{path} is a {found!r} node, expected {encoding_type!r}.")
            return group
        self._writable(path)
        parent, _, name = path.rpartition("/")
        return encoding.write(self._file[parent or "/"], name, encoding_type)

    def write_array(self, group: h5py.Group, name: str, data) -> h5py.Dataset:
        """Write (or replace) a dataset, its room on disk reserved first; large arrays are chunked and
        gzip-compressed. Every array of the store is written here (the encodings get it as ``put``)."""
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
        """The subjects' names; a link in their place is damage, not a subject."""
        group = child(self._file, "subjects")
        return [] if group is None else encoding.read(group, "subjects")

    def add_subject(self, name: str, config: dict, theta0, buffers0) -> h5py.Group:
        """Register a subject; the same name with a different config is refused."""
        _check_name(name, "subject")
        text = canonical_json(config)
        path = f"subjects/{name}"
        if path in self._file:
            stored = canonical_json(encoding.read(self._file[path], "subject").config)
            if stored != text:
                raise StoreError(
                    f"{self.path} already holds a subject {name!r} with another config.\n"
                    f"  stored: {stored}\n  given:  {text}\n"
                    "Use another subject name or another store."
                )
            self._check_same_start(name, theta0, buffers0)
            return self._file[path]
        return self._create_subject(name, text, theta0, buffers0)

    @_writer
    def _create_subject(self, name: str, text: str, theta0, buffers0) -> h5py.Group:
        subjects = self.node("subjects", "subjects")
        self._writable(f"subjects/{name}")
        group = encoding.write(subjects, name, "subject", text, theta0, buffers0, put=self.write_array)
        self.flush()
        return group

    def _check_same_start(self, name: str, theta0, buffers0) -> None:
        """A name stands for one landscape: the same config *and* the same starting point (a model
        with another checkpoint loaded has the same config; its results must not be read as this
        one's)."""
        group = self._file[f"subjects/{name}"]
        for label, given in (("theta0", theta0), ("buffers0", buffers0)):
            given = np.asarray(given)
            stored = encoding.read(group, "subject", only=label)
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
        return encoding.read(self._subject(name), "subject").config

    def _subject(self, name: str) -> h5py.Group:
        group = child(self._file, "subjects")
        node = None if group is None else child(group, name)
        if node is None:
            raise StoreError(f"{self.path} has no subject {name!r}; it has {self.subjects()}.")
        return node

    # -- subjects as objects -----------------------------------------------------------------------
    def register(self, subject) -> None:
        """Record ``subject`` (its config, theta0 and buffers0); the same name with another config
        is refused, naming both. The check runs once per subject object and open store: a
        subject's config hashes its whole dataset (hundreds of MB for CIFAR-10), and the samplers
        register before every write. The store keeps no subject alive (a weak reference): a run
        releases each subject after its last job."""
        if self._registered.get(subject.name) is subject:
            return
        self.add_subject(subject.name, subject.config(), subject.theta0.cpu().numpy(),
                         subject.buffers0.cpu().numpy())
        with contextlib.suppress(TypeError):  # an object without weak references is checked every time
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
        node = self._subject(subject)
        group = child(node, "minima")
        if group is None:
            return []
        dim = encoding.read(node, "subject").dim
        nodes = [child(group, name) for name in sorted(group)]
        return [self._read_minimum(node, dim) for node in nodes if encoding.flag(node, "complete")]

    @staticmethod
    def _read_minimum(node: h5py.Group, dim: int) -> Minimum:
        index = int(node.name.rsplit("/", 1)[1])
        return encoding.read(node, "minimum", skip=READ_ALONE, convert=lambda part: part_minimum(part, index, dim))

    @_reader
    def has_trajectory(self, subject: str, index: int) -> bool:
        minima = child(self._subject(subject), "minima")
        node = None if minima is None else child(minima, f"{index:03d}")
        return node is not None and encoding.flag(node, "complete") and child(node, "trajectory") is not None

    @_reader
    def trajectory(self, subject: str, index: int) -> np.ndarray | None:
        """The recorded training trajectory of minimum ``index`` (initialisation, then every
        epoch), or None when it was trained without recording one. Kept out of ``minima``,
        which every reader calls: a ResNet's trajectory is tens of MB."""
        if not self.has_trajectory(subject, index):
            return None
        node = self._subject(subject)[f"minima/{index:03d}"]
        return encoding.read(node, "minimum", only="trajectory").astype(np.float64)

    # -- samples ---------------------------------------------------------------------------------
    def sample_root(self, path: str, encoding_type: str = "sample", config: dict | None = None) -> h5py.Group:
        """The group holding one sample (its header and parts), created if missing. ``path`` is
        relative to the store root; the parents ``samples`` and ``samples/<kind>`` are stamped."""
        parts = path.split("/")
        if len(parts) == 5 and parts[2] == "samples":
            self.node("/".join(parts[:3]), "samples")
            self.node("/".join(parts[:4]), "sample-kind")
        if path in self._file:
            return self.node(path, encoding_type)
        self._writable(path)
        return encoding.write(self._file["/".join(parts[:-1])], parts[-1], encoding_type, kind=parts[-2],
                              config=config)

    def sample(self, path: str, encoding_type: str = "sample", part_encoding: str = "part") -> "SampleHandle":
        """One sample of this store, by its path: what the sampling driver reads and writes."""
        return SampleHandle(self, path, encoding_type, part_encoding)

    @_reader
    def has_header(self, path: str) -> bool:
        return path in self._file and encoding.flag(self._file[path], "prepared")

    @_writer
    def write_header(self, root: h5py.Group, arrays: dict) -> None:
        """The arrays a sample's tasks share (directions, a center, the minima to join); the
        ``prepared`` flag is set last."""
        encoding.write_header(root, arrays, put=self.write_array)
        self.flush()

    @_reader
    def read_header(self, path: str) -> dict[str, np.ndarray]:
        node = self._file[path]
        return encoding.read(node, encoding.sample_type(node))

    @_reader
    def sample_config(self, path: str) -> dict:
        """The config a sample was created with ({} for a group whose parts say what they are)."""
        node = self._file[path]
        return encoding.read(node, encoding.sample_type(node), config=True)

    @_writer
    def write_part(self, root: h5py.Group, name: str, part: Part, encoding_type: str = "part") -> None:
        """One task's output, replacing an unfinished earlier attempt; ``complete`` is set last."""
        self._writable(f"{root.name}/{name}")
        encoding.write(root, name, encoding_type, part, put=self.write_array)
        self.flush()

    @_reader
    def read_part(self, path: str, encoding_type: str = "part", skip: tuple = ()) -> Part:
        """A finished part, checked against its checksum; ``skip``: datasets left unread (a minimum's
        trajectory)."""
        if not self.finished(path):
            raise StoreError(f"{self.path}:{path} is missing or was not written whole.")
        return encoding.read(self._file[path], encoding_type, skip=skip)

    # -- results ---------------------------------------------------------------------------------
    @_reader
    def has_result(self, subject: str, method: str, key: str) -> bool:
        """Whether the result was written whole (``complete`` is set last, as for sample parts)."""
        return self.finished(f"subjects/{subject}/results/{method}/{key}")

    @_writer
    def write_result(self, result: Result) -> None:
        self._subject(result.subject)
        self.node(f"subjects/{result.subject}/results", "results")
        methods = self.node(f"subjects/{result.subject}/results/{result.method}", "method-results")
        self._writable(f"{methods.name}/{result.key}")
        encoding.write(methods, result.key, "result", result, put=self.write_array)
        self.flush()

    @_reader
    def read_result(self, subject: str, method: str, key: str) -> Result:
        """The stored ``Result`` of analyzer ``method`` (its registered name, e.g. "hessian") on
        ``subject`` under ``key`` (``Result.key``, as ``analyze`` returned it, ``results`` lists
        it, or the ``key`` column of ``to_dataframe``), with its metrics, arrays, parameters and
        provenance. Its content is checked against the checksum written with it. A missing result, one
        whose write was interrupted, or damaged content is a StoreError that says which."""
        path = f"subjects/{subject}/results/{method}/{key}"
        if path not in self._file:
            raise StoreError(f"{self.path} has no result at {path}.")
        if not self.finished(path):
            raise StoreError(f"{self.path}:{path} was interrupted while being written; rerun the analysis.")
        return encoding.read(self._file[path], "result", subject=subject, method=method, key=key)

    @_reader
    def results(self, subject: str, method: str | None = None) -> list[Result]:
        group = child(self._subject(subject), "results")
        if group is None:
            return []
        names = encoding.read(group, "results")
        methods = names if not method else [method] if method in names else []
        keys = {m: child(group, m) for m in methods}
        return [self.read_result(subject, m, k) for m in methods for k in encoding.read(keys[m], "method-results")
                if encoding.flag(child(keys[m], k), "complete")]

    def to_dataframe(self, wide: bool = False, metrics=None):
        """Every stored metric as a tidy pandas frame (the ``export`` extra): one row per (subject,
        label, minimum, metric) with columns subject, analyzer, label, minimum (NA for a result at
        theta0 or per subject), at, metric, value, kind ("measure" / "diagnostic") and key.
        ``wide=True``: one row per (subject, minimum), a column per "label.metric". ``metrics``:
        the ones to keep ("label.metric", "analyzer.metric" or a bare name). See
        ``lossatlas.export.metrics_frame``; one row per result with its parameters is
        ``lossatlas.export.results_frame``."""
        from ..export import metrics_frame

        return metrics_frame(self, wide=wide, metrics=metrics)

    # -- benchmarks ------------------------------------------------------------------------------
    @_writer
    def write_benchmark(self, name: str, record: dict) -> None:
        """Record (or update) what a benchmark run planned and which results it produced, so the
        report can be rebuilt from the store alone. The record is serialised, and the earlier one's
        creation time read, before the earlier record is replaced: a record that cannot be written
        leaves the earlier one as it was."""
        _check_name(name, "benchmark")
        text = canonical_json(record)
        group = self.node("benchmarks", "benchmarks")
        earlier = child(group, name)
        created = now() if earlier is None else earlier.attrs.get("created")
        if not isinstance(created, str):
            raise StoreError(f"{self.path}:/benchmarks/{name} is damaged: its created attribute is {created!r}, not "
                             "a time. Nothing was modified; restore the file from a copy or rerun into a new store.")
        self._writable(f"benchmarks/{name}")
        encoding.write(group, name, "benchmark", text, created=created)
        self.flush()

    @_reader
    def benchmarks(self) -> list[str]:
        group = child(self._file, "benchmarks")
        return [] if group is None else encoding.read(group, "benchmarks")

    @_reader
    def read_benchmark(self, name: str) -> dict:
        if f"benchmarks/{name}" not in self._file:
            raise StoreError(f"{self.path} has no benchmark {name!r}; it has {self.benchmarks()}.")
        return encoding.read(self._file[f"benchmarks/{name}"], "benchmark")

    # -- invariance audits (lossatlas.audit) ------------------------------------------------------
    @_writer
    def write_audit(self, name: str, audit: dict) -> None:
        """Record (or replace) the invariance audit of benchmark ``name``: what it applied and
        every value it measured, so the report shows it from the store alone."""
        _check_name(name, "audit")
        text = canonical_json(audit)
        group = self.node("audits", "audits")
        self._writable(f"audits/{name}")
        encoding.write(group, name, "audit", text, created=now())
        self.flush()

    @_reader
    def audits(self) -> list[str]:
        group = child(self._file, "audits")
        return [] if group is None else encoding.read(group, "audits")

    @_reader
    def read_audit(self, name: str) -> dict | None:
        """The invariance audit of benchmark ``name``, or None where none was run."""
        return encoding.read(self._file[f"audits/{name}"], "audit") if f"audits/{name}" in self._file else None

    # -- inspection ------------------------------------------------------------------------------
    def overview(self) -> dict:
        """What the store holds, as plain values: format version, size on disk, per subject its
        parameter count, device and dtype, minima (index, seed, finished), results per analyzer
        (at which minima, per subject, unfinished) and samples; per benchmark whether it is complete.
        Attributes are read as they are (``inspection``), so a store being written or one with
        unreadable nodes is described, not refused."""
        return inspection.overview(self._file, self.path)

    def summary(self) -> str:
        """``overview`` in a few readable lines (``lossatlas inspect STORE --summary``)."""
        return inspection.summary(self.overview())

    def tree(self, max_attr_chars: int | None = 80) -> str:
        """A readable tree of every group, dataset and attribute; a group this lossatlas cannot read
        (a store opened with ``validate=False``) is marked with what is wrong. Attributes longer than
        ``max_attr_chars`` are cut (None: none is), except a result's ``params`` and a minimum's
        ``seed``, which say what it is (which minimum, which settings)."""
        unreadable = encoding.unreadable(self._file)

        def mark(path: str) -> str:
            if path not in unreadable:
                return ""
            live = " (or half-written: another process is writing the store)" if self.concurrent else ""
            return f"  <- NOT READABLE{live}: {unreadable[path]}"

        lines = [f"{self.path}  " + _attrs_text(self._file.attrs, max_attr_chars) + mark("/")]

        def visit(name, obj):
            depth = name.count("/") + 1
            label = name.rsplit("/", 1)[-1]
            if isinstance(obj, h5py.Dataset):
                lines.append(f"{'  ' * depth}{label}  {obj.dtype} {obj.shape}")
            else:
                lines.append(f"{'  ' * depth}{label}/  " + _attrs_text(obj.attrs, max_attr_chars) + mark(f"/{name}"))

        self._file.visititems(visit)
        return "\n".join(lines)

    def _writable(self, path: str) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path} is open read-only; cannot write {path}. Open it with mode 'a'.")


class SampleHandle:
    """One sample in a store -- its group's path and the encodings of the group and its parts --
    so that the sampling driver asks for a header or a part by name, never by path or h5py group.
    The group is created by ``create``, with the first write."""

    def __init__(self, store: Store, path: str, encoding_type: str = "sample", part_encoding: str = "part"):
        self.store, self.path = store, path
        self.encoding, self.part_encoding = encoding_type, part_encoding

    def exists(self) -> bool:
        return self.path in self.store.file

    def prepared(self) -> bool:
        """Whether the header was written whole."""
        return self.store.has_header(self.path)

    def header(self) -> dict[str, np.ndarray]:
        return self.store.read_header(self.path)

    def finished(self, name: str) -> bool:
        return self.store.finished(f"{self.path}/{name}")

    def create(self, config: dict | None, header: dict | None = None) -> None:
        """The sample's group, with ``config`` (None for a group whose parts say what they are) and,
        unless None, its ``header``."""
        root = self.store.sample_root(self.path, self.encoding, config)
        if header is not None:
            self.store.write_header(root, header)

    def write_part(self, name: str, part: Part) -> None:
        self.store.write_part(self.store.file[self.path], name, part, self.part_encoding)

    def read_part(self, name: str, skip: tuple = ()) -> Part:
        return self.store.read_part(f"{self.path}/{name}", self.part_encoding, skip)


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise StoreError(f"Invalid {what} name {name!r}: use a non-empty name without '/' or surrounding spaces.")


def remove_if_empty(path: Path) -> bool:
    """Delete the store at ``path`` if it holds no subject and no benchmark (a run that failed
    before storing anything), under the exclusive lock, so a run opening it meanwhile is never
    written into a deleted file. The lock file stays."""
    try:
        key = durability.lock(path, shared=False)
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
        durability.unlock(key)


def _check_existing(path: Path, validate: bool = True, locking: bool = True) -> None:
    """Validate an existing file read-only -- its schema, then (``validate``) every node's stamp --
    so a foreign, damaged or newer file is never modified."""
    with durability.open_hdf5(path, "r", locking) as file:
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
        if not validate:
            return
        try:
            encoding.validate(file)
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as err:
            raise StoreError(f"{path} is not a readable HDF5 file (corrupt?): {err}. It was not modified.") from err


_UNCUT = ("params", "seed", "method")  # what a result or a minimum is: never cut in the tree


def _attrs_text(attrs, limit: int | None) -> str:
    parts = []
    for key, value in attrs.items():
        text = value.decode() if isinstance(value, bytes) else str(value)
        whole = limit is None or key in _UNCUT or len(text) <= limit
        parts.append(f"{key}={text if whole else text[: limit - 3] + '...'}")
    return "  ".join(parts)


def read_while_written(path: str | os.PathLike, render, attempts: int = 5, pause: float = 0.3):
    """``render(store)`` of the store at ``path``, opened read only and unvalidated (``lossatlas
    inspect``); returns (its output, whether another process was writing the store). A store that a
    writer holds (a running ``lossatlas run``) is read without locks (``concurrent=True``) as last
    flushed; a read that meets a write half-done fails (HDF5 gives readers no snapshot outside SWMR,
    which the store's file format does not use), so it is retried ``attempts`` times."""
    try:
        with Store(path, "r", validate=False) as store:
            return render(store), False
    except durability.StoreLocked:
        pass
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            with Store(path, "r", validate=False, concurrent=True) as store:
                return render(store), True
        except (StoreError, OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            last = err
            time.sleep(pause * (attempt + 1))
    raise StoreError(f"{path} is being written by another process, and each of {attempts} reads met a write "
                     f"half-done (last: {type(last).__name__}: {last}). Try again, or wait for the run to finish.")
