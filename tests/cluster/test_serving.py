"""`lookalike-server --index DIR --shards-on-ray`: the shards of a built index as Ray Serve
deployments on the package's two-node cluster, behind the usual gRPC front. It answers exactly
as the one-process `--index` server does, keeps answering when a replica dies, says UNAVAILABLE
(never a wrong answer) while a shard has none, and switches versions under load."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import ray
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
from ray.cluster_utils import Cluster

from benchmarks import datasets
from lookalike.batch.build_index import BuildSettings, build_index
from lookalike.cli import main as lookalike
from lookalike.cli.common import EXIT_BAD_INPUT
from lookalike.export.manifest import ModelIdentity
from lookalike.server.cluster.deployments import shard_app_names
from lookalike.server.cluster.settings import ClusterSettings, ShardPlacement
from lookalike.server.index.built_index import open_shards, read_manifest
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.shard_search import Query, ShardSearcher
from lookalike.server.index.sharded_repository import READ_ONLY
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.ray_commands import SERVICE, SERVING, cluster_serve, wait_for
from tests.reliability.faults import EngineHandle, FaultyEngine
from tests.reliability.process import LOOPBACK, announced_listeners, listeners_by_process
from tests.server.images import jpeg
from tests.server.serving import RunningServer, config_for, running_server

TINY = ModelIdentity("random-init:tiny", 16)
COUNT, SHARDS = 600, 3
SEARCH = IndexSettings(exact_search_below=0)  # every shard on its HNSW graph
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Answer = list[tuple[str, float]]


def ray_port(driver_pid: int) -> int:
    """The port of the core worker Ray runs inside a driver process, as the cluster's GCS records
    each running driver's address."""
    jobs = ray._private.worker.global_worker.gcs_client.get_all_job_info(
        skip_submission_job_info_field=True, skip_is_running_tasks_field=True
    )
    (port,) = [
        job.driver_address.port
        for job in jobs.values()
        if job.driver_pid == driver_pid and not job.is_dead
    ]
    return int(port)


def on_ray(replicas_of: dict[int, int] | None = None) -> ClusterSettings:
    """One replica per shard unless `replicas_of` says otherwise; quick to notice (tests wait
    on it), quick to retire a replaced version."""
    placement = ShardPlacement(replicas_of=replicas_of or {})
    return ClusterSettings(placement=placement, watch_interval_s=0.2, retire_after_s=1.0)


