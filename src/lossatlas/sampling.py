"""One sample protocol and one driver: how the expensive shared things reach the store.

A *request* names a sample an analyzer needs (a grid, paths between minima, trained minima, a
point to look at). A ``Sampler`` request is produced by the protocol

    prepare(subject, inputs) -> header        the arrays every task shares (directions, minima)
    tasks(subject, header) -> [(name, task)]  independent pieces of work (grid blocks, path pairs)
    run(subject, header, progress, task)      pure: one task's Part, on any executor
    assemble(subject, header, parts) -> data  the sample's arrays, from the stored parts

and ``obtain`` is the one driver: it resolves a request's inputs first, registers the subject,
finds the parts the store lacks, hands them to the current executor, writes each part as it
arrives with its completion flag last (so an interrupted run resumes exactly), shows progress,
and assembles the sample from what the store holds. Requests that only read the store (a stored
minimum, explicit vectors) implement ``read`` instead. Every request returns a ``Sample``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from . import devices, distributed, executor
from .memory import Memory
from .params import validate_fields
from .progress import bar as progress_bar
from .provenance import config_key
from .store import Part, Store


@dataclass
class Sample:
    """What every request returns: its kind, store key and config, and its arrays."""

    kind: str
    key: str
    config: dict
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]


@dataclass(frozen=True)
class Request:
    """A sample an analyzer asks for; fields are declared with ``params.param`` and validated on
    construction. Fields that are themselves requests are its inputs, obtained first."""

    kind: ClassVar[str] = ""

    def __post_init__(self):
        validate_fields(self)

    def inputs(self) -> dict[str, "Request"]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Request)}

    def own_config(self) -> dict:
        """The request's plain (non-request) fields."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not isinstance(getattr(self, f.name), Request)}

    def check(self, subject) -> None:
        """Rules that need the subject (its dimension, its kind), checked before any work."""

    def minima_needed(self) -> int:
        """How many trained minima must be in the store for this request (a benchmark checks it
        against its seeds before any work)."""
        return max([dependency.minima_needed() for dependency in self.inputs().values()], default=0)

    def memory(self, subject) -> Memory:
        """Peak bytes of obtaining this sample and holding it, its inputs included
        (``lossatlas.memory``); by default what its inputs declare."""
        return sum((dependency.memory(subject) for dependency in self.inputs().values()), Memory())

    def check_all(self, subject) -> None:
        """This request and its inputs checked against ``subject``."""
        for dependency in self.inputs().values():
            dependency.check_all(subject)
        self.check(subject)

    def read(self, store: Store, subject, inputs: dict[str, Sample]) -> Sample:
        """For requests answered from the store or from the request itself."""
        raise NotImplementedError(f"{type(self).__name__} is neither a Sampler nor a reader.")


