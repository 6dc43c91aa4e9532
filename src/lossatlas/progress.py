"""Progress bars: shown for long work when asked, silenced by TQDM_DISABLE=1 (tests, CI logs).

Whether to show them is asked once, where the work starts (``analyze(progress=...)``), and reaches
bars deep inside a pure step (the Hessian's solvers) through ``shown``: a bar given no ``enabled``
follows the innermost ``shown`` around it (shown where none is).

On a terminal they redraw in place. Written to a file or a pipe (a batch job's log, ``nohup``),
carriage-return redraws pile up into one unreadable line, so there each bar writes a plain line
at most every ``LOG_INTERVAL`` seconds instead (what it does, how far, elapsed and remaining) and
one when it ends.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
import sys

from tqdm.auto import tqdm

_CURSOR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # ANSI cursor moves and line erases
LOG_INTERVAL = 30.0  # seconds between two lines of one bar in a log
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed} elapsed, {remaining} left{postfix}]"
_OPEN_LOG_FORMAT = "{desc}: {n_fmt} {unit} [{elapsed} elapsed, {rate_fmt}{postfix}]"  # no total: no "left"
_SHOWN = contextvars.ContextVar("lossatlas_progress_shown", default=True)


@contextlib.contextmanager
def shown(enabled: bool):
    """Bars opened inside without an ``enabled`` of their own are shown only if ``enabled``."""
    token = _SHOWN.set(bool(enabled))
    try:
        yield
    finally:
        _SHOWN.reset(token)


class _Lines:
    """A stream for tqdm that turns each redraw into one line, without the cursor moves it uses to
    stack nested bars, and drops the blank ones it writes to clear a bar."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for piece in _CURSOR.sub("", text).replace("\r", "\n").split("\n"):
            if piece.strip():
                self.stream.write(piece.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def bar(iterable=None, *, desc: str, enabled: bool | None = None, **kwargs):
    """A tqdm bar; ``enabled`` None: as the innermost ``shown`` says. A bar without a total (an
    iterative solver's products) logs its count and rate."""
    enabled = _SHOWN.get() if enabled is None else enabled
    silenced = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    kwargs.setdefault("leave", False)
    stream = kwargs.get("file") or sys.stderr
    if not _is_terminal(stream) and "notebook" not in tqdm.__module__:  # notebooks draw widgets
        kwargs.update(file=_Lines(stream), leave=True, mininterval=max(kwargs.get("mininterval", 0), LOG_INTERVAL),
                      bar_format=_LOG_FORMAT if _has_total(iterable, kwargs) else _OPEN_LOG_FORMAT,
                      dynamic_ncols=False)
    return tqdm(iterable, desc=desc, disable=(not enabled) or silenced, **kwargs)


def _has_total(iterable, kwargs) -> bool:
    if kwargs.get("total") is not None:
        return True
    try:
        return iterable is not None and len(iterable) >= 0
    except TypeError:  # a generator
        return False
