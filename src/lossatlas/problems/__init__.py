"""Problems: model families with their data, each built into a Subject from plain config values.

``build(problem, **params)`` is what configs use; unknown problems or parameters are errors
that list the valid ones. The builders are also importable directly. Users' own problems: a
factory named ``"package.module:factory"`` in a config, or registered by a package under the
``lossatlas.problems`` entry-point group.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from .. import registry
from ..errors import ConfigError, LossatlasError
from ..registry import one_line
from ..params import check_known, from_annotation, validate
from ..subjects import ModuleSubject, Subject
from .analytic import himmelblau, quartic, three_hump_camel
from .data import MNIST_FOLDERS, cifar10, digits, download_cifar10, mnist
from .hf import hf_text
from .pinn import ConvectionPINN, pinn_convection
from .resnet import CifarResNet, resnet20
from .small import MLP, SmallCNN


def resnet(skip: bool = True, depth: int = 20, width: int = 1, dataset: str = "digits",
           data_root: str | None = None, n_train: int | None = None, eval_batch_size: int = 1000,
           bn: str = "fixed", name: str | None = None, device: str = "auto") -> ModuleSubject:
    """A CIFAR ResNet on ``dataset`` ("digits": offline, 1 channel; "cifar10": from data_root).

    The landscape is the cross-entropy over the (first ``n_train``) training images; the test
    split is the dataset's held-out set.
    """
    train, test = _dataset("resnet", dataset, data_root, n_train)
    with torch.random.fork_rng(devices=[]):  # theta0 (the "theta0" grid center) is the same every build
        torch.manual_seed(0)
        model = resnet20(skip=skip, depth=depth, width=width, in_channels=train[0].shape[1])
    config = {"problem": "resnet", "skip": skip, "depth": depth, "width": width, "dataset": dataset,
              "n_train": n_train}
    label = name or f"resnet{depth}{'' if width == 1 else f'x{width}'}_{'skip' if skip else 'noskip'}_{dataset}"
    return ModuleSubject(model, nn.CrossEntropyLoss(), train, name=label, eval_batch_size=eval_batch_size,
                         test_data=test, bn=bn, config=config, device=device)


def mlp(depth: int = 2, width: int = 32, dataset: str = "digits", data_root: str | None = None,
        n_train: int | None = None, eval_batch_size: int = 2000, name: str | None = None,
        device: str = "auto") -> ModuleSubject:
    """A fully connected ReLU network, ``depth`` hidden layers of ``width`` units (Barannikov et
    al. 2025 §4.1), on ``dataset``; cross-entropy over the training images."""
    train, test = _dataset("mlp", dataset, data_root, n_train)
    _positive("mlp", depth=depth, width=width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MLP(train[0][0].numel(), depth, width)
    config = {"problem": "mlp", "depth": depth, "width": width, "dataset": dataset, "n_train": n_train}
    return ModuleSubject(model, nn.CrossEntropyLoss(), train, name=name or f"mlp{depth}x{width}_{dataset}",
                         eval_batch_size=eval_batch_size, test_data=test, config=config, device=device)


def cnn(conv_layers: int = 1, channels: int = 16, batchnorm: bool = False, dataset: str = "digits",
        data_root: str | None = None, n_train: int | None = None, eval_batch_size: int = 2000, bn: str = "fixed",
        name: str | None = None, device: str = "auto") -> ModuleSubject:
    """A small CNN (Barannikov et al. 2025 §4.2): ``conv_layers`` convolutions of ``channels``
    channels, BatchNorm before the activation if ``batchnorm``, max-pooled to 2x2 before one
    linear layer."""
    train, test = _dataset("cnn", dataset, data_root, n_train)
    _positive("cnn", conv_layers=conv_layers, channels=channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SmallCNN(train[0].shape[1], conv_layers, channels, batchnorm)
    config = {"problem": "cnn", "conv_layers": conv_layers, "channels": channels, "batchnorm": batchnorm,
              "dataset": dataset, "n_train": n_train}
    label = name or f"cnn{conv_layers}x{channels}{'_bn' if batchnorm else ''}_{dataset}"
    return ModuleSubject(model, nn.CrossEntropyLoss(), train, name=label, eval_batch_size=eval_batch_size,
                         test_data=test, bn=bn, config=config, device=device)


def _dataset(problem: str, dataset: str, data_root: str | None, n_train: int | None):
    if dataset == "digits":
        train, test = digits()
    elif dataset == "cifar10":
        train, test = cifar10(data_root)
    elif dataset in MNIST_FOLDERS:
        train, test = mnist(data_root, dataset)
    else:
        raise ConfigError(f"Unknown dataset {dataset!r} for problem {problem!r}; valid: ['cifar10', 'digits', "
                          "'fmnist', 'mnist'].")
    if n_train is not None:
        train = (train[0][:n_train], train[1][:n_train])
    return train, test


def _positive(problem: str, **sizes) -> None:
    bad = {name: value for name, value in sizes.items() if value < 1}
    if bad:
        raise ConfigError(f"Problem {problem!r}: {bad} must be at least 1.")


PROBLEMS: dict[str, Callable[..., Subject]] = {
    "resnet": resnet,
    "mlp": mlp,
    "cnn": cnn,
    "pinn_convection": pinn_convection,
    "himmelblau": himmelblau,
    "three_hump_camel": three_hump_camel,
    "quartic": quartic,
    "hf": hf_text,
}


def parameters(problem: str) -> dict[str, object]:
    """The parameters of a problem and their defaults (``inspect.Parameter.empty`` if required);
    a factory's ``*args`` / ``**kwargs`` are no parameters of their own."""
    builder = _builder(problem)
    return {name: p.default for name, p in inspect.signature(builder).parameters.items()
            if name != "device" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_params(problem: str, params: dict) -> None:
    """Names, then types (constraints from the builder's annotations): before any store is opened.
    A factory taking ``**kwargs`` accepts any name: the config's parameters are passed through."""
    valid = parameters(problem)
    if not _takes_any_keyword(_builder(problem)):
        check_known(f"problem {problem!r}", params, valid)
    missing = sorted(n for n, d in valid.items() if d is inspect.Parameter.empty and n not in params)
    if missing:
        raise ConfigError(f"Problem {problem!r} needs parameter(s) {missing}.")
    signature = inspect.signature(_builder(problem)).parameters
    constraints = {name: from_annotation(p.annotation) for name, p in signature.items()}
    validate(f"problem {problem!r}", params, {n: c for n, c in constraints.items() if c is not None})


def build(problem: str, device: str = "auto", **params) -> Subject:
    """The subject of ``problem`` with ``params``, on ``device`` (not a problem parameter: the same
    landscape on any device, so it stays out of the subject's identity)."""
    check_params(problem, params)
    builder = _builder(problem)
    if "device" in inspect.signature(builder).parameters:
        subject = _called(problem, builder, **params, device=device)
    else:
        subject = _called(problem, builder, **params)  # analytic functions: on the CPU unless a device is named
        subject = subject.to(device) if device != "auto" and isinstance(subject, Subject) else subject
    if not isinstance(subject, Subject):
        raise ConfigError(f"Problem {problem!r} returned a {type(subject).__name__}, not a Subject: wrap the model in "
                          "lossatlas.ModuleSubject (or a function in FunctionSubject).")
    return subject


def _builder(problem: str) -> Callable[..., Subject]:
    """A built-in problem, one an installed package registers under the ``lossatlas.problems``
    entry-point group, or a user's factory named as ``"package.module:factory"`` (importable from
    where lossatlas runs). A factory takes the config's parameters as keywords (and ``device``, if
    it accepts one) and returns a Subject."""
    if problem in PROBLEMS:
        return PROBLEMS[problem]
    registered = registry.problems()
    if problem in registered.names() or ":" in problem:
        return registered.get(problem)
    raise ConfigError(f"Unknown problem {problem!r}; valid problems: {sorted(PROBLEMS) + registered.names()}, or a "
                      "factory of your own as \"package.module:factory\".")


def _called(problem: str, factory: Callable[..., Subject], **params) -> Subject:
    """A user's factory that fails (any exception, or sys.exit) is a ConfigError naming it; the
    built-in problems' own errors (a missing dataset) pass through as they are."""
    try:
        return factory(**params)
    except LossatlasError:
        raise
    except (Exception, SystemExit) as err:
        if problem in PROBLEMS:
            raise
        raise ConfigError(f"Problem {problem!r}: its factory raised {one_line(err)}.") from err


def _takes_any_keyword(factory: Callable) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())


__all__ = [
    "PROBLEMS", "build", "check_params", "parameters", "resnet", "resnet20", "CifarResNet", "mlp", "MLP", "cnn",
    "SmallCNN", "digits", "cifar10", "mnist",
    "download_cifar10", "pinn_convection", "ConvectionPINN", "himmelblau", "three_hump_camel", "quartic",
    "hf_text",
]
