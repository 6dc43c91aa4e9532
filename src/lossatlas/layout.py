"""Flat vectors: a model's named tensors as one vector, and back.

A subject's parameters (and its floating buffers) are one flat vector; a *layout* says which
named tensor each slice of it is: ``(name, shape, numel)`` per tensor, in vector order.
"""
from __future__ import annotations

import torch

Layout = list[tuple[str, torch.Size, int]]
EMPTY = torch.empty(0)


def flatten(tensors: dict[str, torch.Tensor], layout: Layout | None) -> torch.Tensor:
    """The tensors of ``layout`` as one new detached vector (empty for no layout)."""
    if not layout:
        return EMPTY.clone()
    return torch.cat([tensors[name].detach().reshape(-1) for name, _, _ in layout]).clone()


def views(flat: torch.Tensor, layout: Layout | None) -> dict[str, torch.Tensor]:
    """The named tensors of ``layout`` as views of ``flat``: no copy, and differentiable (empty for
    no layout)."""
    if not layout:
        return {}
    pieces = torch.split(flat, [numel for _, _, numel in layout])
    return {name: piece.view(shape) for (name, shape, _), piece in zip(layout, pieces)}
