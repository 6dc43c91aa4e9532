"""Function-preserving reparameterizations of a network, on a subject's flat parameter and buffer vectors.

A measure of a landscape that claims to describe the *function* a network computes should not
change when the parameters change in a way the function cannot see. These are the classic ways:

- ``rescale``: a positively homogeneous activation (ReLU, LeakyReLU, none) lets a layer's
  outputs be multiplied by alpha > 0 and the next layer's inputs by 1/alpha (Dinh et al. 2017,
  "Sharp minima can generalize for deep nets", §4): the Hessian, and any sharpness built on it,
  changes by up to alpha^2 while the function does not.
- ``scale_before_norm``: a layer followed by BatchNorm is scale invariant (Li et al. 2018,
  "Visualizing the loss landscape of neural nets", §4, the reason for filter normalization).
- ``permute``: hidden units can be reordered (Hecht-Nielsen 1990), for any elementwise activation.
- ``permute_heads``: so can the heads of multi-head attention.

Unit-level transformations act on *sites*, found in the model's torch.fx graph: a Linear/Conv
producer P feeding, optionally through a BatchNorm N, elementwise activations and channel-wise
pooling or flattening, exactly one Linear/Conv consumer C, every value on the way used once (a
residual stream, used twice, is no site). A model fx cannot trace (Hugging Face models) has no
sites; its attention heads are found by module structure (GPT-2, BERT). Every transformation
returns new vectors; the inputs are never changed. ``check_function`` says whether two parameter
vectors compute the same function to rounding.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from . import inputs as batches
from .errors import ConfigError
from .params import Interval, validate
from .record import AUDIT_TRANSFORMS
from .subjects import ModuleSubject

__all__ = ["Site", "Heads", "Transformed", "TRANSFORMATIONS", "find_sites", "find_normalized", "find_heads", "rescale",
           "scale_before_norm", "permute", "permute_heads", "applicable", "check_function", "rounding_tolerance"]

TRANSFORMATIONS = AUDIT_TRANSFORMS  # one list: the config's [audit] transforms name these functions

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# f(a x) = a f(x) for a > 0; dropout is the identity in eval mode, where every measure evaluates
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, _DropoutNd)
_ELEMENTWISE_MODULES = (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish,
                        nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign,
                        nn.Tanhshrink)
_HOMOGENEOUS_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu", F.dropout: "dropout"}
_ELEMENTWISE_FUNCTIONS = {torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                          F.gelu: "gelu", F.silu: "silu", F.elu: "elu", F.selu: "selu", F.softplus: "softplus",
                          F.mish: "mish", F.hardtanh: "hardtanh", F.relu6: "relu6"}
_HOMOGENEOUS_METHODS = {"relu"}
_ELEMENTWISE_METHODS = {"tanh", "sigmoid"}
# pooling keeps the channel dimension and is positively homogeneous (max and mean commute with a > 0)
_POOL_MODULES = (_MaxPoolNd, _AvgPoolNd, _AdaptiveMaxPoolNd, _AdaptiveAvgPoolNd)
_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}

_POSITIVE = Interval(float, 0, None, closed="neither")
_SEED = Interval(int, 0)
# |difference| <= rtol * (1 + |value|) (the 1 an absolute floor for values near 0): a transformed
# network rounds differently (products by alpha, sums in another order), so its loss and logits
# move by some units in the last place per layer. 1e-5 in float32 is ~84 epsilons; measured on the
# test networks at most ~1e-6 (ResNet-20, alpha = c = 10), while a half-done transformation moves
# them by > 1e-3. float64: 1e-10, measured < 1e-15.
_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@dataclass(frozen=True)
class Site:
    """A producer layer whose ``units`` outputs reach exactly one consumer layer, unit by unit.

    ``norm``: the BatchNorm right after the producer, if any; ``activation``: the elementwise
    function between them ("identity" if none); ``block``: how many consumer input columns each
    unit owns (1, or the spatial size through a flatten); ``rescalable``: every step is positively
    homogeneous and a BatchNorm, if any, has an affine scale and shift to carry alpha.
    """

    producer: str
    norm: str | None
    activation: str
    consumer: str
    units: int
    block: int
    rescalable: bool

    def __str__(self) -> str:
        middle = "-".join(part for part in (self.norm, self.activation) if part)
        return f"{self.producer} -[{middle}]-> {self.consumer}"


class Transformed(NamedTuple):
    """New parameter and buffer vectors of the same function, and what was done."""

    theta: torch.Tensor
    buffers: torch.Tensor
    description: str


class Heads(NamedTuple):
    """One multi-head attention layer: ``kind`` "gpt2" (fused c_attn, c_proj) or "bert" (separate
    query, key, value, then output.dense)."""

    name: str
    kind: str
    heads: int
    head_dim: int


# -- discovery ---------------------------------------------------------------------------------------
def find_sites(subject) -> list[Site]:
    """Every site of the subject's model, in graph order (empty where fx cannot trace it)."""
    return _graph_structure(subject)[0]


