"""Running a benchmark: its plan expanded into one flat list of jobs, run by one loop.

A job trains the minima of a subject, or runs one method -- at one minimum or once per subject,
at its own parameters or at a ``[sensitivity]`` setting. Analyzers of scope "minimum" run at every
trained minimum; those of scope "subject" (the loss barcode, which joins all minima of a subject)
once per subject. ``execute`` runs the jobs in order, one progress step each, and after a
subject's last job writes the benchmark record (``lossatlas.record``: the plan and the key of every
result) to the store (``/benchmarks/<name>_<scale>``), so the report is rebuilt from the store alone
and a rerun resumes where a killed one stopped. Configs are read and checked by ``lossatlas.config``
(``load`` and ``plan`` are here too).
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from dataclasses import dataclass

import torch

from . import memory, problems
from .analysis import analyze
from .config import Plan, load, plan
from .errors import ConfigError, StoreError
from .progress import Forecast
from .progress import bar as progress_bar
from .record import Benchmark, Run
from .samplers import train_minima
from .store import _check_name

__all__ = ["Job", "Plan", "check_subjects", "execute", "jobs", "load", "plan"]
log = logging.getLogger("lossatlas.harness")


@dataclass(frozen=True)
class Job:
    """One step of a benchmark: train the minima of subject ``subject`` (an index into
    ``Plan.subjects``; ``label`` None), or run method ``label`` at ``minimum`` (None: once for the
    subject) with its own parameters or those of the ``[sensitivity]`` setting ``setting``."""

    subject: int
    label: str | None = None
    minimum: int | None = None
    setting: str | None = None

    def stage(self, name: str) -> str:
        """What the progress bar and the log call it, for the subject named ``name``."""
        if self.label is None:
            return f"{name} minima"
        setting = f" [{self.setting}]" if self.setting is not None else ""
        return f"{name} {self.label}{setting}" + (f" @ minimum {self.minimum}" if self.minimum is not None else "")


def jobs(plan: Plan) -> list[Job]:
    """Every step of ``plan`` in the order ``execute`` runs them: per subject its minima, every
    per-minimum method at every minimum, every per-subject method, then every sensitivity rerun."""
    minima = range(len(plan.seeds))
    out = []
    for index in range(len(plan.subjects)):
        out.append(Job(index))
        out += [Job(index, label, minimum) for minimum in minima for label in plan.methods
                if plan.scope(label) == "minimum"]
        out += [Job(index, label) for label in plan.methods if plan.scope(label) != "minimum"]
        for label, settings in plan.sensitivity.items():
            at = minima if plan.scope(label) == "minimum" else [None]
            out += [Job(index, label, minimum, setting) for setting in settings for minimum in at]
    return out


def check_subjects(plan: Plan) -> None:
    """Build every subject (a missing dataset fails here) and check every method against it, so
    what needs the subject (directions="axes" needs 2 parameters, the pyhessian backend a plain
    criterion, the memory a method needs) is rejected before any minimum is trained.

    One subject at a time, each released before the next is built: ``lossatlas run`` checks every
    config before any work, and subjects kept for the run would hold their data (on a GPU, memory
    that the later memory checks would read as taken) through all of it. So a subject is built
    twice -- here, and by ``execute`` when its first job starts -- and never held twice at once."""
    for params in plan.subjects:
        build_subject(plan, params)
        _release()


def build_subject(plan: Plan, params: dict) -> tuple:
    problem_params, recipe, suffix = plan.setup(params)
    subject = problems.build(plan.problem, device=plan.device, **problem_params)
    subject.name += suffix
    try:
        _check_name(subject.name, "subject")  # the store's rule, which the run meets only when it writes
    except StoreError as err:
        raise ConfigError(f"Problem {plan.problem!r} with {params}: {err}") from None
    _check_methods(plan, subject)
    return subject, recipe


def _release() -> None:
    """Return the memory of a subject just dropped: collected now (a model's reference cycles would
    keep it until the collector runs), and on a GPU handed back by torch's caching allocator, whose
    cached blocks the next memory check (free GPU memory) would otherwise count as taken."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _check_methods(plan: Plan, subject) -> None:
    for label in plan.methods:
        last = len(plan.seeds) - 1 if plan.scope(label) == "minimum" else None  # the run asks for every one
        try:
            analyzer = plan.analyzer(label, minimum=last)
            analyzer.check_subject(subject)
            for setting in [None, *plan.sensitivity.get(label, {})]:
                memory.check(plan.analyzer(label, setting, last), subject)  # refused now, not after hours
        except ConfigError as err:
            raise ConfigError(f"[methods.{label}] on {subject.name}: {err}") from err
        needed = max([r.minima_needed() for r in analyzer.requests(subject).values()], default=0)
        if needed > len(plan.seeds):
            raise ConfigError(f"[methods.{label}] on {subject.name} needs at least {needed} trained minima; the "
                              f"benchmark trains {len(plan.seeds)} (seeds {plan.seeds}). Add seeds.")


