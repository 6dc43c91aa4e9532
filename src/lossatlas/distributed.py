"""Data-parallel evaluation over torch.distributed: which process this is, and the one reduction.

Several processes share one landscape by splitting its evaluation batches (batch i goes to rank
i % size, ``ModuleSubject.eval_batches``) and adding their per-rank sums with one all-reduce, so
every rank holds the identical global value. Without an initialized process group this is one
process, rank 0 of 1, and ``all_reduce_sum`` hands its input back untouched: the same code, the
same bits.

Every rank must make the same collective calls in the same order, or they wait on each other for
ever. So a reduction runs on every rank -- one with no batches, and one whose own share failed,
too: the failure travels with the sums as a flag, and then every rank raises (the failing one its
own error, the others ``PeerFailure``) instead of some moving on to the next collective while the
others wait in this one.
"""
from __future__ import annotations

import contextlib

import torch
from torch import distributed as dist

from .errors import ConfigError


class PeerFailure(RuntimeError):
    """Another process failed in the computation this one was reducing (its own error is in its
    log). A RuntimeError, as a failed vmap is, so every rank takes the same fallback."""


_alone = 0  # depth of ``alone()`` blocks


def world() -> tuple[int, int]:
    """(rank, size) of the default process group when torch.distributed is initialized (and not
    inside ``alone()``), else (0, 1)."""
    if not _alone and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def alone():
    """Within it this process acts as the only one: every batch, no reduction. For work each rank
    does whole by itself (a probe of the first batch, a reference backend that reads the data)."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def share(count: int) -> range:
    """The numbers in range(count) this process takes: i with i % size == rank (all of them alone)."""
    rank, size = world()
    return range(rank, count, size)


def agreed(value):
    """Rank 0's ``value`` on every rank: a choice that must be the same everywhere (how many training
    runs go together, which depends on each process's free memory) but is made by each."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(totals: dict, failure: BaseException | None = None) -> dict:
    """``totals`` (tensors, Python floats or ints) summed key by key across the processes, the
    same on every rank: tensors keep their dtype, shape and device, numbers come back as Python
    numbers. One collective, in float64 on the tensors' device (the backend's: gloo on the CPU,
    NCCL on CUDA). Every rank must call it with the same keys and shapes; ``failure`` is this
    rank's error while computing its share: every rank then raises. Alone (no process group) it
    returns ``totals`` itself, or raises ``failure``.

    An all-reduce passes no gradient back, so a total that autograd or torch.func tracks is a
    ConfigError here: differentiate each rank's share and reduce the gradients (``loss_and_grad``
    and ``hvp`` do)."""
    _, size = world()
    if size == 1:
        if failure is not None:
            raise failure
        return totals
    if failure is None and any(_tracked(value) for value in totals.values()):
        failure = ConfigError(f"A loss summed over {size} processes cannot be differentiated through the all-reduce "
                              "(it passes no gradient back). Use lossatlas.evaluation.loss_and_grad or hvp, which "
                              "reduce the gradients, or run in one process.")
    values = list(totals.values())
    sizes = [value.numel() if torch.is_tensor(value) else 1 for value in values]
    device = _device(values)
    flat = torch.zeros(1 + sum(sizes), dtype=torch.float64, device=device)
    if failure is not None:
        flat[0] = 1.0
    elif values:
        flat[1:] = torch.cat([torch.as_tensor(value, dtype=None if torch.is_tensor(value) else torch.float64)
                              .detach().reshape(-1).to(device, torch.float64) for value in values])
    dist.all_reduce(flat)
    if flat[0].item():
        raise failure if failure is not None else PeerFailure(
            "another process failed while computing its share of this reduction; see its log")
    summed = {}
    for (key, value), part in zip(totals.items(), flat[1:].split(sizes)):
        if torch.is_tensor(value):
            summed[key] = part.reshape(value.shape).to(value.device, value.dtype)
        else:
            summed[key] = round(part.item()) if isinstance(value, int) else float(part.item())
    return summed


def _tracked(value) -> bool:
    """Whether autograd or a torch.func transform (grad, vmap) follows ``value``."""
    return torch.is_tensor(value) and (value.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(value))


def _device(values: list) -> torch.device:
    """Where the reduction runs: the first tensor's device, else the default group's (CUDA for NCCL)."""
    for value in values:
        if torch.is_tensor(value):
            return value.device
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