@pytest.fixture(scope="module")
def index(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("served")
    ids = [f"item-{i:04d}" for i in range(COUNT)]
    datasets.write_dataset(root / "dataset", TINY, ids, datasets.unit_rows(COUNT, 16, seed=5))
    build_index(BuildSettings(dataset=root / "dataset", output=root / "index", shards=SHARDS))
    try:
        yield root / "index"
    finally:
        serve.shutdown()


@pytest.fixture(autouse=True)
def no_shards_left(cluster: Cluster) -> Iterator[None]:
    """Each test deploys its own shards: a front finds running ones and would reuse them."""
    yield
    try:
        names = list(serve.status().applications)
    except Exception:  # Serve never started
        return
    for name in names:
        serve.delete(name, _blocking=False)  # all at once, as the front retires versions
    wait_for(lambda: not serve.status().applications, seconds=120)


@contextlib.contextmanager
def front(model: Path, index: Path, **options: Any) -> Iterator[pb_grpc.ImageSearchStub]:
    config = config_for(model, None, index_dir=index, index=SEARCH, **options)
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def answers(matches: Any) -> Answer:
    return [(m.id, round(m.score, 5)) for m in matches]


def neighbour_pages(pages: Any) -> list[tuple[list[tuple[str, Answer]], int]]:
    """A Neighbours scan as it came: each page's items with their neighbours, and its count."""
    return [
        ([(item.id, answers(item.neighbours)) for item in page.items], page.scanned)
        for page in pages
    ]


def vector_searches(seed: int, count: int = 20) -> list[pb.SearchRequest]:
    queries = datasets.unit_rows(count, 16, seed=seed)
    return [pb.SearchRequest(vector=pb.Vector(values=q.tolist()), k=10) for q in queries]


def expected_answers(model: Path, index: Path, requests: list[pb.SearchRequest]) -> list[Answer]:
    with front(model, index) as local:
        return [answers(local.Search(r, timeout=30).matches) for r in requests]


class Load:
    """Threads sending searches round-robin until stopped; every outcome recorded by request."""

    def __init__(self, stub: pb_grpc.ImageSearchStub, requests: list[pb.SearchRequest]) -> None:
        self.stub, self.requests = stub, requests
        self.outcomes: list[tuple[int, Answer | grpc.StatusCode]] = []
        # (when the call was sent, request number, outcome), in the order they finished
        self.timed: list[tuple[float, int, Answer | grpc.StatusCode]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(3)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, offset: int) -> None:
        sent = offset
        while not self._stop.is_set():
            number, started = sent % len(self.requests), time.monotonic()
            outcome: Answer | grpc.StatusCode
            try:
                outcome = answers(self.stub.Search(self.requests[number], timeout=30).matches)
            except grpc.RpcError as error:
                outcome = error.code()
            self.timed.append((started, number, outcome))
            self.outcomes.append((number, outcome))
            sent += 1


class HealthLog:
    """Every health status the front sends on a `grpc.health.v1` Watch stream."""

    def __init__(self, channel: grpc.Channel) -> None:
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        self._stream = health_pb2_grpc.HealthStub(channel).Watch(request)
        self.statuses: list[int] = []
        self.received: list[float] = []  # when each status came
        self._thread = threading.Thread(target=self._follow)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at close
            for reply in self._stream:
                self.received.append(time.monotonic())
                self.statuses.append(reply.status)

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(10)


def metric_samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The front's Prometheus samples: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def kill_a_replica(app: str) -> None:
    replicas = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::{app}#")
    ]
    actor = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    ray.kill(actor, no_restart=True)


