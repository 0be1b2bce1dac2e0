"""Where the cluster commands run: the Ray cluster they are pointed at, or a local one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["ray_session"]


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Join the cluster at `address` (or RAY_ADDRESS), or run a local Ray (no dashboard, every
    CPU of this machine) for the length of the block. A Ray already initialised is used as is."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(include_dashboard=False, num_cpus=os.cpu_count())
    try:
        yield
    finally:
        ray.shutdown()
