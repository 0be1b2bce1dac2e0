"""`lookalike build-index`, `lookalike-server --index` and `lookalike import`, on the package's
two-node Ray cluster, over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
from ray.cluster_utils import Cluster

from benchmarks import datasets
from lookalike.batch.build_index import BuildSettings, build_index
from lookalike.batch.importer import import_dataset
from lookalike.batch.ingest import IngestSettings, ingest
from lookalike.cli import main
from lookalike.cli.common import EXIT_BAD_INPUT
from lookalike.export.manifest import ModelIdentity
from lookalike.server.cluster.ray_session import LOG_FOLDER
from lookalike.server.core import NEIGHBOUR_PAGE
from lookalike.server.errors import NotFoundError, ThumbnailMissingError
from lookalike.server.index.built_index import (
    SHARDS_DIR,
    BuiltIndexError,
    read_manifest,
    shard_of,
)
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.sharded_repository import ShardedRepository
from lookalike.server.index.vector_index import dtype_for_this_cpu
from lookalike.server.regions import Region, RegionPolicy, policy_regions
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.serving import config_for, running_server

TINY = ModelIdentity("random-init:tiny", 16)
SHARDS = 3
SYNTHETIC = 3000
PARTITIONS = 4


def unit_rows(count: int, seed: int) -> np.ndarray:
    return datasets.unit_rows(count, TINY.dims, seed)


def write_dataset(directory: Path, ids: list[str], vectors: np.ndarray) -> None:
    datasets.write_dataset(directory, TINY, ids, vectors, partitions=PARTITIONS)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    stored = vectors.astype(np.float16).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    return np.argsort(-(stored @ query), kind="stable")[:k].tolist()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], np.ndarray]:
    directory = tmp_path_factory.mktemp("synthetic") / "dataset"
    ids = [f"item-{i:05d}" for i in range(SYNTHETIC)]
    vectors = unit_rows(SYNTHETIC, seed=1)
    write_dataset(directory, ids, vectors)
    return directory, ids, vectors


@contextlib.contextmanager
def serving(model: Path, **where: object) -> Iterator[pb_grpc.ImageSearchStub]:
    """A server over `data_dir=` or `index_dir=` (plus any other settings), and its stub."""
    data_dir = where.pop("data_dir", None)
    with (
        running_server(config_for(model, data_dir, **where)) as server,  # type: ignore[arg-type]
        grpc.insecure_channel(server.address) as channel,
    ):
        yield pb_grpc.ImageSearchStub(channel)


def search(stub: pb_grpc.ImageSearchStub, vector: np.ndarray, k: int = 10, **filters: str):
    request = pb.SearchRequest(vector=pb.Vector(values=vector.tolist()), k=k, filter=filters)
    return stub.Search(request, timeout=30).matches


async def says_it_keeps_no_thumbnails(index: Path, item_id: str) -> None:
    """A built index has no thumbnails and says so; an unknown id is still NOT_FOUND first."""
    repository = ShardedRepository(index, TINY, IndexSettings())
    await repository.open()
    try:
        with pytest.raises(ThumbnailMissingError, match="built index"):
            await repository.thumbnail(item_id)
        with pytest.raises(NotFoundError) as unknown:
            await repository.thumbnail("nobody")
        assert not isinstance(unknown.value, ThumbnailMissingError)
    finally:
        await repository.close()


def test_a_built_index_answers_like_an_exact_search_over_its_vectors(
    cluster: Cluster,
    synthetic: tuple[Path, list[str], np.ndarray],
    tiny_export: Path,
    tmp_path: Path,
) -> None:
    dataset, ids, vectors = synthetic
    index = tmp_path / "index"
    summary = build_index(BuildSettings(dataset=dataset, output=index, shards=SHARDS))
    assert (summary.items, summary.shards, summary.written) == (SYNTHETIC, SHARDS, [0, 1, 2])
    manifest = read_manifest(index)
    assert manifest.model == TINY.source
    assert manifest.settings.dtype == "bf16"
    assert [shard.items for shard in manifest.shards] == [
        sum(shard_of(i, SHARDS) == n for i in ids) for n in range(SHARDS)
    ]
    # built again from the same dataset: the same shards, byte for byte (so the same answers)
    build_index(BuildSettings(dataset=dataset, output=tmp_path / "again", shards=SHARDS))
    again = read_manifest(tmp_path / "again")
    assert [(s.index.sha256, s.table.sha256) for s in again.shards] == [
        (s.index.sha256, s.table.sha256) for s in manifest.shards
    ]
    asyncio.run(says_it_keeps_no_thumbnails(index, ids[0]))
    probes = range(0, SYNTHETIC, 30)
    # exact_search_below=0: every shard searches its HNSW graph, as a large one would
    with serving(tiny_export, index_dir=index, index=IndexSettings(exact_search_below=0)) as stub:
        recalls = []
        for probe in probes:
            expected = {ids[i] for i in exact_top(vectors, vectors[probe], 10)}
            recalls.append(len(expected & {m.id for m in search(stub, vectors[probe])}) / 10)
        assert np.mean(recalls) >= 0.99  # USearch alone: 0.996-0.999 on such vectors
    with serving(tiny_export, index_dir=index) as stub:  # shards this small: exact search
        for probe in probes:
            matches = search(stub, vectors[probe])
            assert matches[0].id == ids[probe]  # every probe finds itself first
            # then what an exact search finds (bf16 storage, 8-bit mantissa: near-ties may swap)
            exact = [
                float(vectors[i] @ vectors[probe]) for i in exact_top(vectors, vectors[probe], 10)
            ]
            np.testing.assert_allclose([m.score for m in matches], exact, atol=5e-3)
        filtered = search(stub, vectors[7], k=20, parity="0")
        assert len(filtered) == 20
        assert all(m.metadata["parity"] == "0" for m in filtered)
        item = stub.Get(pb.GetRequest(id=ids[5], include_vector=True), timeout=30)
        assert item.metadata["source_path"] == f"synthetic://{ids[5]}"
        np.testing.assert_allclose(item.vector.values, vectors[5], atol=5e-3)  # bf16 storage
        by_id = stub.Search(pb.SearchRequest(id=ids[5], k=3, exclude_self=True), timeout=30).matches
        assert ids[5] not in {m.id for m in by_id}
        assert by_id[0].id == ids[exact_top(vectors, vectors[5], 2)[1]]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Delete(pb.DeleteRequest(ids=[ids[0]]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "build-index" in refused.value.details()
        tag = pb.UpdateMetadataRequest(ids=[ids[0]], set={"label": "cat"})
        with pytest.raises(grpc.RpcError) as refused:
            stub.UpdateMetadata(tag, timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as refused:
            stub.Clusters(pb.ClustersRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "data directory" in refused.value.details()
        with pytest.raises(grpc.RpcError) as missing:
            stub.Get(pb.GetRequest(id="nobody"), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def neighbours(
    stub: pb_grpc.ImageSearchStub, **fields: object
) -> tuple[dict[str, dict[str, float]], list[pb.NeighboursResponse]]:
    """Each item with neighbours: {neighbour: score}; and the pages as they came."""
    pages = list(stub.Neighbours(pb.NeighboursRequest(**fields), timeout=120))  # type: ignore[arg-type]
    found = {
        item.id: {n.id: round(n.score, 4) for n in item.neighbours}
        for page in pages
        for item in page.items
    }
    return found, pages


def test_neighbours_on_a_built_index_scan_every_shard_as_a_data_dir_server_does(
    cluster: Cluster, tiny_export: Path, tmp_path: Path
) -> None:
    """Near copies among random vectors, built into shards of more than a page each: the
    scan finds exactly the copies (every-pair numpy agrees), page by page over every shard,
    and answers as a --data-dir server holding the same dataset. One family has an even
    original whose even copy is farther than its two odd ones: a filtered scan for the best
    neighbour (k=1) finds it behind them."""
    rng = np.random.default_rng(11)
    originals = unit_rows(900, seed=12)
    copied = rng.choice(900, size=40, replace=False)
    copies = originals[copied] + 0.01 * unit_rows(40, seed=13)
    family = unit_rows(1, seed=14) + np.array([0, 0.005, 0, 0.005, 0.06])[:, None] * unit_rows(
        5, seed=15
    )
    family[2] = unit_rows(1, seed=16)  # rows 940-944 by parity: even, odd, even, odd, even
    stacked = np.vstack([originals, copies, family])
    vectors = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    ids = [f"item-{i:04d}" for i in range(900)] + [f"copy-of-{n:04d}" for n in copied]
    ids += ["family", "family-odd-0", "unrelated", "family-odd-1", "family-even"]
    write_dataset(tmp_path / "dataset", ids, vectors)
    build_index(
        BuildSettings(dataset=tmp_path / "dataset", output=tmp_path / "index", shards=SHARDS)
    )
    manifest = read_manifest(tmp_path / "index")
    assert min(shard.items for shard in manifest.shards) > NEIGHBOUR_PAGE  # pages in a shard
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -1)
    every_pair = {
        ids[a]: {ids[b] for b in np.flatnonzero(row >= 0.99)} for a, row in enumerate(scores)
    }
    expected = {item: close for item, close in every_pair.items() if close}
    assert len(expected) == 84  # each copy and its original, the family, nothing else
    assert expected["family"] == {"family-odd-0", "family-odd-1", "family-even"}

    with serving(tiny_export, index_dir=tmp_path / "index") as built:
        found, pages = neighbours(built, min_score=0.99, k=3)
        even, _ = neighbours(built, min_score=0.99, k=1, filter={"parity": "0"})
    assert {item: set(close) for item, close in found.items()} == expected
    assert len(pages) == 2 * len(manifest.shards)  # two pages per shard
    assert [page.total for page in pages] == [len(ids)] * len(pages)
    assert pages[-1].scanned == len(ids)
    parity = {item: str(row % 2) for row, item in enumerate(ids)}  # the dataset's metadata
    assert {item: set(close) for item, close in even.items()} == {
        item: {c for c in close if parity[c] == "0"}  # one at most: k=1 is enough
        for item, close in expected.items()
        if parity[item] == "0" and any(parity[c] == "0" for c in close)
    }
    assert even["family"].keys() == {"family-even"}

    import_dataset(tmp_path / "dataset", tmp_path / "data")
    with serving(tiny_export, data_dir=tmp_path / "data") as one_store:
        in_store, _ = neighbours(one_store, min_score=0.99, k=3)
        even_in_store, _ = neighbours(one_store, min_score=0.99, k=1, filter={"parity": "0"})
    assert {item: close.keys() for item, close in even_in_store.items()} == {
        item: close.keys() for item, close in even.items()
    }
    assert in_store.keys() == found.keys()
    for item, close in found.items():  # bf16 shards against the store's f32: scores near
        assert in_store[item].keys() == close.keys()
        np.testing.assert_allclose(
            [in_store[item][n] for n in close], list(close.values()), atol=5e-3
        )


def test_a_new_version_shares_the_shards_it_does_not_change(
    cluster: Cluster, tiny_export: Path, tmp_path: Path
) -> None:
    ids = [f"item-{i:05d}" for i in range(600)]
    vectors = unit_rows(600, seed=2)
    dataset = tmp_path / "dataset"
    write_dataset(dataset, ids, vectors)
    index = tmp_path / "index"
    build_index(BuildSettings(dataset=dataset, output=index, shards=SHARDS))
    first = read_manifest(index)

    # new images all hash to shard 1, the deleted ones to shard 0: shard 2 stays as it was
    added = [i for i in (f"new-{n}" for n in range(200)) if shard_of(i, SHARDS) == 1][:5]
    deleted = [i for i in ids if shard_of(i, SHARDS) == 0][:3]
    new_vectors = unit_rows(len(added), seed=3)
    write_dataset(dataset, ids + added, np.concatenate([vectors, new_vectors]))
    summary = build_index(BuildSettings(dataset=dataset, output=index, delete=deleted))
    second = read_manifest(index)
    assert (summary.version, summary.written) == ("v00002", [0, 1])
    assert (summary.added, summary.removed) == (len(added), len(deleted))
    assert second.shards[2] == first.shards[2]  # the same files, shared
    assert second.items == first.items + len(added) - len(deleted)
    for entry in first.shards:  # the previous version stays whole (a server may still use it)
        assert (index / SHARDS_DIR / entry.index.name).is_file()

    with serving(tiny_export, index_dir=index) as stub:
        for item_id, vector in zip(added, new_vectors, strict=True):
            assert search(stub, vector, k=1)[0].id == item_id
        for item_id in deleted:
            with pytest.raises(grpc.RpcError) as gone:
                stub.Get(pb.GetRequest(id=item_id), timeout=30)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            assert item_id not in {m.id for m in search(stub, vectors[ids.index(item_id)])}
        assert search(stub, vectors[ids.index("item-00011")], k=1)[0].id == "item-00011"
        assert stub.Stats(pb.StatsRequest(), timeout=30).items == second.items

    again = build_index(BuildSettings(dataset=dataset, output=index))
    assert again.written == []
    assert read_manifest(index).version == 2


def test_delete_finds_an_id_given_in_nfd_as_a_server_does(cluster: Cluster, tmp_path: Path) -> None:
    nfc, nfd = (unicodedata.normalize(form, "café.jpg") for form in ("NFC", "NFD"))
    dataset, index = tmp_path / "dataset", tmp_path / "index"
    write_dataset(dataset, [nfc, "plain.jpg"], unit_rows(2, seed=4))
    build_index(BuildSettings(dataset=dataset, output=index, shards=SHARDS))
    summary = build_index(BuildSettings(dataset=dataset, output=index, delete=[nfd]))
    assert (summary.removed, read_manifest(index).items) == (1, 1)


def test_a_damaged_shard_is_refused_with_a_clear_error(
    cluster: Cluster, tiny_export: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "dataset"
    write_dataset(dataset, [f"item-{i}" for i in range(60)], unit_rows(60, seed=4))
    index = tmp_path / "index"
    build_index(BuildSettings(dataset=dataset, output=index, shards=SHARDS))
    shard = index / SHARDS_DIR / read_manifest(index).shards[1].index.name
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(BuiltIndexError, match="damaged"), serving(tiny_export, index_dir=index):
        pass
    assert (
        main(["build-index", str(dataset), "--output", str(tmp_path / "other"), "--shards", "2"])
        == 0
    )
    other = tmp_path / "other-model"  # a dataset of another model cannot join the index
    datasets.write_dataset(other, ModelIdentity("random-init:other", 16), ["x"], unit_rows(1, 5))
    with pytest.raises(BuiltIndexError, match="cannot be mixed"):
        build_index(BuildSettings(dataset=other, output=tmp_path / "other"))
    with (
        pytest.raises(BuiltIndexError, match="no built index"),
        serving(tiny_export, index_dir=tmp_path / "nowhere"),
    ):
        pass


def test_the_cli_keeps_ray_datas_output_in_its_log_unless_verbose(
    cluster: Cluster, tmp_path: Path
) -> None:
    """As `ingest`: Ray Data's INFO and progress lines only with --verbose. Run as a process of
    its own, as a user runs it: in this one, Ray Data's console handler writes to the stderr it
    found when an earlier test imported Ray Data, which no capture of this test sees."""
    dataset = tmp_path / "dataset"
    write_dataset(dataset, [f"item-{i}" for i in range(60)], unit_rows(60, seed=6))
    building = [sys.executable, "-m", "lookalike.cli", "build-index", str(dataset)]
    building += ["--dtype", "f16", "--address", cluster.address, "--output"]

    def build(*arguments: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*building, *arguments], capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    quiet = build(str(tmp_path / "quiet"))
    assert quiet.stdout.startswith("version v00001: 60 items in 1 shards"), quiet.stdout
    assert quiet.stderr.splitlines() == [
        f"Ray's logs: {LOG_FOLDER} (on the head node; --verbose shows them here)"
    ]
    verbose = build(str(tmp_path / "verbose"), "--verbose")
    assert "Starting execution of Dataset" in verbose.stderr


def test_images_ingested_and_built_find_themselves_and_move_to_a_new_model_while_served(
    cluster: Cluster,
    photos: Path,
    tiny_export: Path,
    siglip_export: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ingest -> build-index -> serve; then the README's move to a new model: the same sources
    ingested with SigLIP into a new dataset, built into a new index (the old index refuses its
    vectors) and served, while the old index's server answers as before until the switch."""
    dataset, index = tmp_path / "dataset", tmp_path / "index"
    sources = [str(photos / "album"), str(photos / "list.csv")]
    ingest(sources, IngestSettings(model_dir=tiny_export, output=dataset, partitions=4))
    assert main(["build-index", str(dataset), "-o", str(index), "--shards", str(SHARDS)]) == 0
    assert "3 shards" in capsys.readouterr().out
    built = read_manifest(index)
    queries = sorted((photos / "album").glob("photo-*.jpg"))[2:8]  # (01 is listed too)
    with serving(tiny_export, index_dir=index) as old:
        answers = [_finds_itself(old, image) for image in queries]
        filtered = old.Search(
            pb.SearchRequest(
                image=(photos / "album" / "photo-01.jpg").read_bytes(),
                k=3,
                filter={"camera": "x100"},
            ),
            timeout=30,
        ).matches
        assert [m.id for m in filtered] == ["listed-1"]
        assert old.Stats(pb.StatsRequest(), timeout=30).items == built.items

        new_dataset, new_index = tmp_path / "dataset-siglip", tmp_path / "index-siglip"
        ingest(sources, IngestSettings(model_dir=siglip_export, output=new_dataset, partitions=4))
        moved = _dataset_ids(new_dataset)
        assert sorted(moved) == sorted(_dataset_ids(dataset))
        assert len(moved) == len(set(moved)) == built.items  # every item embedded once
        refused = main(["build-index", str(new_dataset), "-o", str(index)])
        assert refused == EXIT_BAD_INPUT
        said = capsys.readouterr().err
        assert "random-init:tiny (clip, 16-d)" in said
        assert "(siglip," in said
        assert read_manifest(index).name == built.name  # the old index is untouched
        assert main(["build-index", str(new_dataset), "-o", str(new_index)]) == 0
        chosen = dtype_for_this_cpu(dims=16)  # a new index: its dtype chosen for this CPU, said
        assert f"dtype {chosen.dtype}: {chosen.reason}" in capsys.readouterr().out
        assert read_manifest(new_index).settings.dtype == chosen.dtype
        assert [_finds_itself(old, image) for image in queries] == answers  # still serving

        with serving(siglip_export, index_dir=new_index) as new:
            for image in queries:
                _finds_itself(new, image)
            stats = new.Stats(pb.StatsRequest(), timeout=30)
            assert (stats.items, stats.model_family) == (built.items, "siglip")


