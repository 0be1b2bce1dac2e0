"""Server lifecycle over loopback: health, persistence, recovery, refusal, auth and TLS."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from usearch.index import Index

from lookalike.export.manifest import MANIFEST_FILE
from lookalike.server.embed.batcher import BatcherSettings
from lookalike.server.embed.onnx_engine import physical_cores
from lookalike.server.errors import DataDirError
from lookalike.server.index.local_repository import DATABASE_FILE, SNAPSHOT_FILE
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import jpeg
from tests.server.serving import config_for, connected, running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="lookalike.v1.ImageSearch")).status


def vectors(count: int, dims: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dims))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def add_items(stub: pb_grpc.ImageSearchStub, rows: np.ndarray) -> None:
    for i, row in enumerate(rows):
        stub.Add(pb.AddRequest(id=f"id-{i}", vector=pb.Vector(values=row), metadata={"i": str(i)}))


def assert_all_present(stub: pb_grpc.ImageSearchStub, rows: np.ndarray) -> None:
    assert stub.Stats(pb.StatsRequest()).items == len(rows)
    for i, row in enumerate(rows):
        top = stub.Search(pb.SearchRequest(vector=pb.Vector(values=row), k=1)).matches[0]
        assert (top.id, dict(top.metadata)) == (f"id-{i}", {"i": str(i)})


def test_health_goes_not_serving_serving_not_serving(tiny_export: Path, tmp_path: Path) -> None:
    with connected(config_for(tiny_export, tmp_path), load=False) as (server, channel):
        assert health_of(channel) == NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.ImageSearchStub(channel).Stats(pb.StatsRequest())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        server.call(server.server.load())
        assert health_of(channel) == SERVING
        server.call(server.server.health.enter_graceful_shutdown())  # what stop() does first
        assert health_of(channel) == NOT_SERVING


def test_items_survive_a_restart(tiny_export: Path, tmp_path: Path) -> None:
    rows = vectors(30)
    with connected(config_for(tiny_export, tmp_path)) as (_, channel):
        add_items(pb_grpc.ImageSearchStub(channel), rows)
    assert (tmp_path / SNAPSHOT_FILE).is_file()  # saved on shutdown
    with connected(config_for(tiny_export, tmp_path)) as (_server, channel):
        assert_all_present(pb_grpc.ImageSearchStub(channel), rows)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated", "other-dims", "stale"])
def test_snapshot_damage_is_repaired_from_the_database(
    tiny_export: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = vectors(25, seed=1)
    with connected(config_for(tiny_export, tmp_path)) as (_, channel):
        add_items(pb_grpc.ImageSearchStub(channel), rows[:20])
    snapshot = tmp_path / SNAPSHOT_FILE
    if damage == "missing":
        snapshot.unlink()
    elif damage == "corrupt":
        snapshot.write_bytes(b"definitely not an index" * 100)
    elif damage == "truncated":
        snapshot.write_bytes(snapshot.read_bytes()[:200])
    elif damage == "other-dims":  # a snapshot another model's vectors made
        other = Index(ndim=8, metric="cos")
        other.add(np.arange(3, dtype=np.uint64), np.ones((3, 8), dtype=np.float32))
        other.save(str(snapshot))
    else:  # stale: the database moved on after the snapshot was taken
        stale = snapshot.read_bytes()
        with connected(config_for(tiny_export, tmp_path)) as (_server, channel):
            stub = pb_grpc.ImageSearchStub(channel)
            add_items(stub, rows)  # 5 more, and 20 replaced
            stub.Delete(pb.DeleteRequest(ids=["id-24"]))
            stub.Add(
                pb.AddRequest(id="id-24", vector=pb.Vector(values=rows[24]), metadata={"i": "24"})
            )
        snapshot.write_bytes(stale)
    with (
        caplog.at_level(logging.INFO),
        connected(config_for(tiny_export, tmp_path)) as (_, channel),
    ):
        present = rows if damage == "stale" else rows[:20]
        assert_all_present(pb_grpc.ImageSearchStub(channel), present)
    if damage != "stale":
        assert "rebuilding the index from the database" in caplog.text
    else:
        assert "index caught up" in caplog.text


def test_a_data_dir_from_another_model_is_refused(tiny_export: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with connected(config_for(tiny_export, data)) as (_, channel):
        add_items(pb_grpc.ImageSearchStub(channel), vectors(3))
    other = Path(shutil.copytree(tiny_export, tmp_path / "other-model"))
    manifest = json.loads((other / MANIFEST_FILE).read_text())
    manifest["source"]["id"] = "some-other-model"
    (other / MANIFEST_FILE).write_text(json.dumps(manifest))
    with running_server(config_for(other, data), load=False) as server:
        with pytest.raises(DataDirError, match="cannot be mixed") as info:
            server.call(server.server.load())
        assert "random-init:tiny" in str(info.value)
        assert "some-other-model" in str(info.value)


def test_a_corrupt_database_is_a_clear_fatal_error_and_left_alone(
    tiny_export: Path, tmp_path: Path
) -> None:
    tmp_path.joinpath(DATABASE_FILE).write_bytes(b"this is not sqlite" * 1000)
    before = tmp_path.joinpath(DATABASE_FILE).read_bytes()
    with (
        running_server(config_for(tiny_export, tmp_path), load=False) as server,
        pytest.raises(DataDirError, match="corrupt"),
    ):
        server.call(server.server.load())
    assert tmp_path.joinpath(DATABASE_FILE).read_bytes() == before


def test_token_is_required_except_for_health(tiny_export: Path, tmp_path: Path) -> None:
    config = config_for(tiny_export, tmp_path, token="s3cret-token")
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageSearchStub(channel)
        for metadata in (
            (),
            (("authorization", "Bearer wrong"),),
            (("authorization", "s3cret-token"),),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.Stats(pb.StatsRequest(), metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "s3cret" not in info.value.details()
        with pytest.raises(grpc.RpcError) as info:  # streaming calls too
            list(stub.AddStream(iter([pb.AddRequest(id="x")])))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret-token"),)
        assert stub.Stats(pb.StatsRequest(), metadata=good).dims == 16
        assert health_of(channel) == SERVING


def test_tls_with_a_self_signed_certificate(
    tiny_export: Path, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    config = config_for(tiny_export, tmp_path / "data", tls_cert=cert, tls_key=key)
    with running_server(config) as server:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            assert pb_grpc.ImageSearchStub(channel).Stats(pb.StatsRequest(), timeout=10).dims == 16
        with grpc.insecure_channel(server.address) as plaintext:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.ImageSearchStub(plaintext).Stats(pb.StatsRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_stream_larger_than_the_queue_waits_instead_of_failing_items(
    tiny_export: Path, tmp_path: Path
) -> None:
    config = config_for(tiny_export, tmp_path, batcher=BatcherSettings(max_queue=4, max_batch=2))
    requests = [pb.AddRequest(id=f"q{i}", image=jpeg(48, 40, seed=i)) for i in range(40)]
    with connected(config) as (_, channel):
        responses = list(pb_grpc.ImageSearchStub(channel).AddStream(iter(requests), timeout=120))
    assert (responses[-1].stored, responses[-1].failed) == (40, 0)


def test_ready_line_names_the_real_thread_count(
    tiny_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`--threads 0` means all cores: the log says how many that is."""
    with caplog.at_level(logging.INFO), running_server(config_for(tiny_export, tmp_path / "d")):
        pass
    (ready,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready:")]
    assert f" {physical_cores()} threads (one image per run)," in ready