def test_shards_on_serve_answer_as_one_process_does_behind_tls_and_a_token(
    index: Path, tiny_export: Path, certificate: tuple[Path, Path]
) -> None:
    requests = [
        pb.SearchRequest(vector=r.vector, k=10, filter=f)
        for r in vector_searches(seed=6)
        for f in ({}, {"parity": "1"})
    ]
    requests.append(pb.SearchRequest(id="item-0042", k=5, exclude_self=True))
    close = pb.NeighboursRequest(min_score=0.8, k=4)  # random vectors: a few dozen pairs
    with front(tiny_export, index) as local:
        expected = [answers(local.Search(r, timeout=30).matches) for r in requests]
        item = local.Get(pb.GetRequest(id="item-0042", include_vector=True), timeout=30)
        pairs = neighbour_pages(local.Neighbours(close, timeout=60))
    assert all(len(e) == k for e, k in zip(expected, [10, 10] * 20 + [5], strict=True))
    assert len(pairs) == SHARDS  # a page per shard
    assert sum(len(items) for items, _ in pairs) >= 10
    cert, key = certificate
    config = config_for(
        tiny_export,
        None,
        index_dir=index,
        index=SEARCH,
        shards_on_ray=on_ray(),
        tls_cert=cert,
        tls_key=key,
        token="s3cret",
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    token = (("authorization", "Bearer s3cret"),)
    with (
        running_server(config) as server,
        grpc.secure_channel(f"localhost:{server.port}", credentials) as channel,
    ):
        served = pb_grpc.ImageSearchStub(channel)
        got = [answers(served.Search(r, timeout=30, metadata=token).matches) for r in requests]
        assert got == expected
        assert neighbour_pages(served.Neighbours(close, timeout=60, metadata=token)) == pairs
        stored = served.Get(pb.GetRequest(id="item-0042", include_vector=True), metadata=token)
        assert stored.metadata == item.metadata
        np.testing.assert_array_equal(stored.vector.values, item.vector.values)
        stats = served.Stats(pb.StatsRequest(), timeout=30, metadata=token)
        assert (stats.items, stats.index_version) == (COUNT, "v00001")
        manifest = read_manifest(index)
        assert [(s.number, s.items, s.vectors, s.replicas) for s in stats.shards] == [
            (e.number, e.items, e.vectors, 1) for e in manifest.shards
        ]
        with pytest.raises(grpc.RpcError) as missing:  # raised in a replica, same status
            served.Get(pb.GetRequest(id="nobody"), timeout=30, metadata=token)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "no item with id 'nobody'", missing.value.details()
        with pytest.raises(grpc.RpcError) as refused:
            served.Delete(pb.DeleteRequest(ids=["item-0001"]), timeout=30, metadata=token)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "build-index" in refused.value.details()
        with pytest.raises(grpc.RpcError) as anonymous:
            served.Stats(pb.StatsRequest(), timeout=30)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # health and reflection need no token, as on one server
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (listing,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert SERVICE in {s.name for s in listing.list_services_response.service}


def test_queries_that_arrive_together_get_the_answers_they_get_alone(index: Path) -> None:
    manifest = read_manifest(index)
    queries = datasets.unit_rows(12, 16, seed=11)
    ks = [10, 10, 3, 10, 5, 10, 10, 3, 10, 10, 1, 10]
    narrowed = {
        2: Query({"parity": "1"}),
        5: Query(min_score=0.2),
        9: Query(exclude_ids=("item-0042",)),
    }
    wants = [narrowed.get(row, Query()) for row in range(12)]
    for shard in open_shards(index, manifest, manifest.search_settings(SEARCH)):
        searcher = ShardSearcher(shard)
        alone = [searcher.search(q, k, want) for q, k, want in zip(queries, ks, wants, strict=True)]
        assert searcher.search_many(queries, ks, wants) == alone
        assert all(len(answer.matches) == k for answer, k in zip(alone, ks, strict=True) if k < 5)
        searcher.close()


def vectors_of(reply: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(v.values) for v in reply.embeddings], dtype=np.float32)


def test_a_shard_that_loses_one_of_two_replicas_fails_no_request(
    index: Path, tiny_export: Path
) -> None:
    requests = vector_searches(seed=7, count=10)
    expected = expected_answers(tiny_export, index, requests)
    (app, *_) = shard_app_names(index, read_manifest(index))
    with front(tiny_export, index, shards_on_ray=on_ray(replicas_of={0: 2})) as served:
        replicas = [s.replicas for s in served.Stats(pb.StatsRequest()).shards]
        with Load(served, requests) as load:
            wait_for(lambda: len(load.outcomes) >= 30)
            kill_a_replica(app)
            count = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= count + 300)
    assert all(expected[number] == outcome for number, outcome in load.outcomes)
    assert replicas == [2, 1, 1]  # shard 0 alone got its own count


def test_a_lone_replica_restarting_gives_unavailable_never_a_wrong_answer(
    index: Path, tiny_export: Path
) -> None:
    requests = vector_searches(seed=8, count=10)
    expected = expected_answers(tiny_export, index, requests)
    apps = shard_app_names(index, read_manifest(index))
    config = config_for(
        tiny_export,
        None,
        index_dir=index,
        index=SEARCH,
        shards_on_ray=on_ray(),
        metrics_port=0,
    )
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        health = HealthLog(channel)
        served = pb_grpc.ImageSearchStub(channel)
        with Load(served, requests) as load:
            wait_for(lambda: len(load.outcomes) >= 30)
            kill_a_replica(apps[0])
            wait_for(lambda: NOT_SERVING in health.statuses)
            wait_for(lambda: health.statuses[-1] == SERVING)
            back = health.received[-1]  # calls sent from here on must all be answered right
            wait_for(lambda: len([t for t, *_ in load.timed if t > back]) >= 30)
        health.close()
        samples = metric_samples(server.metrics_port)
    outcomes = [outcome for _, outcome in load.outcomes]
    assert grpc.StatusCode.UNAVAILABLE in outcomes
    for number, outcome in load.outcomes:
        assert outcome in (expected[number], grpc.StatusCode.UNAVAILABLE)
    # back for good: every call sent after the front said SERVING again was answered right (a
    # call sent before may still end UNAVAILABLE after it, among the later outcomes)
    late = [(round(sent - back, 2), outcome) for sent, n, outcome in load.timed if sent > back]
    timeline = [round(t - back, 2) for t in health.received], health.statuses
    assert all(o == expected[n] for sent, n, o in load.timed if sent > back), (late, timeline)
    assert health.statuses[:2] == [SERVING, NOT_SERVING]
    assert health.statuses[-1] == SERVING
    # the front's metrics per Serve application: calls, replicas, failures
    failed = (("application", apps[0]), ("outcome", "unavailable"))
    assert samples["lookalike_replica_failures_total", failed] >= 1
    for app in apps:
        assert samples["lookalike_replica_call_seconds_count", (("application", app),)] >= 30
        assert samples["lookalike_replicas_running", (("application", app),)] == 1


