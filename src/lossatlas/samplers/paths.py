"""Low-loss paths between minima (Barannikov et al. 2025, §3.2; Garipov et al. 2018), endpoints fixed.

``string``: the paper's gradient flow on the path. A chain of images between the minima; each
step moves every interior image by the component of the gradient normal to the path (the
tangential part only reparameterizes it), then redistributes the images at equal arc length;
after the flow settles, a midpoint whose loss exceeds both neighbours by more than
``insert_tol`` (relative) is inserted as a new image and the flow continues (App. C). The
maximum along the path converges to the saddle height of the minimum-energy path. Needs full
gradients at every image: the method of choice for analytic functions and small models.

``polychain`` / ``bezier``: Garipov et al.'s curves. Bends start on the straight segment; each
step samples t ~ U(0, 1) and descends the (mini-batch) loss at the curve point, plus weight
decay. Scales to deep networks, but minimizes the *average* loss along the curve, not the
maximum: on landscapes with curved minimum-energy paths it overestimates the saddle. The
optimizer is SGD with momentum (Garipov et al.) or Adam; the rate is constant or follows
Garipov et al.'s schedule (full rate for half the epochs, then linear decay to 1% at 90%):
Barannikov et al. 2025 train the paths with the procedure that trained the minima (Adam for
their fully connected networks), and a decayed rate lets the curve settle instead of ending
on a mini-batch step.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from torch.func import vmap

from .. import memory
from ..batched import or_one_at_a_time, run_losses, running_statistics_by_hand, runs_at_once
from ..memory import Memory
from ..params import Instance, Interval, Options, check_known, param
from ..progress import bar as progress_bar
from ..provenance import digest
from ..sampling import Request, Sampler, obtain
from ..store import Part
from ..training import Recipe
from .minima import GivenMinima


# -- curves ------------------------------------------------------------------------------------
def curve_points(kind: str, start: torch.Tensor, bends: torch.Tensor, end: torch.Tensor,
                 t: torch.Tensor) -> torch.Tensor:
    """Points of a polygonal chain (``bends`` evenly spaced in t) or quadratic Bezier curve."""
    t = t.reshape(-1, 1).to(start.dtype)
    if kind == "bezier":
        return (1 - t) ** 2 * start + 2 * t * (1 - t) * bends[0] + t**2 * end
    nodes = torch.cat([start[None], bends, end[None]])
    position = t.squeeze(1) * (len(nodes) - 1)
    index = position.floor().clamp(max=len(nodes) - 2).long()
    fraction = (position - index).unsqueeze(1)
    return (1 - fraction) * nodes[index] + fraction * nodes[index + 1]


CURVE_OPTIMIZERS = ("sgd", "adam")
CURVE_SCHEDULES = ("constant", "garipov")


def garipov_factor(epoch: int, epochs: int) -> float:
    """Garipov et al. 2018's curve schedule (their ``learning_rate_schedule``): the full rate up to
    half the epochs, linear decay to 1% at 90%, then 1%."""
    t = epoch / max(epochs, 1)
    if t <= 0.5:
        return 1.0
    if t <= 0.9:
        return 1.0 - 0.99 * (t - 0.5) / 0.4
    return 0.01


def _curve_optimizer(bends, optimizer: str, schedule: str, epochs: int, lr: float, momentum: float,
                     weight_decay: float):
    """The curve's optimizer and its per-epoch schedule."""
    if optimizer == "adam":
        made = torch.optim.Adam([bends], lr=lr, weight_decay=weight_decay)
    else:
        made = torch.optim.SGD([bends], lr=lr, momentum=momentum, weight_decay=weight_decay)
    factor = (lambda epoch: garipov_factor(epoch, epochs)) if schedule == "garipov" else (lambda epoch: 1.0)
    return made, torch.optim.lr_scheduler.LambdaLR(made, factor)


