"""Data a subject reads batch by batch instead of holding: a streamed evaluation set.

A ``Stream`` keeps a user's ``Dataset`` (or the dataset of a ``DataLoader``) as the source of a
subject's data. Every pass reads it in index order, in batches of one fixed composition, so the
loss is still the deterministic mean over the whole set, and memory holds one batch at a time,
not the data. The one pass at construction counts the examples (and the terms a loss averages
over), checks their structure and computes the same fingerprint as the in-memory path
(``inputs.describe``), so a store does not care which path a machine chose: the first leaf is
hashed as it streams, the others are spooled to a temporary file and hashed after it.

``choose`` decides between the two paths for a dataset from a memory budget: data that fits
keeps today's in-memory fast path (``inputs.materialize``).
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import inputs as batches
from .errors import ConfigError

DEFAULT_BUDGET = 2 * 1024**3  # bytes a dataset may take in memory before it is streamed (``choose``)
_CHUNK = 1 << 20


def budget() -> int:
    """The memory budget for in-memory data: ``LOSSATLAS_DATA_BUDGET`` (bytes) if set, else the
    smaller of 2 GiB and a quarter of the physical memory."""
    from .memory import physical_memory

    if os.environ.get("LOSSATLAS_DATA_BUDGET"):
        return int(float(os.environ["LOSSATLAS_DATA_BUDGET"]))
    physical = physical_memory()
    return DEFAULT_BUDGET if physical is None else min(DEFAULT_BUDGET, physical // 4)


def choose(data, stream: bool | None, what: str) -> bool:
    """Whether to stream ``data``: as asked, else (``stream=None``) when a Dataset's estimated size
    (its first example's bytes times its length) exceeds ``budget()``. (inputs, targets) pairs the
    user already holds in memory are never streamed."""
    source = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(source, Dataset):
        if stream:
            raise ConfigError(f"{what}: stream=True reads a torch Dataset or DataLoader batch by batch; got "
                              f"{type(data).__name__}, which is already in memory. Pass the Dataset itself.")
        return False
    unordered = _unordered(data, source)
    if unordered and stream:
        raise ConfigError(f"{what}: {unordered}, so a stream could not read it in one fixed order of examples and "
                          "batches; pass the Dataset itself (a map-style one, or an iterable one read by one "
                          "process), or leave stream unset to hold it in memory.")
    if unordered:
        return False
    if stream is not None:
        return bool(stream)
    if isinstance(source, IterableDataset) or not hasattr(source, "__len__"):
        return True  # no size to estimate: one batch at a time is the safe side
    if len(source) == 0:
        return False  # materialize's clear error
    first = source[0]
    example = sum(t.element_size() * t.numel() for t in batches.leaves(batches.tree_map(torch.as_tensor, first))) \
        if _tensors_only(first) else 0
    return example * len(source) > budget()


def _unordered(data, source) -> str | None:
    """Why a loader cannot be streamed in a fixed order, or None: an iterable dataset split over
    worker processes interleaves their batches (each worker's last one short), and a loader whose
    items are already batches (batch_size=None) has no examples to re-batch."""
    if not isinstance(data, DataLoader):
        return None
    if isinstance(source, IterableDataset) and data.num_workers > 0:
        return f"its iterable dataset is read by {data.num_workers} worker processes"
    if isinstance(source, IterableDataset) and data.batch_size is None:
        return "its items are batches already (an iterable dataset with batch_size=None)"
    return None


class Stream:
    """A dataset read in index order in batches of ``batch_size``, one batch in memory at a time.

    ``inputs`` and ``targets`` are as ``lossatlas.inputs`` describes (a batch is an (inputs,
    targets) pair); floating inputs are cast to ``dtype`` as they are read. ``terms(targets)``
    (optional) is how many terms the loss averages over in a batch (default: its examples); the
    pass at construction sums it into ``total_terms``. ``ignore`` (the loss's ignore_index) is
    left out of ``label_range``.
    """

    def __init__(self, data, batch_size: int, what: str, dtype: torch.dtype | None = None,
                 terms: Callable[[object], float] | None = None, ignore: int | None = None):
        loader = data if isinstance(data, DataLoader) else None
        self.dataset = data.dataset if loader is not None else data
        self.what = what
        self.batch_size = int(batch_size)
        self.dtype = dtype
        self.num_workers = loader.num_workers if loader is not None else 0
        self._collate = batches.loader_collate(loader)  # as inputs.materialize
        self._terms = terms
        if loader is not None and not isinstance(self.dataset, IterableDataset):
            self.dataset = batches._chosen(loader, what)  # the examples its sampler covers, in index order
        self.count, self.total_terms, self.label_range, self.description = self._scan(ignore)
        if not _same(self.head(2), self.head(2)):
            raise ConfigError(f"{what}: reading its first examples twice gave different values (a random transform "
                              "or augmentation in the dataset?). A loss landscape is a fixed function of the "
                              "parameters: evaluate on a dataset without random transforms.")

    # -- reading ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[object, object]]:
        """Every batch, in index order, as given (not cast)."""
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self._collate,
                            num_workers=self.num_workers)
        for batch in loader:
            yield _pair(batch, self.what)

    @property
    def num_batches(self) -> int:
        """How many batches a pass reads (the last one may be short)."""
        return -(-self.count // self.batch_size)

    def batches(self, device: torch.device | None = None,
                which: Sequence[int] | None = None) -> Iterator[tuple[object, object]]:
        """Every batch in index order -- or only the batches numbered ``which`` (increasing; a
        process's share), the others not read -- cast to the model's dtype and moved to ``device``."""
        for batch in (self if which is None else self._numbered(which)):
            yield self._ready(batch, device)

    def _numbered(self, which: Sequence[int]) -> Iterator[tuple[object, object]]:
        """The batches numbered ``which``, as given: a map-style dataset reads only their examples
        (the same batches as a whole pass: the same indices, the same collate); an iterable one has
        no index, so it is read up to the last wanted batch and the others are dropped."""
        if isinstance(self.dataset, IterableDataset):
            wanted = set(which)
            last = max(wanted, default=-1)
            for number, batch in enumerate(self):
                if number > last:
                    return
                if number in wanted:
                    yield batch
            return
        loader = DataLoader(self.dataset, batch_sampler=_BatchIndices(which, self.batch_size, self.count),
                            collate_fn=self._collate, num_workers=self.num_workers)
        for batch in loader:
            yield _pair(batch, self.what)

    def head(self, k: int, device: torch.device | None = None):
        """The first ``k`` examples (all of them if fewer) as an in-memory (inputs, targets) pair."""
        k = min(k, self.count)
        batch = next(iter(DataLoader(_First(self.dataset, k), batch_size=k, collate_fn=self._collate)))
        return self._ready(_pair(batch, self.what), device)

    def shuffled(self, size: int, order: torch.Tensor, device=None) -> Iterator[tuple[object, object]]:
        """Batches of ``size`` examples in ``order`` (a permutation of the example indices): a
        training epoch, read as it goes."""
        for index in order.split(size):
            yield self.examples(index.tolist(), device, "training shuffles examples by index")

    def examples(self, indices: Sequence[int], device=None, why: str = "reading examples by index"):
        """The examples ``indices`` of a map-style dataset as one batch, cast and moved to ``device``."""
        if isinstance(self.dataset, IterableDataset):
            raise ConfigError(f"{self.what}: {why}, and an iterable dataset has no index; pass a map-style Dataset "
                              "(with __getitem__ and __len__).")
        return self._ready(_pair(self._collate([self.dataset[i] for i in indices]), self.what), device)

    def slices(self, size: int, device=None) -> Sequence:
        """The data in consecutive batches of ``size`` examples, the remainder left out, read when
        indexed (m-sharpness draws from them)."""
        return _Slices(self, size, device)

    def _ready(self, batch, device):
        inputs, targets = batch

        def move(t):
            return t if device is None else t.to(device, non_blocking=True)

        def cast(t):
            return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t

        return batches.tree_map(lambda t: move(cast(torch.as_tensor(t))), inputs), batches.tree_map(move, targets)

    # -- the pass at construction --------------------------------------------------------------------
    def _scan(self, ignore):
        """One pass: count, terms, label range, and the fingerprint ``inputs.describe`` gives the same
        data in memory (sha1 over each leaf's bytes in leaf order; leaves after the first are
        spooled to disk so memory holds one batch)."""
        count, terms, low, high = 0, 0.0, math.inf, -math.inf
        self.targets_seen = set()  # the ignored label, once a target holds it (``holds_target``)
        first_hash, spools, shapes, structure = hashlib.sha1(), None, None, None
        try:
            for inputs, targets in self:
                leaves = [torch.as_tensor(t).detach().contiguous().cpu() for t in
                          batches.leaves(inputs) + batches.leaves(targets)]
                if structure is None:
                    structure = (batches.tree_map(lambda t: None, inputs), len(leaves))
                    self.integer_targets = torch.is_tensor(targets) and not targets.is_floating_point()
                    shapes = batches.tree_map(lambda t: list(t.shape[1:]), inputs)
                    spools = [tempfile.TemporaryFile() for _ in leaves[1:]]
                elif len(leaves) != structure[1]:
                    raise ConfigError(f"{self.what}: batches differ in structure ({len(leaves)} tensors after "
                                      f"{structure[1]}); every item must have the same form.")
                lengths = {len(t) if t.ndim else 0 for t in leaves}
                if len(lengths) != 1 or 0 in lengths:
                    raise ConfigError(f"{self.what}: the inputs and targets must have one common, non-zero number "
                                      f"of examples (leading dimension); got lengths {sorted(lengths)}.")
                first_hash.update(leaves[0].numpy().reshape(-1).view("u1"))
                for spool, leaf in zip(spools, leaves[1:]):
                    spool.write(leaf.numpy().reshape(-1).view("u1"))
                count += lengths.pop()
                terms += float(self._terms(targets)) if self._terms is not None else 0.0
                if torch.is_tensor(targets) and not targets.is_floating_point() and targets.numel():
                    if ignore is not None and bool((targets == ignore).any()):
                        self.targets_seen.add(ignore)
                    kept = targets[targets != ignore] if ignore is not None else targets
                    if kept.numel():
                        low, high = min(low, int(kept.min())), max(high, int(kept.max()))
            if count == 0:
                raise ConfigError(f"{self.what}: the dataset yielded no examples.")
            digest = first_hash.copy()
            for spool in spools:
                spool.seek(0)
                while chunk := spool.read(_CHUNK):
                    digest.update(chunk)
        except ConfigError:
            raise
        except (RuntimeError, TypeError, ValueError, IndexError, KeyError) as err:  # collating the examples
            raise ConfigError(f"{self.what}: its examples cannot be read as batches of tensors ({type(err).__name__}: "
                              f"{err}); every example must have the same structure and shapes (pad sequences to "
                              "one length) and hold numbers.") from None
        finally:
            for spool in spools or []:
                spool.close()
        description = {"n": count, "input_shape": shapes, "sha1": digest.hexdigest()[:16]}
        return count, (terms if self._terms is not None else float(count)), \
            (None if low > high else (low, high)), description


def holds_target(data, value: int) -> bool:
    """Whether a target of in-memory data or a Stream equals ``value`` (an ignore_index)."""
    if isinstance(data, Stream):
        return value in data.targets_seen
    targets = data[1]
    return torch.is_tensor(targets) and bool((targets == value).any())


def integer_targets(data) -> bool:
    """Whether the targets of in-memory data or a Stream are a tensor of integers (class labels)."""
    if isinstance(data, Stream):
        return data.integer_targets
    return torch.is_tensor(data[1]) and not data[1].is_floating_point()


def count(data) -> int:
    """Examples in in-memory data or a Stream."""
    return data.count if isinstance(data, Stream) else batches.count(data[0])


def head(data, k: int, device=None):
    """The first ``k`` examples of in-memory data or a Stream, in memory."""
    return data.head(k, device) if isinstance(data, Stream) else batches.take(data, slice(0, k))


def _same(first, second) -> bool:
    """Bit for bit (NaN equals NaN)."""
    return batches.sha1(*batches.leaves(first)) == batches.sha1(*batches.leaves(second))


def _pair(batch, what: str):
    """A batch as an (inputs, targets) pair, as ``inputs.materialize`` reads a loader's batches."""
    return batches.split_batch(batch, what)


def _tensors_only(item) -> bool:
    try:
        batches.tree_map(torch.as_tensor, item)
        return True
    except (TypeError, ValueError, RuntimeError):
        return False


class _First(Dataset):
    """The first ``k`` items of a map-style or iterable dataset."""

    def __init__(self, dataset, k: int):
        self.dataset, self.k = dataset, k

    def __len__(self):
        return self.k

    def __getitem__(self, i):
        if isinstance(self.dataset, IterableDataset):
            for j, item in enumerate(self.dataset):
                if j == i:
                    return item
            raise IndexError(i)
        return self.dataset[i]


class _BatchIndices:
    """The example indices of the batches numbered ``which`` (a DataLoader batch sampler)."""

    def __init__(self, which: Sequence[int], size: int, count: int):
        self.which, self.size, self.count = which, size, count

    def __len__(self):
        return len(self.which)

    def __iter__(self):
        for number in self.which:
            yield list(range(number * self.size, min((number + 1) * self.size, self.count)))


class _Slices(Sequence):
    def __init__(self, stream: Stream, size: int, device):
        self.stream, self.size, self.device = stream, size, device

    def __len__(self):
        return self.stream.count // self.size

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.stream.examples(range(i * self.size, (i + 1) * self.size), self.device,
                                    "m-sharpness reads batches by index")
