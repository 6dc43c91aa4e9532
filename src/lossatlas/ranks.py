"""One run over several processes (torch.distributed): who writes the store, who runs which task,
and how the processes start.

- **The store**: rank 0 alone opens the file. Every rank runs the same code, so every rank makes
  the same store calls in the same order; rank 0 answers each (``Leader``) and broadcasts the
  answer, the other ranks receive it (``Follower``) instead of touching a file. Handles the store
  gives out (a sample being written) are shared the same way. A refusal on rank 0 is raised on
  every rank.
- **Independent tasks** (minima, grid blocks, path pairs, jump-and-retrain runs):
  ``RankExecutor`` hands task i to rank i % size, each rank computes its task alone
  (``distributed.alone``: every batch, no reduction), and the parts of one round (one task per
  rank) are gathered on every rank, so rank 0 writes them as they come: a rank that dies loses at
  most its round, and the next run resumes from the store.
- **Everything else** (a Hessian at one minimum, a grid's Hessian directions) runs on every rank
  as one data-parallel computation: each rank evaluates its share of the batches and an
  all-reduce sums (``lossatlas.distributed``).
- **Starting**: ``lossatlas run CONFIG --nproc N`` re-launches itself under
  ``torch.distributed.run`` (torchrun) with N processes on this machine; under torchrun (or a
  SLURM job that starts it) ``init`` joins the process group from the environment: gloo on the
  CPU, NCCL on CUDA (one GPU per local rank).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import distributed as dist

from . import distributed
from .errors import ConfigError
from .executor import LocalExecutor


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> str:
    """Join the process group torchrun describes in the environment; returns the device this rank
    uses ("cuda:<local rank>" on GPUs, else ``device``)."""
    if dist.is_initialized():
        return device
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    return device


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``lossatlas`` with ``argv`` (without --nproc) as ``nproc`` processes under torchrun on this
    machine; its exit status."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1; got {nproc}.")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "lossatlas", *argv]
    # torchrun's own default (one thread a process), set here so that it does not print a banner about it
    return subprocess.call(command, env={"OMP_NUM_THREADS": "1", **os.environ})


# -- the store: rank 0 answers, every rank asks ------------------------------------------------------
_HANDLE_TYPES: tuple = ()


def _is_handle(value) -> bool:
    """Objects bound to the open file (the store, a sample handle, h5py groups): shared as handles,
    never copied."""
    global _HANDLE_TYPES
    if not _HANDLE_TYPES:
        import h5py

        from .store import SampleHandle, Store

        _HANDLE_TYPES = (Store, SampleHandle, h5py.HLObject)
    return isinstance(value, _HANDLE_TYPES)


def _broadcast(value=None):
    """Rank 0's (kind, value) on every rank; ``value`` is rank 0's (the others pass nothing)."""
    if value is not None and value[0] == "error":
        value = ("error", _portable(value[1]))
    return distributed.agreed(value)


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (to reach the other ranks), else a LossatlasError saying it."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 -- whatever pickling raises
        from .errors import LossatlasError

        return LossatlasError(f"rank 0: {type(error).__name__}: {error}")


class Leader:
    """Rank 0's view of the store: the real object, every answer broadcast to the other ranks."""

    def __init__(self, target):
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str):
        try:
            value = getattr(self._target, name)
        except Exception as error:  # noqa: BLE001 -- raised on every rank
            _broadcast(("error", error))
            raise
        if callable(value) and not _is_handle(value):
            _broadcast(("call", None))
            return self._call(value)
        return self._answer(value)

    def _call(self, method: Callable):
        def call(*args, **kwargs):
            try:
                result = method(*args, **kwargs)
            except BaseException as error:
                _broadcast(("error", error))
                raise
            return self._answer(result)
        return call

    def _answer(self, value):
        if _is_handle(value):
            _broadcast(("handle", None))
            return Leader(value)
        _broadcast(("value", value))
        return value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Follower:
    """Another rank's view of the store: each answer is rank 0's."""

    def __getattr__(self, name: str):
        return self._receive()

    def _call(self, *args, **kwargs):
        return self._receive()

    def _receive(self):
        """Rank 0's answer: a value, a handle (followed the same way), a method (called next: its
        answer comes then) or an error, raised here too."""
        kind, value = _broadcast()
        if kind == "error":
            raise value
        if kind == "handle":
            return Follower()
        return self._call if kind == "call" else value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- independent tasks: split over the ranks ------------------------------------------------------------
class RankExecutor(LocalExecutor):
    """Task i on rank i % size, one round (one task per rank) at a time; every rank yields every
    part in task order, so the driver on rank 0 writes each part once its round is gathered."""

    name = "torch.distributed"

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        self.rank, self.size = distributed.world()
        self.local = self.rank == 0  # progress from rank 0 alone

    @property
    def workers(self) -> int:
        return self.size

    def map(self, fn, tasks, shared=()) -> Iterator[tuple[int, Any]]:
        for start in range(0, len(tasks), self.size):
            index = start + self.rank
            mine = None
            if index < len(tasks):
                try:
                    with distributed.alone():
                        mine = ("part", fn(*shared, tasks[index]))
                except Exception as error:  # noqa: BLE001 -- every rank raises it after the gather
                    mine = ("error", error)
            gathered = [None] * self.size
            dist.all_gather_object(gathered, mine)
            for offset, answer in enumerate(gathered):
                if answer is None:
                    continue
                kind, value = answer
                if kind == "error":
                    raise value
                yield start + offset, value
