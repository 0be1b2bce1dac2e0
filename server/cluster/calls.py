"""Calling a Serve application through its handle, as the front does for every shard and the
embedder: the replica's own error as it raised it, another replica when one dies holding the
call, and `ReplicaUnavailableError` (UNAVAILABLE) when none answers in time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lookalike.server.cluster.deployments import replicas_running
from lookalike.server.errors import LookalikeError, ReplicaUnavailableError
from lookalike.server.metrics import Metrics

__all__ = ["ask", "unavailable"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def ask(
    app: str,
    call: Callable[[], Awaitable[T]],
    *,
    timeout_s: float,
    what: str,
    metrics: Metrics,
) -> T:
    """`call()` (a handle's `.remote(...)`) until it answers. A replica that died holding the
    call is asked again through the handle (which then routes around it) while another
    replica runs; none running, or no answer within `timeout_s`: `ReplicaUnavailableError`
    naming `what` ("shard 3 of index version v00002")."""
    from ray.exceptions import RayActorError

    started = time.monotonic()
    deadline = started + timeout_s
    failures = metrics.replica_failures
    try:
        while True:
            try:
                remaining = max(0.0, deadline - time.monotonic())
                return await asyncio.wait_for(_answer(call()), remaining)
            except TimeoutError:
                failures.labels(app, "unavailable").inc()
                raise unavailable(what, f"no answer within {timeout_s:g}s") from None
            except RayActorError:
                (running, states) = (await asyncio.to_thread(replicas_running, [app]))[app]
                if running == 0 or time.monotonic() >= deadline:
                    failures.labels(app, "unavailable").inc()
                    raise unavailable(what, f"its replica stopped; {states}") from None
                failures.labels(app, "asked_again").inc()
                log.warning("a replica of %s died holding a call; asking another", app)
    finally:
        metrics.replica_call_seconds.labels(app).observe(time.monotonic() - started)


def unavailable(what: str, why: str) -> ReplicaUnavailableError:
    return ReplicaUnavailableError(f"{what} is not answering ({why}); retry shortly")


async def _answer(response: Awaitable[T]) -> T:
    """A replica's answer; its own error as it raised it (Ray wraps it in a `RayTaskError`
    that also subclasses it, with the replica's traceback in its message)."""
    try:
        return await response
    except LookalikeError as error:
        cause = getattr(error, "cause", None)
        raise (cause if isinstance(cause, LookalikeError) else error) from None
