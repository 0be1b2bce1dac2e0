"""Every RPC over real gRPC on 127.0.0.1: happy paths and the status code of each misuse."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from transformers import CLIPImageProcessor

from lookalike.export.manifest import Manifest, Precision
from lookalike.server.embed.onnx_engine import EngineSettings
from lookalike.server.embed.preprocess import PreprocessMode
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.vector_index import kernel
from lookalike.server.request_types import RequestLimits
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import jpeg
from tests.server.serving import config_for, running_server

Code = grpc.StatusCode
MAX_MESSAGE_BYTES = 2 * 2**20
MAX_IMAGES = 4
EXACT_BELOW = 10  # tiny, so that filtered searches also take the HNSW path


@pytest.fixture(scope="module")
def channel(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    config = config_for(
        tiny_export,
        tmp_path_factory.mktemp("data"),
        engine=EngineSettings(precision=Precision.FP32, intra_op_threads=1),
        preprocess_mode=PreprocessMode.EXACT,
        index=IndexSettings(exact_search_below=EXACT_BELOW),
        max_message_bytes=MAX_MESSAGE_BYTES,
        request_limits=RequestLimits(max_images_per_request=MAX_IMAGES),
    )
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.ImageSearchStub:
    return pb_grpc.ImageSearchStub(channel)


@pytest.fixture(scope="module")
def dims(stub: pb_grpc.ImageSearchStub) -> int:
    return stub.Stats(pb.StatsRequest()).dims


def error_of(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


def unit(dims: int, seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=dims)
    return list(vector / np.linalg.norm(vector))


# -- Embed ------------------------------------------------------------------------------------


def test_exact_embed_equals_clip_image_processor_plus_the_onnx_model(
    stub: pb_grpc.ImageSearchStub, tiny_export: Path
) -> None:
    images = [jpeg(320, 240, seed=1), jpeg(200, 300, seed=2)]
    response = stub.Embed(pb.EmbedRequest(images=images), timeout=30)
    got = np.array([e.values for e in response.embeddings])

    manifest = Manifest.load(tiny_export)
    processor = CLIPImageProcessor()  # the tiny preset's processor: the defaults at 224px
    resized = processor(  # what the graph takes: it rescales and normalises itself
        images=[Image.open(io.BytesIO(i)) for i in images],
        do_rescale=False,
        do_normalize=False,
        return_tensors="np",
    )["pixel_values"]
    pixels = np.round(resized).astype(np.uint8).transpose(0, 2, 3, 1)
    variant = manifest.graphs["image"].variants[Precision.FP32]
    session = ort.InferenceSession(
        str(tiny_export / variant.file), providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, {"pixel_values": np.ascontiguousarray(pixels)})[0]
    cosine = np.sum(got * expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert np.all(1 - cosine <= 1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert response.model_id == "tiny"


@pytest.mark.parametrize(
    ("images", "code", "words"),
    [
        ([], Code.INVALID_ARGUMENT, "no images"),
        ([b"not an image"], Code.INVALID_ARGUMENT, "not an image"),
        ([b""], Code.INVALID_ARGUMENT, "zero bytes"),
        ([jpeg(32, 32)] * (MAX_IMAGES + 1), Code.RESOURCE_EXHAUSTED, "limit is 4"),
    ],
)
def test_embed_refuses_bad_requests(stub, images, code, words) -> None:
    error = error_of(stub.Embed, pb.EmbedRequest(images=images))
    assert error.code() == code
    assert words in error.details()


def test_message_over_the_size_limit_is_resource_exhausted(stub) -> None:
    error = error_of(stub.Embed, pb.EmbedRequest(images=[b"\xff" * (MAX_MESSAGE_BYTES + 1)]))
    assert error.code() == Code.RESOURCE_EXHAUSTED


# -- Add, Get, upsert ---------------------------------------------------------------------------


def test_add_image_then_get_and_upsert_replaces(stub, dims) -> None:
    first = stub.Add(pb.AddRequest(id="cat", image=jpeg(120, 90, seed=3), metadata={"v": "1"}))
    assert first.id == "cat"
    assert not first.replaced
    second = stub.Add(
        pb.AddRequest(id="cat", vector=pb.Vector(values=unit(dims, 4)), metadata={"v": "2"})
    )
    assert second.replaced
    got = stub.Get(pb.GetRequest(id="cat", include_vector=True))
    assert dict(got.metadata) == {"v": "2"}
    np.testing.assert_allclose(got.vector.values, unit(dims, 4), atol=1e-6)
    assert not stub.Get(pb.GetRequest(id="cat")).HasField("vector")


def test_added_vector_is_normalised(stub, dims) -> None:
    stub.Add(pb.AddRequest(id="long", vector=pb.Vector(values=[3.0] * dims)))
    got = stub.Get(pb.GetRequest(id="long", include_vector=True))
    assert np.linalg.norm(got.vector.values) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: pb.AddRequest(id="", vector=pb.Vector(values=[1.0] * d)), "id is empty"),
        (lambda d: pb.AddRequest(id="a\0b", vector=pb.Vector(values=[1.0] * d)), "NUL"),
        (lambda d: pb.AddRequest(id="x" * 2000, vector=pb.Vector(values=[1.0] * d)), "limit"),
        (lambda d: pb.AddRequest(id="none"), "no content"),
        (lambda d: pb.AddRequest(id="short", vector=pb.Vector(values=[1.0] * (d - 1))), "values"),
        (lambda d: pb.AddRequest(id="nan", vector=pb.Vector(values=[float("nan")] * d)), "NaN"),
        (
            lambda d: pb.AddRequest(id="inf", vector=pb.Vector(values=[float("inf")] * d)),
            "infinity",
        ),
        (lambda d: pb.AddRequest(id="zero", vector=pb.Vector(values=[0.0] * d)), "all zeros"),
        (lambda d: pb.AddRequest(id="bad", image=b"GIF89a-but-not-really"), "image"),
        (
            lambda d: pb.AddRequest(
                id="meta",
                vector=pb.Vector(values=[1.0] * d),
                metadata={str(i): "v" for i in range(1000)},
            ),
            "keys",
        ),
    ],
)
def test_add_refuses_bad_items_with_invalid_argument(stub, dims, make, words) -> None:
    error = error_of(stub.Add, make(dims))
    assert error.code() == Code.INVALID_ARGUMENT
    assert words in error.details()


def test_get_unknown_id_is_not_found(stub) -> None:
    error = error_of(stub.Get, pb.GetRequest(id="never-stored"))
    assert error.code() == Code.NOT_FOUND
    assert "never-stored" in error.details()


# -- Search -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection(stub, dims) -> dict[str, list[float]]:
    """40 vectors: 3 tagged rare, 20 tagged common, all with a group."""
    vectors = {f"item-{i}": unit(dims, 100 + i) for i in range(40)}
    for i, (item_id, vector) in enumerate(vectors.items()):
        tag = "rare" if i < 3 else "common" if i < 23 else "plain"
        stub.Add(
            pb.AddRequest(
                id=item_id,
                vector=pb.Vector(values=vector),
                metadata={"tag": tag, "group": str(i % 2)},
            )
        )
    return vectors


def test_search_by_vector_finds_itself_first_best_first(stub, collection) -> None:
    response = stub.Search(pb.SearchRequest(vector=pb.Vector(values=collection["item-7"]), k=5))
    assert response.matches[0].id == "item-7"
    assert response.matches[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [m.score for m in response.matches]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 5
    assert dict(response.matches[0].metadata)["group"] == "1"


def test_search_by_id_can_exclude_itself(stub, collection) -> None:
    with_self = stub.Search(pb.SearchRequest(id="item-5", k=3))
    assert with_self.matches[0].id == "item-5"
    without = stub.Search(pb.SearchRequest(id="item-5", k=3, exclude_self=True))
    assert "item-5" not in [m.id for m in without.matches]
    assert len(without.matches) == 3
    assert [m.id for m in without.matches][:2] == [m.id for m in with_self.matches][1:3]


def test_search_by_image_finds_the_same_image(stub) -> None:
    image = jpeg(150, 110, seed=42)
    stub.Add(pb.AddRequest(id="photo", image=image))
    assert stub.Search(pb.SearchRequest(image=image, k=1)).matches[0].id == "photo"


@pytest.mark.parametrize(("tag", "k", "expected"), [("rare", 10, 3), ("common", 15, 15)])
def test_filter_returns_k_matches_when_they_exist(stub, collection, tag, k, expected) -> None:
    """rare: 3 matches (exact path); common: 20 matches > exact_search_below (HNSW path)."""
    query = pb.Vector(values=collection["item-30"])  # a "plain" item: matches must be found
    response = stub.Search(pb.SearchRequest(vector=query, k=k, filter={"tag": tag}))
    assert len(response.matches) == expected
    assert {dict(m.metadata)["tag"] for m in response.matches} == {tag}


def test_filter_needs_every_pair(stub, collection) -> None:
    response = stub.Search(
        pb.SearchRequest(
            vector=pb.Vector(values=collection["item-0"]),
            k=40,
            filter={"tag": "rare", "group": "0"},
        )
    )
    assert sorted(m.id for m in response.matches) == ["item-0", "item-2"]


def test_filter_on_an_unknown_key_matches_nothing(stub, collection) -> None:
    query = pb.Vector(values=collection["item-1"])
    assert not stub.Search(pb.SearchRequest(vector=query, k=5, filter={"colour": "red"})).matches


def test_min_score_drops_weaker_matches(stub, collection) -> None:
    query = pb.Vector(values=collection["item-9"])
    everything = stub.Search(pb.SearchRequest(vector=query, k=1000)).matches
    strong = stub.Search(pb.SearchRequest(vector=query, k=1000, min_score=0.5)).matches
    assert [m.id for m in strong] == [m.id for m in everything if m.score >= 0.5]
    assert 0 < len(strong) < len(everything)


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (pb.SearchRequest(id="item-1", k=0), Code.INVALID_ARGUMENT, "k must be"),
        (pb.SearchRequest(id="item-1", k=-3), Code.INVALID_ARGUMENT, "k must be"),
        (pb.SearchRequest(id="item-1", k=100000), Code.INVALID_ARGUMENT, "k must be"),
        (pb.SearchRequest(k=5), Code.INVALID_ARGUMENT, "no query"),
        (pb.SearchRequest(id="missing", k=5), Code.NOT_FOUND, "missing"),
        (
            pb.SearchRequest(vector=pb.Vector(values=[1.0, 2.0]), k=5),
            Code.INVALID_ARGUMENT,
            "values",
        ),
        (pb.SearchRequest(image=b"\x89PNG\r\n", k=5), Code.INVALID_ARGUMENT, "image"),
        (pb.SearchRequest(id="item-1", k=5, min_score=2.0), Code.INVALID_ARGUMENT, "min_score"),
    ],
)
def test_search_refuses_bad_requests(stub, collection, request_, code, words) -> None:
    error = error_of(stub.Search, request_)
    assert error.code() == code
    assert words in error.details()


# -- Delete, AddStream, Stats -------------------------------------------------------------


def test_delete_then_search_no_longer_finds_it(stub, dims) -> None:
    vector = pb.Vector(values=unit(dims, 999))
    stub.Add(pb.AddRequest(id="doomed", vector=vector))
    assert stub.Search(pb.SearchRequest(vector=vector, k=1)).matches[0].id == "doomed"
    response = stub.Delete(pb.DeleteRequest(ids=["doomed", "never-was"]))
    assert response.deleted == 1
    assert list(response.missing) == ["never-was"]
    assert stub.Search(pb.SearchRequest(vector=vector, k=1)).matches[0].id != "doomed"
    assert error_of(stub.Get, pb.GetRequest(id="doomed")).code() == Code.NOT_FOUND
    assert error_of(stub.Delete, pb.DeleteRequest()).code() == Code.INVALID_ARGUMENT


def test_add_stream_reports_every_item_and_a_bad_one_sinks_nothing(stub, dims) -> None:
    requests = [pb.AddRequest(id=f"s-{i}", image=jpeg(64 + i, 64, seed=i)) for i in range(5)]
    requests.insert(2, pb.AddRequest(id="s-bad", image=b"broken"))
    requests.append(pb.AddRequest(id="s-0", vector=pb.Vector(values=unit(dims, 5))))  # dup id
    responses = list(stub.AddStream(iter(requests), timeout=60))
    results = [r for response in responses for r in response.results]
    assert [r.index for r in results] == list(range(len(requests)))
    assert [r.id for r in results] == [r.id for r in requests]
    bad = results[2]
    assert bad.code == Code.INVALID_ARGUMENT.value[0]
    assert "not an image" in bad.error
    assert all(r.code == 0 and not r.error for i, r in enumerate(results) if i != 2)
    assert results[-1].replaced
    assert (responses[-1].stored, responses[-1].failed) == (6, 1)
    got = stub.Get(pb.GetRequest(id="s-0", include_vector=True))
    np.testing.assert_allclose(got.vector.values, unit(dims, 5), atol=1e-6)


def test_stats_describe_the_server(stub, collection, dims) -> None:
    stats = stub.Stats(pb.StatsRequest())
    assert stats.items >= len(collection)
    assert stats.dims == dims == 16
    assert stats.model_id == "tiny"
    assert (stats.model_family, stats.model_revision) == ("clip", "")  # a preset has no revision
    assert len(stats.manifest_sha256) == 64
    assert not stats.HasField("score_scale")  # CLIP has no calibrated probability
    assert stats.random_weights
    assert stats.precision == "fp32"
    assert list(stats.providers) == ["CPUExecutionProvider"]
    assert stats.preprocess_mode == "exact"
    assert stats.index.metric == "cos"
    assert stats.index.exact_search_below == EXACT_BELOW
    assert stats.index.kernel == kernel(stats.index.dtype, dims)  # this CPU's, e.g. "skylake"
    assert stats.uptime_seconds > 0
    assert stats.batches >= 1


# -- health and reflection ----------------------------------------------------------------


def test_health_is_serving_and_reflection_lists_the_service(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "lookalike.v1.ImageSearch"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (listing,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in listing.list_services_response.service}
    assert "lookalike.v1.ImageSearch" in names
    (described,) = reflection.ServerReflectionInfo(
        iter(
            [
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="lookalike.v1.ImageSearch"
                )
            ]
        )
    )
    file = descriptor_pb2.FileDescriptorProto.FromString(
        described.file_descriptor_response.file_descriptor_proto[0]
    )
    (service,) = file.service
    assert [m.name for m in service.method] == [
        "Embed",
        "Add",
        "AddStream",
        "Search",
        "Get",
        "Delete",
        "UpdateMetadata",
        "Stats",
        "Neighbours",
        "Clusters",
    ]
