"""Evaluation: a subject's loss over its evaluation data, the gradient, Hessian-vector products
(for model + criterion subjects also generalized Gauss-Newton and empirical Fisher products),
and the loss (with accuracy for classifiers) at many parameter vectors at once.

Every quantity here is a weighted sum over the evaluation data. The subject hands the data out
batch by batch, as ``(batch, weight)`` pairs whose weights sum to 1 (``eval_batches``), or as
pure functions of theta, one per batch (``loss_terms``, so torch.func can transform them);
``summed`` adds the per-batch contributions up, in batch order. These are the two seams for
scale: a streamed source (a Dataset or DataLoader read in a fixed order, one batch in memory at
a time) is a subject's ``eval_batches``, and a data-parallel evaluation reduces the totals of
``summed`` across processes: on several processes (torch.distributed) a subject with data hands
each its share of the batches, and every sum over them is all-reduced (``lossatlas.distributed``),
so every rank gets the same global value. A function's ``loss_terms`` hold no data: every rank
computes them whole, unreduced. A loss summed across processes is a value, not a differentiable
tensor (an all-reduce passes no gradient back): gradients and curvature products differentiate
each rank's share and reduce the products.

Many points at once (``evaluate_many``): chunks of ``chunk_size`` parameter vectors go through
the subject's vmapped metrics (``torch.func.vmap``) where its model allows it, else through a
loop of single evaluations; the first failure of vmap is remembered on the subject (``_vmap_ok``).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.func import vmap

from . import distributed, sources
from . import inputs as batches
from .progress import bar as progress_bar


def summed(pieces: Iterable[dict], start: dict, reduce: bool = True) -> dict:
    """``start`` plus every per-batch contribution of ``pieces`` (dicts of tensors or floats, each
    already weighted by its batch's share), added key by key in batch order, so the same data give
    the same bits. The one reduction over the evaluation data: with ``reduce`` (the pieces are this
    process's share of the batches) the totals are then summed across processes, and an error
    while summing is raised on every rank after that reduction, so no rank waits for ever in it.
    ``start`` fixes each total's dtype and shape, also on a rank without batches."""
    totals = dict(start)
    try:
        for piece in pieces:
            for key, value in piece.items():
                totals[key] = totals[key] + value
    except Exception as error:
        if not reduce:
            raise
        return distributed.all_reduce_sum(totals, error)  # raises, on every rank
    return distributed.all_reduce_sum(totals) if reduce else totals


def _sharded(subject) -> bool:
    """Whether ``loss_terms`` are this process's share of evaluation batches (a subject with data),
    not a function's whole loss on every process."""
    return subject.data_source != "none"


def loss_tensor(subject, theta: torch.Tensor, buffers: torch.Tensor) -> torch.Tensor:
    """The loss at ``theta`` with ``buffers`` as a tensor, differentiable where ``theta`` is (in one
    process; across processes a ConfigError, see ``distributed.all_reduce_sum``)."""
    return summed(({"loss": term(theta)} for term in subject.loss_terms(buffers)), {"loss": _zero(theta)},
                  _sharded(subject))["loss"]


def _zero(theta: torch.Tensor) -> torch.Tensor:
    """A loss total's start: a tensor in theta's dtype (0 + x is x exactly), so a rank without
    batches reduces a total of the same dtype as the others."""
    return torch.zeros((), dtype=theta.dtype, device=theta.device)


def loss(subject, theta, buffers=None) -> float:
    """The loss at ``theta`` over the whole evaluation set."""
    with torch.no_grad():
        return float(loss_tensor(subject, subject.as_theta(theta), subject.buffers_at(theta, buffers)))


def loss_and_grad(subject, theta, buffers=None) -> tuple[float, torch.Tensor]:
    """The loss and its gradient at ``theta`` from one pass over the evaluation set."""
    leaf = subject.as_theta(theta).clone().requires_grad_(True)
    buffers = subject.buffers_at(leaf.detach(), buffers)

    def pieces():
        for term in subject.loss_terms(buffers):
            part = term(leaf)
            (g,) = torch.autograd.grad(part, leaf) if part.requires_grad else (torch.zeros_like(leaf),)
            yield {"loss": part.detach(), "grad": g}

    totals = summed(pieces(), {"loss": _zero(leaf.detach()), "grad": torch.zeros_like(leaf)}, _sharded(subject))
    return float(totals["loss"]), totals["grad"]  # one device sync


def batch_loss_and_grad(subject, theta, buffers, batch) -> tuple[float, torch.Tensor]:
    """A ModuleSubject's mean loss on one ``batch`` alone (eval mode) and its gradient."""
    subject.model.eval()
    leaf = subject.as_theta(theta).clone().requires_grad_(True)
    loss = subject._batch_loss(leaf, subject.buffers_at(leaf.detach(), buffers), batch)
    (gradient,) = torch.autograd.grad(loss, leaf)
    return float(loss.detach()), gradient


def grads(subject, thetas, buffers=None) -> torch.Tensor:
    """Gradients at many parameter vectors (rows), one ``grad`` each."""
    return torch.stack([subject.grad(theta, buffers) for theta in thetas])


# How ``hvp`` computes its products, recorded with every result. benchmarks/perf (HVP variants)
# measured on 2 CPU cores: eager double backward 3.0x a gradient on ResNet-20 and 2.3x on a tiny
# GPT-2; forward-over-reverse 1.2-1.7x slower than it; a compiled double backward does not run
# (aot_autograd has no double backward); compiled forward-over-reverse ties on ResNet-20 and wins
# 1.4-2.9x on GPT-2 only after 21-230 s of compiling. No GPU has measured them yet.
HVP_METHOD = "double backward (eager)"


def hvp(subject, theta, vector, buffers=None) -> torch.Tensor:
    """The Hessian-vector product H(theta) v of the loss, by double backward per batch.

    On 2 CPU cores double backward measured 1.3-1.8x faster than torch.func's forward-over-reverse
    (jvp of grad) for ResNet-20 and the PINN, and it works for every model.
    """
    theta = subject.as_theta(theta)
    vector = subject.as_theta(vector)
    buffers = subject.buffers_at(theta, buffers)

    def pieces():
        for term in subject.loss_terms(buffers):
            leaf = theta.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(term(leaf), leaf, create_graph=True)
            if g.requires_grad:  # otherwise the loss is linear in theta: this term adds nothing
                yield {"hvp": torch.autograd.grad(g @ vector, leaf)[0]}

    return summed(pieces(), {"hvp": torch.zeros_like(theta)}, _sharded(subject))["hvp"]


# -- curvature beyond the Hessian: a model's outputs and per-example losses ------------------------
def ggn_vp(subject, theta, vector, buffers=None) -> torch.Tensor:
    """The generalized Gauss-Newton product G v (Schraudolph 2002) of a model + criterion subject.

    G = sum_b w_b J_b^T H_b J_b over the evaluation batches (weights w_b as in ``eval_batches``):
    J_b = d outputs / d theta on batch b, H_b the Hessian of the batch's mean loss as a function
    of the outputs (cross-entropy: diag(p) - p p^T per example over the batch size). It drops the
    Hessian's term with the outputs' own curvature, so it is PSD wherever the loss is convex in
    the outputs. Per batch: J v by double backward (a vjp differentiated in its cotangent), H (J v)
    by double backward through the loss alone, J^T (H J v) by one backward; generic in the loss.
    """
    theta = subject.as_theta(theta)
    vector = subject.as_theta(vector)
    buffers = subject.buffers_at(theta, buffers)
    subject.model.eval()

    def pieces():
        for (inputs, targets), weight in subject.eval_batches():
            leaf = theta.clone().requires_grad_(True)
            outputs = subject._forward(leaf, buffers, inputs)
            if not outputs.requires_grad:
                continue
            cotangent = torch.zeros_like(outputs, requires_grad=True)
            (pulled,) = torch.autograd.grad(outputs, leaf, cotangent, create_graph=True)
            (jv,) = torch.autograd.grad(pulled, cotangent, vector)
            free = outputs.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(subject.loss_fn(free, targets), free, create_graph=True)
            if g.requires_grad:  # otherwise the loss is linear in the outputs: this batch adds nothing
                (hjv,) = torch.autograd.grad(g, free, jv)
                yield {"ggn": weight * torch.autograd.grad(outputs, leaf, hjv)[0]}

    return summed(pieces(), {"ggn": torch.zeros_like(theta)})["ggn"]


EXAMPLE_CHUNK = 64  # per-example gradients held at once by ``ef_vp`` (memory.example_gradients)


def ef_vp(subject, theta, vector, buffers=None, chunk: int = EXAMPLE_CHUNK) -> torch.Tensor:
    """The empirical Fisher product F v = (1/N) sum_i g_i (g_i . v), g_i the gradient of example
    i's own loss (the criterion on that example alone).

    Not the Fisher: its outer products use the observed labels, not the model's, so it can differ
    from the Fisher and the Hessian in scale and direction (Kunstner et al. 2019); it is what
    "gradient outer product" preconditioners use. Per-example gradients come ``chunk`` examples at
    a time from torch.func.vmap of grad (a loop of single backwards where the model does not vmap),
    batch by batch in the evaluation order, each example weighted 1/N.
    """
    theta = subject.as_theta(theta)
    vector = subject.as_theta(vector)
    buffers = subject.buffers_at(theta, buffers)
    subject.model.eval()
    n = sources.count(subject.data)

    def pieces():
        for batch, _ in subject.eval_batches():
            for start in range(0, batches.count(batch[0]), chunk):
                g = example_grads(subject, theta, buffers, batches.take(batch, slice(start, start + chunk)))
                yield {"ef": (g.T @ (g @ vector)) / n}

    return summed(pieces(), {"ef": torch.zeros_like(theta)})["ef"]


def example_grads(subject, theta, buffers, batch) -> torch.Tensor:
    """The gradients of every example's own loss in ``batch`` (rows)."""
    inputs, targets = batch

    def example_loss(th, x, y):
        one = batches.take((x, y), None)  # a batch of one
        return subject.loss_fn(subject._forward(th, buffers, one[0]), one[1])

    try:
        return vmap(torch.func.grad(example_loss), in_dims=(None, 0, 0))(theta, inputs, targets)
    except (RuntimeError, NotImplementedError, ValueError):  # an op without a batching rule
        rows = []
        for i in range(batches.count(inputs)):
            leaf = theta.clone().requires_grad_(True)
            one = batches.take(batch, slice(i, i + 1))
            rows.append(torch.autograd.grad(subject.loss_fn(subject._forward(leaf, buffers, one[0]), one[1]), leaf)[0])
        return torch.stack(rows)


# -- a model's loss and accuracy over data ---------------------------------------------------------
def metrics(subject, theta: torch.Tensor, buffers: torch.Tensor, data) -> dict[str, float]:
    """A ModuleSubject's loss (and accuracy for classifiers) at ``theta`` over ``data``, in eval mode."""
    subject.model.eval()
    classification = subject.classification
    with torch.no_grad():
        totals = summed(_batch_metrics(subject, theta, buffers, data, classification),
                        {"loss": 0.0, "correct": 0.0, "labels": 0.0})
    found = {"loss": totals["loss"]}
    if classification:
        found["accuracy"] = totals["correct"] / totals["labels"]
    return found


def _hits(subject, predicted: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(right, counted): the predictions that match their labels, and the labels that count; a label
    the loss ignores (cross-entropy's ignore_index: padding) counts in neither, as in its mean."""
    ignored = subject._ignored_label()
    counted = targets != ignored if ignored is not None else torch.ones_like(targets, dtype=torch.bool)
    return (predicted == targets) & counted, counted


def _batch_metrics(subject, theta, buffers, data, classification: bool) -> Iterator[dict[str, float]]:
    for batch, weight in subject.eval_batches(data):
        if not classification:
            yield {"loss": weight * float(subject._batch_loss(theta, buffers, batch))}
            continue
        inputs, targets = batch
        outputs = subject._forward(theta, buffers, inputs)
        right, counted = _hits(subject, outputs.argmax(dim=1), targets)
        yield {"loss": weight * float(subject.loss_fn(outputs, targets)), "correct": float(right.sum()),
               "labels": float(counted.sum())}


def vmapped_metrics(subject, chunk: torch.Tensor, buffers: torch.Tensor) -> dict[str, torch.Tensor]:
    """``metrics`` over the evaluation set at every row of ``chunk``, as one vmapped computation
    per batch (run under no_grad)."""
    subject.model.eval()
    classification = subject.classification
    start = {"loss": torch.zeros(len(chunk), dtype=chunk.dtype, device=chunk.device),
             "correct": torch.zeros(len(chunk), dtype=torch.float64, device=chunk.device), "labels": 0.0}
    totals = summed(_vmapped_batch_metrics(subject, chunk, buffers, classification), start)
    found = {"loss": totals["loss"]}
    if classification:
        found["accuracy"] = totals["correct"] / totals["labels"]
    return found


def _vmapped_batch_metrics(subject, chunk, buffers, classification: bool) -> Iterator[dict[str, torch.Tensor]]:
    for batch, weight in subject.eval_batches():
        if not classification:
            yield {"loss": weight * vmap(lambda th, batch=batch: subject._batch_loss(th, buffers, batch))(chunk)}
            continue
        inputs, targets = batch
        outputs = vmap(lambda th, inputs=inputs: subject._forward(th, buffers, inputs))(chunk)
        right, counted = _hits(subject, outputs.argmax(dim=-1), targets)
        yield {"loss": weight * vmap(lambda out, targets=targets: subject.loss_fn(out, targets))(outputs),
               "correct": right.sum(dim=1).double(), "labels": float(counted.sum())}


# -- many parameter vectors --------------------------------------------------------------------------
def evaluate_many(subject, thetas, buffers=None, chunk_size: int | None = None, progress: bool = False,
                  recompute_bn: bool = False) -> dict[str, np.ndarray]:
    """Loss (and accuracy for classifiers) at many parameter vectors, all with the same ``buffers``,
    in chunks of ``chunk_size`` (default: the subject's); with ``recompute_bn`` (and BatchNorm in
    the model) each point gets its own re-estimated statistics instead. Float64 numpy arrays;
    NaN/inf pass through."""
    recompute_bn = recompute_bn and subject.has_batchnorm
    thetas = subject.as_thetas(thetas)
    size = chunk_size or subject.chunk_size
    out = {key: np.empty(len(thetas)) for key in subject._many_keys}
    starts = range(0, len(thetas), size)
    for start in progress_bar(starts, desc=f"{subject.name}: losses", enabled=progress):
        chunk = thetas[start : start + size]
        found = _recomputed_chunk(subject, chunk) if recompute_bn else _metrics_chunk(subject, chunk, buffers)
        for key, values in found.items():
            out[key][start : start + len(chunk)] = values
    return out


def _metrics_chunk(subject, chunk: torch.Tensor, buffers) -> dict[str, np.ndarray]:
    if subject._vmap_ok and not subject._recomputes_buffers:
        try:
            with torch.no_grad():
                found = subject._vmapped_metrics(chunk, subject.buffers_at(None, buffers))
            return {key: value.double().cpu().numpy() for key, value in found.items()}
        except (RuntimeError, NotImplementedError, ValueError):
            subject._vmap_ok = False  # data-dependent control flow or an op without a batching rule
    return _looped_chunk(subject, chunk, [buffers] * len(chunk))


def _recomputed_chunk(subject, chunk: torch.Tensor) -> dict[str, np.ndarray]:
    return _looped_chunk(subject, chunk, [subject.update_bn(theta) for theta in chunk])


def _looped_chunk(subject, chunk: torch.Tensor, buffers: list) -> dict[str, np.ndarray]:
    if subject.data_source == "stream":
        return _batch_major_chunk(subject, chunk, buffers)
    if subject._many_keys == ("loss",):  # evaluate() may add costly extras (a PINN's test error)
        return {"loss": np.array([subject.loss(theta, b) for theta, b in zip(chunk, buffers)])}
    rows = [subject.evaluate(theta, b) for theta, b in zip(chunk, buffers)]
    return {key: np.array([row[key] for row in rows]) for key in subject._many_keys}


def _batch_major_chunk(subject, chunk: torch.Tensor, buffers: list) -> dict[str, np.ndarray]:
    """The metrics of every point of ``chunk`` from one pass over streamed data: each batch is read
    once and evaluated at every point, so a grid does not read the data once per point. Each point's
    sum runs over the batches in the order ``loss`` uses, so the values are ``loss``'s."""
    subject.model.eval()
    classification = subject.classification
    buffers = [subject.buffers_at(theta, b) for theta, b in zip(chunk, buffers)]

    def pieces():
        for batch, weight in subject.eval_batches():
            losses, correct = [], []
            for theta, b in zip(chunk, buffers):
                if classification:
                    outputs = subject._forward(theta, b, batch[0])
                    losses.append(weight * subject.loss_fn(outputs, batch[1]))
                    right, counted = _hits(subject, outputs.argmax(dim=1), batch[1])
                    correct.append(right.sum().double())
                else:
                    losses.append(weight * subject._batch_loss(theta, b, batch))
            yield {"loss": torch.stack(losses),
                   **({"correct": torch.stack(correct), "labels": float(counted.sum())} if classification else {})}

    start = {"loss": torch.zeros(len(chunk), dtype=chunk.dtype, device=chunk.device)}
    if classification:
        start.update(correct=torch.zeros(len(chunk), dtype=torch.float64, device=chunk.device), labels=0.0)
    with torch.no_grad():
        totals = summed(pieces(), start)
    found = {"loss": totals["loss"].double().cpu().numpy()}
    if classification:
        found["accuracy"] = (totals["correct"] / totals["labels"]).cpu().numpy()
    extra = [key for key in subject._many_keys if key not in found]  # a subclass's extras (a PINN's test error)
    for key in extra:
        found[key] = np.array([subject.evaluate(theta, b)[key] for theta, b in zip(chunk, buffers)])
    return found
