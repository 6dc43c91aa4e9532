"""Data as users hand it over, held in memory as ``(inputs, targets)``.

``inputs`` (and ``targets``) may be a tensor or a tuple, list or dict of tensors with one leading
example dimension (a model taking several inputs, or keyword inputs); the data may come as such a
pair, a map-style or iterable ``torch.utils.data.Dataset``, or a ``DataLoader``; a batch may also be
a Hugging Face-style dict with a ``labels`` entry (inputs: the rest) or a tuple of k > 2 tensors
(inputs: the first k - 1; ``split_batch``). Data that fits is materialized once, in a fixed order,
so a subject's loss is a deterministic mean over its data and its fingerprint does not depend on a
loader's shuffling; larger data streams the same way (``lossatlas.sources``). How a batch of
inputs reaches the model: ``model(x)`` for a tensor, ``model(*x)`` for a tuple or list,
``model(**x)`` for a dict.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import numpy as np
import torch
from torch.utils.data import (BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler,
                              Subset, default_collate)

from .errors import ConfigError

_SHAPE_HINT = ("(inputs, targets), where inputs is a tensor or a tuple/list/dict of tensors (several model "
               "inputs) and targets a tensor, or a torch Dataset / DataLoader whose items are such pairs")


def tree_map(fn: Callable[[torch.Tensor], object], tree):
    """``fn`` applied to every tensor of a tensor / tuple / list / dict structure."""
    if isinstance(tree, dict):
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple
        return type(tree)(*(tree_map(fn, value) for value in tree))
    if type(tree) in (tuple, list):  # not their subclasses (torch.Size is a leaf)
        return type(tree)(tree_map(fn, value) for value in tree)
    return fn(tree)


def leaves(tree) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    tree_map(found.append, tree)
    return found


def count(tree) -> int:
    """The number of examples: the common leading length of the tensors."""
    return len(leaves(tree)[0])


def take(tree, index):
    """The examples ``index`` (a slice or index tensor) of every tensor."""
    return tree_map(lambda tensor: tensor[index], tree)


def concat(trees: list):
    """Structures of equal shape joined along the example dimension."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: concat([tree[key] for tree in trees]) for key in first}
    if isinstance(first, (tuple, list)):
        items = [concat([tree[i] for tree in trees]) for i in range(len(first))]
        return type(first)(*items) if hasattr(first, "_fields") else type(first)(items)
    return torch.cat(trees)


def model_arguments(inputs) -> tuple[tuple, dict]:
    """(args, kwargs) of the model call for a batch of inputs."""
    if isinstance(inputs, dict):
        return (), inputs
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def materialize(data, what: str) -> tuple[object, object]:
    """``data`` as an in-memory ``(inputs, targets)`` pair of tensor structures, as given (see
    ``cast_inputs`` for the model's dtype)."""
    if isinstance(data, DataLoader):
        inputs, targets = _from_loader(data, what)
    elif isinstance(data, Dataset):
        inputs, targets = _from_loader(DataLoader(data, batch_size=256, shuffle=False, collate_fn=collate_items),
                                       what)
    else:
        inputs, targets = split_batch(data, what)
    inputs, targets = (_as_tensor_tree(part, what, name) for part, name in ((inputs, "inputs"), (targets, "targets")))
    lengths = {len(t) if t.ndim else 0 for t in leaves(inputs) + leaves(targets)}
    if len(lengths) != 1 or 0 in lengths or not leaves(inputs):
        raise ConfigError(f"{what}: the inputs and targets must have one common, non-zero number of examples "
                          f"(leading dimension); got lengths {sorted(lengths)}.")
    return inputs, targets


def cast_inputs(data, dtype: torch.dtype):
    """The data with floating-point inputs in ``dtype`` (the model's), so float32 data meets a float64
    model; targets stay as given (the loss promotes them, as torch does)."""
    inputs, targets = data
    return tree_map(lambda t: t.to(dtype) if t.is_floating_point() else t, inputs), targets


def describe(data) -> dict:
    """What identifies a dataset in a subject's config: size, input shape(s) and a digest of the
    values (a plain tensor keeps the form stores written before structured inputs used)."""
    inputs, targets = data
    return {"n": count(inputs), "input_shape": tree_map(lambda t: list(t.shape[1:]), inputs),
            "sha1": sha1(*leaves(inputs), *leaves(targets))}


def sha1(*tensors: torch.Tensor) -> str:
    import hashlib

    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.detach().contiguous().cpu().numpy().reshape(-1).view("u1"))  # the bytes, not a copy
    return digest.hexdigest()[:16]