def fit_curve(subject, start, end, kind: str = "polychain", n_bends: int = 1, epochs: int = 10, lr: float = 0.01,
              momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int | None = 128,
              steps_per_epoch: int = 100, seed: int = 0, progress: bool = True, optimizer: str = "sgd",
              schedule: str = "constant") -> torch.Tensor:
    """Garipov et al.'s curve training; returns the bends (n_bends, dim). A sampled point with a
    NaN/inf loss is skipped (no update): the curve's evaluation then reports it."""
    start, end = subject.as_theta(start), subject.as_theta(end)
    bends = torch.nn.Parameter(_initial_bends(kind, n_bends, start, end))
    optimizer, scheduler = _curve_optimizer(bends, optimizer, schedule, epochs, lr, momentum, weight_decay)
    recipe = Recipe(batch_size=batch_size, steps_per_epoch=steps_per_epoch, lr=lr, epochs=epochs)
    generator = torch.Generator().manual_seed(int(seed))
    buffers = subject.buffers0.clone()  # train-mode BatchNorm statistics are scratch: re-estimated later
    for _ in progress_bar(range(epochs), desc=f"{subject.name}: {kind}", enabled=progress):
        for batch in subject.train_batches(recipe, generator):
            t = torch.rand(1, generator=generator, dtype=start.dtype).to(start.device)
            optimizer.zero_grad()
            loss = subject.train_loss(curve_points(kind, start, bends, end, t)[0], buffers, batch)
            if not math.isfinite(float(loss.detach())):
                _count_skipped_step(optimizer, bends)  # as a curve trained among others counts it
                continue  # a NaN/inf point gives no direction: no step; the path's evaluation reports it
            loss.backward()
            optimizer.step()
        scheduler.step()
    return bends.detach()


def fit_curves(subject, starts, ends, kind: str = "polychain", n_bends: int = 1, epochs: int = 10, lr: float = 0.01,
               momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int | None = 128,
               steps_per_epoch: int = 100, seed: int = 0, progress: bool = True, optimizer: str = "sgd",
               schedule: str = "constant") -> torch.Tensor:
    """``fit_curve`` for the K pairs ``(starts[k], ends[k])`` trained together (``lossatlas.batched``);
    returns the bends (K, n_bends, dim), equal to ``fit_curve`` pair by pair up to rounding. All
    bends are one leaf stepped by one optimizer (SGD and Adam act elementwise); each curve draws its
    batches and its t from its own generator seeded ``seed``, in the order ``fit_curve`` draws them,
    and a curve whose sampled point has a non-finite loss keeps its bends and optimizer state for
    that step (Adam's step count is shared: its bias correction then runs one step ahead)."""
    starts, ends = subject.as_thetas(starts), subject.as_thetas(ends)
    count = len(starts)
    bends = torch.nn.Parameter(_initial_bends(kind, n_bends, starts[:, None], ends[:, None]))
    optimizer, scheduler = _curve_optimizer(bends, optimizer, schedule, epochs, lr, momentum, weight_decay)
    recipe = Recipe(batch_size=batch_size, steps_per_epoch=steps_per_epoch, lr=lr, epochs=epochs)
    generators = [torch.Generator().manual_seed(int(seed)) for _ in range(count)]
    buffers = subject.buffers0.expand(count, -1).clone()  # scratch, as in fit_curve
    point = vmap(lambda start, bend, end, t: curve_points(kind, start, bend, end, t)[0])
    with running_statistics_by_hand(subject):
        for _ in progress_bar(range(epochs), desc=f"{subject.name}: {count} {kind} curves", enabled=progress):
            for steps in zip(*(subject.train_batches(recipe, generator) for generator in generators)):
                t = torch.cat([torch.rand(1, generator=g, dtype=starts.dtype) for g in generators]).to(starts.device)
                optimizer.zero_grad()
                losses = run_losses(subject, point(starts, bends, ends, t), buffers, steps)
                finite = torch.isfinite(losses.detach())[:, None, None]  # no host sync: masked below
                kept_bends, kept_state = bends.detach().clone(), _state_copy(optimizer, bends)
                losses.sum().backward()
                optimizer.step()
                with torch.no_grad():
                    bends.copy_(torch.where(finite, bends, kept_bends))
                    for key, kept in kept_state.items():
                        buffer = optimizer.state[bends][key]
                        buffer.copy_(torch.where(finite, buffer, kept))
            scheduler.step()
    return bends.detach()


