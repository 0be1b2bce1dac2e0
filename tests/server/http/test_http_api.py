"""The JSON API over real HTTP on loopback, beside gRPC in the same server: every endpoint, its
misuse, and that it answers what gRPC answers."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from lookalike.server.app import LookalikeServer
from lookalike.server.config import ServerConfig
from lookalike.server.errors import AddressInUseError
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.process import LOOPBACK, ServerProcess
from tests.server.http.conftest import http_client, http_server
from tests.server.images import jpeg
from tests.server.serving import RunningServer, config_for, running_server

PHOTOS = {f"photo-{seed}": jpeg(320 + 16 * seed, 240, seed) for seed in range(6)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def served(
    tiny_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    with http_server(tiny_export, tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest.fixture(scope="module")
def api(served: tuple[RunningServer, str]) -> Iterator[httpx.Client]:
    with http_client(served[1]) as client:
        for item_id, image in PHOTOS.items():
            answer = client.put(
                f"/v1/items/{item_id}", json={"image": b64(image), "metadata": {"set": "photos"}}
            )
            assert answer.status_code == 200, answer.text
        yield client


@pytest.fixture(scope="module")
def stub(served: tuple[RunningServer, str]) -> Iterator[pb_grpc.ImageSearchStub]:
    with grpc.insecure_channel(served[0].address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def error_of(answer: httpx.Response) -> dict[str, str]:
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()["error"]  # type: ignore[no-any-return]


def test_an_image_finds_itself_first_by_json_and_by_upload(api: httpx.Client) -> None:
    image = PHOTOS["photo-3"]
    by_json = api.post("/v1/search", json={"image": b64(image), "k": 3}).json()
    assert by_json["matches"][0]["id"] == "photo-3"
    assert by_json["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert by_json["matches"][0]["metadata"] == {"set": "photos"}
    assert by_json["matches"][0]["region"] is None
    by_upload = api.post("/v1/search", files={"image": ("q.jpg", image)}, data={"k": "3"}).json()
    assert by_upload == by_json


def test_search_answers_what_grpc_answers(api: httpx.Client, stub: pb_grpc.ImageSearchStub) -> None:
    over_grpc = stub.Search(pb.SearchRequest(text="a photo of a dog", k=4), timeout=30)
    over_http = api.post("/v1/search", json={"text": "a photo of a dog", "k": 4}).json()
    assert [m["id"] for m in over_http["matches"]] == [m.id for m in over_grpc.matches]
    np.testing.assert_allclose(
        [m["score"] for m in over_http["matches"]], [m.score for m in over_grpc.matches], atol=1e-6
    )


def test_search_by_id_vector_filter_and_floor(api: httpx.Client) -> None:
    by_id = api.post("/v1/search", json={"id": "photo-1", "k": 2, "exclude_self": True}).json()
    assert "photo-1" not in [m["id"] for m in by_id["matches"]]
    vector = api.get("/v1/items/photo-2", params={"include_vector": "true"}).json()["vector"]
    by_vector = api.post("/v1/search", json={"vector": vector, "k": 1}).json()
    assert by_vector["matches"][0]["id"] == "photo-2"
    filtered = api.post("/v1/search", json={"vector": vector, "filter": {"set": "none"}}).json()
    assert filtered["matches"] == []
    floor = api.post("/v1/search", json={"vector": vector, "k": 6, "min_score": 0.999}).json()
    assert [m["id"] for m in floor["matches"]] == ["photo-2"]


def test_a_box_searches_with_that_part_and_a_region_match_says_which(api: httpx.Client) -> None:
    scene = jpeg(400, 400, seed=40)
    box = [0.5, 0.0, 1.0, 0.5]
    stored = api.put(
        "/v1/items/scene",
        json={"image": b64(scene), "regions": [{"box": box, "label": "corner"}]},
    )
    assert stored.status_code == 200, stored.text
    try:
        found = api.post("/v1/search", json={"image": b64(scene), "box": box, "k": 1}).json()
        (match,) = found["matches"]
        assert match["id"] == "scene"
        assert match["region"]["label"] == "corner"
        np.testing.assert_allclose(match["region"]["box"], box, atol=1e-6)
        assert match["score"] == pytest.approx(1.0, abs=1e-4)
    finally:
        api.delete("/v1/items/scene")


def test_several_examples_search_with_the_mean_of_positives_minus_the_negatives(
    api: httpx.Client, stub: pb_grpc.ImageSearchStub
) -> None:
    """The query vector is normalise(mean(positives) - w * mean(negatives)); the answer equals
    an exact search with that vector over the stored vectors, computed here with numpy."""
    stored = {
        item: np.array(api.get(f"/v1/items/{item}?include_vector=true").json()["vector"])
        for item in PHOTOS
    }
    text_vector = np.array(
        api.post("/v1/embeddings", json={"input": "a red car"}).json()["data"][0]["embedding"]
    )
    image = jpeg(300, 200, seed=99)
    (image_vector,) = stub.Embed(pb.EmbedRequest(images=[image]), timeout=30).embeddings
    positives = [stored["photo-0"], stored["photo-4"], np.array(image_vector.values)]
    negatives = [stored["photo-5"], text_vector]
    weight = 0.3
    query = np.mean(positives, axis=0) - weight * np.mean(negatives, axis=0)
    query /= np.linalg.norm(query)
    scores = {item: float(vector @ query) for item, vector in stored.items()}
    named = {"photo-0", "photo-4", "photo-5"}
    expected = sorted((s, i) for i, s in scores.items() if i not in named)[::-1]

    body = {
        "id": "photo-0",
        "positives": [{"id": "photo-4"}, {"image": b64(image)}],
        "negatives": [{"id": "photo-5"}, {"text": "a red car"}],
        "negative_weight": weight,
        "k": 10,
        "exclude_self": True,
    }
    got = api.post("/v1/search", json=body).json()["matches"]
    assert [m["id"] for m in got] == [item for _, item in expected]
    np.testing.assert_allclose([m["score"] for m in got], [s for s, _ in expected], atol=1e-5)

    over_grpc = stub.Search(
        pb.SearchRequest(
            id="photo-0",
            positives=[pb.Example(id="photo-4"), pb.Example(image=image)],
            negatives=[pb.Example(id="photo-5"), pb.Example(text="a red car")],
            negative_weight=weight,
            k=10,
            exclude_self=True,
        ),
        timeout=30,
    )
    assert [m.id for m in over_grpc.matches] == [m["id"] for m in got]


def test_embeddings_are_openai_shaped_and_equal_grpc_embed(
    api: httpx.Client, stub: pb_grpc.ImageSearchStub
) -> None:
    image = PHOTOS["photo-0"]
    inputs = ["a photo of a cat", f"data:image/jpeg;base64,{b64(image)}", "猫と犬 🐱"]
    answer = api.post("/v1/embeddings", json={"model": "anything", "input": inputs}).json()
    assert answer["object"] == "list"
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in answer["data"])
    assert set(answer["usage"]) == {"prompt_tokens", "total_tokens"}
    got = np.array([d["embedding"] for d in answer["data"]])
    texts = stub.Embed(pb.EmbedRequest(texts=[inputs[0], inputs[2]]), timeout=30)
    images = stub.Embed(pb.EmbedRequest(images=[image]), timeout=30)
    assert answer["model"] == texts.model_id
    expected = np.array(
        [
            texts.embeddings[0].values,
            images.embeddings[0].values,
            texts.embeddings[1].values,
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    encoded = api.post(
        "/v1/embeddings", json={"input": inputs[0], "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(decoded, expected[0], atol=1e-6)


def test_the_openai_client_embeds_through_the_server(
    served: tuple[RunningServer, str], stub: pb_grpc.ImageSearchStub
) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{served[1]}/v1", api_key="unused", max_retries=0)
    answer = client.embeddings.create(model="lookalike", input=["a red car", "a blue boat"])
    expected = stub.Embed(pb.EmbedRequest(texts=["a red car", "a blue boat"]), timeout=30)
    got = np.array([item.embedding for item in answer.data])
    np.testing.assert_allclose(got, [list(v.values) for v in expected.embeddings], atol=1e-6)


def test_items_are_put_got_thumbnailed_and_deleted(api: httpx.Client) -> None:
    photo = Image.open(io.BytesIO(PHOTOS["photo-5"]))
    stored = api.put(
        "/v1/items/folder/new item.jpg",
        files={"image": ("new.jpg", PHOTOS["photo-5"], "image/jpeg")},
        data={"metadata": json.dumps({"kind": "upload"})},
    )
    assert stored.json() == {"id": "folder/new item.jpg", "replaced": False}
    again = api.put("/v1/items/folder/new item.jpg", json={"image": b64(PHOTOS["photo-5"])})
    assert again.json()["replaced"] is True
    item = api.get("/v1/items/folder/new item.jpg").json()
    image = {"width": photo.width, "height": photo.height, "bytes": len(PHOTOS["photo-5"])}
    assert item == {
        "id": "folder/new item.jpg",
        "metadata": {},
        "regions": [],
        "vector": None,
        "image": image,
    }
    thumbnail = api.get("/v1/items/folder/new item.jpg/thumbnail")
    assert thumbnail.headers["content-type"] == "image/jpeg"
    small = Image.open(io.BytesIO(thumbnail.content))
    assert max(small.size) == 256
    assert small.size[0] / small.size[1] == pytest.approx(photo.size[0] / photo.size[1], abs=0.01)
    assert len(thumbnail.content) < 20_000
    assert api.delete("/v1/items/folder/new item.jpg").json() == {"deleted": 1}
    gone = api.get("/v1/items/folder/new item.jpg")
    assert gone.status_code == 404
    assert error_of(gone)["code"] == "NOT_FOUND"
    assert api.delete("/v1/items/folder/new item.jpg").status_code == 404
    for item_id in ("several-a", "several-b"):
        api.put(f"/v1/items/{item_id}", json={"image": b64(PHOTOS["photo-0"])})
    both = api.post("/v1/delete", json={"ids": ["several-a", "nobody", "several-b"]})
    assert both.json() == {"deleted": 2, "missing": ["nobody"]}
    assert api.get("/v1/items/several-a").status_code == 404


def test_an_item_added_as_a_vector_has_no_thumbnail(api: httpx.Client) -> None:
    vector = api.get("/v1/items/photo-0?include_vector=true").json()["vector"]
    assert api.put("/v1/items/as-vector", json={"vector": vector}).status_code == 200
    try:
        missing = api.get("/v1/items/as-vector/thumbnail")
        assert missing.status_code == 404
        assert error_of(missing)["type"] == "ThumbnailMissingError"
        assert "added as a vector" in error_of(missing)["message"]
    finally:
        api.delete("/v1/items/as-vector")


def test_an_item_whose_thumbnail_fails_is_stored_without_one(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(image: bytes, limits: object) -> bytes:
        raise OSError("encoder crashed")

    monkeypatch.setattr("lookalike.server.core.make_thumbnail", broken)
    stored = api.put("/v1/items/thumbless", json={"image": b64(PHOTOS["photo-2"])})
    try:
        assert stored.status_code == 200, stored.text
        assert (
            api.post("/v1/search", json={"id": "thumbless", "k": 1}).json()["matches"][0]["id"]
            == "thumbless"
        )
        missing = api.get("/v1/items/thumbless/thumbnail")
        assert missing.status_code == 404
        assert error_of(missing)["type"] == "ThumbnailMissingError"
        assert "could not be made" in error_of(missing)["message"]
        assert "'thumbless' is stored without a thumbnail" in caplog.text
        assert "encoder crashed" in caplog.text
    finally:
        api.delete("/v1/items/thumbless")


def test_a_client_leaving_mid_body_ends_its_request(
    served: tuple[RunningServer, str], api: httpx.Client
) -> None:
    """A chunked body cut off by a closed connection is not searched with what arrived."""
    registry = served[0].server.metrics.registry
    labels = {"method": "http POST unrouted", "code": "499"}
    before = registry.get_sample_value("lookalike_requests_total", labels) or 0.0
    port = int(served[1].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'transfer-encoding: chunked\r\n\r\n5\r\n{"tex\r\n'
        )
    deadline = time.monotonic() + 10
    while registry.get_sample_value("lookalike_requests_total", labels) != before + 1:
        assert time.monotonic() < deadline, "the cut-off request was never ended"
        time.sleep(0.01)
    assert api.get("/healthz").status_code == 200


def test_duplicates_come_in_pages_until_the_cursor_ends(api: httpx.Client) -> None:
    copy = Image.open(io.BytesIO(PHOTOS["photo-1"]))
    recompressed = io.BytesIO()
    copy.save(recompressed, "JPEG", quality=60)
    api.put("/v1/items/photo-1-copy", json={"image": b64(recompressed.getvalue())})
    try:
        pairs, cursor, pages = {}, 0, 0
        while cursor is not None:
            page = api.get("/v1/duplicates", params={"threshold": 0.99, "cursor": cursor}).json()
            pairs.update({i["id"]: [n["id"] for n in i["neighbours"]] for i in page["items"]})
            cursor, pages = page["next_cursor"], pages + 1
            assert page["total"] == len(PHOTOS) + 1
        assert pages == 1
        assert pairs["photo-1"][0] == "photo-1-copy"
        assert pairs["photo-1-copy"][0] == "photo-1"
    finally:
        api.delete("/v1/items/photo-1-copy")
    bad = api.get("/v1/duplicates", params={"threshold": 2})
    assert bad.status_code == 400
    assert "threshold" in error_of(bad)["message"]


def test_http_calls_are_counted_by_route_and_status(
    served: tuple[RunningServer, str], api: httpx.Client
) -> None:
    registry = served[0].server.metrics.registry

    def count(method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return registry.get_sample_value("lookalike_requests_total", labels) or 0.0

    found_before = count("http GET /v1/items/{item_id:path}", "200")
    missing_before = count("http GET /v1/items/{item_id:path}", "404")
    api.get("/v1/items/photo-0")
    api.get("/v1/items/nobody")
    assert count("http GET /v1/items/{item_id:path}", "200") == found_before + 1
    assert count("http GET /v1/items/{item_id:path}", "404") == missing_before + 1


def test_keep_alive_connections_send_without_waiting_for_acks(
    served: tuple[RunningServer, str], api: httpx.Client
) -> None:
    """Nagle is off on the server's connections: with it on, each answer on a keep-alive
    connection waited ~40 ms for the client's delayed ACK (measured: 48 ms against 3 ms)."""
    assert api.get("/healthz").status_code == 200  # a connection is open now
    listener = served[0].server.http
    assert listener is not None
    connections = listener._server.server_state.connections  # type: ignore[union-attr]
    sockets = [c.transport.get_extra_info("socket") for c in connections]
    assert sockets
    assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


