"""The minima sampler: K minima of a subject trained from independent seeded initializations."""
from __future__ import annotations

import math
import time
from typing import Sequence

from ..errors import NonFiniteLossError, StoreError
from ..store import Minimum, Store
from ..subjects import Subject
from ..training import Recipe


def train_minima(store: Store, subject: Subject, recipe: Recipe, seeds: Sequence[int] = (0,),
                 progress: bool = True) -> list[Minimum]:
    """Minimum ``i`` is trained from ``subject.init_theta(seeds[i])`` with ``recipe`` and the same
    seed for batch order and augmentation; stored with its metrics on every split the subject
    has ("eval" = the landscape's own data, "test" = held-out data or test error).

    Resumable: minima already stored are reused. A stored minimum trained with another recipe
    or seed is an error (nothing is overwritten).
    """
    from . import register

    from .. import executor

    known = subject.name in store.subjects()
    if known:
        register(store, subject)  # refuses another config with this name before any training
    stored = {m.index: m for m in store.minima(subject.name)} if known else {}
    wanted = recipe.to_dict()
    for index, seed in enumerate(seeds):
        minimum = stored.get(index)
        if minimum is not None and (minimum.recipe != wanted or minimum.seed != seed):
            raise StoreError(
                f"Minimum {index} of {subject.name!r} in {store.path} was trained with seed {minimum.seed} "
                f"and recipe {minimum.recipe}; asked for seed {seed} and recipe {wanted}. "
                "Use another store or subject name to keep both."
            )
    missing = [(index, int(seed)) for index, seed in enumerate(seeds) if index not in stored]
    runner = executor.current()
    for _, minimum in runner.map(_train_one, missing, shared=(subject, recipe, progress and runner.local),
                                 desc=f"{subject.name}: minima", progress=progress):
        register(store, subject)  # only now: a failed first training leaves the store as it was
        store.write_minimum(subject.name, minimum)  # each as soon as it is trained: resumable
        stored[minimum.index] = minimum
    return [stored[index] for index in range(len(seeds))]


def _train_one(subject: Subject, recipe: Recipe, progress: bool, task: tuple[int, int]) -> Minimum:
    """One minimum, not yet stored (runs wherever the executor sends it)."""
    index, seed = task
    start = time.perf_counter()
    theta, buffers = subject.init_theta(seed)
    theta, buffers = subject.train(theta, recipe, seed, buffers=buffers, progress=progress)
    metrics = {}
    for split in subject.splits:
        for key, value in subject.evaluate(theta, buffers, split).items():
            metrics[f"{split}_{key}"] = value
    if not math.isfinite(metrics["eval_loss"]):
        raise NonFiniteLossError(f"Minimum {index} of {subject.name!r} (seed {seed}) has loss {metrics['eval_loss']}.")
    return Minimum(index, theta.numpy(), buffers.numpy(), seed, recipe.to_dict(), metrics, time.perf_counter() - start)
