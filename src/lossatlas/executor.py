"""Where the embarrassingly parallel work runs: in this process, or on a Dask cluster.

The samplers hand their independent tasks (grid blocks, minima, path pairs, jump-and-retrain
runs) to the *current* executor and write every result to the store themselves as it arrives.
So only the coordinating process ever writes the store; workers need no access to its file,
and an interrupted run resumes from whatever results were written.

    from lossatlas.executor import DaskExecutor, use
    with DaskExecutor("tcp://scheduler:8786") as executor, use(executor):
        lossatlas.analyze(store, subject, "merge-tree")

Each task computes exactly what the local path computes (same blocks, same seeds), so a Dask
run stores the same numbers as a local one when torch uses the same number of threads.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
from typing import Any, Callable, Iterator, Sequence

from .errors import ConfigError, LossatlasError

EXECUTORS = ("local", "dask")
_ADDRESS = re.compile(r"((tcp|tls|ws|wss|ucx)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?")


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads; None leaves torch's default. One per task avoids oversubscribing
    cores shared with other processes (two busy processes each with all threads made one
    Hessian-vector product 70x slower on 2 cores)."""
    if threads is None:
        return
    import torch

    if int(threads) < 1:
        raise ConfigError(f"threads must be an int in [1, inf); got {threads}.")
    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


class LocalExecutor:
    """Runs the tasks one after another in this process, each as soon as it is asked for."""

    name = "local"
    local = True

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def map(self, fn: Callable, tasks: Sequence, shared: Sequence = ()) -> Iterator[tuple[int, Any]]:
        """Yields ``(index, fn(*shared, tasks[index]))``; here in order. Progress is the caller's
        (the sampling driver's)."""
        for index, task in enumerate(tasks):
            yield index, fn(*shared, task)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskExecutor(LocalExecutor):
    """Farms tasks out to a Dask distributed cluster and yields results as they complete.

    ``scheduler``: an address (``tcp://host:8786``, e.g. a dask-jobqueue SLURMCluster's
    ``scheduler_address``) or None for a LocalCluster on this machine (``workers`` processes,
    one thread each). ``client``: an existing ``distributed.Client`` instead. ``threads``:
    torch threads inside each task (default 1: one task per worker thread fills the cores).
    """

    name = "dask"
    local = False
    RETRIES = 2  # reruns of a task lost with a dying worker

    def __init__(self, scheduler: str | None = None, client=None, workers: int | None = None,
                 threads: int | None = 1):
        try:
            from distributed import Client, LocalCluster
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ConfigError("The dask executor needs dask.distributed: pip install 'lossatlas[dask]'.") from err
        super().__init__(threads)
        self._owned = []
        if client is None:
            if scheduler is None:
                cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
                self._owned.append(cluster)
                scheduler = cluster
            try:
                client = Client(scheduler, timeout="30s")
            except OSError as err:
                raise ConfigError(f"Cannot reach the Dask scheduler at {scheduler!r}: {err}") from err
            self._owned.insert(0, client)
        self.client = client

    @property
    def workers(self) -> int:
        """Workers the scheduler knows now (a group of tasks goes to one of them)."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, fn, tasks, shared=()):
        """A task lost with a dying worker (KilledWorker, or cancelled for lost dependencies: the
        scattered inputs were on it) runs again, up to ``RETRIES`` times: tasks are pure."""
        from concurrent.futures import CancelledError

        from distributed import KilledWorker, as_completed

        if not len(tasks):
            return
        scattered = self._scatter(shared)
        futures = {self._submit(fn, task, scattered): index for index, task in enumerate(tasks)}
        lost = dict.fromkeys(range(len(tasks)), 0)
        completed = as_completed(futures)
        try:
            for future in completed:
                index = futures.pop(future)
                try:
                    result = future.result()  # a task's exception is raised here
                except (CancelledError, KilledWorker) as err:
                    lost[index] += 1
                    if lost[index] > self.RETRIES:
                        raise LossatlasError(f"Task {index} was lost {lost[index]} times with its Dask worker "
                                             f"({type(err).__name__}: {' '.join(str(err).split())}); what finished "
                                             "is stored: rerun the same command to resume.") from err
                    if any(f.status != "finished" for f in scattered):
                        scattered = self._scatter(shared)
                    retry = self._submit(fn, tasks[index], scattered)
                    futures[retry] = index
                    completed.add(retry)
                    continue
                yield index, result
        finally:
            for future in futures:  # the coordinator stopped early: nothing keeps computing
                future.cancel()

    def _scatter(self, shared) -> list:
        """Large shared inputs (the subject with its data, a grid's directions) travel once per worker.
        Each is scattered whole (in a one-item list: a dict, such as a sample's header, would be
        scattered value by value)."""
        return [self.client.scatter([obj], broadcast=True, hash=False)[0] for obj in shared]

    def _submit(self, fn, task, scattered):
        return self.client.submit(_call, fn, self.threads, task, *scattered, pure=False)

    def close(self) -> None:
        for owned in self._owned:
            owned.close()
        self._owned = []


def _call(fn, threads, task, *shared):
    set_threads(threads)
    return fn(*shared, task)


_LOCAL = LocalExecutor()
_current: contextvars.ContextVar[LocalExecutor | None] = contextvars.ContextVar("lossatlas_executor", default=None)


def current() -> LocalExecutor:
    """The executor the samplers use now (local unless inside ``use``)."""
    return _current.get() or _LOCAL


@contextlib.contextmanager
def use(executor: LocalExecutor):
    """Run the samplers inside the block on ``executor``."""
    token = _current.set(executor)
    try:
        yield executor
    finally:
        _current.reset(token)


def check_options(kind: str = "local", scheduler: str | None = None, threads: int | None = None) -> None:
    """The executor options, checked before any work (``lossatlas run --check`` too)."""
    if kind not in EXECUTORS:
        raise ConfigError(f"Unknown executor {kind!r}; valid: {list(EXECUTORS)}.")
    if scheduler is not None and kind != "dask":
        raise ConfigError("--scheduler needs --executor dask.")
    if scheduler is not None and not _ADDRESS.fullmatch(scheduler):
        raise ConfigError(f"--scheduler {scheduler!r} is not a Dask scheduler address; expected e.g. "
                          "tcp://host:8786 (or tls://, ws://, wss://, ucx://; host:port means tcp://).")
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be an int in [1, inf); got {threads}.")


def make(kind: str = "local", scheduler: str | None = None, threads: int | None = None) -> LocalExecutor:
    """The executor a command line asks for; ``threads`` also applies to this process."""
    check_options(kind, scheduler, threads)
    set_threads(threads)
    if kind == "local":
        return LocalExecutor(threads)
    return DaskExecutor(scheduler, threads=threads or 1)


__all__ = ["LocalExecutor", "DaskExecutor", "current", "use", "make", "check_options", "set_threads", "EXECUTORS"]