def test_stats_and_health(api: httpx.Client, stub: pb_grpc.ImageSearchStub) -> None:
    stats = api.get("/v1/stats").json()
    over_grpc = stub.Stats(pb.StatsRequest(), timeout=10)
    assert stats["items"] == over_grpc.items
    assert stats["model_id"] == over_grpc.model_id
    assert stats["random_weights"] is True
    assert stats["dims"] == over_grpc.dims
    assert stats["index"]["kernel"] == over_grpc.index.kernel != ""
    assert stats["duplicates_threshold_calibrated"] is False
    assert api.get("/healthz").json() == {"status": "SERVING"}


def test_the_schema_describes_every_endpoint(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [
        ("/v1/search", "post"),
        ("/v1/embeddings", "post"),
        ("/v1/items/{item_id}", "put"),
        ("/v1/items/{item_id}", "get"),
        ("/v1/items/{item_id}", "delete"),
        ("/v1/items/{item_id}/thumbnail", "get"),
        ("/v1/delete", "post"),
        ("/v1/stats", "get"),
        ("/v1/duplicates", "get"),
        ("/healthz", "get"),
    ]:
        assert method in paths[path], (path, method)
    search_body = paths["/v1/search"]["post"]["requestBody"]["content"]
    assert set(search_body) == {"application/json", "multipart/form-data"}
    assert {"SearchIn", "ExampleIn", "ItemIn", "ErrorOut"} <= set(schema["components"]["schemas"])


def test_the_schema_asks_for_the_token_on_the_api_and_lists_no_422(api: httpx.Client) -> None:
    """Bad input is a 400 in the API's own shape: FastAPI's 422 is never sent."""
    schema = api.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's --token; asked for only when it was started with one",
        }
    }
    operations = [
        (path, operation)
        for path, methods in schema["paths"].items()
        for operation in methods.values()
    ]
    for path, operation in operations:
        assert "422" not in operation["responses"], path
        if path.startswith("/v1/"):
            assert operation["security"] == [{"bearer": []}], path
        else:
            assert "security" not in operation, path  # /healthz is open
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["paths"]["/v1/search"]["post"]["responses"]["400"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
    }