def find_normalized(subject) -> list[tuple[str, str]]:
    """(producer, BatchNorm) pairs: a Linear/Conv whose only user is a BatchNorm with running
    statistics, both called once, so scaling the producer is invisible in eval mode."""
    return _graph_structure(subject)[1]


def find_heads(subject) -> list[Heads]:
    """The multi-head attention layers (GPT-2 style fused, BERT style separate projections) with
    at least two heads whose parameters are all in theta."""
    model, trainable = _model(subject, "find_heads"), {name for name, _, _ in subject.param_layout}
    found = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if _is_gpt2_attention(module):
            heads, tensors = Heads(name, "gpt2", module.num_heads, module.head_dim), ("c_attn", "c_proj")
        elif _is_bert_attention(module):
            inner = module.self
            heads = Heads(name, "bert", inner.num_attention_heads, inner.attention_head_size)
            tensors = ("self.query", "self.key", "self.value", "output.dense")
        else:
            continue
        needed = [f"{prefix}{part}.{kind}" for part in tensors for kind in ("weight", "bias")
                  if getattr(module.get_submodule(part), kind, None) is not None]
        if heads.heads >= 2 and all(n in trainable for n in needed):
            found.append(heads)
    return found


def _is_gpt2_attention(module: nn.Module) -> bool:
    c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
    heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
    if not (isinstance(c_attn, nn.Module) and isinstance(c_proj, nn.Module) and isinstance(heads, int)
            and isinstance(head_dim, int)) or getattr(module, "is_cross_attention", False):
        return False
    width = heads * head_dim  # Conv1D weights are (in, out)
    return tuple(c_attn.weight.shape[1:]) == (3 * width,) and c_proj.weight.shape[0] == width


def _is_bert_attention(module: nn.Module) -> bool:
    inner, output = getattr(module, "self", None), getattr(getattr(module, "output", None), "dense", None)
    if not (isinstance(inner, nn.Module) and isinstance(output, nn.Linear)):
        return False
    parts = [getattr(inner, part, None) for part in ("query", "key", "value")]
    heads, head_dim = getattr(inner, "num_attention_heads", None), getattr(inner, "attention_head_size", None)
    if not (all(isinstance(p, nn.Linear) for p in parts) and isinstance(heads, int) and isinstance(head_dim, int)):
        return False
    width = heads * head_dim
    return all(p.out_features == width for p in parts) and output.in_features == width


def _model(subject, what: str) -> nn.Module:
    if not isinstance(subject, ModuleSubject):
        raise ConfigError(f"{what} needs a ModuleSubject (a network with named layers); "
                          f"{getattr(subject, 'name', subject)!r} is a {type(subject).__name__}, a function of a flat "
                          "vector with no layers to reparameterize.")
    return subject.model


def _graph_structure(subject) -> tuple[list[Site], list[tuple[str, str]], str | None]:
    """(sites, normalized producers, why tracing failed or None)."""
    model = _model(subject, "Site discovery")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # noqa: BLE001 -- tracing runs the user's forward; any failure means no graph
        return [], [], f"torch.fx could not trace {type(model).__name__} ({type(error).__name__}: {error})"
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    trainable = {name for name, _, _ in subject.param_layout}
    sites, normalized = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _LAYERS) or calls[node.target] != 1:
            continue
        site = _site_at(node, modules, calls)
        if site is not None and _owned(model, (site.producer, site.norm, site.consumer), trainable):
            sites.append(site)
        norm = _norm_after(node, modules, calls)
        if norm is not None and _owned(model, (node.target, norm), trainable):
            normalized.append((node.target, norm))
    return sites, normalized, None


