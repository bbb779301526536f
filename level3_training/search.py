"""A bounded, seeded random search over a model's search space (``level2_devops.models``)."""

from __future__ import annotations

import itertools
import random
import zlib
from typing import Any

from level2_devops.models import model_spec


def grid_size(space: dict[str, list[Any]]) -> int:
    """How many distinct parameter combinations ``space`` holds (1 for an empty space)."""
    size = 1
    for values in space.values():
        size *= len(values)
    return size


def sample_trials(name: str, trials: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``trials`` distinct parameter sets for model ``name``, the defaults first.

    Trial 0 is always the catalogue's defaults (``{}``), so the search never does worse than the
    default model on the validation month. The others are drawn without replacement from the
    search space, with a generator seeded by ``seed`` and the model name. A model without a
    search space gets one trial. The count is bounded by the size of the grid.
    """
    spec = model_spec(name)
    space = spec.search_space
    if trials < 1:
        raise ValueError("trials must be at least 1")
    if not space:
        return [{}]
    rng = random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))
    keys = sorted(space)
    defaults = tuple(spec.defaults.get(k) for k in keys)
    combos = [c for c in itertools.product(*(space[k] for k in keys)) if c != defaults]
    drawn = rng.sample(combos, k=min(trials - 1, len(combos)))
    return [{}, *({k: v for k, v in zip(keys, combo, strict=True)} for combo in drawn)]