def _initial_bends(kind: str, n_bends: int, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Bends evenly spaced on the straight segment (one for a Bezier curve); ``start``/``end`` may
    carry leading batch dimensions, as (K, 1, dim)."""
    n_bends = 1 if kind == "bezier" else n_bends
    t0 = torch.arange(1, n_bends + 1, dtype=start.dtype, device=start.device)[:, None] / (n_bends + 1)
    return (1 - t0) * start + t0 * end


def _count_skipped_step(optimizer, param) -> None:
    """Adam's step count advances over a skipped step (moments unchanged), as it does for a curve
    of ``fit_curves`` whose point was non-finite while the others stepped: its bias correction
    then matches, so a curve comes out the same trained alone or together."""
    if not isinstance(optimizer, torch.optim.Adam):
        return
    state = optimizer.state[param]
    if not state:  # Adam's own initial state (its step count is a float32 tensor on the CPU)
        state.update(step=torch.tensor(0.0, dtype=torch.float32), exp_avg=torch.zeros_like(param),
                     exp_avg_sq=torch.zeros_like(param))
    state["step"] += 1


def _state_copy(optimizer, param) -> dict[str, torch.Tensor]:
    """Copies of the optimizer's per-element state of ``param`` (SGD's momentum buffer, Adam's two
    moments); zeros before the first step, which is what the first step starts from (SGD's first
    step sets the buffer to the gradient, as 0.9 x 0 + gradient does -- exact because dampening is
    0 here). Empty for SGD without momentum."""
    if isinstance(optimizer, torch.optim.Adam):
        keys = ("exp_avg", "exp_avg_sq")
    else:
        keys = ("momentum_buffer",) if optimizer.defaults["momentum"] else ()
    state = optimizer.state.get(param, {})
    return {key: state[key].clone() if key in state else torch.zeros_like(param) for key in keys}


# -- the string method ---------------------------------------------------------------------------
def redistribute(images: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` points at equal arc length along the polyline through ``images``."""
    lengths = (images[1:] - images[:-1]).norm(dim=1)
    arc = torch.cat([torch.zeros(1, dtype=images.dtype, device=images.device), torch.cumsum(lengths, 0)])
    if float(arc[-1]) == 0:
        return images[:1].repeat(count, 1)
    targets = torch.linspace(0, float(arc[-1]), count, dtype=images.dtype, device=images.device)
    index = torch.searchsorted(arc, targets, right=True).clamp(1, len(images) - 1) - 1
    fraction = ((targets - arc[index]) / lengths[index].clamp_min(1e-300)).clamp(0, 1).unsqueeze(1)
    return (1 - fraction) * images[index] + fraction * images[index + 1]


MAX_IMAGES = 81  # the most images a string grows to by inserting midpoints


