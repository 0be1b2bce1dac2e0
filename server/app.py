"""Wiring: the embedders, the repository and the core, served over gRPC (one grpc.aio
server, with health and reflection) and, with --http-port, over HTTP in the same event loop.

`LookalikeServer` owns every part's lifecycle: start (ports bound, health NOT_SERVING), load
(model warm, index loaded, then SERVING), and a graceful stop (NOT_SERVING, drain, snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hmac
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from lookalike.export.manifest import ModelIdentity
from lookalike.server.cluster.embedding import RemoteEmbedders
from lookalike.server.cluster.ray_session import ray_session, reclaim_sigterm
from lookalike.server.cluster.repository import ClusterRepository
from lookalike.server.config import ServerConfig, parse_config
from lookalike.server.core import Core, CoreSlot
from lookalike.server.embed.embedders import EngineFactory, LocalEmbedders
from lookalike.server.embed.engine import ModelInfo
from lookalike.server.embed.onnx_engine import OnnxEngine
from lookalike.server.embed.settings import EmbedSettings, ImageDecoder
from lookalike.server.errors import AddressInUseError, LookalikeError
from lookalike.server.grpc.service import ImageSearchService
from lookalike.server.index.datadir import DataDirLock
from lookalike.server.index.local_repository import LocalRepository
from lookalike.server.index.repository import Repository
from lookalike.server.index.settings import NATIVE_BF16_KERNELS
from lookalike.server.index.sharded_repository import ShardedRepository
from lookalike.server.index.vector_index import kernel
from lookalike.server.metrics import Metrics, MetricsListener
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from lookalike.server.http import HttpListener

__all__ = ["LookalikeServer", "main", "SERVICE_NAME"]

log = logging.getLogger("lookalike.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ImageSearch"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """`authorization: Bearer TOKEN` on every call but health and reflection."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if details.method.startswith(OPEN_METHODS) or handler is None:
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return handler
        return _refusal(handler, "missing or wrong token: send 'authorization: Bearer <token>'")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: not known to be loopback
        return False


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class LookalikeServer:
    def __init__(self, config: ServerConfig, *, engine_factory: EngineFactory = OnnxEngine) -> None:
        self.config = config
        self._engine_factory = engine_factory
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = Metrics.create()
        self.health = HealthServicer()
        self.cores = CoreSlot()  # where gRPC and HTTP find the core once it is loaded
        self.service = ImageSearchService(self.cores, self.metrics)
        self.port: int | None = None
        self._metrics_listener: MetricsListener | None = None
        self._started = time.monotonic()
        self._embedders: LocalEmbedders | RemoteEmbedders | None = None
        self._exits = contextlib.ExitStack()  # the Ray session, when serving on Ray
        self._repository: Repository | None = None
        self._snapshots: asyncio.Task[None] | None = None
        # SERVING once loaded while nothing is wrong: part ("engine", "shards") -> what is
        self._troubles: dict[str, str] = {}
        self._loaded = False
        self._data_lock = DataDirLock(config.data_dir) if config.data_dir else None
        interceptors = [TokenInterceptor(config.token)] if config.token else []
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                # gRPC sets SO_REUSEPORT by default: a second server on a busy port would
                # start, and the kernel would split connections between the two
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
            ],
        )
        self.http = self._http_listener(config)
        pb_grpc.add_ImageSearchServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )

    def _http_listener(self, config: ServerConfig) -> HttpListener | None:
        """The JSON API and the web app on --http-port, over the same core."""
        if config.http_port is None:
            return None
        from lookalike.server import http  # FastAPI and uvicorn load only when HTTP is on

        settings = http.HttpSettings(
            token=config.token,
            cors_origins=config.http_cors,
            max_body_bytes=http.body_limit(config.max_message_bytes),
            duplicates_threshold=config.duplicates_threshold,
        )
        app = http.create_api(self.cores, self.metrics, settings, not_serving=self._not_serving)
        return http.HttpListener(
            app,
            host=config.host,
            port=config.http_port,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
        )

    def _not_serving(self) -> str | None:
        """Why the server does not serve now, or None when it does."""
        if not self._loaded:
            return "starting or shutting down"
        return "; ".join(self._troubles.values()) or None

    async def start(self) -> int:
        """Lock the data directory, bind, answer health (NOT_SERVING) at once; return the port.

        A second server on the same data directory or the same port fails here, before it
        listens or loads anything.
        """
        if self._data_lock:
            self._data_lock.acquire()
        await self._set_health(NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        try:
            if self.config.tls_cert and self.config.tls_key:
                credentials = grpc.ssl_server_credentials(
                    [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())]
                )
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc says only "Failed to bind to address ..."
            if self._data_lock:
                self._data_lock.release()
            raise AddressInUseError(
                f"cannot listen on {address}: the port is in use by another process "
                "(another lookalike-server?); stop it or pass another --port (0 picks a free one)"
            ) from exc
        await self._server.start()
        try:
            if self.http is not None:
                await self.http.start()
            if self.config.metrics_port is not None:
                self._metrics_listener = self.metrics.serve(
                    self.config.metrics_port, self.config.host
                )
        except Exception:
            if self.http is not None:
                await self.http.stop(0)
            await self._server.stop(None)
            if self._data_lock:
                self._data_lock.release()
            raise
        log.info(
            "listening on %s:%d (%s)%s%s",
            self.config.host,
            self.port,
            "TLS" if self.config.tls_cert else "plaintext",
            self._http_address(),
            self._metrics_address(),
        )
        self._warn_if_open_to_anyone()
        return self.port

    def _warn_if_open_to_anyone(self) -> None:
        """One warning when the ports listen beyond loopback and no token guards them."""
        if self.config.token or _is_loopback(self.config.host):
            return
        ports = [f"gRPC port {self.port}"]
        if self.http is not None:
            ports.append(f"HTTP port {self.http.port}")
        if self._metrics_listener is not None:
            ports.append(f"metrics port {self.metrics_port}")
        log.warning(
            "listening on %s without a token: anyone who can reach %s can read and change the "
            "collection; pass --token (and --tls-cert/--tls-key), or --host 127.0.0.1",
            self.config.host,
            ", ".join(ports),
        )

    @property
    def metrics_port(self) -> int | None:
        """The port Prometheus scrapes, once started with --metrics-port."""
        return self._metrics_listener.port if self._metrics_listener else None

    def _metrics_address(self) -> str:
        if self._metrics_listener is None:
            return ""
        return f", metrics on http://{self.config.host}:{self.metrics_port}/metrics"

    def _http_address(self) -> str:
        if self.http is None:
            return ""
        return f", HTTP on {self.http.scheme}://{self.config.host}:{self.http.port}/"

    async def load(self) -> None:
        """Load the models and the index, warm up, then report SERVING."""
        config = self.config
        if config.shards_on_ray is not None:
            session = ray_session(config.shards_on_ray.address)
            await asyncio.to_thread(self._exits.enter_context, session)
            reclaim_sigterm()
        embedders = await self._load_embedders()
        model, text = embedders.model, embedders.text
        repository = self._repository_for(model.identity)
        self._repository = repository
        items = await repository.open()
        core = Core(
            model,
            embedders.image,
            repository,
            self.metrics,
            limits=config.request_limits,
            preprocess_mode=config.embed.preprocess_mode.value,
            image_limits=config.embed.image_limits,
            regions=config.regions,
            text=text,
            no_text_reason=embedders.no_text_reason,
            thumbnails=config.thumbnails,
            started=self._started,
        )
        self.cores.attach(core)
        index = (await repository.stats()).index
        index_kernel = _index_kernel(index.dtype, model.dims)
        self._snapshots = asyncio.create_task(self._snapshot_periodically())
        self._loaded = True
        await self._publish_health()
        log.info(
            "ready: model %s (%s%s), %s on %s, %d threads%s, %d-d, %d items, index %s on %s "
            "kernels, preprocess %s, max batch %d, max delay %gms, text %s%s%s",
            model.model_id,
            model.source_kind,
            ", RANDOM WEIGHTS" if model.random_weights else "",
            _precision(model),
            ",".join(model.providers),
            model.threads,
            " (one image per run)" if model.per_image else "",
            model.dims,
            items,
            index.dtype,
            index_kernel,
            _preprocessing(config.embed),
            config.embed.batcher.max_batch,
            config.embed.batcher.max_delay_ms,
            _precision(text.model) if text else "off",
            ", embedding on Ray Serve" if isinstance(embedders, RemoteEmbedders) else "",
            self._http_address(),
        )

    async def _load_embedders(self) -> LocalEmbedders | RemoteEmbedders:
        """The model in this process, or the embedding deployment on Ray (--embed-on-ray)."""
        cluster = self.config.shards_on_ray
        if cluster is not None and cluster.embedding is not None:
            remote = RemoteEmbedders(
                self.config.embed,
                cluster.embedding,
                timeout_s=cluster.embed_timeout_s,
                watch_interval_s=cluster.watch_interval_s,
                on_health_change=lambda trouble: self._report("embedder", trouble),
                metrics=self.metrics,
            )
            self._embedders = remote
            await remote.open()
            return remote
        local = LocalEmbedders()
        self._embedders = local  # from here on, stop() closes what load() opened
        await local.load(
            self.config.embed, self.metrics, self._engine_factory, self._engine_health_changed
        )
        return local

    def _repository_for(self, identity: ModelIdentity) -> Repository:
        """The data directory's store, or the built index read-only."""
        config = self.config
        if config.index_dir is not None and config.shards_on_ray is not None:
            return ClusterRepository(
                config.index_dir,
                identity,
                config.index,
                config.shards_on_ray,
                metrics=self.metrics,
                on_health_change=lambda trouble: self._report("shards", trouble),
            )
        if config.index_dir is not None:
            return ShardedRepository(config.index_dir, identity, config.index)
        assert config.data_dir is not None  # parse_config insists on one of the two
        return LocalRepository(config.data_dir, identity, config.index)

    async def stop(self) -> None:
        """NOT_SERVING, stop accepting, drain in-flight calls, then save the snapshot."""
        self._loaded = False  # no part's recovery may report SERVING from here on
        await self.health.enter_graceful_shutdown()
        stopping = [self._server.stop(self.config.grace_s)]
        if self.http is not None:
            stopping.append(self.http.stop(self.config.grace_s))
        await asyncio.gather(*stopping)
        if self._metrics_listener is not None:
            await asyncio.to_thread(self._metrics_listener.close)
        self.cores.detach()
        for task in [self._snapshots, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._repository is not None:
            await self._repository.close()
        if self._embedders is not None:
            await self._embedders.close()
        await asyncio.to_thread(self._exits.close)
        if self._data_lock:
            self._data_lock.release()
        log.info("stopped")

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def _report(self, part: str, trouble: str | None) -> None:
        """A part of the server is fine again (None) or in trouble (why): health follows."""
        if trouble is None:
            self._troubles.pop(part, None)
        else:
            self._troubles[part] = trouble
        self._spawn(self._publish_health())

    async def _publish_health(self) -> None:
        if not self._loaded:
            return  # load() publishes once everything is up
        serving = not self._troubles
        status = health_pb2.HealthCheckResponse.SERVING if serving else NOT_SERVING
        log.log(
            logging.INFO if serving else logging.ERROR,
            "health %s%s",
            health_pb2.HealthCheckResponse.ServingStatus.Name(status),
            "" if serving else ": " + "; ".join(self._troubles.values()),
        )
        await self._set_health(status)

    def _engine_health_changed(self, healthy: bool) -> None:
        """Health follows the engine; while it fails, a self-test probes for its recovery."""
        log.log(
            logging.INFO if healthy else logging.ERROR,
            "engine %s",
            "recovered" if healthy else "keeps failing",
        )
        self._report("engine", None if healthy else "the engine keeps failing")
        if not healthy:
            self._spawn(self._probe_engine())

    async def _probe_engine(self) -> None:
        embedders = self._embedders
        assert isinstance(embedders, LocalEmbedders)  # the only ones reporting engine health
        loop = asyncio.get_running_loop()
        while not embedders.image.healthy:
            await asyncio.sleep(self.config.engine_probe_s)
            if embedders.engine is None:
                return
            try:
                await loop.run_in_executor(None, embedders.engine.self_test)
            except Exception as exc:  # still broken: keep probing
                log.warning("engine self-test failed: %s", exc)
                continue
            embedders.image.record_recovery()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval_s)
            try:
                if self._repository is not None and await self._repository.save_snapshot():
                    log.info("index snapshot saved")
            except Exception:  # the database still has everything; try again next time
                log.exception("saving the index snapshot failed")