def _from_loader(loader: DataLoader, what: str):
    """Every batch of the loader, concatenated; a map-style dataset is read in index order (not the
    loader's shuffled order), so the fingerprint is the same on every run."""
    if not isinstance(loader.dataset, IterableDataset):
        loader = DataLoader(_chosen(loader, what), batch_size=loader.batch_size or 256, shuffle=False,
                            collate_fn=loader_collate(loader))
    batches = []
    try:
        for batch in loader:
            batches.append(split_batch(batch, f"{what}: a batch of the DataLoader"))
    except RuntimeError as err:  # default_collate stacking examples of different shapes
        raise ConfigError(f"{what}: the examples cannot be stacked into batches ({' '.join(str(err).split())}); "
                          "give every example the same shape (pad sequences to one length, with their "
                          "attention_mask, e.g. padding='max_length').") from None
    if not batches:
        raise ConfigError(f"{what}: the DataLoader yielded no batches.")
    try:
        return concat([b[0] for b in batches]), concat([b[1] for b in batches])
    except (RuntimeError, TypeError, KeyError, IndexError) as err:
        raise ConfigError(f"{what}: the DataLoader's batches cannot be joined into one dataset ({err}); every batch "
                          "must have the same structure and the same shape except the first dimension (pad sequences "
                          "to one length).") from None


def loader_collate(loader: DataLoader | None) -> Callable:
    """How the examples of a loader's dataset (or of a plain Dataset: None) are joined into batches
    when lossatlas re-batches them: the loader's own collate_fn, except torch's default (and the
    per-example conversion of batch_size=None), which become ``collate_items`` (token-id lists as
    tensors)."""
    collate = default_collate if loader is None or loader.batch_size is None else loader.collate_fn
    return collate_items if collate is default_collate else collate


def _chosen(loader: DataLoader, what: str) -> Dataset:
    """The examples a loader's sampler covers, in index order: the whole dataset for the plain
    sequential or shuffled samplers, the subset of a sampler with ``indices`` (SubsetRandomSampler);
    samplers that draw with replacement or by weight have no fixed set of examples."""
    sampler = loader.batch_sampler.sampler if isinstance(loader.batch_sampler, BatchSampler) else loader.sampler
    if isinstance(sampler, SequentialSampler) or (isinstance(sampler, RandomSampler) and not sampler.replacement
                                                  and sampler.num_samples == len(loader.dataset)):
        return loader.dataset
    indices = getattr(sampler, "indices", None)
    if indices is not None:
        return Subset(loader.dataset, sorted(set(int(i) for i in indices)))
    raise ConfigError(f"{what}: the DataLoader's sampler ({type(sampler).__name__}) does not say which examples it "
                      "covers; the landscape is a mean over a fixed dataset. Pass the examples as a Dataset "
                      "(e.g. torch.utils.data.Subset) or as (inputs, targets).")


def _collate(items):
    """default_collate, with lists of plain numbers taken as one feature vector per example."""
    numbers = lambda v: isinstance(v, (list, tuple)) and v and all(  # noqa: E731
        isinstance(x, (int, float, np.number)) for x in v)
    return default_collate([type(item)(torch.as_tensor(np.asarray(v)) if numbers(v) else v for v in item)
                            if isinstance(item, (tuple, list)) else item for item in items])


def _as_tensor_tree(tree, what: str, name: str):
    def convert(leaf):
        if isinstance(leaf, np.ndarray) or torch.is_tensor(leaf):
            return torch.as_tensor(leaf).detach()
        raise ConfigError(f"{what}: the {name} must be tensors or numpy arrays (or tuples/lists/dicts of them); "
                          f"found a {type(leaf).__name__}. Expected {_SHAPE_HINT}.")
    return tree_map(convert, tree)


def split_batch(batch, what: str) -> tuple[object, object]:
    """A batch as users hand it over, as an ``(inputs, targets)`` pair: a pair as it is; a
    Hugging Face-style dict with a ``labels`` entry as (the dict without it, the labels); a
    tuple or list of k > 2 tensors as (the first k - 1, a tuple passed as ``model(*inputs)``, the
    last)."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ConfigError(f"{what} must be an (inputs, targets) pair; got a dict with keys {sorted(batch)} and no "
                              "'labels': a dict batch needs its targets under 'labels' (as Hugging Face batches "
                              "have them).")
        return {key: value for key, value in batch.items() if key != "labels"}, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, (tuple, list)) and len(batch) > 2 and all(
            torch.is_tensor(part) or isinstance(part, np.ndarray) for part in batch):
        return tuple(batch[:-1]), batch[-1]
    got = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) \
        else type(batch).__name__
    raise ConfigError(f"{what} must be {_SHAPE_HINT}, a dict with a 'labels' entry (the targets), or a tuple of "
                      f"tensors whose last is the targets; got {got}.")


def collate_items(items):
    """``_collate``, with dict examples (Hugging Face datasets) whose values are lists of numbers
    (token ids) taken as one tensor each."""
    if items and isinstance(items[0], Mapping):
        numbers = lambda v: isinstance(v, (list, tuple)) and all(  # noqa: E731
            isinstance(x, (int, float, np.number)) for x in v)
        return default_collate([{key: torch.as_tensor(np.asarray(value)) if numbers(value) else value
                                 for key, value in item.items()} for item in items])
    return _collate(items)