def string_path(subject, start, end, n_images: int = 21, steps: int = 2000, lr: float = 0.01,
                max_images: int = MAX_IMAGES, insert_tol: float = 1e-3, tol: float = 1e-7,
                progress: bool = True, perturbation: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Images (n, dim) of the optimized string from ``start`` to ``end``; see the module docstring.

    ``perturbation``: the initial string is the straight line bent by ``perturbation`` x its
    length, along a seeded random direction normal to it, with profile sin(pi t) (endpoints
    fixed). On a line that is a symmetry axis of the landscape the normal gradient vanishes and
    an unbent string never leaves it: it would report the maximum on the line, not the saddle."""
    start, end = subject.as_theta(start), subject.as_theta(end)
    t = torch.linspace(0, 1, n_images, dtype=start.dtype, device=start.device)[:, None]
    images = (1 - t) * start + t * end + torch.sin(math.pi * t) * _normal_offset(start, end, perturbation, seed)
    scale = float((end - start).norm()) / (n_images - 1)  # no image moves more than its spacing per step
    previous = math.inf
    for step in progress_bar(range(steps), desc=f"{subject.name}: string", enabled=progress):
        grads = subject.grads(images[1:-1])
        tangent = images[2:] - images[:-2]
        tangent = tangent / tangent.norm(dim=1, keepdim=True).clamp_min(1e-300)
        normal = grads - (grads * tangent).sum(dim=1, keepdim=True) * tangent
        move = lr * normal
        too_far = move.norm(dim=1, keepdim=True) / max(scale, 1e-300)
        images[1:-1] -= move / too_far.clamp_min(1.0)
        images = redistribute(images, len(images))
        if step % 50 == 49:
            height = float(subject.losses(images).max())
            if abs(previous - height) <= tol * max(1.0, abs(height)):
                images, inserted = _insert_midpoints(subject, images, insert_tol, max_images)
                if not inserted:
                    break
            previous = height
    return images


def _normal_offset(start: torch.Tensor, end: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """A seeded random vector normal to ``end - start``, of length ``size`` x |end - start|."""
    line = end - start
    length = float(line.norm())
    if size == 0 or length == 0 or len(line) < 2:
        return torch.zeros_like(start)
    direction = torch.randn(len(line), generator=torch.Generator().manual_seed(int(seed)), dtype=start.dtype)
    direction = direction.to(start.device)
    direction -= (direction @ line) / length**2 * line
    return size * length * direction / direction.norm().clamp_min(1e-300)


def _insert_midpoints(subject, images: torch.Tensor, insert_tol: float, max_images: int):
    """Insert midpoints whose loss is above both neighbours: the path is poorly resolved there."""
    middle = 0.5 * (images[1:] + images[:-1])
    ends = subject.losses(images)
    mids = subject.losses(middle)
    bad = mids > np.maximum(ends[1:], ends[:-1]) + insert_tol * max(1.0, float(np.abs(ends).max()))
    if not bad.any() or len(images) + int(bad.sum()) > max_images:
        return images, False
    rows = []
    for i in range(len(images) - 1):
        rows.append(images[i])
        if bad[i]:
            rows.append(middle[i])
    rows.append(images[-1])
    return torch.stack(rows), True


# -- the sampler -------------------------------------------------------------------------------
PATH_KINDS = ("string", "polychain", "bezier")


@dataclass(frozen=True)
class Paths(Sampler):
    """An optimized path and the straight line between every pair of ``minima`` (sorted by loss
    first), each pair one part, evaluated on the full evaluation set with BatchNorm statistics
    re-estimated at every point (Garipov's update_bn), endpoints included. Data: ``pairs``,
    ``path_max`` and ``linear_max`` (K, K), ``path_t`` / ``path_losses`` (one row per pair, NaN
    after ``path_lengths``), ``vertex_losses`` (the minima measured as the path points are),
    ``minima`` and ``minima_losses``."""

    kind = "paths"
    minima: Request = param(None, Instance(Request), "the minima to join (any minima request)")
    path_kind: str = param("string", Options(PATH_KINDS))
    n_images: int = param(21, Interval(int, 3))
    string_steps: int = param(2000, Interval(int, 1))
    string_lr: float = param(0.01, Interval(float, 0, None, closed="neither"))
    string_perturbation: float = param(0.1, Interval(float, 0), "initial bend of the string, relative to its "
                                       "length, along a seeded normal direction: leaves symmetry lines")
    bends: int = param(1, Interval(int, 1))
    curve_epochs: int = param(10, Interval(int, 1))
    curve_lr: float = param(0.01, Interval(float, 0, None, closed="neither"))
    curve_optimizer: str = param("sgd", Options(CURVE_OPTIMIZERS), "sgd (with momentum 0.9) or adam")
    curve_schedule: str = param("constant", Options(CURVE_SCHEDULES),
                                "constant, or garipov: decays to 1% over the second half of the epochs")
    weight_decay: float = param(0.0, Interval(float, 0))
    batch_size: int = param(128, Interval(int, 1))
    n_eval: int = param(61, Interval(int, 3))
    seed: int = param(0, Interval(int, 0))

    def own_config(self) -> dict:
        config = super().own_config()
        for name, default in (("curve_optimizer", "sgd"), ("curve_schedule", "constant")):
            if config[name] == default:  # the defaults stay out: stored paths keep their keys
                del config[name]
        return config

    def config(self, inputs):
        minima = inputs["minima"]["minima"]
        return {**self.own_config(), "minima_sha1": digest(minima), "n_minima": len(minima)}

    def memory(self, subject) -> Memory:
        """The minima in float64 (read, converted, sorted) and on the device; every pair's stored
        points read back together (``assemble``: a string's images, up to ``MAX_IMAGES``, or a
        curve's bends). One pair at a time on the device: the string's images, their gradients and
        the tangents, normals, moves and ``redistribute``'s gathers of a step (about 12 image-sized
        vectors, and a gradient's activations per image), or a curve's training (bends, gradient,
        optimizer state, the kept copies, the curve point, a batch) times the curves trained
        together (``group_size``); then the n_eval points made and evaluated, and the straight line
        (5 n_eval vectors), counted on top: the allocator keeps what training freed (measured)."""
        k = _count(self.minima)
        size = memory.itemsize(subject)
        if self.path_kind == "string":
            images = max(self.n_images, MAX_IMAGES)
            work = Memory(device=memory.vectors(subject, 12 * images, size) + images * memory.batch_bytes(subject))
        else:
            images = 1 if self.path_kind == "bezier" else self.bends
            states = 2 if self.curve_optimizer == "adam" else 1
            curve = memory.training(subject, self._curve_recipe()).device + \
                memory.vectors(subject, (2 + 2 * states) * images + 6, size)
            work = Memory(device=self.group_size(subject, max(1, k * (k - 1) // 2)) * curve, lower="n_minima")
        evaluation = Memory(device=memory.vectors(subject, 5 * self.n_eval, size), lower="n_eval") + \
            memory.evaluation(subject, self.n_eval)
        held = Memory(host=memory.vectors(subject, 3 * k) + memory.vectors(subject, k * (k - 1) // 2 * images, size),
                      device=memory.vectors(subject, 2 * k, size), lower="n_minima")
        return held + work + evaluation + super().memory(subject)

    def work(self, subject) -> dict:
        """Its work (``lossatlas.planning``): the minima's losses; per pair a string's flow (at most
        string_steps batched gradients of its images; it stops once settled) or a curve's epochs
        (``group_size`` curves trained at once); then per pair its points and the straight line's
        n_eval, BatchNorm re-estimated at each."""
        k = _count(self.minima)
        pairs = k * (k - 1) // 2
        out = {("points", False): k}
        if self.path_kind == "string":
            out[("gradients", self.n_images - 2)] = pairs * self.string_steps
            points = 2 * self.n_images - 1 + self.n_eval  # images, their midpoints, n_eval at equal arc length
        else:
            together = self.group_size(subject, max(pairs, 1))
            out[("epoch", self._curve_recipe(), together)] = -(-pairs // together) * self.curve_epochs
            points = self.n_eval
        out[("points", True)] = pairs * (points + self.n_eval)
        return out

    def prepare(self, subject, inputs):
        minima = np.asarray(inputs["minima"]["minima"], dtype=float)
        losses = subject.losses(minima)
        order = np.argsort(losses, kind="stable")
        return {"minima": minima[order], "minima_losses": losses[order]}

    def tasks(self, subject, header):
        k = len(header["minima"])
        return [(f"{i:03d}_{j:03d}", (i, j)) for i in range(k) for j in range(i + 1, k)]

    def run(self, subject, header, progress, task) -> Part:
        thetas = subject.as_thetas(header["minima"])
        return _part(_path_pair(subject, self._settings(), progress, (thetas[task[0]], thetas[task[1]])))

    def _settings(self) -> dict:
        return {**super().own_config(), "path": self.path_kind}  # every setting, defaults included

    def _curve_recipe(self) -> Recipe:
        return Recipe(batch_size=self.batch_size, lr=self.curve_lr, epochs=self.curve_epochs,
                      weight_decay=self.weight_decay)

    def group_size(self, subject, count):
        """Garipov curves train together where batching pays (``runs_at_once``; a curve failing
        under vmap sends later groups one at a time, without touching how minima train); the
        string method moves all its images in one batched gradient call already."""
        if self.path_kind == "string" or getattr(subject, "_curve_vmap_failed", False):
            return 1
        # per curve: bends, gradient, optimizer state (1 SGD / 2 Adam) and its kept copy, the kept bends
        # (n_bends vectors each), the point, ends
        states = 2 if self.curve_optimizer == "adam" else 1
        return runs_at_once(subject, self._curve_recipe(), count, vectors_per_run=(3 + 2 * states) * self.bends + 3)

    def run_many(self, subject, header, progress, tasks) -> list[Part]:
        """The pairs' curves trained together (``fit_curves``), each then evaluated as ``run`` does."""
        thetas = subject.as_thetas(header["minima"])
        config = self._settings()

        def batched():
            starts, ends = thetas[[i for i, _ in tasks]], thetas[[j for _, j in tasks]]
            bends = fit_curves(subject, starts, ends, self.path_kind, self.bends, self.curve_epochs, self.curve_lr,
                               weight_decay=self.weight_decay, batch_size=self.batch_size, seed=self.seed,
                               progress=progress, optimizer=self.curve_optimizer, schedule=self.curve_schedule)
            return [_part(_evaluate(subject, config, start, end, *_curve_evaluation(config, start, bend, end)))
                    for start, bend, end in zip(starts, bends, ends)]

        return or_one_at_a_time(subject, batched, lambda: super(Paths, self).run_many(subject, header, progress, tasks),
                                remember="_curve_vmap_failed")

    def assemble(self, subject, header, parts):
        k = len(header["minima"])
        tasks = self.tasks(subject, header)
        path_max, linear_max = np.full((k, k), np.nan), np.full((k, k), np.nan)
        vertex = np.array(header["minima_losses"], dtype=float) if k < 2 else np.full(k, np.nan)
        for name, (i, j) in tasks:
            part = parts[name]
            path_max[i, j] = path_max[j, i] = part.attrs["max_loss"]
            linear_max[i, j] = linear_max[j, i] = part.attrs["linear_max"]
            vertex[i], vertex[j] = part.arrays["losses"][0], part.arrays["losses"][-1]  # the endpoints
        curves = [parts[name].arrays for name, _ in tasks]
        lengths = np.array([len(c["t"]) for c in curves], dtype=np.int64)
        width = int(lengths.max()) if len(lengths) else 0
        pad = lambda key: np.array([np.pad(c[key], (0, width - len(c[key])), constant_values=np.nan)  # noqa: E731
                                    for c in curves]).reshape(len(curves), width)
        return {"pairs": np.array([pair for _, pair in tasks], dtype=np.int64).reshape(-1, 2), "path_max": path_max,
                "linear_max": linear_max, "path_t": pad("t"), "path_losses": pad("losses"), "path_lengths": lengths,
                "vertex_losses": vertex, "minima": header["minima"], "minima_losses": header["minima_losses"]}


def connect_minima(store, subject, minima: np.ndarray, progress: bool = True, **settings):
    """Paths between every pair of explicit ``minima`` (K, dim), as a Sample; resumable per pair.
    ``settings``: the fields of ``Paths`` (path_kind, n_images, ...)."""
    check_known("connect_minima", settings, [f.name for f in dataclasses.fields(Paths) if f.name != "minima"])
    request = Paths(minima=GivenMinima(vectors=tuple(map(tuple, np.asarray(minima, dtype=float)))), **settings)
    return obtain(store, subject, request, progress)


def _count(minima: Request) -> int:
    """How many minima a minima request gives at most (stored, found by descent, or given)."""
    for name in ("n", "n_starts"):
        if hasattr(minima, name):
            return int(getattr(minima, name))
    return len(getattr(minima, "vectors", ()))


def _part(found: dict[str, np.ndarray]) -> Part:
    heights = {"max_loss": float(np.max(found["losses"])), "linear_max": float(np.max(found["linear_losses"]))}
    return Part(found, heights)


def _path_pair(subject, config: dict, progress: bool, task) -> dict[str, np.ndarray]:
    """One pair's optimized path and straight line, evaluated (runs wherever the executor sends it)."""
    start, end = task
    return _evaluate(subject, config, start, end, *_optimize(subject, start, end, config, progress))


def _evaluate(subject, config: dict, start, end, points, t, shape) -> dict[str, np.ndarray]:
    """The path's points and the straight line, on the full evaluation set, BatchNorm re-estimated."""
    losses = subject.evaluate_many(points, recompute_bn=True)["loss"]
    line_t = torch.linspace(0, 1, config["n_eval"], dtype=start.dtype, device=start.device)
    line = subject.evaluate_many((1 - line_t[:, None]) * start + line_t[:, None] * end, recompute_bn=True)["loss"]
    return {"t": t, "losses": losses, "points": shape, "linear_t": line_t.cpu().numpy(), "linear_losses": line}


def _optimize(subject, start, end, config, progress):
    """The finished path: evaluation points, their t in [0, 1], and what defines it (string
    images or curve bends)."""
    if config["path"] == "string":
        images = string_path(subject, start, end, config["n_images"], config["string_steps"], config["string_lr"],
                             progress=False, perturbation=config["string_perturbation"], seed=config["seed"])
        # images, the midpoints between neighbours, and n_eval points at equal arc length
        middle = 0.5 * (images[1:] + images[:-1])
        lengths = (images[1:] - images[:-1]).norm(dim=1)
        arc = torch.cat([torch.zeros(1, dtype=images.dtype, device=images.device), torch.cumsum(lengths, 0)])
        total = arc[-1].clamp_min(1e-300)
        points = torch.cat([images, middle, redistribute(images, config["n_eval"])])
        even = torch.linspace(0, 1, config["n_eval"], dtype=images.dtype, device=images.device)
        t = torch.cat([arc / total, (arc[:-1] + lengths / 2) / total, even])
        order = torch.argsort(t, stable=True)
        return points[order], t[order].cpu().numpy(), images.cpu().numpy()
    bends = fit_curve(subject, start, end, config["path"], config["bends"], config["curve_epochs"], config["curve_lr"],
                      weight_decay=config["weight_decay"], batch_size=config["batch_size"], seed=config["seed"],
                      progress=progress, optimizer=config["curve_optimizer"], schedule=config["curve_schedule"])
    return _curve_evaluation(config, start, bends, end)


def _curve_evaluation(config, start, bends, end):
    """A fitted curve's n_eval evaluation points (endpoints exact), their t, and its bends."""
    t = torch.linspace(0, 1, config["n_eval"], dtype=start.dtype, device=start.device)
    points = curve_points(config["path"], start, bends, end, t)
    points[0], points[-1] = start, end
    return points, t.cpu().numpy(), bends.cpu().numpy()
