"""Prometheus metrics, in a registry of their own (one per server, nothing global).

Recorded where the decisions are made: the batcher counts what it admits, refuses and drops,
the core follows the item count and times its stages with `Metrics.stage`; a front serving on
Ray times its calls to each Serve application and counts its replicas and their failures
(Serve's own per-deployment metrics come from Ray's metrics export on each node).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from lookalike.server.errors import AddressInUseError

__all__ = ["Metrics", "MetricsListener"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclasses.dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    stage_seconds: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    admitted: Counter
    refused: Counter
    dropped: Counter
    decoded_images: Counter
    index_items: Gauge
    index_vectors: Gauge
    replica_call_seconds: Histogram
    replica_failures: Counter
    replicas_running: Gauge

    @classmethod
    def create(cls) -> Metrics:
        """Every metric on a registry of its own: one declaration per field (a table, long but
        without logic)."""
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "lookalike_requests",
                "RPCs by method and status code",
                ["method", "code"],
                registry=registry,
            ),
            request_seconds=Histogram(
                "lookalike_request_seconds",
                "RPC latency",
                ["method"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            stage_seconds=Histogram(
                "lookalike_stage_seconds",
                "Time per stage: preprocess, inference, tokenize, text_inference, search, commit",
                ["stage"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            batch_size=Histogram(
                "lookalike_batch_size",
                "Inputs per inference batch, by queue (image, text)",
                ["queue"],
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            queue_depth=Gauge(
                "lookalike_queue_depth",
                "Inputs admitted and not yet answered, by queue (image, text)",
                ["queue"],
                registry=registry,
            ),
            admitted=Counter(
                "lookalike_admitted_inputs",
                "Inputs admitted to a batch queue (image, text)",
                ["queue"],
                registry=registry,
            ),
            refused=Counter(
                "lookalike_refused_inputs",
                "Inputs refused because their queue was full (RESOURCE_EXHAUSTED)",
                ["queue"],
                registry=registry,
            ),
            dropped=Counter(
                "lookalike_dropped_inputs",
                "Admitted inputs skipped before inference because their caller had gone",
                ["queue"],
                registry=registry,
            ),
            decoded_images=Counter(
                "lookalike_decoded_images",
                "Images decoded with --image-decoder nvimgcodec, by decoder: nvimgcodec (where "
                "the engine runs) or pillow (what nvimgcodec does not take, on the CPU)",
                ["decoder"],
                registry=registry,
            ),
            index_items=Gauge("lookalike_index_items", "Stored items", registry=registry),
            index_vectors=Gauge(
                "lookalike_index_vectors",
                "Stored vectors: each item's whole image and its regions",
                registry=registry,
            ),
            replica_call_seconds=Histogram(
                "lookalike_replica_call_seconds",
                "Calls from this front to a Ray Serve application (a shard of the index, the "
                "embedder), answered or not",
                ["application"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            replica_failures=Counter(
                "lookalike_replica_failures",
                "Calls to a Ray Serve application whose replica died or none answered, by what "
                "followed: asked_again (another replica) or unavailable (UNAVAILABLE)",
                ["application", "outcome"],
                registry=registry,
            ),
            replicas_running=Gauge(
                "lookalike_replicas_running",
                "Running replicas of each Ray Serve application this front calls, at its last look",
                ["application"],
                registry=registry,
            ),
        )

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as one observation of stage `name` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(name).observe(time.perf_counter() - started)

    def serve(self, port: int, host: str) -> MetricsListener:
        """Answer Prometheus scrapes on host:port (0 picks a free port) until closed."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise AddressInUseError(
                f"cannot serve metrics on {host}:{port}: the port is in use by another "
                "process; pass another --metrics-port (0 picks a free one)"
            ) from exc
        return MetricsListener(server, thread)


@dataclasses.dataclass(frozen=True)
class MetricsListener:
    """prometheus_client's scrape server, running in its own thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