def _dataset_ids(dataset: Path) -> list[str]:
    return pq.read_table(dataset / "parts", columns=["id"]).column("id").to_pylist()


def _finds_itself(stub: pb_grpc.ImageSearchStub, image: Path) -> list[tuple[str, float]]:
    matches = stub.Search(pb.SearchRequest(image=image.read_bytes(), k=3), timeout=30).matches
    assert matches[0].id == image.name
    return [(match.id, match.score) for match in matches]


def test_regions_made_at_ingest_are_searched_on_the_built_index_as_on_a_server(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    """`ingest --regions grid` embeds each image's regions as a server with `--regions grid`
    does; build-index stores them as vectors of their items, import into a data directory."""
    folder, dataset, index = tmp_path / "few", tmp_path / "dataset", tmp_path / "index"
    folder.mkdir()
    for image in sorted((photos / "album").glob("photo-*.jpg"))[:6]:
        shutil.copy(image, folder / image.name)
    ingesting = [str(folder), "--model-dir", str(tiny_export), "-o", str(dataset)]
    assert main(["ingest", *ingesting, "--regions", "grid", "--vector-dtype", "f32"]) == 0
    rows = pq.ParquetDataset(dataset / "parts").read().to_pylist()
    grid = [region.to_json() for region in policy_regions(RegionPolicy.GRID)]
    assert len(rows) == 6
    assert all([r["region"] for r in row["regions"]] == grid for row in rows)
    # made otherwise, the same dataset is refused before anything runs
    assert main(["ingest", *ingesting, "--vector-dtype", "f32"]) == EXIT_BAD_INPUT

    with serving(tiny_export, data_dir=tmp_path / "served", regions=RegionPolicy.GRID) as server:
        for row in rows:
            server.Add(pb.AddRequest(id=row["id"], image=Path(row["source"]).read_bytes()))
        for row in rows[:2]:
            for region in row["regions"]:  # each region's vector: the server's, for that box
                vector = pb.Vector(values=region["vector"])
                (match,) = server.Search(pb.SearchRequest(vector=vector, k=1), timeout=30).matches
                assert (match.id, match.whole_image) == (row["id"], False)
                made = Region.from_json(region["region"])
                got = (match.region.x0, match.region.y0, match.region.x1, match.region.y1)
                assert got == pytest.approx((made.x0, made.y0, made.x1, made.y1))
                assert match.score >= 0.99999

    # f32 shards: crops of one picture can lie within bf16's rounding of each other
    f32 = IndexSettings(dtype="f32")
    build_index(BuildSettings(dataset=dataset, output=index, shards=SHARDS, index=f32))
    assert read_manifest(index).vectors == 6 * (1 + len(grid))
    centre = policy_regions(RegionPolicy.GRID)[4]
    box = pb.Region(x0=centre.x0, y0=centre.y0, x1=centre.x1, y1=centre.y1)
    with serving(tiny_export, index_dir=index) as built:
        for row in rows:
            image = Path(row["source"]).read_bytes()
            request = pb.SearchRequest(image=image, box=box, k=1)
            (match,) = built.Search(request, timeout=30).matches
            assert (match.id, match.whole_image) == (row["id"], False)
            assert (match.region.x0, match.region.y1) == pytest.approx((centre.x0, centre.y1))
            assert match.score == pytest.approx(1.0, abs=1e-5)
            stored = built.Get(pb.GetRequest(id=row["id"]), timeout=30)
            assert len(stored.regions) == len(grid)
        stats = built.Stats(pb.StatsRequest(), timeout=30)
        assert (stats.items, stats.vectors) == (6, 6 * (1 + len(grid)))

    summary = import_dataset(dataset, tmp_path / "data")
    assert (summary.items, summary.vectors) == (6, 6 * (1 + len(grid)))
    with serving(tiny_export, data_dir=tmp_path / "data") as imported:
        stored = imported.Get(pb.GetRequest(id=rows[0]["id"]), timeout=30)
        assert len(stored.regions) == len(grid)


def test_import_loads_a_dataset_into_a_servers_store(
    synthetic: tuple[Path, list[str], np.ndarray],
    tiny_export: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dataset, ids, vectors = synthetic
    data_dir = tmp_path / "data"
    first = import_dataset(dataset, data_dir)
    assert first.vectors == first.items == SYNTHETIC
    # again, through the CLI: idempotent, ids are replaced, not duplicated
    assert main(["import", str(dataset), "--data-dir", str(data_dir)]) == 0
    assert f"holds {SYNTHETIC} items" in capsys.readouterr().out
    with serving(tiny_export, data_dir=data_dir) as stub:
        # the server holds the data directory: import refuses, naming it, and changes nothing
        assert main(["import", str(dataset), "--data-dir", str(data_dir)]) == EXIT_BAD_INPUT
        assert f"pid {os.getpid()}" in capsys.readouterr().err
        assert stub.Stats(pb.StatsRequest(), timeout=30).items == SYNTHETIC
        for probe in (0, 1234, SYNTHETIC - 1):
            matches = search(stub, vectors[probe], k=5)
            assert [m.id for m in matches] == [
                ids[i] for i in exact_top(vectors, vectors[probe], 5)
            ]
        assert stub.Get(pb.GetRequest(id=ids[9]), timeout=30).metadata["parity"] == "1"
