"""Subjects: one loss landscape each, a flat parameter vector and the loss as a function of it.

``Subject`` is the protocol every method talks to (the members in ``PROTOCOL``), so the same
analyzer works on analytic test functions (``FunctionSubject``) and neural networks
(``ModuleSubject``) alike. A subject says what its landscape is: its vectors, its data and its
loss on one batch. The work built on that lives in its own modules: ``lossatlas.evaluation``
(the loss over the evaluation data, gradients, Hessian-vector products, many points at once),
``lossatlas.training`` (the training loop), ``lossatlas.batchnorm`` (BatchNorm statistics),
``lossatlas.layout`` (flat vectors and named tensors) and ``lossatlas.fingerprints`` (how a
config names code). A subject's *buffers* are the floating state that is not a parameter
(BatchNorm running statistics) as one flat vector; it is empty for functions.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import batchnorm, devices, distributed, evaluation, fingerprints, layout, sources, training
from . import inputs as batches
from .errors import ConfigError
from .params import Interval, Options, validate
from .training import EpochCallback, Recipe, augment_images, make_optimizer, make_schedule

__all__ = ["Subject", "FunctionSubject", "ModuleSubject", "PROTOCOL", "MODULE_PROTOCOL", "EpochCallback", "Recipe",
           "augment_images", "make_optimizer", "make_schedule"]

PROTOCOL = (
    # what the landscape is
    "name", "dim", "theta0", "buffers0", "device", "to", "config", "splits", "has_batchnorm",
    "is_plain_criterion", "chunk_size", "data_source",
    # flat vectors
    "as_theta", "as_thetas", "buffers_at", "param_layout", "buffer_layout", "unflatten",
    # evaluation, and the data it sums over
    "loss", "grad", "loss_and_grad", "grads", "hvp", "losses", "evaluate", "evaluate_many",
    "eval_batches", "loss_terms",
    # training
    "init_theta", "train", "train_batches", "train_loss",
)
MODULE_PROTOCOL = (
    "model", "loss_fn", "data", "test_data", "train_data", "eval_batch_size", "bn", "frozen", "classification",
    "update_bn", "example_batches", "batch_loss_and_grad",
)
_MODULE_CONSTRAINTS = {"bn": Options(("fixed", "recompute")), "eval_batch_size": Interval(int, 1),
                       "chunk_size": Interval(int, 1)}


class Subject:
    """One loss landscape: the protocol analyzers and samplers program against, and the base class
    of every subject.

    What an analyzer or a sampler may use (``PROTOCOL``; nothing else of a subject is theirs to
    touch):

    - the landscape: ``name``, ``dim``, ``theta0``, ``buffers0``, ``device`` (where its tensors
      live and its computations run; ``to(device)`` moves it), ``config()`` (what identifies it),
      ``splits``, ``has_batchnorm``, ``is_plain_criterion``, ``chunk_size``
    - flat vectors: ``as_theta`` / ``as_thetas`` (one vector / rows of vectors as checked,
      detached tensors), ``buffers_at(theta, buffers)`` (the buffers to evaluate ``theta`` with),
      ``param_layout`` / ``buffer_layout`` ((name, shape, numel) per tensor in vector order; None
      for a plain function) and ``unflatten(theta, buffers=None)`` (named views; modules only)
    - evaluation (``lossatlas.evaluation``): ``loss``, ``grad``, ``loss_and_grad``, ``grads``,
      ``hvp``, ``losses``, ``evaluate``, ``evaluate_many``, and what they sum over:
      ``eval_batches(data=None)`` ((batch, weight) pairs; modules only) and ``loss_terms(buffers)``
      (pure functions of theta whose values sum to the loss)
    - training (``lossatlas.training``): ``init_theta``, ``train``, and its pieces
      ``train_batches`` (one epoch's batches) and ``train_loss`` (the differentiable loss on one)

    A ModuleSubject adds ``MODULE_PROTOCOL``: its model, loss and data, ``update_bn`` and the
    m-sharpness batches. A subject class defines ``name``, ``theta0``, ``buffers0``, ``config``,
    ``init_theta``, ``loss_terms``, ``train_batches``, ``train_loss`` and, to evaluate many points
    as one computation, ``_vmapped_metrics``; the rest is shared. lossatlas's own modules also
    use private hooks: ``_vmap_ok`` (False once vmap failed), ``_recomputes_buffers`` and
    ``_many_keys`` (the metrics ``evaluate_many`` returns); of a ModuleSubject ``_forward`` (the
    functional model), ``_batch_loss`` (the loss on one batch, which a subclass such as the PINN
    overrides) and ``_bn_modules``.
    """

    name: str
    theta0: torch.Tensor
    buffers0: torch.Tensor
    chunk_size: int = 16
    param_layout: layout.Layout | None = None
    buffer_layout: layout.Layout | None = None
    has_batchnorm = False
    is_plain_criterion = False  # see ModuleSubject.is_plain_criterion
    data_source = "none"  # where the evaluation data lives: "none" (a function), "memory" or "stream"

    _vmap_ok = True
    _recomputes_buffers = False
    _many_keys = ("loss",)

    @property
    def dim(self) -> int:
        return int(self.theta0.numel())

    @property
    def device(self) -> torch.device:
        """Where this subject's parameters, buffers and data live, and its computations run."""
        return self.theta0.device

    def to(self, device: str | torch.device = "auto") -> "Subject":
        """Move the subject (every tensor and module it holds: parameters, buffers, data, a
        subclass's own constants) to ``device`` ("auto", "cpu", "cuda", "cuda:N"), in place; returns
        it. Tensors shared between attributes (train data that is the eval data) stay shared. A
        FunctionSubject's ``fn`` must handle tensors on that device itself."""
        device = devices.resolve(device)
        memo: dict[int, object] = {}
        for key, value in list(vars(self).items()):
            setattr(self, key, _moved(value, device, memo))
        return self

    def config(self) -> dict:
        """What identifies this landscape; stored with the subject and compared on re-registration."""
        raise NotImplementedError

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits ``evaluate`` accepts; "test" is held-out data or a test error."""
        return ("eval",)

    # -- flat vectors ------------------------------------------------------------------------------
    def as_theta(self, theta) -> torch.Tensor:
        """One parameter vector (tensor, array or list) as a detached flat tensor of the subject's
        dtype; a wrong length is a ConfigError."""
        theta = torch.as_tensor(np.asarray(theta) if not torch.is_tensor(theta) else theta)
        theta = theta.detach().to(self.theta0).reshape(-1)
        if theta.numel() != self.dim:
            raise ConfigError(f"{self.name} has {self.dim} parameters; got a vector of length {theta.numel()}.")
        return theta

    def as_thetas(self, thetas) -> torch.Tensor:
        """Rows of parameter vectors (one vector alone is one row) as a detached (n, dim) tensor of
        the subject's dtype; a wrong row length is a ConfigError, never silently re-cut into other
        points."""
        thetas = torch.as_tensor(np.asarray(thetas) if not torch.is_tensor(thetas) else thetas)
        thetas = thetas.detach().to(self.theta0)
        if thetas.ndim == 0 or thetas.shape[-1] != self.dim:
            raise ConfigError(f"{self.name} has {self.dim} parameters; got parameter vectors of shape "
                              f"{tuple(thetas.shape)} (need (..., {self.dim})).")
        return thetas.reshape(-1, self.dim)

    def buffers_at(self, theta, buffers) -> torch.Tensor:
        """The buffer vector to evaluate ``theta`` with: ``buffers`` if given (as a tensor of the
        subject's dtype), else the defaults ``buffers0`` (a ModuleSubject with ``bn="recompute"``:
        BatchNorm statistics re-estimated at ``theta``, see ``update_bn``)."""
        return self.buffers0 if buffers is None else torch.as_tensor(buffers).to(self.theta0)

    def unflatten(self, theta: torch.Tensor, buffers: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The named parameter tensors (and, with ``buffers``, the floating buffer tensors) as
        views of the flat vectors, in ``param_layout`` / ``buffer_layout`` order: no copy, and
        differentiable. Only subjects with named tensors (ModuleSubject) have it."""
        if self.param_layout is None:
            raise NotImplementedError(f"{self.name} is a function of a flat vector: it has no named parameter "
                                      "tensors to unflatten into (param_layout is None).")
        state = layout.views(theta, self.param_layout)
        if buffers is not None:
            state.update(layout.views(buffers, self.buffer_layout))
        return state

    # -- evaluation: lossatlas.evaluation ----------------------------------------------------------
    def loss(self, theta, buffers=None) -> float:
        """Loss at ``theta`` over the whole evaluation set."""
        return evaluation.loss(self, theta, buffers)

    def grad(self, theta, buffers=None) -> torch.Tensor:
        """Gradient of ``loss`` at ``theta`` (accumulated over the whole evaluation set)."""
        return self.loss_and_grad(theta, buffers)[1]

    def loss_and_grad(self, theta, buffers=None) -> tuple[float, torch.Tensor]:
        """``loss`` and ``grad`` from one pass over the evaluation set (ascents need both at
        every step)."""
        return evaluation.loss_and_grad(self, theta, buffers)

    def grads(self, thetas, buffers=None) -> torch.Tensor:
        """Gradients at many parameter vectors (rows), one ``grad`` each; FunctionSubject vmaps."""
        return evaluation.grads(self, thetas, buffers)

    def hvp(self, theta, vector, buffers=None) -> torch.Tensor:
        """Hessian-vector product H(theta) v of ``loss``, accumulated over the whole evaluation set."""
        return evaluation.hvp(self, theta, vector, buffers)

    def losses(self, thetas, buffers=None, chunk_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Loss at many parameter vectors (rows of ``thetas``); see ``evaluate_many``."""
        return self.evaluate_many(thetas, buffers, chunk_size, progress)["loss"]

    def evaluate_many(self, thetas, buffers=None, chunk_size: int | None = None, progress: bool = False,
                      recompute_bn: bool = False) -> dict[str, np.ndarray]:
        """Loss (and accuracy for classifiers) at many parameter vectors, all with the same
        ``buffers``: vmap over chunks where the model allows it, a plain loop otherwise. With
        ``recompute_bn`` (and BatchNorm in the model) each point gets its own re-estimated
        statistics (``update_bn``) instead. Returns float64 numpy arrays; NaN/inf pass through."""
        return evaluation.evaluate_many(self, thetas, buffers, chunk_size, progress, recompute_bn)

    def evaluate(self, theta, buffers=None, split: str = "eval") -> dict[str, float]:
        """Loss (and accuracy / error where defined) on a split: "eval" or "test"."""
        if split != "eval":
            raise ConfigError(f"{self.name} has only the 'eval' split; got {split!r}.")
        return {"loss": self.loss(theta, buffers)}

    def eval_batches(self, data=None) -> Iterator[tuple[object, float]]:
        """(batch, weight) pairs over the evaluation data (default: the subject's ``data``); the
        weights sum to 1 (over all processes under torch.distributed, each of which gets its share
        of the batches), so weighted batch means sum to the mean over the data. Only subjects with
        data (ModuleSubject) have it."""
        raise NotImplementedError(f"{self.name} ({type(self).__name__}) has no evaluation data to batch; "
                                  "eval_batches needs a ModuleSubject.")

    def loss_terms(self, buffers: torch.Tensor) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
        """Functions of theta (one per evaluation batch, weighted) whose values sum to the loss
        with ``buffers``; pure, so torch.func can transform them (used by ``grad`` and ``hvp``)."""
        raise NotImplementedError(f"{type(self).__name__} does not define loss_terms.")

    def _vmapped_metrics(self, chunk: torch.Tensor, buffers: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``_many_keys`` metrics at every row of ``chunk`` as one computation (under no_grad);
        an error here makes ``evaluate_many`` loop over single points from then on."""
        raise NotImplementedError

    def _loss_tensor(self, theta: torch.Tensor, buffers: torch.Tensor) -> torch.Tensor:
        return evaluation.loss_tensor(self, theta, buffers)

    # -- training: lossatlas.training --------------------------------------------------------------
    def init_theta(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An independent seeded starting point (parameters, buffers)."""
        raise NotImplementedError

    def train(self, theta, recipe: Recipe, seed: int, buffers=None, on_epoch: EpochCallback | None = None,
              progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Train from ``theta`` with ``recipe``; ``seed`` fixes shuffling and augmentation.

        Calls ``on_epoch(epoch, theta, buffers, train_loss)`` after every epoch. Raises
        NonFiniteLossError (naming the epoch) if training diverges.
        """
        return training.train(self, theta, recipe, seed, buffers, on_epoch, progress)

    def train_batches(self, recipe: Recipe, generator: torch.Generator) -> Iterable:
        """The batches of one training epoch under ``recipe``, shuffled (and augmented) with
        ``generator``; each is passed to ``train_loss``."""
        raise NotImplementedError(f"{type(self).__name__} does not define train_batches.")

    def train_loss(self, theta: torch.Tensor, buffers: torch.Tensor, batch) -> torch.Tensor:
        """The differentiable training loss at ``theta`` on one batch from ``train_batches``
        (a module runs in train mode: BatchNorm normalizes with batch statistics and updates its
        running statistics in ``buffers`` in place)."""
        raise NotImplementedError(f"{type(self).__name__} does not define train_loss.")


class FunctionSubject(Subject):
    """A differentiable function of a flat parameter vector (analytic test landscapes).

    ``init_scale``: seeded initializations are ``theta0 + init_scale * N(0, I)``.
    ``critical_points``: optional known stationary points, for tests and reports.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], theta0, name: str | None = None,
                 init_scale: float = 1.0, critical_points: dict | None = None, device: str | torch.device = "cpu"):
        theta0 = torch.as_tensor(theta0)
        if theta0.ndim == 0 or theta0.numel() == 0:
            raise ConfigError(f"FunctionSubject {name or getattr(fn, '__name__', 'function')!r}: theta0 must be a "
                              f"non-empty vector of parameters; got a tensor of shape {tuple(theta0.shape)}. For one "
                              "parameter give torch.tensor([value]); fn receives that vector.")
        if not theta0.is_floating_point():
            theta0 = theta0.to(torch.get_default_dtype())
        self.fn = fn
        self.theta0 = theta0.detach().reshape(-1).clone()
        self.buffers0 = layout.EMPTY.to(self.theta0.dtype)
        self.name = name or getattr(fn, "__name__", "function")
        self.init_scale = float(init_scale)
        self.critical_points = critical_points or {}
        self.chunk_size = 4096  # analytic functions are cheap: large vmap chunks
        self.to(device)
        self._check_value()

    def _check_value(self) -> None:
        """fn must give a tensor holding one number: a Python float cannot be differentiated or
        vmapped, so it would fail only deep inside an analyzer."""
        with torch.no_grad():
            value = self.fn(self.theta0.clone())
        if not (torch.is_tensor(value) and value.numel() == 1):
            got = f"a tensor of shape {tuple(value.shape)}" if torch.is_tensor(value) else f"a {type(value).__name__}"
            raise ConfigError(f"FunctionSubject {self.name!r}: fn must return the loss as a tensor holding one number, "
                              f"computed with torch operations (so it can be differentiated); at theta0 it returned "
                              f"{got}.")

    def config(self) -> dict:
        return {
            "kind": "function",
            "fn": fingerprints.function_name(self.fn),
            "dim": self.dim,
            "dtype": str(self.theta0.dtype),
            "theta0_sha1": batches.sha1(self.theta0),
            "init_scale": self.init_scale,
        }

    def loss_terms(self, buffers):
        yield self.fn

    def _vmapped_metrics(self, chunk, buffers):
        return {"loss": vmap(self.fn)(chunk)}

    def init_theta(self, seed):
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(self.dim, generator=generator, dtype=self.theta0.dtype).to(self.device)
        return self.theta0 + self.init_scale * noise, self.buffers0.clone()

    def grads(self, thetas, buffers=None):
        thetas = self.as_thetas(thetas)
        if self._vmap_ok:
            try:
                return torch.func.vmap(torch.func.grad(self.fn))(thetas)
            except (RuntimeError, NotImplementedError, ValueError):
                self._vmap_ok = False
        return super().grads(thetas, buffers)

    def train_batches(self, recipe, generator):
        return range(recipe.steps_per_epoch)

    def train_loss(self, theta, buffers, batch):
        return self.fn(theta)


class ModuleSubject(Subject):
    """An ``nn.Module``, a loss and a dataset: the loss is the mean over the whole evaluation set.

    ``data``, ``test_data`` and ``train_data``: ``(inputs, targets)``, a ``torch.utils.data.Dataset``
    or a ``DataLoader``, materialized in memory in index order (``lossatlas.inputs``); inputs may be
    a tensor, or a tuple / list / dict of tensors passed as ``model(*x)`` / ``model(**x)``, and
    floating-point data is cast to the model's dtype. ``forward(model, inputs) -> outputs`` says
    how a batch reaches the model when that is something else (e.g. ``model(x).logits``).
    ``classification``: whether to report accuracy (default: a cross-entropy or NLL loss, module or
    functional, with integer targets). The model is copied; the user's module is never changed.
    Evaluation runs in eval mode with fixed BatchNorm statistics (``buffers``); with
    ``bn="recompute"`` the statistics are re-estimated at every evaluated parameter vector on
    the training data (Garipov et al.'s ``update_bn``), see ``update_bn``.
    ``vmap``: evaluate many parameter vectors with torch.func.vmap (default: unless the model
    has convolutions, where a loop of single forwards is faster on CPU).
    ``init``: function re-initializing a model in place for ``init_theta``; by default every
    submodule's ``reset_parameters`` is called, innermost first, so a model-level
    ``reset_parameters`` (custom init) wins.
    Frozen parameters (``requires_grad=False``) are not part of the landscape: they are left out
    of ``theta`` (and of ``dim``, the directions and training) and keep their loaded values, also
    in ``init_theta``; their names and a digest of their values are in ``config()``.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data, name: str | None = None,
                 eval_batch_size: int = 1000, test_data=None, train_data=None, bn: str = "fixed",
                 init: Callable[[nn.Module], None] | None = None, config: dict | None = None,
                 chunk_size: int = 16, vmap: bool | None = None,
                 forward: Callable[[nn.Module, object], torch.Tensor] | None = None,
                 classification: bool | None = None, device: str | torch.device = "auto",
                 stream: bool | None = None):
        validate("ModuleSubject", {"bn": bn, "eval_batch_size": eval_batch_size, "chunk_size": chunk_size},
                 _MODULE_CONSTRAINTS)
        self.model = copy.deepcopy(model).eval()
        self.loss_fn = loss_fn
        self.name = name or type(model).__name__
        self.eval_batch_size = int(eval_batch_size)
        dtype = _model_dtype(self.model, self.name)
        given = {"data": data, "test_data": test_data, "train_data": train_data}
        held = {what: None if value is None else self._held(value, what, stream, dtype)
                for what, value in given.items()}
        # the data's identity is what the user gave (stores made before inputs were cast stay valid)
        self._described = {what: None if value is None else value[1] for what, value in held.items()}
        self._described["train_data"] = self._described["train_data"] or self._described["data"]
        self.data = held["data"][0]
        self.test_data = None if test_data is None else held["test_data"][0]
        self.train_data = self.data if train_data is None else held["train_data"][0]
        self.data_source = "stream" if isinstance(self.data, sources.Stream) else "memory"
        self._user_forward = forward
        self._caller = self.model if forward is None else _Forward(self.model, forward)
        self._classification = classification
        self.bn = bn
        self._recomputes_buffers = bn == "recompute"
        self._init = init or _reset_parameters
        self._extra_config = dict(config or {})
        self.chunk_size = int(chunk_size)
        # vmap over parameter vectors turns convolutions into grouped convolutions, which on CPU
        # measured 3.7x slower than one forward per point for ResNet-20 (benchmarks/perf); MLPs
        # and PINNs gain from it. None: vmap unless the model has convolutions.
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        self._vmap_ok = (not has_conv) if vmap is None else bool(vmap)
        self._vmap_choice = vmap  # an explicit vmap=False also keeps training runs one at a time
        # the landscape is over the trainable parameters: frozen ones (requires_grad=False) keep
        # their loaded values in every forward (functional_call falls back to the module's own)
        self.param_layout = [(n, p.shape, p.numel()) for n, p in self.model.named_parameters() if p.requires_grad]
        self.frozen = {n: p.detach().clone() for n, p in self.model.named_parameters() if not p.requires_grad}
        if self.frozen and not self.param_layout:
            raise ConfigError(f"Every parameter of {self.name}'s model has requires_grad=False, and frozen parameters "
                              "are not part of the landscape: nothing would be left. Call model.requires_grad_(True) "
                              "before building the subject (frozen layers stay out only when others train).")
        if not self.param_layout:
            raise ConfigError(f"The model of {self.name} ({type(model).__name__}) has no parameters: its loss "
                              "landscape has no dimensions to analyze. Give a model with trainable parameters.")
        self.buffer_layout = [(n, b.shape, b.numel()) for n, b in self.model.named_buffers() if b.is_floating_point()]
        self.theta0 = layout.flatten(dict(self.model.named_parameters()), self.param_layout)
        self.buffers0 = layout.flatten(dict(self.model.named_buffers()), self.buffer_layout)
        self._bn_modules = batchnorm.batchnorm_modules(self.model)
        self.to(device)  # model and data together first: the probe runs where the work will
        single = self._probe()
        if self.is_plain_criterion and single is not None:
            self._check_mean_reduction(single)

    def _held(self, value, what: str, stream: bool | None, dtype: torch.dtype):
        """(the data as held, its description): a ``sources.Stream`` where ``sources.choose`` says so
        (a Dataset over the memory budget, or ``stream=True``), else in memory with floating inputs
        in the model's dtype."""
        if sources.choose(value, stream, what):
            held = sources.Stream(value, self.eval_batch_size, what, dtype, terms=self._terms,
                                  ignore=self._ignored_label())
            description, total = held.description, held.total_terms
        else:
            pair = batches.materialize(value, what)
            held, description, total = batches.cast_inputs(pair, dtype), batches.describe(pair), self._terms(pair[1])
        if total <= 0:  # the weights of eval_batches divide by it
            raise ConfigError(f"{what}: every target is ignored by the loss; nothing is left to average.")
        return held, description

    def _ignored_label(self) -> int | None:
        """The label the loss ignores (an ``ignore_index``: cross-entropy's, NLL's, a language
        model's padding), if any."""
        ignore = getattr(self.loss_fn, "ignore_index", None)
        if isinstance(ignore, int):
            return ignore
        return -100 if self.loss_fn in (nn.functional.cross_entropy, nn.functional.nll_loss) else None

    def _criterion_counts_labels(self) -> bool:
        """Whether the loss is a cross-entropy or NLL loss (module or functional): a mean over class
        labels, which it may weigh or ignore."""
        return isinstance(self.loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or self.loss_fn in (
            nn.functional.cross_entropy, nn.functional.nll_loss)

    def _terms(self, targets):
        """How many terms the loss averages over on a batch with ``targets``, so that batches weighted
        by it sum to the mean over the whole data: the loss's own ``terms(targets)`` if it has one (a
        token-level language-model loss), the non-ignored labels (or, with class weights, their
        summed weights) of a cross-entropy or NLL loss, else the examples."""
        own = getattr(self.loss_fn, "terms", None)
        if callable(own):
            return own(targets)
        ignored = self._ignored_label()
        if self._criterion_counts_labels() and ignored is not None and torch.is_tensor(targets) \
                and not targets.is_floating_point():
            valid = targets != ignored
            weight = getattr(self.loss_fn, "weight", None)
            if weight is not None:
                return float(weight.to(targets.device)[targets[valid]].sum())
            return int(valid.sum())
        return batches.count(targets)

    def _probe(self) -> float | None:
        """The loss of the first two examples, or None when only a full evaluation batch runs (a model
        with a fixed batch size); a model that cannot be called on the data is a ConfigError now,
        not a torch traceback in the middle of a run."""
        self.model.eval()
        with distributed.alone():  # every process probes the same first batch
            first_batch = next(self.eval_batches())[0]
        for batch in (sources.head(self.data, 2, self.device), first_batch):
            try:
                with torch.no_grad():
                    loss = self._batch_loss(self.theta0, self.buffers0, batch)
                if not (torch.is_tensor(loss) and loss.numel() == 1):
                    raise ConfigError(f"The loss of {self.name} must be one number, the mean over the batch; it "
                                      f"gave {type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))} "
                                      "(reduction='none'?). Use a mean-reduced loss.")
                self._check_labels(batch)
                return float(loss) if batch is not first_batch else None
            except ConfigError:
                raise
            except Exception as error:  # noqa: BLE001 -- any failure of user code is reported below
                failure = error
        how = ("your forward(model, inputs)" if self._user_forward is not None else
               "model(x) for a tensor x, model(*x) for a tuple, model(**x) for a dict")
        raise ConfigError(f"The loss of {self.name} could not be computed on its data ({how}): "
                          f"{type(failure).__name__}: {failure}. Check that the data matches the model (shapes, "
                          "dtypes, target kind), or pass forward=lambda model, inputs: ... to say how a batch "
                          "reaches the model.") from failure

    def _check_labels(self, batch) -> None:
        """Class labels must index the model's outputs: cross-entropy refuses one out of range only when
        a batch holding it is evaluated, minutes into a run (on a GPU as a device-side assert)."""
        if not (self.is_plain_criterion and self._criterion_counts_labels()):
            return
        with torch.no_grad():
            outputs = self._forward(self.theta0, self.buffers0, batch[0])
        if not torch.is_tensor(outputs) or outputs.ndim < 2:
            return
        classes = outputs.shape[1]
        ignored = self._ignored_label()  # such targets add nothing to the loss
        for split, data in (("data", self.data), ("test_data", self.test_data), ("train_data", self.train_data)):
            if isinstance(data, sources.Stream):  # its one pass at construction found the range
                low, high = data.label_range or (0, 0)
                if low < 0 or high >= classes:
                    raise ConfigError(f"{self.name}: {split} has labels in [{low}, {high}], outside [0, "
                                      f"{classes - 1}]; the model gives {classes} class scores. Check the labels, "
                                      "or the model's output size.")
                continue
            labels = None if data is None else data[1]
            if not torch.is_tensor(labels) or labels.is_floating_point():
                continue  # soft labels (class probabilities) have no range to check
            bad = labels[((labels < 0) | (labels >= classes)) & (labels != ignored)]
            if len(bad):
                raise ConfigError(f"{self.name}: {split} has {len(bad)} label(s) outside [0, {classes - 1}], e.g. "
                                  f"{int(bad[0])}; the model gives {classes} class scores. Check the labels, or "
                                  "the model's output size.")

    def _check_mean_reduction(self, single: float) -> None:
        """Batches are averaged weighted by their size, which is right only for a loss that is a
        mean over its batch: a summed loss (reduction="sum") would come out N times too large.
        Probe: the loss of two examples given twice must equal their loss given once."""
        two = sources.head(self.data, 2, self.device)
        twice = tuple(batches.concat([part, part]) for part in two)
        with torch.no_grad():
            double = float(self._batch_loss(self.theta0, self.buffers0, twice))
        if math.isfinite(single) and single != 0 and math.isclose(double, 2 * single, rel_tol=1e-4):
            raise ConfigError(f"The loss of {self.name} sums over the batch (reduction='sum'?): the loss of "
                              f"examples given twice is twice their loss ({double:.6g} vs {single:.6g}). lossatlas "
                              "averages batches weighted by size, so the landscape would be N times too high; use "
                              "a mean-reduced loss (reduction='mean').")

    @property
    def has_batchnorm(self) -> bool:
        return bool(self._bn_modules)

    @property
    def is_plain_criterion(self) -> bool:
        """Whether the loss is ``loss_fn(model(inputs), targets)`` (no subclass loss such as a PINN's
        residual), the form external tools like PyHessian can reproduce."""
        return type(self)._batch_loss is ModuleSubject._batch_loss

    @property
    def classification(self) -> bool:
        """Whether accuracy is reported: ``classification`` if given, else a cross-entropy or NLL loss
        (module or functional) with integer class targets (soft labels have no accuracy)."""
        if self._classification is not None:
            return self._classification
        return self._criterion_counts_labels() and sources.integer_targets(self.data)

    def config(self) -> dict:
        identity = fingerprints.function_identity
        return {
            "kind": "module",
            "model": type(self.model).__name__,
            "architecture_sha1": fingerprints.architecture_digest(self.model),
            "dim": self.dim,
            "loss_fn": repr(self.loss_fn) if isinstance(self.loss_fn, nn.Module) else identity(self.loss_fn),
            **self._described,
            "bn": self.bn,
            **({"frozen": {n: batches.sha1(t) for n, t in self.frozen.items()}} if self.frozen else {}),
            **({"forward": identity(self._user_forward)} if self._user_forward is not None else {}),
            **self._extra_config,
        }

    # -- functional model ------------------------------------------------------------------------
    def _forward(self, theta, buffers, inputs):
        """The model's outputs at ``theta``. Attention runs on torch's math kernel: the fused ones
        (flash, memory-efficient) have no double backward, which Hessian-vector products need; it is
        the same attention up to rounding."""
        state = self.unflatten(theta, buffers)
        with sdpa_kernel(SDPBackend.MATH):
            if self._user_forward is not None:
                return functional_call(self._caller, {f"model.{k}": v for k, v in state.items()}, (inputs,))
            args, kwargs = batches.model_arguments(inputs)
            return functional_call(self.model, state, args, kwargs)

    def _batch_loss(self, theta, buffers, batch) -> torch.Tensor:
        inputs, targets = batch
        return self.loss_fn(self._forward(theta, buffers, inputs), targets)

    def eval_batches(self, data=None) -> Iterator[tuple[object, float]]:
        """(batch, weight) pairs over ``data`` (default: the evaluation set ``data``) in slices of
        ``eval_batch_size`` in index order, each weighted by its share of the terms the loss averages
        over (``_terms``: the examples, for most losses; a batch of ignored labels only is left out).
        A streamed ``data`` is read as it goes. On several processes (torch.distributed) only this
        process's share: batch i goes to rank i % size, weighted as in the whole, so the ranks' sums
        add up to the whole (``lossatlas.distributed``); a stream reads only those batches."""
        data = self.data if data is None else data
        if isinstance(data, sources.Stream):
            mine = distributed.share(data.num_batches)
            pairs = ((batch, self._terms(batch[1])) for batch in data.batches(self.device, mine))
            total = data.total_terms
        else:
            n, total = batches.count(data[0]), self._terms(data[1])  # not 0: refused when the data was held
            size = self.eval_batch_size
            pairs = ((batch, self._terms(batch[1])) for batch in
                     (batches.take(data, slice(i * size, min((i + 1) * size, n)))
                      for i in distributed.share(-(-n // size))))
        for batch, terms in pairs:
            if terms:  # a batch whose every label is ignored adds nothing (its own mean is 0/0)
                yield batch, terms / total

    def example_batches(self, size: int) -> list:
        """The evaluation data in consecutive batches of ``size`` examples, in index order (the
        remainder, fewer than ``size``, left out): the batches of m-sharpness (Andriushchenko et
        al. 2023), each passed to ``batch_loss_and_grad``."""
        if isinstance(self.data, sources.Stream):
            return self.data.slices(size, self.device)
        n = batches.count(self.data[0])
        return [batches.take(self.data, slice(start, start + size)) for start in range(0, n - size + 1, size)]

    def batch_loss_and_grad(self, theta, buffers, batch) -> tuple[float, torch.Tensor]:
        """The mean loss on one batch of ``example_batches`` (eval mode, ``buffers`` as given) and
        its gradient."""
        return evaluation.batch_loss_and_grad(self, theta, buffers, batch)

    # -- Subject hooks ---------------------------------------------------------------------------
    def loss_terms(self, buffers):
        self.model.eval()
        for batch, weight in self.eval_batches():
            yield functools.partial(self._weighted_batch_loss, buffers=buffers, batch=batch, weight=weight)

    def _weighted_batch_loss(self, theta, buffers, batch, weight):
        return weight * self._batch_loss(theta, buffers, batch)

    @property
    def _many_keys(self):
        return ("loss", "accuracy") if self.classification else ("loss",)

    def _vmapped_metrics(self, chunk, buffers):
        return evaluation.vmapped_metrics(self, chunk, buffers)

    def buffers_at(self, theta, buffers):
        if buffers is None and self.bn == "recompute":
            return self.update_bn(theta)
        return super().buffers_at(theta, buffers)

    def update_bn(self, theta) -> torch.Tensor:
        """Re-estimate BatchNorm running statistics at ``theta`` with one pass over the training
        data in train mode, each batch weighted by its size (Garipov et al. 2018, ``update_bn``).
        Returns the flat buffer vector; the subject is not changed."""
        return batchnorm.update_bn(self, theta)

    @property
    def splits(self):
        train = () if self.train_data is self.data else ("train",)
        return ("eval",) + train + (() if self.test_data is None else ("test",))

    def evaluate(self, theta, buffers=None, split="eval"):
        data = {"eval": self.data, "test": self.test_data, "train": self.train_data}.get(split)
        if data is None:
            raise ConfigError(f"{self.name} has no {split!r} split; splits: eval, train, test (if given).")
        theta = self.as_theta(theta)
        return evaluation.metrics(self, theta, self.buffers_at(theta, buffers), data)

    def init_theta(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))  # the CPU generator only: CUDA's is left alone
            model = copy.deepcopy(self.model).cpu()  # initialized on the CPU: one start per seed on every device
            self._init(model)
        theta = layout.flatten(dict(model.named_parameters()), self.param_layout).to(self.device)
        buffers = dict(model.named_buffers())
        buffers.update({k: v.cpu() for k, v in self._frozen_buffers().items()})  # a frozen layer keeps its statistics
        return theta, layout.flatten(buffers, self.buffer_layout).to(self.device)

    def _frozen_buffers(self) -> dict[str, torch.Tensor]:
        """The loaded buffers of modules whose own parameters are all frozen (a frozen backbone's
        BatchNorm statistics belong to its frozen weights)."""
        found = {}
        for prefix, module in self.model.named_modules():
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                for name, tensor in module.named_buffers(recurse=False):
                    found[f"{prefix}.{name}" if prefix else name] = tensor
        return found

    def train_batches(self, recipe, generator):
        """One epoch: the training data in the order ``generator`` draws (on the CPU: one order per
        seed on every device), in batches of the recipe's size, augmented as it asks; streamed data
        is read as the batches are used, the same batches as in memory."""
        data = self.train_data
        streamed = isinstance(data, sources.Stream)
        if streamed and recipe.batch_size is None:
            raise ConfigError(f"{self.name}: full-batch training (batch_size unset) would hold all the streamed "
                              "training data at once; set the recipe's batch_size.")
        n = sources.count(data)
        size = n if recipe.batch_size is None else recipe.batch_size
        order = torch.randperm(n, generator=generator)
        chosen = data.shuffled(size, order, self.device) if streamed else (
            batches.take(data, index) for index in order.to(self.device).split(size))
        for batch_inputs, batch_targets in chosen:
            if recipe.augment:
                if not torch.is_tensor(batch_inputs):
                    raise ConfigError(f"{self.name}: augment=true crops and flips image tensors; these inputs are "
                                      f"a {type(batch_inputs).__name__} of tensors. Set augment=false.")
                batch_inputs = augment_images(batch_inputs, generator)
            yield batch_inputs, batch_targets

    def train_loss(self, theta, buffers, batch):
        self.model.train()
        try:
            return self._batch_loss(theta, buffers, batch)
        finally:
            self.model.eval()


def _reset_parameters(model: nn.Module) -> None:
    for module in reversed(list(model.modules())):
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()


def _moved(value, device: torch.device, memo: dict):
    """``value`` with its tensors on ``device``: modules in place, tensors and tensor structures
    copied once (``memo`` keeps aliases aliased); anything else as it is."""
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, nn.Module):
        moved = value.to(device)
    elif torch.is_tensor(value):
        moved = value.to(device)
    elif isinstance(value, (tuple, list, dict)) and batches.leaves(value) and all(
            torch.is_tensor(t) for t in batches.leaves(value)):
        moved = batches.tree_map(lambda t: t.to(device), value)
    else:
        return value
    memo[id(value)] = moved
    return moved


def _model_dtype(model: nn.Module, name: str) -> torch.dtype:
    """The one floating dtype of the model's trainable parameters (they form one flat vector)."""
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad and p.is_floating_point()}
    if len(dtypes) > 1:
        raise ConfigError(f"The trainable parameters of {name} mix dtypes {sorted(map(str, dtypes))}; lossatlas "
                          "holds them in one flat vector. Convert the model to one dtype (model.double() or "
                          "model.float()).")
    return dtypes.pop() if dtypes else torch.get_default_dtype()


class _Forward(nn.Module):
    """The model behind a user's ``forward(model, inputs)``, so functional_call can swap its tensors."""

    def __init__(self, model: nn.Module, forward: Callable):
        super().__init__()
        self.model = model
        self._call = forward

    def forward(self, inputs):
        return self._call(self.model, inputs)
