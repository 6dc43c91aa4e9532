"""HVP variants: double backward vs forward-over-reverse, each eager and under torch.compile.

    python -m benchmarks.perf --only hvp

On one model and one fixed batch, the same parameters and the same vector v: the gradient and
the Hessian-vector product H v by (a) double backward (``torch.autograd.grad`` with
``create_graph``, then the gradient of g·v: what ``lossatlas.evaluation.hvp`` does) and (b)
forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad`` over ``functional_call``: what
curvlinops does), each eager and compiled. The first call of a compiled function (tracing,
compiling, one run) is timed on its own; steady-state times are medians of interleaved rounds
after a warm-up call. Every product is checked against eager double backward before its time
counts. Models: ResNet-20 on digits (as ``problems.resnet`` builds it) and a tiny GPT-2 built
from a config (random weights, nothing downloaded) on random token ids. Part of
``python -m benchmarks.perf``.
"""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, jvp

from .common import Section, log, table

Params = dict[str, torch.Tensor]


@dataclass
class Case:
    """One model on one fixed batch: ``loss`` maps a dict of named parameters to the batch's mean
    loss; ``check`` is a product computed another way (or None) that (a) must match."""

    name: str
    about: str
    loss: Callable[[Params], torch.Tensor]
    params: Params
    vector: Params
    check: tuple[str, Callable[[], tuple[torch.Tensor, ...]]] | None = None
    notes: list[str] = field(default_factory=list)


# -- the variants: functions of (loss, params[, vector]) returning a tuple in the params' order --------
def gradient(loss, params: Params) -> tuple[torch.Tensor, ...]:
    leaves = list(params.values())
    return torch.autograd.grad(loss(params), leaves)


def double_backward(loss, params: Params, vector: Params) -> tuple[torch.Tensor, ...]:
    """(a): reverse over reverse with torch.autograd, as evaluation.hvp does it."""
    leaves = list(params.values())
    grads = torch.autograd.grad(loss(params), leaves, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vector.values()))
    return torch.autograd.grad(dot, leaves)


def forward_over_reverse(loss, params: Params, vector: Params) -> tuple[torch.Tensor, ...]:
    """(b): a jvp of the gradient function (Pearlmutter 1994's R-operator in forward mode)."""
    _, tangent = jvp(torch.func.grad(loss), (params,), (vector,))
    return tuple(tangent[name] for name in params)


def _relative_error(found, reference) -> float:
    num = sum(float((a.detach() - b.detach()).pow(2).sum()) for a, b in zip(found, reference))
    den = sum(float(b.detach().pow(2).sum()) for b in reference)
    return (num / den) ** 0.5


# -- the models --------------------------------------------------------------------------------
def _named(model: nn.Module) -> tuple[Params, Params]:
    params = {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    return params, buffers


def _vector(params: Params, seed: int = 1) -> Params:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(p.shape, generator=generator, dtype=p.dtype) for k, p in params.items()}


def resnet_case(n: int) -> Case:
    """ResNet-20 (skip connections) on the first ``n`` digits, as hessian.py builds it; eval mode
    with its BatchNorm statistics fixed, as lossatlas evaluates a landscape."""
    from lossatlas import evaluation
    from lossatlas.problems import resnet

    subject = resnet(skip=True, n_train=n, eval_batch_size=n, device="cpu")
    model = subject.model.eval()
    inputs, targets = subject.data
    criterion = nn.CrossEntropyLoss()
    params, buffers = _named(model)
    vector = _vector(params)

    def loss(p: Params) -> torch.Tensor:
        return criterion(functional_call(model, {**p, **buffers}, (inputs,)), targets)

    def via_evaluation():
        # lossatlas's own hvp on the same subject, theta and vector (one evaluation batch)
        flat = torch.cat([v.reshape(-1) for v in vector.values()])
        theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
        product = evaluation.hvp(subject, theta, flat)
        pieces = product.split([p.numel() for p in params.values()])
        return tuple(piece.reshape(p.shape) for piece, p in zip(pieces, params.values()))

    names = [name for name, *_ in subject.param_layout]
    check = ("lossatlas.evaluation.hvp", via_evaluation) if names == list(params) else None
    about = (f"ResNet-20 (skip), {sum(p.numel() for p in params.values())} parameters, {n} digits "
             f"{tuple(inputs.shape[1:])}, cross-entropy")
    return Case("resnet20_digits", about, loss, params, vector, check)