async def serve(config: ServerConfig) -> None:
    server = LookalikeServer(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await server.start()
    loading = asyncio.create_task(server.load())
    waiting = asyncio.create_task(stopping.wait())
    try:
        done, _ = await asyncio.wait({loading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if loading in done:
            loading.result()  # a startup failure ends here, with its message
            await waiting
        else:
            loading.cancel()
        log.info("shutting down: draining for up to %gs", config.grace_s)
    finally:
        waiting.cancel()
        await server.stop()


MALLOC_ARENAS = 2  # benchmarks/README.md: idle RSS 50-100 MB lower, serving speed unchanged
M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(environ: Mapping[str, str]) -> None:
    """Cap glibc's per-thread malloc arenas, unless MALLOC_ARENA_MAX says otherwise.

    Every thread that allocates (decoding, tokenising, inference, gRPC) may get an arena of
    its own, and freed memory stays resident in each. Must run before those threads start.
    """
    if environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def _preprocessing(embed: EmbedSettings) -> str:
    """How images are decoded and resized, as the ready line says it."""
    if embed.image_decoder is ImageDecoder.NVIMGCODEC:
        return f"JPEGs by nvimgcodec on the engine's device, others {embed.preprocess_mode.value}"
    return embed.preprocess_mode.value


def _precision(model: ModelInfo) -> str:
    """The variant a tower runs, with the better one the export rejected, if any."""
    return (
        f"{model.precision.value} ({model.passed_over})"
        if model.passed_over
        else (model.precision.value)
    )


def _index_kernel(dtype: str, dims: int) -> str:
    """The index's distance kernel on this CPU; a bf16 index without native bf16 is said."""
    found = kernel(dtype, dims)
    if dtype == "bf16" and found not in NATIVE_BF16_KERNELS:
        log.warning(
            "the index stores bf16, but this CPU has no native bf16 dot products (%s kernels): "
            "an index built with --dtype f16 answers as fast here, with recall up to 1.0",
            found,
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    limit_malloc_arenas(os.environ)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config))
    except LookalikeError as exc:
        log.error("cannot start: %s", exc)
        return 2
    if config.shards_on_ray is not None:
        _exit_without_finalizing(0)
    return 0


def _exit_without_finalizing(status: int) -> NoReturn:
    """End a process that served on Ray, once everything is stopped and flushed, without
    Python's interpreter finalization: threads that Ray Serve's handles started can still call
    into Ray's core worker while the interpreter tears itself down, which crashed a cluster
    front with SIGSEGV after a clean stop (ray-project/ray#47864). Ray ends its own worker
    processes this way."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
