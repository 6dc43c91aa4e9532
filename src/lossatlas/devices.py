"""Where the work runs: one ``device`` per subject, from which every tensor of a computation follows.

``resolve`` turns a user's choice ("auto", "cpu", "cuda", "cuda:N") into a ``torch.device``;
"auto" takes the GPU when there is one. Random numbers are always drawn on the CPU with seeded
generators and then moved, so a seed gives the same directions, orders and augmentations on every
device. The store stays device-independent (CPU arrays); ``runtime`` is what a result records
about the device and the numerics it ran with.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve(spec: str | torch.device | None = "auto") -> torch.device:
    """The device for ``spec``; a GPU that is not there is a ConfigError, not a late CUDA error."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else spec
    if not isinstance(spec, str):
        raise ConfigError(f"device must be {CHOICES}; got {spec!r}.")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device must be {CHOICES}; got {spec!r}.") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device must be {CHOICES}; got {spec!r} (other accelerators are not supported yet).")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA GPU here (torch {torch.__version__}, "
                          f"CUDA build: {torch.version.cuda or 'no'}). Use device='cpu' or 'auto'.")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


def name(device: torch.device) -> str:
    """The device as a result records it, e.g. "cpu" or "cuda:0 (NVIDIA H200)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


PRECISIONS = ("float32", "tf32", "bf16")


@contextlib.contextmanager
def numerics(precision: str = "float32", device: torch.device | None = None):
    """The numerics of a block of work. "float32" (every landscape measurement: grids, path losses,
    Hessians, and training unless asked otherwise): TF32 off for CUDA matmuls and cuDNN
    convolutions, because saddles and eigenvalues are differences of nearby losses and TF32 keeps
    10 mantissa bits. "tf32": TF32 on (training, when a recipe asks). "bf16": autocast to bfloat16
    (training forward passes, when a recipe asks). The flags are restored afterwards; on a CPU only
    bf16 changes anything."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision == "bf16":
            with torch.autocast(device_type=(device or torch.device("cpu")).type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def runtime(device: torch.device, dtype: torch.dtype, precision: str = "float32") -> dict:
    """The device and numerics a result or minimum was computed with (its provenance besides package
    versions): the device's name, the subject's dtype and the ``numerics`` precision."""
    return {"device": name(device), "dtype": str(dtype).replace("torch.", ""), "precision": precision}
