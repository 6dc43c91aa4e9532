"""Fingerprints: how a subject's config names the code it is made of.

A stored subject is compared with the one a rerun builds, in another process, so every name
here is the same text in every process (unlike ``repr``'s memory addresses). Data fingerprints
are ``lossatlas.inputs.describe``.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from torch import nn


def function_name(fn: Callable) -> str:
    """``module.qualname`` of a function (of its type for other callables)."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def function_identity(fn: Callable) -> str:
    """A function's name and a digest of its code: two lambdas differ, the same function gives the
    same text in every process."""
    name = function_name(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return name
    return f"{name} code:{hashlib.sha1(code.co_code + repr(code.co_consts).encode()).hexdigest()[:12]}"


def architecture_digest(model: nn.Module) -> str:
    """A digest of the model's printed structure (its modules and their settings, not its values)."""
    return hashlib.sha1(repr(model).encode()).hexdigest()[:16]
