"""Hugging Face transformers models as subjects: their losses, the call that gives their logits,
and ``subject(model, data, task=...)`` that wraps them in a ModuleSubject.

The landscape of a causal language model is the mean next-token cross-entropy over every token
of the data set (``CausalLMLoss``; its ``terms`` tells the evaluation how many tokens a batch
holds, so batches are weighed by their tokens, not their sequences); a sequence classifier's is
the mean cross-entropy over its sequences. Models are taken as built (from a config: nothing is
downloaded here). Attention runs as torch's math kernel in every forward (``ModuleSubject``), so
Hessian-vector products work; implementations that do not call torch's attention (flash, flex)
are switched to "sdpa" on the subject's copy of the model. transformers is imported lazily.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import inputs as batches
from .errors import ConfigError
from .subjects import ModuleSubject

__all__ = ["CausalLMLoss", "SequenceClassificationLoss", "TASKS", "IGNORE_INDEX", "logits", "subject", "init_weights"]

IGNORE_INDEX = -100  # the label Hugging Face and torch's cross-entropy leave out
TASKS = ("causal-lm", "sequence-classification")
DIFFERENTIABLE_ATTENTION = ("eager", "sdpa")  # both reach torch's math kernel (ModuleSubject._forward)
FUSED_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")  # the same attention, no double backward


class CausalLMLoss(nn.Module):
    """Next-token cross-entropy: the logits (batch, seq, vocab) at position t score the label at
    t + 1 (labels (batch, seq), shifted here as Hugging Face does); labels equal to ``ignore_index``
    (padding) count nothing; the mean is over the counted tokens."""

    ignore_index = IGNORE_INDEX

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores = logits[:, :-1].reshape(-1, logits.shape[-1])
        shifted = labels[:, 1:].reshape(-1)
        summed = F.cross_entropy(scores, shifted, ignore_index=self.ignore_index, reduction="sum")
        return summed / (shifted != self.ignore_index).sum().clamp(min=1)

    def terms(self, targets: torch.Tensor) -> int:
        """How many tokens the mean on a batch with these labels averages over."""
        return int((targets[:, 1:] != self.ignore_index).sum())


class SequenceClassificationLoss(nn.CrossEntropyLoss):
    """Cross-entropy over the logits (batch, classes) of a sequence classifier, the mean over the
    sequences whose label is not ``ignore_index``."""

    def terms(self, targets: torch.Tensor) -> int:
        return int((targets != self.ignore_index).sum())


def logits(model: nn.Module, inputs) -> torch.Tensor:
    """The logits of a Hugging Face model on a batch (``model(**inputs).logits`` for a dict),
    without a key-value cache (it is for generation, and a landscape never reuses it)."""
    args, kwargs = batches.model_arguments(inputs)
    if getattr(getattr(model, "config", None), "use_cache", False):
        kwargs = {**kwargs, "use_cache": False}
    out = model(*args, **kwargs)
    return out.logits if hasattr(out, "logits") else out[0]


def init_weights(model: nn.Module) -> None:
    """Re-initialize a Hugging Face model in place with its own scheme (``init_weights``: e.g.
    GPT-2's normal(0, initializer_range) and scaled residual projections), for ``init_theta``;
    the markers of modules it has initialized are cleared first, or it would skip them."""
    for module in model.modules():
        module.__dict__.pop("_is_hf_initialized", None)
    model.init_weights()


def subject(model: nn.Module, data, task: str = "causal-lm", *, test_data=None, train_data=None,
            forward: Callable | None = None, init: Callable | None = None, name: str | None = None,
            config: dict | None = None, **kwargs) -> ModuleSubject:
    """A ModuleSubject for a Hugging Face model on ``data``.

    ``task``: "causal-lm" (``CausalLMLoss``: labels are the input ids, shifted here) or
    "sequence-classification" (``SequenceClassificationLoss``). Data as ``ModuleSubject`` takes it,
    and Hugging Face batches: a dict of inputs with ``labels`` (for "causal-lm" without them the
    labels are the ``input_ids``), or a Dataset / DataLoader of such dicts. For "causal-lm" every
    label whose ``attention_mask`` is 0 (padding) becomes -100, ignored. ``forward`` defaults to
    ``logits``, ``init`` to ``init_weights``; other keywords go to ModuleSubject (``eval_batch_size``,
    ``device``...). Parameters with ``requires_grad=False`` (frozen embeddings) stay out of theta.
    """
    if task not in TASKS:
        raise ConfigError(f"Unknown task {task!r} for a Hugging Face subject; valid: {list(TASKS)}.")
    model, attention = _with_differentiable_attention(model)
    loss_fn = CausalLMLoss() if task == "causal-lm" else SequenceClassificationLoss()
    given = {"data": data, "test_data": test_data, "train_data": train_data}
    prepared = {what: None if value is None else _prepared(value, what, task) for what, value in given.items()}
    if task == "causal-lm":
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        for what, value in prepared.items():
            if isinstance(value, tuple):
                _check_token_labels(value, what, vocab)
    label = name or f"{getattr(getattr(model, 'config', None), 'model_type', type(model).__name__)}_{task}"
    made = ModuleSubject(model, loss_fn, prepared["data"], test_data=prepared["test_data"],
                         train_data=prepared["train_data"], forward=forward or logits, init=init or init_weights,
                         name=label, config={"task": task, "attention": attention, **(config or {})}, **kwargs)
    if task == "causal-lm" and vocab:  # a Dataset or DataLoader, now held or streamed
        for what, held in (("data", made.data), ("test_data", made.test_data), ("train_data", made.train_data)):
            if isinstance(held, tuple) and not isinstance(prepared[what], tuple):
                _check_token_labels(held, what, vocab)
            bounds = getattr(held, "label_range", None)
            if bounds and (bounds[0] < 0 or bounds[1] >= vocab):
                raise ConfigError(f"{what}: token labels in [{bounds[0]}, {bounds[1]}], outside the vocabulary "
                                  f"[0, {vocab - 1}] of the model; check the tokenizer and the model's vocab_size.")
    return made


# -- attention ------------------------------------------------------------------------------------
def _with_differentiable_attention(model: nn.Module) -> tuple[nn.Module, str]:
    """The model, or a copy switched to "sdpa" attention where it uses a fused implementation that
    bypasses torch's attention function (flash, flex: the same attention, no double backward);
    other implementations are refused. Returns (model, the implementation used)."""
    found = {config._attn_implementation for module in model.modules()
             if (config := getattr(module, "config", None)) is not None and hasattr(config, "_attn_implementation")}
    found.discard(None)
    base = {impl.split("|")[-1] for impl in found}  # "paged|sdpa": paged caches for generation, the same attention
    if base <= set(DIFFERENTIABLE_ATTENTION):
        return model, ",".join(sorted(found)) or "none"
    unknown = base - set(DIFFERENTIABLE_ATTENTION) - set(FUSED_ATTENTION)
    remedy = ("Build the model with attn_implementation='sdpa' (or 'eager'), or call "
              "model.set_attn_implementation('sdpa') before making the subject.")
    if unknown:
        raise ConfigError(f"{type(model).__name__} uses attention implementation(s) {sorted(unknown)}; lossatlas needs "
                          "second derivatives through attention (Hessian-vector products), which it can take only "
                          f"through torch's own attention ('eager' or 'sdpa'). {remedy}")
    switched = copy.deepcopy(model)
    target = "sdpa" if getattr(switched, "_supports_sdpa", False) else "eager"
    try:
        switched.set_attn_implementation(target)
    except Exception as err:  # noqa: BLE001 -- transformers' own refusal, reported with the remedy
        raise ConfigError(f"{type(model).__name__} uses {sorted(found)} attention, which has no second derivatives, "
                          f"and could not be switched to {target!r} ({type(err).__name__}: {err}). {remedy}") from err
    return switched, target


# -- data -----------------------------------------------------------------------------------------
def _prepared(data, what: str, task: str):
    """The data with Hugging Face conventions resolved: in memory as an (inputs, targets) pair, a
    Dataset or DataLoader as a DataLoader whose batches are such pairs (so a large one can still be
    streamed)."""
    split = _Split(task, what)
    if isinstance(data, DataLoader):
        if data.batch_size is None:  # a batch sampler of its own: read it all here
            return split(batches.materialize(data, what))
        sampler = {} if isinstance(data.dataset, IterableDataset) else {"sampler": data.sampler}
        return DataLoader(data.dataset, batch_size=data.batch_size, collate_fn=_Collated(data.collate_fn, split),
                          num_workers=data.num_workers, **sampler)
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=256, shuffle=False, collate_fn=_Collated(batches.collate_items, split))
    inputs, targets = split(data)
    return batches.materialize((inputs, targets), what)


class _Split:
    """A batch as (inputs, targets): for "causal-lm" the labels default to the input ids and are
    -100 (ignored) wherever the attention mask is 0."""

    def __init__(self, task: str, what: str):
        self.task, self.what = task, what

    def __call__(self, batch):
        if self.task == "causal-lm" and isinstance(batch, Mapping) and "labels" not in batch and "input_ids" in batch:
            batch = {**batch, "labels": batch["input_ids"]}
        inputs, targets = batches.split_batch(batch, self.what)
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if self.task == "causal-lm" and mask is not None:
            targets = torch.as_tensor(targets).masked_fill(torch.as_tensor(mask) == 0, IGNORE_INDEX)
        return inputs, targets


class _Collated:
    """A loader's collate function followed by ``_Split`` (a class, so worker processes can pickle it)."""

    def __init__(self, collate: Callable, split: _Split):
        self.collate, self.split = collate, split

    def __call__(self, items):
        return self.split(self.collate(items))


def _check_token_labels(data, what: str, vocab: int | None) -> None:
    """Causal-LM labels: one per input position, each a token id of the vocabulary or -100."""
    inputs, targets = data
    ids = inputs.get("input_ids") if isinstance(inputs, dict) else inputs if torch.is_tensor(inputs) else None
    if targets.is_floating_point() or targets.ndim != 2:
        raise ConfigError(f"{what}: causal-LM labels must be integer token ids of shape (batch, seq); got "
                          f"{targets.dtype} of shape {tuple(targets.shape)}.")
    if torch.is_tensor(ids) and ids.shape != targets.shape:
        raise ConfigError(f"{what}: the labels have shape {tuple(targets.shape)} and the input ids "
                          f"{tuple(ids.shape)}; a causal LM's labels are the input ids (shifted by the loss).")
    limit = vocab if vocab is not None else torch.iinfo(targets.dtype).max
    bad = targets[(targets != IGNORE_INDEX) & ((targets < 0) | (targets >= limit))]
    if len(bad):
        raise ConfigError(f"{what}: {len(bad)} label(s) outside the vocabulary [0, {limit - 1}], e.g. {int(bad[0])}; "
                          "use token ids of the model's vocabulary, or -100 for positions to ignore.")