def _owned(model: nn.Module, names, trainable: set[str]) -> bool:
    """Whether every parameter of these modules is in theta (a frozen one cannot be changed)."""
    return all(f"{name}.{p}" in trainable for name in names if name for p, _ in
               model.get_submodule(name).named_parameters(recurse=False))


def _units(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _single_user(node: torch.fx.Node) -> torch.fx.Node | None:
    """The one node using ``node``, if it uses it as its only input."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    return user if user.all_input_nodes == [node] and user.args[:1] == (node,) else None


def _norm_after(node, modules, calls) -> str | None:
    user = _single_user(node)
    if user is None or user.op != "call_module" or calls[user.target] != 1:
        return None
    norm = modules[user.target]
    if isinstance(norm, _BatchNorm) and norm.running_var is not None and norm.num_features == _units(
            modules[node.target]):
        return user.target
    return None


def _step(node, modules) -> tuple[str, str] | None:
    """(kind, name) of a node between producer and consumer: "homogeneous" / "elementwise"
    activations, "pool", "flatten", "norm", "layer"; None for anything else."""
    if node.op == "call_module":
        module = modules[node.target]
        name = type(module).__name__
        for kind, classes in (("layer", _LAYERS), ("norm", _BatchNorm), ("pool", _POOL_MODULES),
                              ("homogeneous", _HOMOGENEOUS_MODULES), ("elementwise", _ELEMENTWISE_MODULES)):
            if isinstance(module, classes):
                return kind, name
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            return "flatten", name
        return None
    if node.op == "call_function":
        if node.target in _HOMOGENEOUS_FUNCTIONS:
            return "homogeneous", _HOMOGENEOUS_FUNCTIONS[node.target]
        if node.target in _ELEMENTWISE_FUNCTIONS:
            return "elementwise", _ELEMENTWISE_FUNCTIONS[node.target]
        if node.target in _POOL_FUNCTIONS:
            return "pool", node.target.__name__
        if node.target is torch.flatten and _flattens_channels(node):
            return "flatten", "flatten"
        return None
    if node.op == "call_method":
        if node.target in _HOMOGENEOUS_METHODS:
            return "homogeneous", node.target
        if node.target in _ELEMENTWISE_METHODS:
            return "elementwise", node.target
        if node.target == "flatten" and _flattens_channels(node):
            return "flatten", "flatten"
    return None


def _flattens_channels(node) -> bool:
    """flatten(x, 1) (to the last dimension): channel c owns columns [c * block, (c + 1) * block)."""
    args = list(node.args[1:]) + [None, None]
    start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
    end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
    return start == 1 and end == -1


def _site_at(node, modules, calls) -> Site | None:
    """The site whose producer is ``node``, or None if its output does not reach exactly one
    consumer layer unit by unit."""
    producer = modules[node.target]
    units, conv = _units(producer), isinstance(producer, _ConvNd)
    if conv and producer.groups != 1:
        return None
    norm, activations, homogeneous, flattened, current = None, [], True, False, node
    while True:
        user = _single_user(current)
        step = None if user is None else _step(user, modules)
        if step is None:
            return None
        kind, name = step
        if kind == "layer":
            break
        if kind == "norm" and current is node and calls[user.target] == 1 \
                and modules[user.target].num_features == units:
            norm = user.target
        elif kind in ("homogeneous", "elementwise"):
            homogeneous &= kind == "homogeneous"
            if name != "Identity" and "dropout" not in name.lower():  # the identity in eval mode
                activations.append(name)
        elif kind in ("pool", "flatten") and conv and not flattened:
            flattened = kind == "flatten"
        else:
            return None
        current = user
    consumer = modules[user.target]
    if calls[user.target] != 1:
        return None
    if isinstance(consumer, nn.Linear):
        if flattened and consumer.in_features % units == 0:
            block = consumer.in_features // units
        elif not conv and consumer.in_features == units:
            block = 1
        else:
            return None
    elif conv and not flattened and consumer.groups == 1 and consumer.in_channels == units \
            and len(consumer.kernel_size) == len(producer.kernel_size):
        block = 1
    else:
        return None
    affine = norm is None or modules[norm].affine
    return Site(node.target, norm, "-".join(activations) or "identity", user.target, units, block,
                homogeneous and affine)


# -- transformations ---------------------------------------------------------------------------------
def _state(subject, theta, buffers) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Copies of the vectors and named views into the copies (writing a view writes the copy)."""
    theta = subject.as_theta(theta)
    buffers = subject.buffers_at(theta, buffers).clone()
    theta = theta.clone()
    return theta, buffers, subject.unflatten(theta, buffers)


def _chosen(subject, sites, what: str, usable) -> list[Site]:
    """The sites a transformation acts on: every usable one by default, else those given (indices
    into ``find_sites`` or Site objects), each of which must be usable."""
    every = find_sites(subject)
    if sites is None:
        chosen = [site for site in every if usable(site)]
        if not chosen:
            raise ConfigError(f"{what} does not apply to {subject.name}: {applicable(subject)[what]}")
        return chosen
    chosen = []
    for site in sites:
        if isinstance(site, Site):
            if site not in every:
                raise ConfigError(f"{what}: {site} is not a site of {subject.name}; find_sites lists them.")
        elif isinstance(site, int) and not isinstance(site, bool) and 0 <= site < len(every):
            site = every[site]
        else:
            raise ConfigError(f"{what}: sites must be indices into find_sites (0..{len(every) - 1} for "
                              f"{subject.name}) or Site objects; got {site!r}.")
        if not usable(site):
            raise ConfigError(f"rescale cannot act on site {site}: its activation is not positively homogeneous, "
                              "or its BatchNorm has no affine scale and shift to carry alpha." if what == "rescale"
                              else f"{what} cannot act on site {site}: it has {site.units} unit.")
        chosen.append(site)
    return chosen


def _listed(things) -> str:
    names = [str(t) for t in things]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def rescale(subject, theta, buffers, alpha: float | Sequence[float], sites=None) -> Transformed:
    """Dinh et al. 2017: at each positively homogeneous site, the producer's weight and bias (or,
    after a BatchNorm, its scale and shift) times ``alpha`` > 0 and the consumer's weight divided
    by it. ``alpha``: one number for every chosen site, or one per site; ``sites``: indices into
    ``find_sites`` (or Site objects), default every rescalable site. ``buffers`` None: the
    subject's (``buffers_at``)."""
    chosen = _chosen(subject, sites, "rescale", lambda site: site.rescalable)
    alphas = [alpha] * len(chosen) if not isinstance(alpha, Sequence) else list(alpha)
    if len(alphas) != len(chosen):
        raise ConfigError(f"rescale: {len(alphas)} alphas for {len(chosen)} sites; give one number, or one per site.")
    for value in alphas:
        validate("rescale", {"alpha": value}, {"alpha": _POSITIVE})
    theta, buffers, state = _state(subject, theta, buffers)
    for site, value in zip(chosen, alphas):
        scaled = site.norm or site.producer
        for tensor in (f"{scaled}.weight", f"{scaled}.bias"):
            if tensor in state:
                state[tensor].mul_(value)
        state[f"{site.consumer}.weight"].div_(value)
    shown = f"{alpha:g}" if not isinstance(alpha, Sequence) else ", ".join(f"{a:g}" for a in alphas)
    return Transformed(theta, buffers, f"rescale by alpha {shown} at {len(chosen)} site(s) (Dinh et al. 2017): "
                                       f"{_listed(chosen)}")


def scale_before_norm(subject, theta, buffers, c: float) -> Transformed:
    """Li et al. 2018: every producer followed by a BatchNorm scaled by ``c`` > 0, with the
    running mean times c and running_var = c^2 var + (c^2 - 1) eps, so var + eps scales by
    exactly c^2 and the eval-mode output is unchanged to rounding. (For c < 1 a running variance
    below (1 - c^2) eps / c^2 comes out negative; var + eps stays positive.)"""
    validate("scale_before_norm", {"c": c}, {"c": _POSITIVE})
    pairs = find_normalized(subject)
    if not pairs:
        raise ConfigError(f"scale_before_norm does not apply to {subject.name}: "
                          f"{applicable(subject)['scale_before_norm']}")
    theta, buffers, state = _state(subject, theta, buffers)
    for producer, norm in pairs:
        for tensor in (f"{producer}.weight", f"{producer}.bias"):
            if tensor in state:
                state[tensor].mul_(c)
        eps = subject.model.get_submodule(norm).eps
        state[f"{norm}.running_mean"].mul_(c)
        state[f"{norm}.running_var"].mul_(c * c).add_((c * c - 1) * eps)
    return Transformed(theta, buffers, f"scale {len(pairs)} layer(s) before BatchNorm by c {c:g} (Li et al. 2018): "
                                       f"{_listed(p for p, _ in pairs)}")


def _permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random permutation of n other than the identity (so every site moves)."""
    while True:
        order = torch.randperm(n, generator=generator)
        if not torch.equal(order, torch.arange(n)):
            return order


def _blocks(order: torch.Tensor, block: int) -> torch.Tensor:
    """Indices that move whole blocks of ``block`` consecutive entries by ``order``."""
    return (order[:, None] * block + torch.arange(block)).reshape(-1)


def _take(state: dict, name: str, index: torch.Tensor, dim: int = 0) -> None:
    if name in state:
        tensor = state[name]
        tensor.copy_(tensor.index_select(dim, index.to(tensor.device)))


def permute(subject, theta, buffers, seed: int, sites=None) -> Transformed:
    """A seeded random permutation (never the identity) of the hidden units of every site (or of
    ``sites``): the producer's output rows and bias, the BatchNorm's scale, shift and running
    statistics, and the consumer's input columns (blocks of them after a flatten)."""
    validate("permute", {"seed": seed}, {"seed": _SEED})
    chosen = _chosen(subject, sites, "permute", lambda site: site.units >= 2)
    theta, buffers, state = _state(subject, theta, buffers)
    generator = torch.Generator().manual_seed(seed)
    for site in chosen:
        order = _permutation(site.units, generator)
        for name in ("weight", "bias"):
            _take(state, f"{site.producer}.{name}", order)
        if site.norm:
            for name in ("weight", "bias", "running_mean", "running_var"):
                _take(state, f"{site.norm}.{name}", order)
        _take(state, f"{site.consumer}.weight", _blocks(order, site.block), dim=1)
    return Transformed(theta, buffers, f"permute the units of {len(chosen)} site(s) (seed {seed}): "
                                       f"{_listed(chosen)}")


def permute_heads(subject, theta, buffers, seed: int) -> Transformed:
    """A seeded random permutation (never the identity) of the heads of every attention layer:
    the query, key and value output blocks of each head and the matching input rows (GPT-2's
    Conv1D, weights stored (in, out)) or columns (BERT's Linear) of the output projection."""
    validate("permute_heads", {"seed": seed}, {"seed": _SEED})
    layers = find_heads(subject)
    if not layers:
        raise ConfigError(f"permute_heads does not apply to {subject.name}: {applicable(subject)['permute_heads']}")
    theta, buffers, state = _state(subject, theta, buffers)
    generator = torch.Generator().manual_seed(seed)
    for layer in layers:
        index = _blocks(_permutation(layer.heads, generator), layer.head_dim)
        prefix = f"{layer.name}." if layer.name else ""
        if layer.kind == "gpt2":  # c_attn's outputs are [q | k | v]
            width = layer.heads * layer.head_dim
            fused = torch.cat([index + part * width for part in range(3)])
            _take(state, f"{prefix}c_attn.weight", fused, dim=1)
            _take(state, f"{prefix}c_attn.bias", fused)
            _take(state, f"{prefix}c_proj.weight", index, dim=0)
        else:
            for part in ("query", "key", "value"):
                _take(state, f"{prefix}self.{part}.weight", index)
                _take(state, f"{prefix}self.{part}.bias", index)
            _take(state, f"{prefix}output.dense.weight", index, dim=1)
    names = [layer.name or "(model)" for layer in layers]
    return Transformed(theta, buffers, f"permute the heads of {len(layers)} attention layer(s) (seed {seed}): "
                                       f"{_listed(names)}")


# -- applicability and the check ---------------------------------------------------------------------
def applicable(subject) -> dict[str, str | None]:
    """Per transformation (``TRANSFORMATIONS``): None if it applies to the subject, else why not."""
    if not isinstance(subject, ModuleSubject):
        reason = (f"{getattr(subject, 'name', subject)!r} is a {type(subject).__name__}, a function of a flat vector "
                  "with no layers to reparameterize")
        return dict.fromkeys(TRANSFORMATIONS, reason)
    sites, normalized, failure = _graph_structure(subject)
    none_found = (f"no sites found: {failure}" if failure else
                  "no sites found: no Linear/Conv layer feeds exactly one other Linear/Conv through elementwise "
                  "activations, pooling or flattening alone")
    activations = sorted({site.activation for site in sites})
    return {
        "rescale": None if any(site.rescalable for site in sites) else none_found if not sites else (
            f"no positively homogeneous site: the activations are {activations} (rescaling needs ReLU, LeakyReLU "
            "or none, and an affine BatchNorm where there is one)"),
        "scale_before_norm": None if normalized else (
            "no BatchNorm: no Linear/Conv layer feeds only a BatchNorm with running statistics"
            + (f" ({failure})" if failure else "")),
        "permute": None if any(site.units >= 2 for site in sites) else none_found if not sites else (
            "every site has a single unit: nothing to permute"),
        "permute_heads": None if find_heads(subject) else (
            "no attention heads: no attention layer with two or more heads (GPT-2's c_attn/c_proj or BERT's "
            "query/key/value/output.dense) whose parameters are all in theta"),
    }


def rounding_tolerance(dtype: torch.dtype) -> float:
    """The relative tolerance of ``check_function`` for a subject of this dtype."""
    return _RTOL.get(dtype, 1e-5)


def _tensors(outputs) -> list[torch.Tensor]:
    if torch.is_tensor(outputs):
        return [outputs]
    if hasattr(outputs, "to_tuple"):  # a Hugging Face ModelOutput
        outputs = outputs.to_tuple()
    return [leaf for leaf in batches.leaves(outputs) if torch.is_tensor(leaf) and leaf.is_floating_point()]


def check_function(subject, theta, buffers, theta2, buffers2) -> dict:
    """Whether (theta, buffers) and (theta2, buffers2) compute the same function: the evaluation
    loss of both, and the largest absolute difference of the model outputs over the evaluation
    batches (``eval_batches``, the forward the subject uses). Both must agree within rounding:
    |loss - loss2| <= rtol (1 + |loss|) and max |out - out2| <= rtol (1 + max |out|), rtol from
    ``rounding_tolerance`` (1e-5 in float32, 1e-10 in float64). Buffers None: the subject's
    (``buffers_at``). Under torch.distributed the outputs compared are this process's share. On a
    GPU with TF32 matmuls or convolutions allowed, float32 products round at ~1e-3, beyond rtol."""
    model = _model(subject, "check_function")
    theta, theta2 = subject.as_theta(theta), subject.as_theta(theta2)
    buffers, buffers2 = subject.buffers_at(theta, buffers), subject.buffers_at(theta2, buffers2)
    loss, loss2 = subject.loss(theta, buffers), subject.loss(theta2, buffers2)
    difference, scale = 0.0, 0.0
    model.eval()
    with torch.no_grad():
        for batch, _ in subject.eval_batches():
            first = _tensors(subject._forward(theta, buffers, batch[0]))
            second = _tensors(subject._forward(theta2, buffers2, batch[0]))
            for a, b in zip(first, second):
                if a.numel():
                    gap = float((a - b).abs().max())
                    difference = max(difference, gap if math.isfinite(gap) else math.inf)
                    scale = max(scale, float(a.abs().max()))
    rtol = rounding_tolerance(subject.theta0.dtype)
    loss_ok = abs(loss - loss2) <= rtol * (1 + abs(loss))
    outputs_ok = difference <= rtol * (1 + scale)
    return {"loss": loss, "loss_transformed": loss2, "loss_difference": abs(loss - loss2),
            "output_difference": difference, "output_scale": scale, "rtol": rtol,
            "loss_unchanged": bool(loss_ok), "outputs_unchanged": bool(outputs_ok),
            "unchanged": bool(loss_ok and outputs_ok and math.isfinite(loss))}
