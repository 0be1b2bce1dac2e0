"""SQLite helpers shared by the item store and the shard tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["in_chunks", "MAX_PARAMETERS"]

MAX_PARAMETERS = 500  # values per `IN (...)`: SQLite caps a statement's parameters


def in_chunks(
    values: Sequence[Any] | np.ndarray, size: int = MAX_PARAMETERS
) -> Iterator[tuple[list[Any], str]]:
    """(chunk, "?,?,...") for `... IN ({marks})` over many values, a chunk per statement.
    Numpy integers become Python ints (SQLite cannot bind them)."""
    for start in range(0, len(values), size):
        chunk = [v.item() if hasattr(v, "item") else v for v in values[start : start + size]]
        yield chunk, ",".join("?" * len(chunk))