@dataclass(frozen=True)
class Sampler(Request):
    """A request the driver produces and stores; see the module docstring for the protocol."""

    encoding: ClassVar[str] = "sample"  # the root group's encoding-type
    part_encoding: ClassVar[str] = "part"
    part_skip: ClassVar[tuple] = ()  # datasets of a part that ``assemble`` does not need (left unread)

    def config(self, inputs: dict[str, Sample]) -> dict:
        """What identifies the sample (its store key is a hash of it)."""
        return {**self.own_config(), **{name: sample.config for name, sample in inputs.items()}}

    def path(self, subject_name: str, key: str) -> str:
        return f"subjects/{subject_name}/samples/{self.kind}/{key}"

    def prepare(self, subject, inputs: dict[str, Sample]) -> dict[str, np.ndarray]:
        return {}

    def check_stored(self, store: Store, path: str) -> None:
        """Refuse stored parts that another request made (e.g. minima of another recipe)."""

    def tasks(self, subject, header: dict[str, np.ndarray]) -> list[tuple[str, object]]:
        raise NotImplementedError

    def run(self, subject, header: dict[str, np.ndarray], progress: bool, task) -> Part:
        raise NotImplementedError

    def group_size(self, subject, count: int) -> int:
        """How many of ``count`` missing tasks ``run_many`` takes at once (1: one by one)."""
        return 1

    def run_many(self, subject, header: dict[str, np.ndarray], progress: bool, tasks: list) -> list[Part]:
        """Several tasks at once (e.g. training runs batched into one computation); each part is
        what ``run`` would give for its task."""
        return [self.run(subject, header, progress, task) for task in tasks]

    def assemble(self, subject, header: dict[str, np.ndarray], parts: dict[str, Part]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def identity(store: Store, subject, request: Request) -> dict:
    """What identifies the sample ``request`` names, known before any work: its settings, its
    inputs' identities, and for requests that read the store a digest of what they read (so a
    result keyed on it can never be one computed at another minimum)."""
    if not isinstance(request, Sampler):
        return request.read(store, subject, {}).config
    inputs = {name: identity(store, subject, dependency) for name, dependency in request.inputs().items()}
    return {"kind": request.kind, **request.own_config(), **inputs}


def obtain(store: Store, subject, request: Request, progress: bool = True) -> Sample:
    """The sample ``request`` names, producing (and storing) whatever the store lacks."""
    request.check(subject)
    if subject.name in store.subjects():
        store.register(subject)  # another landscape under this name is refused before any work
    inputs = {name: obtain(store, subject, dependency, progress) for name, dependency in request.inputs().items()}
    if not isinstance(request, Sampler):
        return request.read(store, subject, inputs)
    config = request.config(inputs)
    key = config_key(config)
    sample = store.sample(request.path(subject.name, key), request.encoding, request.part_encoding)
    prepared = sample.prepared()
    header = sample.header() if prepared else request.prepare(subject, inputs)
    if sample.exists():
        request.check_stored(store, sample.path)
    tasks = request.tasks(subject, header)
    missing = [(name, task) for name, task in tasks if not sample.finished(name)]

    created = []

    def root():
        """The sample's group, created with the first write: a failure before it leaves the store as it was."""
        if not created:
            store.register(subject)
            sample.create(config if request.encoding == "sample" else None, None if prepared else header)
            created.append(sample)
        return created[0]

    runner = executor.current()
    bar = progress_bar(total=len(missing), desc=f"{subject.name}: {request.kind}", enabled=progress and bool(missing))
    shared = (subject, header, progress and runner.local)
    # the same groups on every process of a torch.distributed run (each sizes them by its own memory)
    size = distributed.agreed(request.group_size(subject, len(missing)) if missing else 1)
    if size <= 1:
        for index, part in runner.map(_Float32(request.run), [task for _, task in missing], shared=shared):
            root().write_part(missing[index][0], part)
            bar.update(1)
    else:  # groups of tasks computed together; each task's part is still written on its own
        size = min(size, -(-len(missing) // getattr(runner, "workers", 1)))  # every Dask worker gets a group
        groups = [missing[start : start + size] for start in range(0, len(missing), size)]
        failed = []
        for index, parts in runner.map(_Float32(request.run_many), [[task for _, task in group] for group in groups],
                                       shared=shared):
            for (name, _), part in zip(groups[index], parts):
                if isinstance(part, Exception):  # a task that failed: the group's others are kept
                    failed.append(part)
                else:
                    root().write_part(name, part)
            bar.update(len(parts))
        if failed:
            bar.close()
            raise failed[0]
    bar.close()
    root()
    parts = {name: sample.read_part(name, request.part_skip) for name, _ in tasks}
    return Sample(request.kind, key, config, request.assemble(subject, header, parts))


@dataclass(frozen=True)
class _Float32:
    """A sampler step under the landscape numerics (``devices.numerics("float32")``: TF32 off)
    wherever it runs: a Dask worker has its own flags. Training steps inside set their recipe's."""

    step: Callable

    def __call__(self, subject, header, progress, task):
        with devices.numerics("float32", subject.device):
            return self.step(subject, header, progress, task)


def _plain(value):
    """Config values as JSON gives them back (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value
