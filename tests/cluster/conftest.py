"""What the cluster tests share: one local S3-compatible server and one two-node Ray cluster
for the whole package (each takes seconds to start), and a folder of photos."""

from __future__ import annotations

import csv
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from moto.server import ThreadedMotoServer
from ray.cluster_utils import Cluster

from lookalike.server.cluster.ray_session import LOCKED_DOWN, ray_settings
from tests.server.images import natural

GOOD, BROKEN = 30, 3
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="package")
def object_store() -> Iterator[str]:
    """A real S3-compatible server (moto's) on 127.0.0.1; its endpoint reaches the Ray workers
    through the environment, so it starts before the cluster."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in settings.items():
                patch.setenv(name, value)
            yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="package")
def cluster(object_store: str) -> Iterator[Cluster]:
    """Two nodes on this machine, locked down as the embedded Ray is (`LOCKED_DOWN`): every
    service on 127.0.0.1, and a token of their own, which reaches every process through the
    environment."""
    with ray_settings(LOCKED_DOWN | {"RAY_AUTH_TOKEN": secrets.token_hex(16)}):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="package")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images in a folder and a subfolder, broken ones, and a CSV list with metadata."""
    root = tmp_path_factory.mktemp("photos")
    (root / "album" / "nested").mkdir(parents=True)
    for i in range(GOOD - 5):
        natural(160 + 4 * i, 120, seed=i).save(root / "album" / f"photo-{i:02d}.jpg")
    for i in range(5):
        natural(100, 140, seed=50 + i).save(root / "album" / "nested" / f"deep-{i}.png")
    (root / "album" / "empty.jpg").write_bytes(b"")
    (root / "album" / "truncated.jpg").write_bytes(
        (root / "album" / "photo-00.jpg").read_bytes()[:200]
    )
    (root / "album" / "text.png").write_bytes(b"not a png at all")
    with (root / "list.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "path", "camera"])
        writer.writerow(["listed-1", "album/photo-01.jpg", "x100"])
    return root
