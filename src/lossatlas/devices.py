"""Where the work runs: one ``device`` per subject, from which every tensor of a computation follows.

``resolve`` turns a user's choice ("auto", "cpu", "cuda", "cuda:N") into a ``torch.device``;
"auto" takes the GPU when there is one. Random numbers are always drawn on the CPU with seeded
generators and then moved, so a seed gives the same directions, orders and augmentations on every
device. The store stays device-independent (CPU arrays); ``runtime`` is what a result records
about the device and the numerics it ran with.
"""
from __future__ import annotations

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


def runtime(device: torch.device, dtype: torch.dtype) -> dict:
    """The device and numerics a result was computed with (its provenance besides package versions)."""
    found = {"device": name(device), "dtype": str(dtype).replace("torch.", "")}
    if device.type == "cuda":
        found["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        found["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    return found