def test_a_new_version_is_switched_to_under_load_each_answer_from_one_version(
    cluster: Cluster, tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"item-{i:04d}" for i in range(COUNT)]
    rows = datasets.unit_rows(COUNT, 16, seed=9)
    datasets.write_dataset(tmp_path / "dataset", TINY, ids, rows)
    index = tmp_path / "index"
    build_index(BuildSettings(dataset=tmp_path / "dataset", output=index, shards=SHARDS))
    # version 2 drops the items the queries are made of and adds a close neighbour of each
    queried = rows[:20]
    near = queried + 0.05 * datasets.unit_rows(20, 16, seed=10)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    kept = ids[20:] + [f"new-{i:02d}" for i in range(20)]
    datasets.write_dataset(tmp_path / "dataset", TINY, kept, np.vstack([rows[20:], near]))
    build_index(BuildSettings(dataset=tmp_path / "dataset", output=index))
    requests = [pb.SearchRequest(vector=pb.Vector(values=q.tolist()), k=10) for q in queried]
    after = expected_answers(tiny_export, index, requests)
    # back to version 1 (a rollback) to serve it first; then forward to 2 again, under load
    assert lookalike(["versions", str(index), "--current", "v00001"]) == 0
    assert "now serves v00001 (600 items)" in capsys.readouterr().out
    assert lookalike(["versions", str(index)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line[:8] for line in listing] == ["* v00001", "  v00002"]  # * marks the current
    assert lookalike(["versions", str(index), "--current", "v00009"]) == EXIT_BAD_INPUT
    before = expected_answers(tiny_export, index, requests)
    assert all(b != a for b, a in zip(before, after, strict=True))
    with front(tiny_export, index, shards_on_ray=on_ray()) as served:
        with Load(served, requests) as load:
            wait_for(lambda: len(load.outcomes) >= 30)
            assert lookalike(["versions", str(index), "--current", "v00002"]) == 0
            wait_for(lambda: served.Stats(pb.StatsRequest()).index_version == "v00002")
            count = len(load.outcomes)
            wait_for(lambda: len(load.outcomes) >= count + 30)
        stats = served.Stats(pb.StatsRequest())
        retired = set(shard_app_names(index, read_manifest(index, "v00001")))
        wait_for(lambda: not retired & set(serve.status().applications))
    for number, outcome in load.outcomes:
        assert outcome in (before[number], after[number])
    first_answer, *_, last_answer = load.outcomes
    assert first_answer[1] == before[first_answer[0]]
    assert last_answer[1] == after[last_answer[0]]
    assert stats.items == COUNT


def test_lookalike_cluster_serve_embeds_and_answers_exactly_as_one_server_does(
    cluster: Cluster, index: Path, tiny_export: Path, tmp_path: Path
) -> None:
    photos = [jpeg(120 + 10 * i, 90 + 7 * i, seed=i) for i in range(6)]
    texts = pb.EmbedRequest(texts=["a dog on a beach", "two red cars"])
    by_image = pb.SearchRequest(image=photos[2], k=5, filter={"parity": "0"})
    box = pb.Region(x0=0.2, y0=0.1, x1=0.9, y1=0.8)  # a part of the query, cut on the replica
    by_part = pb.SearchRequest(image=photos[5], box=box, k=5)
    with front(tiny_export, index) as local:
        expected = vectors_of(local.Embed(pb.EmbedRequest(images=photos), timeout=30))
        expected_texts = vectors_of(local.Embed(texts, timeout=30))
        expected_search = answers(local.Search(by_image, timeout=30).matches)
        expected_part = answers(local.Search(by_part, timeout=30).matches)
        expected_stats = local.Stats(pb.StatsRequest(), timeout=30)
    log = tmp_path / "front.log"
    search = ("--exact-search-below", str(SEARCH.exact_search_below))  # as `front` searches
    listeners = ("--http-port", "0", "--metrics-port", "0")
    with cluster_serve(cluster.address, index, tiny_export, log, *search, *listeners) as served:
        announced = announced_listeners(log, LOOPBACK)  # the server's default --host
        listening = listeners_by_process(served.pid)
        # beside them, the front (a Ray driver) holds its Ray core worker's gRPC port: Ray's,
        # bound by Ray on every interface (Ray 2.60), answering only Ray's token where the
        # cluster has token authentication on (`ray start`'s default)
        port = ray_port(served.pid)
        rays = {socket for socket in listening[served.pid] if socket.port == port}
        assert announced.keys() == {"gRPC", "HTTP", "metrics"}
        assert len(rays) == 1
        assert listening == {served.pid: set(announced.values()) | rays}  # and no children
        one_call = vectors_of(served.Embed(pb.EmbedRequest(images=photos), timeout=30))
        alone = [vectors_of(served.Embed(pb.EmbedRequest(images=[p]), timeout=30)) for p in photos]
        np.testing.assert_array_equal(one_call, expected)
        np.testing.assert_array_equal(np.vstack(alone), expected)  # batching changes nothing
        np.testing.assert_array_equal(vectors_of(served.Embed(texts, timeout=30)), expected_texts)
        assert answers(served.Search(by_image, timeout=30).matches) == expected_search
        assert answers(served.Search(by_part, timeout=30).matches) == expected_part
        whole = served.Search(pb.SearchRequest(image=photos[5], k=5), timeout=30).matches
        assert answers(whole) != expected_part  # the box made another query
        with pytest.raises(grpc.RpcError) as broken:  # refused in the replica, same status
            served.Embed(pb.EmbedRequest(images=[b"not an image"]), timeout=30)
        assert broken.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stats = served.Stats(pb.StatsRequest(), timeout=30)
        http = f"http://{LOOPBACK}:{announced['HTTP'].port}"
        with httpx.Client(base_url=http, timeout=30) as web:  # the same answers over HTTP
            assert http_answers(web, by_image) == expected_search
            assert http_answers(web, by_part) == expected_part
            refused_as_read_only(http_writes(web))
    assert (stats.model_id, stats.precision, stats.dims, stats.text_enabled) == (
        expected_stats.model_id,
        expected_stats.precision,
        expected_stats.dims,
        True,
    )
    assert stats.index_version == "v00001"
    assert "embedding on Ray Serve" in log.read_text()


def http_query(request: pb.SearchRequest) -> dict[str, Any]:
    """The `POST /v1/search` body that asks what `request` asks over gRPC."""
    query = json_format.MessageToDict(request, preserving_proto_field_name=True)
    if request.HasField("vector"):
        query["vector"] = list(request.vector.values)
    if request.HasField("box"):
        query["box"] = [request.box.x0, request.box.y0, request.box.x1, request.box.y1]
    return query


def http_answers(web: httpx.Client, request: pb.SearchRequest) -> Answer:
    """`request` asked over HTTP, its matches as `answers` gives gRPC's."""
    reply = web.post("/v1/search", json=http_query(request))
    assert reply.status_code == 200, reply.text
    return [(match["id"], round(match["score"], 5)) for match in reply.json()["matches"]]


def http_writes(web: httpx.Client) -> dict[str, httpx.Response]:
    """Every kind of HTTP write, each asked of `web` once."""
    image = base64.b64encode(jpeg(64, 48)).decode()
    return {
        "PUT a vector": web.put("/v1/items/new", json={"vector": [1.0] * TINY.dims}),
        "PUT an image": web.put("/v1/items/new", json={"image": image}),
        "PUT a broken image": web.put("/v1/items/new", json={"image": "bm90IGFuIGltYWdl"}),
        "DELETE": web.delete("/v1/items/item-0001"),
        "POST delete": web.post("/v1/delete", json={"ids": ["item-0001"]}),
        "POST metadata": web.post("/v1/metadata", json={"ids": ["item-0001"], "set": {"a": "b"}}),
    }


def refused_as_read_only(writes: dict[str, httpx.Response]) -> None:
    """Each answered 409 with the server's one read-only reason."""
    error = {"code": "FAILED_PRECONDITION", "type": "ReadOnlyError", "message": READ_ONLY}
    for name, reply in writes.items():
        assert (reply.status_code, reply.json()) == (409, {"error": error}), name


@contextlib.contextmanager
def index_server(model: Path, index: Path) -> Iterator[tuple[RunningServer, FaultyEngine, str]]:
    """`lookalike-server --index INDEX --http-port 0`, in this process: the server, its image
    engine (which counts the rows it infers) and its HTTP base URL."""
    handle = EngineHandle()
    config = config_for(model, None, index_dir=index, index=SEARCH, http_port=0)
    with running_server(config, engine_factory=handle) as server:
        assert handle.engine is not None
        assert server.server.http is not None
        yield server, handle.engine, f"http://127.0.0.1:{server.server.http.port}"


def test_http_on_a_built_index_answers_every_read_as_grpc_does(
    index: Path, tiny_export: Path
) -> None:
    requests = [
        *vector_searches(seed=8, count=5),
        pb.SearchRequest(
            vector=vector_searches(seed=9, count=1)[0].vector, k=10, filter={"parity": "1"}
        ),
        pb.SearchRequest(id="item-0042", k=5, exclude_self=True),
        pb.SearchRequest(image=jpeg(90, 70, seed=3), k=5),
    ]
    with (
        index_server(tiny_export, index) as (server, _, url),
        grpc.insecure_channel(server.address) as channel,
        httpx.Client(base_url=url, timeout=30) as web,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        for request in requests:
            assert http_answers(web, request) == answers(stub.Search(request, timeout=30).matches)
        item = stub.Get(pb.GetRequest(id="item-0042"), timeout=30)
        assert web.get("/v1/items/item-0042").json()["metadata"] == dict(item.metadata)
        stats = web.get("/v1/stats").json()
        assert (stats["items"], stats["index_version"]) == (COUNT, "v00001")
        thumbnail = web.get("/v1/items/item-0042/thumbnail")
        assert (thumbnail.status_code, thumbnail.json()["error"]["type"]) == (
            404,
            "ThumbnailMissingError",
        )


def test_writes_to_a_built_index_are_refused_on_both_transports_before_any_work(
    index: Path, tiny_export: Path
) -> None:
    """FAILED_PRECONDITION (HTTP 409) with the read-only reason, whatever the write carries:
    no image is decoded or embedded for a write that cannot be stored."""
    image, vector = jpeg(64, 48), pb.Vector(values=[1.0] * TINY.dims)
    with (
        index_server(tiny_export, index) as (server, engine, url),
        grpc.insecure_channel(server.address) as channel,
        httpx.Client(base_url=url, timeout=30) as web,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        inferred = engine.rows_inferred
        grpc_writes: dict[str, Callable[[], object]] = {
            "Add a vector": lambda: stub.Add(pb.AddRequest(id="new", vector=vector)),
            "Add an image": lambda: stub.Add(pb.AddRequest(id="new", image=image)),
            "Add a broken image": lambda: stub.Add(pb.AddRequest(id="new", image=b"not an image")),
            "AddStream": lambda: list(stub.AddStream(iter([pb.AddRequest(id="a", image=image)]))),
            "Delete": lambda: stub.Delete(pb.DeleteRequest(ids=["item-0001"])),
            "UpdateMetadata": lambda: stub.UpdateMetadata(
                pb.UpdateMetadataRequest(ids=["item-0001"], set={"a": "b"})
            ),
        }
        for name, write in grpc_writes.items():
            with pytest.raises(grpc.RpcError) as refused:
                write()
            status = (refused.value.code(), refused.value.details())
            assert status == (grpc.StatusCode.FAILED_PRECONDITION, READ_ONLY), name
        refused_as_read_only(http_writes(web))
        assert engine.rows_inferred == inferred
        assert stub.Stats(pb.StatsRequest(), timeout=30).items == COUNT
