"""Peak memory of a method on a subject, estimated before any work, and refused when it cannot fit.

A run that dies from memory after hours is worse than a refusal at the start. Every analyzer
declares ``memory(subject)``, and so does every sample request it makes: the bytes held at the
method's largest moment, counted from what its code allocates (how many parameter-sized vectors
live at once, recorded trajectories, path points) and from one measurement per subject of the
activations autograd keeps for a batch of its data. ``check`` compares the estimate with the
memory where it will live -- the machine's physical memory, and on a CUDA subject the GPU's free
memory for the tensors -- and raises a ConfigError that names the parameter to lower.
``lossatlas run`` (``--check`` included) and ``analyze`` call it before any work.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

from .errors import ConfigError

GiB = 2**30
FLOAT64 = 8
SLACK = 1.3  # the resident peak over the live bytes: freed blocks the allocator keeps and fragments (measured)


@dataclass(frozen=True)
class Memory:
    """Bytes at the peak: ``host`` in the machine's memory (numpy arrays, recorded runs),
    ``device`` on the subject's device (tensors; on a CPU the same memory), and ``lower``: the
    parameter(s) that shrink the estimate ("" where only a smaller model does)."""

    host: int = 0
    device: int = 0
    lower: str = ""

    @property
    def total(self) -> int:
        return self.host + self.device

    def __add__(self, other: "Memory") -> "Memory":
        """Both held at once; the hint of the larger part."""
        big, small = (self, other) if self.total >= other.total else (other, self)
        return Memory(self.host + other.host, self.device + other.device, big.lower or small.lower)


def vectors(subject, count: float, itemsize: int = FLOAT64) -> int:
    """Bytes of ``count`` parameter-sized vectors (float64 unless ``itemsize`` says otherwise)."""
    return int(count * subject.dim * itemsize)


def itemsize(subject) -> int:
    """Bytes per parameter in the subject's own dtype (its tensors, its recorded points)."""
    return subject.theta0.element_size()


_SAVED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def batch_bytes(subject) -> int:
    """What autograd saves for the loss on the first evaluation batch: the activations a gradient
    holds (``gradient`` and ``hvp`` count what more they keep)."""
    return _saved(subject)[0]


def forward_bytes(subject) -> int:
    """A forward pass without gradients on the first evaluation batch holds a layer's input and
    output and a skip connection: three times the largest activation autograd would save."""
    return 3 * _saved(subject)[1]


def _saved(subject) -> tuple[int, int]:
    """(total, largest) bytes of the tensors autograd saves for the loss on the first evaluation
    batch, measured once per subject with saved-tensor hooks."""
    import torch  # here: the analyzer contract imports this module, and ``import lossatlas`` stays light

    if subject in _SAVED:
        return _SAVED[subject]
    sizes = [0]

    def pack(tensor):
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    from .distributed import alone

    leaf = subject.theta0.detach().clone().requires_grad_(True)
    try:
        with alone():  # the first batch on every process
            term = next(iter(subject.loss_terms(subject.buffers0)), None)
    except NotImplementedError:  # no loss to evaluate (an imported surface)
        term = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        if term is not None:
            term(leaf)
    _SAVED[subject] = (sum(sizes), max(sizes))
    return _SAVED[subject]


def gradient(subject) -> Memory:
    """One gradient over the evaluation set: the point, the running sum, one batch's gradient per
    tensor and assembled flat, and the activations with their gradients (measured on an MLP: 12
    vectors where this counts 14)."""
    return Memory(device=vectors(subject, 5, itemsize(subject)) + 2 * batch_bytes(subject))


def hvp(subject) -> Memory:
    """One Hessian-vector product (``Subject.hvp`` through ``HessianOperator``): theta, the vector,
    the running sum, the leaf, the gradient per tensor and flat with its graph, the product per
    tensor and flat, in the subject's dtype, and four times a batch's activations (the forward,
    the graph of its gradient, the gradients of both); on a GPU also the float64 copy that goes to
    the host (measured on an MLP: 23 vectors where this counts 27)."""
    extra = vectors(subject, 1) if subject.device.type == "cuda" else 0
    return Memory(device=vectors(subject, 8, itemsize(subject)) + 4 * batch_bytes(subject) + extra)


def example_gradients(subject, chunk: int) -> Memory:
    """An empirical Fisher product (``evaluation.ef_vp``) on top of a Hessian-vector product's
    bytes: ``chunk`` per-example gradients and their product, in the subject's dtype, and the
    vmapped backward's activations, at most twice a batch's."""
    return Memory(device=vectors(subject, chunk + 1, itemsize(subject)) + 2 * batch_bytes(subject))


def evaluation(subject, points: int) -> Memory:
    """Evaluating ``points`` parameter vectors (``evaluate_many``): a forward pass each, a chunk of
    them at once where the subject vmaps."""
    chunk = subject.chunk_size if getattr(subject, "_vmap_ok", True) else 1
    return Memory(device=max(1, min(points, chunk)) * forward_bytes(subject))


def requested(analyzer, subject) -> Memory:
    """Every sample ``analyzer`` requests, held together while it computes."""
    return sum((request.memory(subject) for request in analyzer.requests(subject).values()), Memory())


def training(subject, recipe) -> Memory:
    """One run's training step (``batched.bytes_per_run``, measured: parameters, gradient, a batch
    and the activations autograd saves) and its optimizer's state: SGD's momentum, Adam's two
    moments, L-BFGS's 2 x history_size vectors and a few more."""
    from .batched import bytes_per_run

    state = {"sgd": 1, "adam": 2}.get(recipe.optimizer, 2 * recipe.history_size + 4)
    return Memory(device=bytes_per_run(subject, recipe, 2 + state))


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def gpu_free(device) -> int:
    import torch

    return int(torch.cuda.mem_get_info(device)[0])


def refuse(what: str, need: Memory, device) -> None:
    """A ConfigError when ``need`` (live bytes, times ``SLACK``) exceeds the memory where it lives:
    on a CPU host and device together against the physical memory; on a GPU the host part against
    the physical memory and the device part against the GPU's free memory."""
    host = physical_memory()
    if device.type == "cuda":
        places = [(need.host, host, "of host memory", "this machine has"),
                  (need.device, gpu_free(device), f"on {device}", "it has free")]
    else:
        places = [(need.total, host, "of memory", "this machine has")]
    for live, have, where, has in places:
        needed = SLACK * live
        if have is not None and needed > have:
            advice = (f"Lower {need.lower}." if need.lower else
                      "It grows with the parameter count alone: use a smaller model or a larger machine.")
            raise ConfigError(f"{what} needs about {needed / GiB:.1f} GiB {where} (estimated before any work); "
                              f"{has} {have / GiB:.1f} GiB. {advice}")


def check(analyzer, subject, device=None) -> None:
    """Refuse ``analyzer`` on ``subject`` when its declared peak cannot fit on ``device`` (a
    ``torch.device``; default: the subject's, which ``lossatlas run`` builds where the run will be)."""
    device = subject.device if device is None else device
    refuse(f"{analyzer.name} on {subject.name!r} ({subject.dim:,} parameters)", analyzer.memory(subject), device)
