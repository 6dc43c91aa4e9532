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


def parse(spec: str | torch.device | None) -> torch.device | None:
    """Check how a device is written (None: "auto"), without asking whether it is there."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else spec
    if not isinstance(spec, str):
        raise ConfigError(f"device must be {CHOICES}; got {spec!r}.")
    if spec == "auto":
        return None
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device must be {CHOICES}; got {spec!r}.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be {CHOICES}; got {spec!r} (other accelerators are not supported yet).")
    return device


def resolve(spec: str | torch.device | None = "auto") -> torch.device:
    """The device for ``spec``; a GPU that is not there is a ConfigError, not a late CUDA error."""
    device = parse(spec)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return device
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
    saved = tf32_flags()
    on = precision == "tf32"
    _set_tf32(("tf32" if on else "ieee",) * 2 if _NEW_API else (on, on))
    try:
        if precision == "bf16":
            with torch.autocast(device_type=(device or torch.device("cpu")).type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        _set_tf32(saved)


# torch >= 2.9 sets TF32 through fp32_precision; reading the legacy allow_tf32 flags after the new
# API was used raises, so the new one is used wherever it exists
_NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(
    getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def tf32_flags() -> tuple:
    """(matmul, cuDNN convolution) TF32 settings, in whichever API this torch has."""
    if _NEW_API:
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32(flags: tuple) -> None:
    if _NEW_API:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = flags
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def runtime(device: torch.device, dtype: torch.dtype, precision: str = "float32") -> dict:
    """The device and numerics a result or minimum was computed with (its provenance besides package
    versions): the device's name, the subject's dtype and the ``numerics`` precision."""
    return {"device": name(device), "dtype": str(dtype).replace("torch.", ""), "precision": precision}
