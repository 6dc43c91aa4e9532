"""What every section of the performance suite shares: timing, targets, Markdown, the machine."""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable


@dataclass
class Target:
    """One ratio the issue asks for: ``measured`` is ours against the other side (higher is better
    unless ``at_most``), ``missed_reason`` is recorded where the target is missed."""

    name: str
    measured: float
    target: float
    at_most: bool = False
    missed_reason: str = ""

    @property
    def met(self) -> bool:
        return self.measured <= self.target if self.at_most else self.measured >= self.target

    def row(self) -> str:
        bound = f"≤ {self.target:g}×" if self.at_most else f"≥ {self.target:g}×"
        verdict = "met" if self.met else f"**missed**: {self.missed_reason or 'no reason recorded'}"
        measured = f"{self.measured:.2f}×" if self.measured == self.measured else "not measured"
        return f"| {self.name} | {measured} | {bound} | {verdict} |"


@dataclass
class Section:
    """A section of results.md: a title, prose, tables (lists of Markdown rows), its targets."""

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        for paragraph in self.text:
            parts += [paragraph, ""]
        for table in self.tables:
            parts += [*table, ""]
        parts.append(f"_Section wall time: {self.seconds:.0f} s._")
        return "\n".join(parts) + "\n"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def interleaved_best(sides: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` wall seconds per side, the sides taking turns in every round so that a
    slow spell of a shared machine hits all of them alike."""
    best = {name: float("inf") for name in sides}
    for _ in range(repeat):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unavailable"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines() -> list[str]:
    import torch

    return [
        f"- CPU: {cpu_model()} ({platform.machine()}), {os.cpu_count()} cores; torch threads "
        f"{torch.get_num_threads()} (inter-op {torch.get_num_interop_threads()}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy {_version('numpy')}, "
        f"scipy {_version('scipy')}, gudhi {_version('gudhi')}, pyhessian {_version('pyhessian')}, "
        f"phate {_version('phate')}; {platform.platform()}",
    ]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
