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

    register(store, subject)
    stored = {m.index: m for m in store.minima(subject.name)}
    wanted = recipe.to_dict()
    minima = []
    for index, seed in enumerate(seeds):
        if index in stored:
            minimum = stored[index]
            if minimum.recipe != wanted or minimum.seed != seed:
                raise StoreError(
                    f"Minimum {index} of {subject.name!r} in {store.path} was trained with seed {minimum.seed} "
                    f"and recipe {minimum.recipe}; asked for seed {seed} and recipe {wanted}. "
                    "Use another store or subject name to keep both."
                )
            minima.append(minimum)
            continue
        start = time.perf_counter()
        theta, buffers = subject.init_theta(seed)
        theta, buffers = subject.train(theta, recipe, seed, buffers=buffers, progress=progress)
        metrics = {}
        for split in subject.splits:
            for key, value in subject.evaluate(theta, buffers, split).items():
                metrics[f"{split}_{key}"] = value
        if not math.isfinite(metrics["eval_loss"]):
            raise NonFiniteLossError(f"Minimum {index} of {subject.name!r} (seed {seed}) has loss {metrics['eval_loss']}.")
        minimum = Minimum(index, theta.numpy(), buffers.numpy(), seed, wanted, metrics, time.perf_counter() - start)
        store.write_minimum(subject.name, minimum)
        minima.append(minimum)
    return minima