def execute(plan: Plan, store, progress: bool = True) -> Benchmark:
    """Run every job of ``plan`` (``jobs``); returns the benchmark record, which is also written to
    the store after each subject. A subject is built (and checked, as ``check_subjects`` does) when
    its first job starts and released after its last: one subject is held at a time. Independent
    work inside a job runs on the current executor (``lossatlas.executor``)."""
    todo = jobs(plan)
    record, runs = plan.to_record(), []
    subject = recipe = None
    overall = progress_bar(total=len(todo), desc=plan.record_name, enabled=progress, leave=True, position=0,
                           own_forecast=True)
    forecast = Forecast([(job.label, job.setting) for job in todo])
    for number, job in enumerate(todo):
        if subject is None:  # the subject's first job (a subject's jobs are consecutive)
            subject, recipe = build_subject(plan, plan.subjects[job.subject])
        stage = job.stage(subject.name)
        overall.set_postfix_str(f"{forecast.text(number - 1)}; {stage}")
        start = time.perf_counter()
        log.info("start %s", stage)
        if job.label is None:
            minima = train_minima(store, subject, recipe, plan.seeds, progress=progress,
                                  record_trajectory=_needs_trajectory(plan))
            runs = [Run(subject=subject.name, variant={key: plan.subjects[job.subject][key] for key in plan.variants},
                        seed=m.seed, minimum=m.index) for m in minima]
            took = sum(m.wall_time_s for m in minima)
        else:
            result = analyze(store, subject, plan.analyzer(job.label, job.setting, job.minimum), progress)
            _file(job, result.key, runs)
            took = result.wall_time_s
        log.info("done  %s (%.1f s)", stage, time.perf_counter() - start)
        # what the job cost when it was computed: a result a resumed run reads back took no time now,
        # and would otherwise make the jobs still to run look free
        forecast.done(number, took if math.isfinite(took) else time.perf_counter() - start)
        overall.set_postfix_str(forecast.text(number))
        overall.update(1)
        if number + 1 == len(todo) or todo[number + 1].subject != job.subject:  # the subject's last job
            record = dataclasses.replace(record, runs=record.runs + tuple(runs))
            store.write_benchmark(plan.record_name, record.to_dict())
            subject = recipe = None
            _release()
    overall.close()
    return record


def _file(job: Job, key: str, runs: list[Run]) -> None:
    """A result's key into the runs it belongs to: one minimum's, or every run of the subject (the
    runs' tables fill while their subject's jobs run; the record takes them after its last one)."""
    for run in runs:
        if job.minimum is None or run.minimum == job.minimum:
            if job.setting is None:
                run.results[job.label] = key
            else:
                run.sensitivity.setdefault(job.label, {})[job.setting] = key


def _needs_trajectory(plan: Plan) -> bool:
    """Whether a method (or a sensitivity setting) grids along PCA directions of the training path."""
    settings = [m.params for m in plan.methods.values()]
    settings += [params for by_setting in plan.sensitivity.values() for params in by_setting.values()]
    return any(params.get("directions") == "pca" for params in settings)