def gpt2_case(batch: int, length: int, vocab: int = 512) -> Case:
    """A 2-layer GPT-2 built from a config (random weights) on random token ids, next-token
    cross-entropy computed here (transformers' own loss path logs a warning that torch.compile
    cannot trace). Eager attention: the fused (SDPA) kernel has no double backward."""
    import transformers

    def build(attention: str):
        config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=vocab, n_positions=length,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                         eos_token_id=0, attn_implementation=attention)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return transformers.GPT2LMHeadModel(config).eval()

    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))

    def loss_of(model):
        params, buffers = _named(model)

        def loss(p: Params) -> torch.Tensor:
            logits = functional_call(model, {**p, **buffers}, (ids,)).logits
            return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        return loss, params

    loss, params = loss_of(build("eager"))
    vector = _vector(params)
    notes = []
    sdpa_loss, sdpa_params = loss_of(build("sdpa"))
    for label, fn in (("double backward", double_backward), ("forward-over-reverse", forward_over_reverse)):
        try:
            fn(sdpa_loss, sdpa_params, vector)
            notes.append(f"{label} with SDPA attention: works")
        except (RuntimeError, NotImplementedError) as error:
            notes.append(f"{label} with SDPA attention: fails ({_first_line(error)})")
    about = (f"GPT-2 (2 layers, 2 heads, width 64, eager attention, tied embeddings), "
             f"{sum(p.numel() for p in params.values())} parameters, {batch}×{length} random tokens of {vocab}")
    return Case("gpt2_tiny", about, loss, params, vector, notes=notes)


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Variant:
    label: str
    kind: str  # "gradient" or "hvp"
    compiled: bool
    fn: Callable[[], tuple[torch.Tensor, ...]]
    first_s: float = float("nan")
    graphs: str = ""
    failure: str = ""
    value: tuple[torch.Tensor, ...] | None = None
    error: float = float("nan")
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def _first_line(error: BaseException, limit: int = 160) -> str:
    """The error's first sentence, for a table cell."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(". ")[0].rstrip(".")
    return (text[:limit] + "…") if len(text) > limit else text


def _counts() -> tuple[int, int, int, int]:
    from torch._dynamo.utils import counters

    return (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()),
            counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])


def _variants(case: Case, compile_too: bool) -> list[Variant]:
    loss, params, vector = case.loss, case.params, case.vector
    out = [Variant("gradient", "gradient", False, lambda: gradient(loss, params)),
           Variant("(a) double backward", "hvp", False, lambda: double_backward(loss, params, vector)),
           Variant("(b) forward-over-reverse", "hvp", False, lambda: forward_over_reverse(loss, params, vector))]
    if compile_too:  # each whole function compiled on its own (its own code, so its own graphs)
        compiled = {fn: torch.compile(functools.partial(fn, loss))
                    for fn in (gradient, double_backward, forward_over_reverse)}
        out += [Variant("gradient", "gradient", True, lambda: compiled[gradient](params)),
                Variant("(c) double backward", "hvp", True, lambda: compiled[double_backward](params, vector)),
                Variant("(d) forward-over-reverse", "hvp", True,
                        lambda: compiled[forward_over_reverse](params, vector))]
    return out


def _measure(case: Case, repeat: int, compile_too: bool) -> list[Variant]:
    torch._dynamo.reset()
    variants = _variants(case, compile_too)
    for variant in variants:  # first calls: eager ones warm up, compiled ones compile here
        before = _counts()
        start = time.perf_counter()
        try:
            value = variant.fn()
        except Exception as error:  # noqa: BLE001 - a failing variant is a result, recorded as such
            variant.first_s = time.perf_counter() - start
            variant.failure = f"{type(error).__name__}: {_first_line(error)}"
            log(f"hvp: {case.name} {variant.label} compiled={variant.compiled} failed: {variant.failure}")
            continue
        variant.first_s = time.perf_counter() - start
        if variant.compiled:
            graphs, breaks, hits, misses = (b - a for a, b in zip(before, _counts()))
            variant.graphs = f"{graphs} graphs, {breaks} breaks; cache {hits} hit / {misses} miss"
            variant.fn()  # a second call: anything lazy (recompiles on a guard) happens before timing
        variant.value = value
        log(f"hvp: {case.name} {variant.label} compiled={variant.compiled} first call {variant.first_s:.1f} s")
    reference = {"gradient": variants[0].value, "hvp": variants[1].value}  # the eager gradient, eager (a)
    for variant in variants:
        if not variant.failure:
            variant.error = _relative_error(variant.value, reference[variant.kind])
    if case.check is not None:
        label, fn = case.check
        case.notes.append(f"(a) against {label} on the same θ and v: relative error "
                          f"{_relative_error(variants[1].value, fn()):.1e}")
    working = [v for v in variants if not v.failure]
    for _ in range(repeat):  # interleaved, so a slow spell of the shared machine hits all alike
        for variant in working:
            start = time.perf_counter()
            variant.fn()
            variant.times.append(time.perf_counter() - start)
    return variants


def _paired_ratio(variant: Variant, base: Variant) -> float:
    """Median over the rounds of the round's time ratio: the two ran back to back in each round, so
    a slow spell of the shared machine cancels out better than in a ratio of medians."""
    return statistics.median(a / b for a, b in zip(variant.times, base.times))


def _rows(case: Case, variants: list[Variant]) -> list[list[str]]:
    grads = {v.compiled: v for v in variants if v.kind == "gradient"}
    rows = []
    for v in variants:
        mode = "torch.compile" if v.compiled else "eager"
        if v.failure:
            rows.append([case.name, v.label, mode, f"{v.first_s:.1f} (failed)", v.graphs or "–",
                         f"**fails**: {v.failure}", "–", "–", "–"])
            continue
        same = grads[v.compiled]
        ratio = f"{_paired_ratio(v, same):.2f}×" if not same.failure and v.kind == "hvp" else "–"
        rows.append([case.name, v.label, mode, f"{v.first_s:.2f}", v.graphs or "–", f"{v.median * 1e3:.1f}",
                     ratio, f"{_paired_ratio(v, grads[False]):.2f}×", f"{v.error:.1e}"])
    return rows


def _verdict(case: Case, variants: list[Variant]) -> str:
    hvps = sorted((v for v in variants if v.kind == "hvp" and not v.failure), key=lambda v: v.median)
    mode = lambda v: "torch.compile" if v.compiled else "eager"  # noqa: E731
    best = hvps[0]
    text = (f"{case.name}: fastest HVP is {best.label} ({mode(best)}), {best.median * 1e3:.1f} ms, "
            f"{_paired_ratio(best, variants[0]):.2f}× the eager gradient")
    if len(hvps) > 1:
        text += f"; next {hvps[1].label} ({mode(hvps[1])}) at {_paired_ratio(hvps[1], best):.2f}× its time"
    eager = {v.label[:3]: v for v in hvps if not v.compiled}
    if "(a)" in eager and "(b)" in eager:
        text += f"; eager (b) / eager (a) = {_paired_ratio(eager['(b)'], eager['(a)']):.2f}"
    return text + "."


def run(quick: bool = False) -> Section:
    repeat = 3 if quick else 7
    section = Section("hvp", "HVP variants: double backward vs forward-over-reverse, eager and compiled")
    cases = [resnet_case(128 if quick else 500), gpt2_case(8 if quick else 16, 64)]
    header = ["model", "variant", "mode", "first call s (compile incl.)", "compiled graphs", "ms / call (median)",
              "HVP / gradient, same mode", "× eager gradient", "rel. error vs (a) eager"]
    rows, verdicts, notes = [], [], []
    for case in cases:
        # compiling ResNet-20 takes minutes on 2 cores: a quick run compiles only the small GPT-2
        compile_too = not (quick and case.name.startswith("resnet"))
        log(f"hvp: {case.name}")
        variants = _measure(case, repeat, compile_too)
        rows += _rows(case, variants)
        verdicts.append(_verdict(case, variants))
        notes += [f"{case.name}: {note}." for note in case.notes]
        if not compile_too:
            notes.append(f"{case.name}: compiled variants skipped in --quick.")
    section.text += [
        "The same batch, parameters and vector v for every variant of a model; float32 on the CPU, torch threads "
        f"{torch.get_num_threads()}. (a) double backward: `torch.autograd.grad` with `create_graph`, then the "
        "gradient of g·v (what `lossatlas.evaluation.hvp` does); (b) forward-over-reverse: `torch.func.jvp` of "
        "`torch.func.grad` over `torch.func.functional_call` (what curvlinops does); (c), (d) the same under "
        "`torch.compile` (inductor; each whole function compiled, the gradient's too). \"First call\" is tracing + "
        "compiling + one run (the inductor FX-graph cache on disk may already hold the kernels: its hits and misses "
        f"are listed). Steady-state times are medians of {repeat} interleaved rounds after a warm-up call; ratios "
        "are medians of the per-round ratios (both sides timed in the same round). \"Same mode\" divides by the "
        "gradient timed in the same mode (compiled HVP by compiled gradient): the quantity curvlinops publishes for "
        "ResNet-18 on an NVIDIA RTX A6000 (2.2× compiled, 7.9× eager, as quoted; not rerun here). Their GPU and "
        "ResNet-18 on CIFAR-sized images are not this 2-core CPU and ResNet-20 on 8×8 digits, so only the ratio "
        "compares. Every product is checked against eager double backward (relative 2-norm error) before its time "
        "counts. (c) fails because AOTAutograd's compiled backward cannot itself be differentiated: with "
        "`torch._functorch.config.donated_buffer=False`, as its message suggests, it refuses with \"torch.compile "
        "with aot_autograd does not currently support double backward\" instead (checked by hand, torch 2.13).",
        "\n".join([*[f"- {case.name}: {case.about}" for case in cases], *[f"- {line}" for line in verdicts],
                   *[f"- {line}" for line in notes]]),
    ]
    section.tables.append(table(header, rows))
    return section
