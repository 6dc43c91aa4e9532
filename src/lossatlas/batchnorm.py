"""BatchNorm: running statistics re-estimated at a parameter vector, and kept by hand under vmap.

A subject holds BatchNorm running statistics in its flat buffer vector, never in its model, so a
statistic belongs to one parameter vector: ``update_bn`` re-estimates it there, and
``running_statistics_by_hand`` updates each batched run's own row while many runs train as one
vmapped computation (``lossatlas.batched``).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from . import distributed, layout
from . import inputs as batches


def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` (any dimension), in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def update_bn(subject, theta) -> torch.Tensor:
    """Re-estimate BatchNorm running statistics at ``theta`` with one pass over the subject's
    training data in train mode, each batch weighted by its size (Garipov et al. 2018,
    ``update_bn``). Returns the flat buffer vector; the subject is not changed.

    On several processes each reads its share of the batches (``eval_batches``); in train mode a
    batch's statistics depend on that batch alone, so the whole pass's average is the ranks' own
    cumulative averages weighted by the examples each saw, summed (``distributed``): every rank
    gets the statistics of the one-process pass (up to rounding; alone, the weight is exactly 1)."""
    theta = subject.as_theta(theta)
    modules = subject._bn_modules
    if not modules:
        return subject.buffers0.clone()
    buffers = subject.buffers0.clone()
    for name, tensor in layout.views(buffers, subject.buffer_layout).items():  # reset to a fresh estimate
        tensor.fill_(1.0 if name.endswith("running_var") else 0.0)
    momenta = [m.momentum for m in modules]
    subject.model.train()
    seen, failure = 0, None
    try:
        with torch.no_grad():
            for (inputs, _), _ in subject.eval_batches(subject.train_data):
                size = batches.count(inputs)
                for module in modules:  # a cumulative average: this batch's share of what was seen
                    module.momentum = size / (seen + size)
                subject._forward(theta, buffers, inputs)
                seen += size
    except Exception as error:  # raised below, on every rank, after the reduction it would have missed
        failure = error
    finally:
        for module, momentum in zip(modules, momenta):
            module.momentum = momentum
        subject.model.eval()
    total = distributed.all_reduce_sum({"seen": seen}, failure)["seen"]
    if not total:  # no batch anywhere (every label ignored): the fresh estimate, on every rank alike
        return buffers
    return distributed.all_reduce_sum({"buffers": buffers * (seen / total)})["buffers"]


@contextlib.contextmanager
def running_statistics_by_hand(subject):
    """BatchNorm's kernel does not update running statistics held in a vmapped tensor; so while
    runs are batched, each BatchNorm hands the kernel no running statistics (it normalizes by the
    batch, as in training anyway) and a pre-hook applies torch's update itself: running = (1 - m)
    running + m batch statistic, the variance unbiased."""
    def update(module, args):
        if not module.training:  # evaluations between epochs use the statistics, they do not update them
            return
        x = args[0].detach().to(module.running_mean.dtype)  # statistics in the buffers' dtype (bf16 autocast)
        dims = [0] + list(range(2, x.ndim))
        m = module.momentum
        module.running_mean.mul_(1 - m).add_(m * x.mean(dim=dims))
        module.running_var.mul_(1 - m).add_(m * x.var(dim=dims, correction=1))

    modules = getattr(subject, "_bn_modules", [])
    tracked = [m for m in modules if m.track_running_stats and m.running_mean is not None]
    handles = [m.register_forward_pre_hook(update) for m in tracked]
    for module in tracked:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module, handle in zip(tracked, handles):
            module.track_running_stats = True
            handle.remove()
