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
_FORECAST_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed} elapsed{postfix}]"
_FORECAST_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed} elapsed{postfix}]"
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


def bar(iterable=None, *, desc: str, enabled: bool | None = None, own_forecast: bool = False, **kwargs):
    """A tqdm bar; ``enabled`` None: as the innermost ``shown`` says. A bar without a total (an
    iterative solver's products) logs its count and rate. ``own_forecast``: the caller writes the
    time left into the postfix (``Forecast``), so tqdm's count-based guess is not shown beside it."""
    enabled = _SHOWN.get() if enabled is None else enabled
    if own_forecast:
        kwargs.setdefault("bar_format", _FORECAST_FORMAT)
    silenced = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    kwargs.setdefault("leave", False)
    stream = kwargs.get("file") or sys.stderr
    if not _is_terminal(stream) and "notebook" not in tqdm.__module__:  # notebooks draw widgets
        kwargs.update(file=_Lines(stream), leave=True, mininterval=max(kwargs.get("mininterval", 0), LOG_INTERVAL),
                      bar_format=_FORECAST_LOG_FORMAT if own_forecast else
                      _LOG_FORMAT if _has_total(iterable, kwargs) else _OPEN_LOG_FORMAT,
                      dynamic_ncols=False)
    return tqdm(iterable, desc=desc, disable=(not enabled) or silenced, **kwargs)


def _has_total(iterable, kwargs) -> bool:
    if kwargs.get("total") is not None:
        return True
    try:
        return iterable is not None and len(iterable) >= 0
    except TypeError:  # a generator
        return False


class Forecast:
    """The time left in a list of jobs of several kinds, from the jobs already run: a job takes what
    the jobs of its kind took on average (a method at another minimum, another subject's training),
    a kind not seen yet what an average job took. A count of jobs would mislead: one job trains
    every minimum of a subject, another draws one small grid."""

    def __init__(self, kinds: list):
        self.kinds, self.took = list(kinds), {}

    def done(self, index: int, seconds: float) -> None:
        self.took.setdefault(self.kinds[index], []).append(seconds)

    def left(self, after: int) -> float | None:
        """Seconds left once the jobs up to ``after`` (an index) are done; None before any ran."""
        if not self.took:
            return None
        mean = {kind: sum(t) / len(t) for kind, t in self.took.items()}
        overall = sum(sum(t) for t in self.took.values()) / sum(len(t) for t in self.took.values())
        return float(sum(mean.get(kind, overall) for kind in self.kinds[after + 1:]))

    def text(self, after: int) -> str:
        left = self.left(after)
        return "time left: estimated after the first job" if left is None else f"about {_minutes(left)} left"


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