def test_scores_stay_within_minus_one_and_one(api: httpx.Client) -> None:
    """A vector's cosine with itself comes out of the index as 1.0000001 for about one vector
    in five (and with its opposite as -1.0000001): searches and the duplicates scan answer 1
    and -1 for them."""
    dims = api.get("/v1/stats").json()["dims"]
    rows = np.random.default_rng(7).normal(size=(32, dims))
    stored = {f"unit-{i}": row.tolist() for i, row in enumerate(rows)}
    copies = {f"copy-{i}": vector for i, vector in enumerate(stored.values())}
    try:
        for item_id, vector in stored.items():
            assert api.put(f"/v1/items/{item_id}", json={"vector": vector}).status_code == 200
        for item_id, vector in stored.items():
            for query, end in ((vector, 0), ([-value for value in vector], -1)):
                found = api.post("/v1/search", json={"vector": query, "k": 100}).json()
                scores = [match["score"] for match in found["matches"]]
                assert found["matches"][end]["id"] == item_id
                assert abs(scores[end]) == pytest.approx(1.0, abs=1e-6)
                assert all(-1.0 <= score <= 1.0 for score in scores), (min(scores), max(scores))
        for item_id, vector in copies.items():
            assert api.put(f"/v1/items/{item_id}", json={"vector": vector}).status_code == 200
        page = api.get("/v1/duplicates", params={"threshold": 0.99, "k": 1}).json()
        neighbours = [
            neighbour["score"]
            for item in page["items"]
            if item["id"] in stored or item["id"] in copies
            for neighbour in item["neighbours"]
        ]
        assert len(neighbours) == len(stored) + len(copies)
        assert all(0.99 <= score <= 1.0 for score in neighbours), max(neighbours)
    finally:
        api.post("/v1/delete", json={"ids": [*stored, *copies]})


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "says"),
    [
        ("post", "/v1/search", b"{not json", 400, "INVALID_ARGUMENT", "Invalid JSON"),
        ("post", "/v1/search", {"text": "x", "k": "many"}, 400, "INVALID_ARGUMENT", "k:"),
        ("post", "/v1/search", {"text": 7}, 400, "INVALID_ARGUMENT", "text:"),
        ("post", "/v1/search", {"txt": "x"}, 400, "INVALID_ARGUMENT", "txt:"),
        ("post", "/v1/search", {"k": 3}, 400, "INVALID_ARGUMENT", "no query"),
        ("post", "/v1/search", {"image": "%%%"}, 400, "INVALID_ARGUMENT", "not valid base64"),
        ("post", "/v1/search", {"image": b64(b"GIF89a-no")}, 400, "INVALID_ARGUMENT", "image"),
        ("post", "/v1/search", {"id": "nobody"}, 404, "NOT_FOUND", "nobody"),
        ("post", "/v1/search", {"text": "x", "box": [0, 0, 1]}, 400, "INVALID_ARGUMENT", "box"),
        (
            "post",
            "/v1/search",
            {"negatives": [{"id": "photo-0"}]},
            400,
            "INVALID_ARGUMENT",
            "alone",
        ),
        ("post", "/v1/search", {"text": " " * 3000}, 413, "RESOURCE_EXHAUSTED", "limit"),
        ("post", "/v1/embeddings", {"input": [1, 2]}, 400, "INVALID_ARGUMENT", "input"),
        ("post", "/v1/embeddings", {"input": []}, 400, "INVALID_ARGUMENT", "input is empty"),
        ("post", "/v1/embeddings", {"input": "x", "dimensions": 3}, 400, "INVALID_ARGUMENT", "3"),
        (
            "put",
            "/v1/items/x",
            {"image": "data:image/png;base64,AAAA"},
            400,
            "INVALID_ARGUMENT",
            "not an image",
        ),
        ("put", "/v1/items/x", {}, 400, "INVALID_ARGUMENT", "no content"),
        ("get", "/v1/items/nobody/thumbnail", None, 404, "NOT_FOUND", "nobody"),
        ("get", "/v1/duplicates", None, 400, "INVALID_ARGUMENT", "threshold"),
    ],
)
def test_bad_requests_get_a_json_error_and_the_server_stays_up(
    api: httpx.Client,
    method: str,
    path: str,
    body: object,
    status: int,
    code: str,
    says: str,
) -> None:
    if isinstance(body, bytes):
        answer = api.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    else:
        answer = api.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    error = error_of(answer)
    assert error["code"] == code
    assert says in error["message"]
    assert api.get("/healthz").status_code == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    tiny_export: Path, tmp_path: Path
) -> None:
    with http_server(tiny_export, tmp_path, max_message_bytes=30_000) as (_, base):
        limit = 30_000 * 4 // 3 + 2**16
        with http_client(base) as client:
            huge = {"image": "A" * (limit + 10)}
            refused = client.post("/v1/search", json=huge)
            assert refused.status_code == 413
            assert error_of(refused)["code"] == "RESOURCE_EXHAUSTED"

            def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
                yield b'{"image": "'
                for _ in range(limit // 10_000 + 1):
                    yield b"A" * 10_000
                yield b'"}'

            streamed = client.post("/v1/search", content=chunks())
            assert streamed.status_code == 413
            assert client.post("/v1/search", json={"text": "still up"}).status_code == 200


def test_the_token_guards_the_api_but_not_the_page_or_health(
    tiny_export: Path, tmp_path: Path
) -> None:
    with http_server(tiny_export, tmp_path, token="s3cret") as (_, base):
        with http_client(base) as anonymous:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                refused = anonymous.get("/v1/stats", headers=headers)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == "Bearer"
                assert error_of(refused)["code"] == "UNAUTHENTICATED"
            assert anonymous.get("/healthz").status_code == 200
            assert anonymous.get("/").status_code == 200
            assert anonymous.get("/openapi.json").status_code == 200
        with http_client(base, token="s3cret") as client:
            assert client.get("/v1/stats").status_code == 200


def test_cors_is_off_unless_an_origin_is_given(tiny_export: Path, tmp_path: Path) -> None:
    """With a token too: a browser's preflight carries none, and the page that asked must be
    able to read a refusal."""
    origin = "https://app.example.com"
    preflight = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    with http_server(tiny_export, tmp_path / "a") as (_, base), http_client(base) as client:
        answer = client.get("/v1/stats", headers={"origin": origin})
        assert "access-control-allow-origin" not in answer.headers
    cors = {"http_cors": (origin,), "token": "s3cret"}
    with (
        http_server(tiny_export, tmp_path / "b", **cors) as (_, base),
        http_client(base) as anonymous,
        http_client(base, token="s3cret") as client,
    ):
        answer = anonymous.options("/v1/search", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == origin
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        refused = anonymous.get("/v1/stats", headers={"origin": origin})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == origin
        allowed = client.get("/v1/stats", headers={"origin": origin})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        other = client.get("/v1/stats", headers={"origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers


def test_a_server_not_yet_serving_says_so_without_saying_why(
    tiny_export: Path, tmp_path: Path
) -> None:
    config = config_for(tiny_export, tmp_path, http_port=0)
    with running_server(config, load=False) as server:
        assert server.server.http is not None
        with http_client(f"http://127.0.0.1:{server.server.http.port}") as client:
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json() == {"status": "NOT_SERVING"}
            refused = client.post("/v1/search", json={"text": "a cat"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert error_of(refused)["code"] == "UNAVAILABLE"


def test_http_uses_the_same_tls_certificate(
    tiny_export: Path, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    with http_server(tiny_export, tmp_path / "data", tls_cert=cert, tls_key=key) as (server, _):
        port = server.server.http.port  # type: ignore[union-attr]
        with httpx.Client(
            verify=ssl.create_default_context(cafile=str(cert)), timeout=30
        ) as client:
            assert client.get(f"https://127.0.0.1:{port}/healthz").status_code == 200
        with pytest.raises(httpx.HTTPError), httpx.Client(timeout=10) as plain:
            plain.get(f"http://127.0.0.1:{port}/healthz")


async def failed_start(config: ServerConfig) -> AddressInUseError:
    """How starting a server on `config` fails, with nothing stopped after it."""
    with pytest.raises(AddressInUseError) as refused:
        await LookalikeServer(config).start()
    return refused.value


def test_a_busy_http_port_fails_at_start_and_frees_the_grpc_port(
    tiny_export: Path, tmp_path: Path
) -> None:
    with http_server(tiny_export, tmp_path / "a") as (busy, _):
        with socket.create_server((LOOPBACK, 0)) as probe:  # a port free a moment ago
            grpc_port = probe.getsockname()[1]
        taken = busy.server.http.port  # type: ignore[union-attr]
        config = config_for(tiny_export, tmp_path / "b", http_port=taken)
        config = dataclasses.replace(config, port=grpc_port)
        assert "--http-port" in str(busy.call(failed_start(config)))
        # its gRPC port was bound and is free again (and its data directory too)
        with running_server(dataclasses.replace(config, http_port=0), load=False) as retried:
            assert retried.port == grpc_port


def test_lookalike_server_prints_its_http_address_and_serves_there(
    tiny_export: Path, tmp_path: Path
) -> None:
    """As an operator runs it: `--http-port 0` picks a port, the ready line names the URL.
    (What SIGTERM does to HTTP is tests/reliability/test_drain.py's.)"""
    log = tmp_path / "server.log"
    server = ServerProcess(tiny_export, tmp_path / "data", log, "--http-port", "0")
    try:
        (ready,) = [line for line in log.read_text().splitlines() if " ready: " in line]
        found = re.search(r"HTTP on (http://127\.0\.0\.1:\d+/)$", ready)
        assert found is not None, ready
        with http_client(found.group(1)) as client:
            assert client.get("/healthz").json() == {"status": "SERVING"}
            assert client.post("/v1/search", json={"text": "a cat"}).status_code == 200
    finally:
        server.stop()
