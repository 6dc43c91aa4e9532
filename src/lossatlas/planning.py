"""What a benchmark will cost before it runs (``lossatlas run CONFIG --plan``): each stage's job
count, estimated time and peak memory on this machine, and the total; nothing is written.

The estimate is a projection from measurements, as ``benchmarks/perf`` projects the paper scale:
every job of the flat list ``harness.jobs`` runs samplers and an analyzer, and each declares its
work as counts of steps (``work(subject) -> {unit: count}``, next to ``memory(subject)``). A
unit names one measured step:

    ("loss",)                   the loss over the evaluation data
    ("gradient",)               the loss and its gradient over the evaluation data
    ("gradients", rows)         one ``subject.grads`` call at ``rows`` points
    ("product", curvature)      one Hessian- (GGN-, empirical Fisher-) vector product
    ("points", recompute_bn)    one point of ``evaluate_many`` (a vmapped chunk's share)
    ("evaluate", split)         ``subject.evaluate`` on a split
    ("epoch", recipe, runs)     one training epoch of ``recipe``, ``runs`` runs trained together
    ("timed", name, fn)         a step of the declarer's own (``fn()``, timed once per name)
    ("job",), ("sample",)       the bookkeeping of a job (the store's checks, its result written)
                                and of a sample it produces (header and part written, read back):
                                counted for each, timed by running an analyzer and a sampler that
                                compute nothing into a store held in memory

Each unit is timed once per subject, on the subject at its initialisation and on the device the run
will use (an epoch from its first steps times its batch count; L-BFGS from its first iterations),
and multiplied by the counts; what a unit's first call pays once (imports, tracing) goes to the
stage that first needs it, and building and releasing each subject to its first and last stage, as
in the run. A sample several jobs share (the paths of the barcode and the per-minimum bars) is
counted once, as the store computes it once. Counts that depend on convergence (Lanczos restarts, a
string's flow, early-stopping ascents) are declared at typical or largest values, so the estimate is
a forecast, not a bound. Left out: the report drawn after the jobs, and work a store already holds
(a resumed run is shorter). Peak memory is what ``memory(subject)`` declares (``lossatlas.memory``),
times its allocator slack.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from . import devices
from . import memory as memory_module
from .analyzer import Analyzer, diagnostic
from .memory import GiB, Memory
from .params import Interval, param
from .samplers.points import Point
from .sampling import Sampler
from .store import Minimum, Part

_BUDGET = 0.1  # seconds of repeated measurement per unit, after the first (warm-up) call
LONG = 5.0  # a first call at least this long is measured once: warm-up is then a small part of it


@dataclass
class Stage:
    """The jobs of one kind: ``count`` jobs, their ``steps`` (unit -> count, summed), ``seconds``
    and the largest ``memory`` one of them declares."""

    name: str
    count: int = 0
    seconds: float = 0.0
    memory: Memory = field(default_factory=Memory)
    steps: Counter = field(default_factory=Counter)
    declared: bool = True  # False where an analyzer declares no steps (counted as one gradient)


@dataclass
class Estimate:
    """A benchmark's plan: its stages in the order the run reaches them, and the device measured on."""

    name: str
    device: str
    stages: list[Stage]
    measuring_s: float = 0.0

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def peak(self) -> Memory:
        """The largest stage's peak: one job runs at a time."""
        return max((stage.memory for stage in self.stages), key=lambda m: m.total, default=Memory())

    def table(self) -> str:
        """The plan as plain text: one row per stage, then the total."""
        rows = [(stage.name, str(stage.count), duration(stage.seconds), _bytes(stage.memory, self.device),
                 _work(stage)) for stage in self.stages]
        rows.append(("total", str(sum(stage.count for stage in self.stages)), duration(self.seconds),
                     _bytes(self.peak, self.device), ""))
        header = ("stage", "jobs", "est. time", "peak memory", "work (all jobs)")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        lines = []
        for row in [header, *rows]:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:4], widths[1:])]
            lines.append("  ".join(cells + [row[4]]).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        return "\n".join(lines)


def estimate(plan) -> Estimate:
    """The plan of ``plan`` (a ``harness.Plan``) on this machine: every subject is built (and its
    methods checked, as ``harness.check_subjects`` does), its units measured, and released."""
    from . import harness

    start = time.perf_counter()
    stages: dict[str, Stage] = {}
    todo = harness.jobs(plan)
    for index, params in enumerate(plan.subjects):
        built = time.perf_counter()
        subject, recipe = harness.build_subject(plan, params)
        built = time.perf_counter() - built  # the run builds it too, when its first job starts
        probe = Probe(subject, len(plan.seeds))
        seen: set[str] = set()  # the samples this subject's jobs have produced so far
        for job in (job for job in todo if job.subject == index):
            name = "minima" if job.label is None else job.label + (f" [{job.setting}]" if job.setting else "")
            stage = stages.setdefault(name, Stage(name))
            steps, need, declared = _job(plan, job, subject, recipe, seen)
            stage.count += 1
            stage.steps += steps
            stage.seconds += built + sum(probe.seconds(unit) * count for unit, count in steps.items() if count)
            stage.seconds += probe.warmup()
            stage.memory = max(stage.memory, need, key=lambda m: m.total)
            stage.declared &= declared
            built = 0.0
        for job in _audit_jobs(plan, index, subject):
            stage = stages.setdefault("invariance audit", Stage("invariance audit"))
            steps, need, declared = _job(plan, job, subject, recipe, set())  # transformed minima: samples anew
            stage.count += 1
            stage.steps += steps
            stage.seconds += sum(probe.seconds(unit) * count for unit, count in steps.items() if count)
            stage.memory = max(stage.memory, need, key=lambda m: m.total)
            stage.declared &= declared
        del subject, probe
        released = time.perf_counter()
        harness._release()  # as the run releases it after its last job (a full garbage collection)
        stage.seconds += time.perf_counter() - released
    device = str(devices.resolve(plan.device))
    return Estimate(plan.record_name, device, list(stages.values()), time.perf_counter() - start)


def _audit_jobs(plan, index: int, subject) -> list:
    """The method runs the invariance audit (``[audit]``) makes on subject ``index``: each
    applicable transformation and the control (seeded methods only) reruns the audited methods at
    the first ``minima`` minima, those of scope "subject" once."""
    if plan.audit is None or not plan.audit.enabled:
        return []
    from . import harness, invariance
    from .audit import reruns, transforms

    reasons = invariance.applicable(subject)
    labels = list(plan.audit.methods or plan.methods)
    out = []
    for transform in transforms(plan.audit):
        if transform.kind != "control" and reasons.get(transform.kind) is not None:
            continue
        for label, _ in reruns(plan, transform, labels):
            at = range(min(plan.audit.minima, len(plan.seeds))) if plan.scope(label) == "minimum" else [None]
            out += [harness.Job(index, label, minimum) for minimum in at]
    return out


def _job(plan, job, subject, recipe, seen: set[str]) -> tuple[Counter, Memory, bool]:
    """One job's steps (its own, and its samples' that earlier jobs did not produce), its declared
    peak memory, and whether its analyzer declares its work."""
    from . import harness
    from .samplers import TrainedMinima

    minima = len(plan.seeds)
    if job.label is None:  # what harness.execute asks train_minima for
        request = TrainedMinima(recipe=recipe, seeds=tuple(plan.seeds),
                                record_trajectory=harness._needs_trajectory(plan))
        steps, need, declared = _sample_steps(request, subject, seen, minima), request.memory(subject), True
    else:
        analyzer = plan.analyzer(job.label, job.setting, job.minimum)
        own = _hook(analyzer)
        steps = Counter(own(subject) if own is not None else {("gradient",): 1})
        for request in analyzer.requests(subject).values():
            steps += _sample_steps(request, subject, seen, minima)
        need, declared = analyzer.memory(subject), own is not None
    steps[("job",)] = 1
    return steps, need, declared


def report(found: Estimate) -> str:
    """The plan as ``lossatlas run --plan`` prints it: a title, the table, and a closing line with
    the total in seconds."""
    return (f"{found.name}: plan on {found.device} (per step measured on each subject; nothing written)\n"
            f"{found.table()}\n"
            f"{found.name}: about {duration(found.seconds)}"
            + (f" ({found.seconds:.0f} s)" if found.seconds >= 60 else "")
            + f" for the jobs from an empty store; the report after them is not included. Measured in "
            f"{found.measuring_s:.1f} s.")


def _sample_steps(request, subject, seen: set[str], minima: int) -> Counter:
    """The steps of ``request`` and its inputs that this subject's earlier jobs have not produced
    (a stored sample is computed once)."""
    request = _stored(request, minima)
    out = Counter()
    for dependency in request.inputs().values():
        out += _sample_steps(dependency, subject, seen, minima)
    key = repr(request)
    if isinstance(request, Sampler) and key not in seen:
        seen.add(key)
        out += Counter((_hook(request) or (lambda subject: {}))(subject))
        out[("sample",)] += 1
    return out


def _stored(request, minima: int):
    """``request`` as the run meets it: stored minima (its inputs' too) are at most the ``minima``
    the benchmark trains."""
    from .samplers import StoredMinima

    if isinstance(request, StoredMinima):
        return dataclasses.replace(request, n=min(request.n, minima))
    inputs = {name: _stored(dependency, minima) for name, dependency in request.inputs().items()}
    return dataclasses.replace(request, **inputs) if inputs else request


def _hook(declarer):
    """The ``work(subject)`` a sampler or analyzer declares, or None (a parameter named ``work`` is none)."""
    work = getattr(declarer, "work", None)
    return work if callable(work) else None


class Probe:
    """Seconds of one step of each unit on ``subject`` (whose run trains ``minima`` minima),
    measured on first use and kept. A unit's
    first call also pays what a process pays once (imports, vmap tracing, the allocator's first
    blocks): ``warmup()`` hands over what the calls since the last hand-over paid, so the stage
    that first needs a unit carries it, as in the run."""

    def __init__(self, subject, minima: int = 1):
        self.subject, self.minima = subject, max(1, minima)
        self.theta = subject.theta0.detach().clone()
        self.buffers = subject.buffers0.detach().clone()
        self._seconds: dict = {}
        self._warmup = 0.0

    def seconds(self, unit: tuple) -> float:
        key = unit[:2] if unit[0] == "timed" else unit
        if key not in self._seconds:
            # as the run measures (TF32 off); what a step prints (PHATE's notes) is not the plan's
            with devices.numerics("float32", self.subject.device), contextlib.redirect_stdout(io.StringIO()):
                steady, first = self._measure(unit)
            self._seconds[key] = steady
            self._warmup += max(0.0, first - steady)
        return self._seconds[key]

    def warmup(self) -> float:
        paid, self._warmup = self._warmup, 0.0
        return paid

    def _measure(self, unit: tuple) -> tuple[float, float]:
        subject, theta, buffers = self.subject, self.theta, self.buffers
        kind = unit[0]
        if kind == "loss":
            return self._timed(lambda: subject.loss(theta, buffers))
        if kind == "gradient":
            return self._timed(lambda: subject.loss_and_grad(theta, buffers))
        if kind == "gradients":
            thetas = self._near(unit[1])
            return self._timed(lambda: subject.grads(thetas, buffers))
        if kind == "product":
            from .hessian import HessianOperator

            operator = HessianOperator(subject, theta, buffers, unit[1])
            vector = np.random.default_rng(0).choice([-1.0, 1.0], size=subject.dim)
            return self._timed(lambda: operator(vector))
        if kind == "points":  # BatchNorm re-estimated: one point at a time, a pass over the training data each
            rows = 1 if unit[1] and subject.has_batchnorm else max(1, int(subject.chunk_size))
            thetas = self._near(rows)
            steady, first = self._timed(lambda: subject.evaluate_many(thetas, buffers, recompute_bn=unit[1]))
            return steady / rows, first - steady + steady / rows
        if kind == "evaluate":
            return self._timed(lambda: subject.evaluate(theta, buffers, split=unit[1]))
        if kind == "epoch":
            return epoch_seconds(subject, unit[1], unit[2])
        if kind == "timed":
            return self._timed(unit[2])
        if kind in ("job", "sample"):
            return self._bookkeeping(_Nothing if kind == "job" else _NoSample)
        raise ValueError(f"Unknown step {unit!r}; the steps lossatlas.planning measures are listed in its docstring.")

    def _bookkeeping(self, what) -> tuple[float, float]:
        """An analyzer computing nothing (``_Nothing``), or its sample alone (``_NoSample``), run
        into a store held in memory; a new seed every call, so that each call writes."""
        from .analysis import analyze
        from .sampling import obtain
        from .store import Store

        store, seeds = Store.memory(), iter(range(10**6))
        store.register(self.subject)
        theta, buffers = self.theta.cpu().numpy(), self.buffers.cpu().numpy()
        for index in range(self.minima):  # a job reads the stored minima: as many as the run trains
            store.write_minimum(self.subject.name, Minimum(index, theta, buffers, index, {}, {}))

        def step():
            if what is _Nothing:
                analyze(store, self.subject, _Nothing, progress=False, seed=next(seeds))
            else:
                obtain(store, self.subject, _NoSample(seed=next(seeds)), progress=False)

        try:
            return self._timed(step)
        finally:
            store.close()

    def _near(self, rows: int) -> torch.Tensor:
        """``rows`` distinct points near theta0 (a chunk of a grid or a line)."""
        noise = torch.randn(rows, self.subject.dim, generator=torch.Generator().manual_seed(0), dtype=self.theta.dtype)
        return self.theta + 1e-3 * noise.to(self.theta.device)

    def _timed(self, step) -> tuple[float, float]:
        return timed(step, self.subject.device)


@dataclass(frozen=True)
class _NoSample(Sampler):
    """A sample of one part that holds nothing: what the sampling driver costs beside the work."""

    kind = "planning-nothing"
    seed: int = param(0, Interval(int, 0))

    def tasks(self, subject, header):
        return [("000", None)]

    def run(self, subject, header, progress, task) -> Part:
        return Part({"zeros": np.zeros(64)})

    def assemble(self, subject, header, parts):
        return parts["000"].arrays


class _Nothing(Analyzer):
    """Computes nothing at a stored minimum: what ``analyze`` costs beside a method's work."""

    name = "planning-nothing"
    scope = "subject"
    metrics = {"nothing": diagnostic("0")}
    seed: int = param(0, Interval(int, 0))

    def requests(self, subject):
        return {"point": Point(at="minimum", minimum=0)}

    def compute(self, subject, samples):
        return {"nothing": 0.0}, {"zeros": np.zeros(64)}


def timed(step, device: torch.device, budget: float = _BUDGET) -> tuple[float, float]:
    """(steady, first) seconds of ``step()``: the first call, then the mean of the calls that fill
    ``budget`` seconds (one at least). A mean over a span, not the best of a few short calls: on a
    shared machine a short call fits in one time slice and misses the waits a run has. A first
    call longer than ``LONG`` is taken as both."""
    first = _once(step, device)
    if first >= LONG:
        return first, first
    calls, spent = 0, 0.0
    while not calls or spent < budget:
        spent += _once(step, device)
        calls += 1
    return spent / calls, first


def _once(step, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(subject, recipe, runs: int = 1) -> tuple[float, float]:
    """(steady, first) seconds of one training epoch of ``recipe`` for ``runs`` runs trained
    together (``lossatlas.training``, ``lossatlas.batched``): steps after the first (which makes the
    optimizer), times the epoch's batches; an L-BFGS step (max_iter iterations) from its
    first iterations, scaled."""
    from .batched import run_losses
    from .batchnorm import running_statistics_by_hand
    from .training import make_optimizer

    batches = sum(1 for _ in subject.train_batches(recipe, torch.Generator().manual_seed(0)))
    timing, scale = recipe, 1.0
    if recipe.optimizer == "lbfgs":
        iterations = min(recipe.max_iter, 5)
        timing, scale = dataclasses.replace(recipe, max_iter=iterations), recipe.max_iter / iterations
    start = subject.theta0.detach().clone()
    param = torch.nn.Parameter(start.expand(runs, -1).clone() if runs > 1 else start)
    state = subject.buffers0.detach().clone()
    state = state.expand(runs, -1).clone() if runs > 1 else state
    stream = _batches(subject, recipe, runs)
    made = []

    def step():
        if not made:  # the first step makes the optimizer: its first use imports torch's compiler (seconds)
            made.append(make_optimizer(timing, [param]))
        optimizer, batch = made[0], next(stream)
        if runs > 1:
            with running_statistics_by_hand(subject):
                optimizer.zero_grad()
                with devices.numerics(recipe.precision, subject.device):
                    losses = run_losses(subject, param, state, batch)
                losses.sum().backward()
                optimizer.step()
            return

        def closure():
            optimizer.zero_grad()
            with devices.numerics(recipe.precision, subject.device):
                value = subject.train_loss(param, state, batch[0])
            value.backward()
            return value

        float(optimizer.step(closure).detach())

    try:
        steady, first = timed(step, subject.device)
    except (RuntimeError, NotImplementedError, ValueError) as err:
        if runs == 1 or "out of memory" in str(err).lower():
            raise
        # a training loss vmap cannot batch: the run trains one at a time (batched.or_one_at_a_time)
        steady, first = epoch_seconds(subject, recipe, 1)
        return steady * runs, first - steady + steady * runs
    return steady * batches * scale, first - steady + steady * batches * scale


def _batches(subject, recipe, runs: int):
    """Batches as the training loop draws them (one per run, each from its own generator), epoch
    after epoch, without end."""
    epoch = 0
    while True:
        generators = [torch.Generator().manual_seed(1000 * epoch + run) for run in range(runs)]
        yield from zip(*(subject.train_batches(recipe, generator) for generator in generators))
        epoch += 1


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _bytes(need: Memory, device: str) -> str:
    def size(count: float) -> str:
        count *= memory_module.SLACK
        if count >= GiB / 10:
            return f"{count / GiB:.1f} GiB"
        return f"{count / 2**20:.0f} MiB" if count >= 2**20 else "<1 MiB"

    if device.startswith("cuda"):
        return f"{size(need.host)} + {size(need.device)} GPU"
    return size(need.total)


_NAMES = {"loss": "loss passes", "gradient": "gradients", "gradients": "batched gradients",
          "evaluate": "evaluations", "points": "points", "epoch": "epochs"}
_PRODUCTS = {"hessian": "HVPs", "ggn": "GGN products", "ef": "EF products"}


def _work(stage: Stage) -> str:
    """The stage's steps in words, the largest counts first."""
    words: Counter = Counter()
    for unit, count in stage.steps.items():
        kind = unit[0]
        if kind == "product":
            words[_PRODUCTS.get(unit[1], f"{unit[1]} products")] += count
        elif kind == "evaluate":
            words[f"{unit[1]} evaluations"] += count
        elif kind == "points":
            words["points" + (" (BatchNorm re-estimated)" if unit[1] else "")] += count
        elif kind == "epoch":
            words["epochs" + (f" ({unit[2]} runs at once)" if unit[2] > 1 else "")] += count
        elif kind == "timed":
            words[unit[1]] += count
        elif kind not in ("job", "sample"):
            words[_NAMES.get(kind, kind)] += count
    text = ", ".join(f"{_count(count)} {name}" for name, count in words.most_common(3))
    return text + ("" if stage.declared else " (steps not declared: one gradient counted)")


def _count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
