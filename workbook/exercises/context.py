"""What a key's ``compute`` function is given: the data source, settings and a shared cache.

Several answers of one level come from the same fitted model (the train and validation RMSE of
one fit, say): :meth:`Context.memo` computes such an intermediate result once per context, so
recomputing a whole key costs one pass over each model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from taxi_common.settings import Settings

T = TypeVar("T")


@dataclass
class Context:
    """The data a key is recomputed on: ``synthetic`` (seed 0) or ``tlc`` (the real months)."""

    settings: Settings
    source: str = "synthetic"
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, name: str, make: Callable[[], T]) -> T:
        """``make()``, computed once per context under ``name``."""
        if name not in self.cache:
            self.cache[name] = make()
        return self.cache[name]


def compute_answer(reference: str, ctx: Context) -> float | str:
    """Recompute one answer with the key's ``compute`` function (``module:function``)."""
    from workbook.exercises.keys import resolve

    value = resolve(reference)(ctx)
    return value if isinstance(value, str) else float(value)
