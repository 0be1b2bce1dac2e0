"""An OpenCLIP package served: images and texts over gRPC and HTTP give the same vectors, and
search by image and by text works."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import numpy as np
from PIL import Image
from skimage import data as photographs

from lookalike.export.manifest import Manifest
from lookalike.v1 import lookalike_pb2 as pb
from tests.server.http.conftest import http_client, http_server
from tests.server.images import encode

PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket")


def test_an_openclip_package_serves_images_and_texts_over_grpc_and_http(
    openclip_export: Path, tmp_path: Path
) -> None:
    assert Manifest.load(openclip_export).family == "openclip"
    photos = {
        name: encode(Image.fromarray(getattr(photographs, name)()).convert("RGB"), "JPEG")
        for name in PHOTOGRAPHS
    }
    with http_server(openclip_export, tmp_path / "data") as (server, url):
        with grpc.insecure_channel(server.address) as channel:
            stub = server.stub(channel)
            stats = stub.Stats(pb.StatsRequest(), timeout=30)
            assert (stats.model_family, stats.model_id, stats.dims) == (
                "openclip",
                "openclip-tiny",
                16,
            )
            for name, photo in photos.items():
                stub.Add(pb.AddRequest(id=name, image=photo), timeout=60)
            by_grpc = stub.Embed(pb.EmbedRequest(images=[photos["coffee"]], texts=[]), timeout=60)
            texts = stub.Embed(pb.EmbedRequest(texts=["a cup of coffee"]), timeout=60)
            found = stub.Search(pb.SearchRequest(image=photos["rocket"], k=1), timeout=60)
            assert found.matches[0].id == "rocket"
            by_text = stub.Search(pb.SearchRequest(text="a rocket", k=4), timeout=60)
            assert sorted(m.id for m in by_text.matches) == sorted(PHOTOGRAPHS)
        with http_client(url) as client:
            answer = client.post(
                "/v1/embeddings",
                json={
                    "input": [
                        "data:image/jpeg;base64," + base64.b64encode(photos["coffee"]).decode(),
                        "a cup of coffee",
                    ]
                },
            ).json()
    np.testing.assert_allclose(
        answer["data"][0]["embedding"], by_grpc.embeddings[0].values, atol=1e-6
    )
    np.testing.assert_allclose(
        answer["data"][1]["embedding"], texts.embeddings[0].values, atol=1e-6
    )
