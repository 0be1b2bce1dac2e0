"""`lookalike ingest` on a real two-node Ray cluster on this machine (one CPU each)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
import tarfile
import time
import unicodedata
from pathlib import Path

import boto3
import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from ray.cluster_utils import Cluster
from ray.core.generated.common_pb2 import NodeDeathInfo  # type: ignore[attr-defined]

from lookalike.batch.dataset import DATASET_FILE, LISTING_DIR, Dataset, DatasetError
from lookalike.batch.ingest import IngestSettings, _progress_counter, _progress_of, ingest
from lookalike.cli import main
from lookalike.cli.common import EXIT_BAD_INPUT, EXIT_SOME_FAILED
from lookalike.export.manifest import MANIFEST_FILE, ModelIdentity, Precision, sha256_file
from lookalike.server.embed.settings import ImageDecoder
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.cluster.conftest import BROKEN, GOOD
from tests.cluster.faults import (
    BRIEF_POLL_S,
    DRIVER_PARTITIONS,
    EmbedderKiller,
    ingest_driver,
    job_workers,
    restarts,
    written_parts,
)
from tests.server.images import natural
from tests.server.serving import config_for, running_server

DRIVER_AFTER_A_LOST_NODE_S = 150  # it ended within 40 s of the loss here (2 busy cores)


def settings(model: Path, output: Path, **overrides: object) -> IngestSettings:
    options: dict[str, object] = {"vector_dtype": "f32", "partitions": 4, **overrides}
    return IngestSettings(model_dir=model, output=output, **options)  # type: ignore[arg-type]


def test_ingest_embeds_every_good_image_as_the_server_does(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    output, more = tmp_path / "dataset", 270  # about 300 images in all
    sources = [str(photos / "album"), str(photos / "list.csv"), str(many_photos(tmp_path, more))]
    summary = ingest(sources, settings(tiny_export, output))
    assert summary.images == GOOD + BROKEN + 1 + more
    assert summary.stored == GOOD + 1 + more
    assert sum(summary.failures.values()) == BROKEN
    rows = pq.ParquetDataset(output / "parts").read().to_pylist()
    assert len(rows) == GOOD + 1 + more
    assert len({row["id"] for row in rows}) == len(rows)
    listed = next(row for row in rows if row["id"] == "listed-1")
    assert json.loads(listed["metadata"]) == {"camera": "x100"}
    part = next((output / "parts").glob("part-*.parquet"))
    metadata = pq.read_schema(part).metadata
    assert metadata[b"lookalike.model"] == b"random-init:tiny (clip, 16-d)"
    assert (
        metadata[b"lookalike.manifest_sha256"] == sha256_file(tiny_export / MANIFEST_FILE).encode()
    )
    errors = pq.ParquetDataset(output / "errors").read().to_pylist()
    assert sorted(e["id"] for e in errors) == ["empty.jpg", "text.png", "truncated.jpg"]
    assert all(e["reason"] for e in errors)

    by_id = {row["id"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}
    with (
        running_server(config_for(tiny_export, tmp_path / "data")) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        for batch in range(0, len(rows), 16):  # the server batches them: batch-invariant
            chosen = rows[batch : batch + 16]
            images = [Path(row["source"]).read_bytes() for row in chosen]
            served = stub.Embed(pb.EmbedRequest(images=images), timeout=60).embeddings
            for row, embedding in zip(chosen, served, strict=True):
                cosine = float(np.dot(by_id[row["id"]], np.asarray(embedding.values, np.float32)))
                assert cosine >= 0.99999, row["id"]


def test_decoding_in_the_actors_embeds_as_a_server_decoding_on_its_device(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    """--image-decoder nvimgcodec (its CPU backend here): the JPEGs decoded in the embedding
    actors, the PNGs on the CPU path, the broken images refused as by Pillow."""
    device = ingest(
        [str(photos / "album")],
        settings(tiny_export, tmp_path / "device", image_decoder=ImageDecoder.NVIMGCODEC),
    )
    assert (device.stored, sum(device.failures.values())) == (GOOD, BROKEN)
    errors = pq.ParquetDataset(tmp_path / "device" / "errors").read().to_pylist()
    assert sorted(e["id"] for e in errors) == ["empty.jpg", "text.png", "truncated.jpg"]
    dataset = json.loads((tmp_path / "device" / DATASET_FILE).read_text())
    assert dataset["embedding"]["decoder"] == "nvimgcodec"  # a rerun with Pillow is refused
    rows = pq.ParquetDataset(tmp_path / "device" / "parts").read().to_pylist()
    config = config_for(tiny_export, tmp_path / "data", image_decoder=ImageDecoder.NVIMGCODEC)
    with (
        running_server(config) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        images = [Path(row["source"]).read_bytes() for row in rows]
        served = stub.Embed(pb.EmbedRequest(images=images), timeout=60).embeddings
    for row, embedding in zip(rows, served, strict=True):
        cosine = float(np.dot(row["vector"], np.asarray(embedding.values, np.float32)))
        assert cosine >= 0.99999, row["id"]


def test_the_progress_counter_lives_on_the_drivers_node_and_its_death_stops_only_the_bar(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A counter on a worker node that was lost failed the whole run (ActorDiedError)."""
    counter = _progress_counter()
    counter.add.remote(3)
    assert ray.get(counter.read.remote(), timeout=60) == 3  # created and placed by now
    placed = ray._private.state.actors(actor_id=counter._actor_id.hex())["Address"]["NodeID"]
    assert placed == ray.get_runtime_context().get_node_id()
    with _progress_of(counter, 10):
        ray.kill(counter)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(counter.read.remote(), timeout=30)
    assert "the progress counter died" in caplog.text


def test_a_rerun_finishes_what_is_missing_and_nothing_else(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    output = tmp_path / "dataset"
    first = ingest([str(photos / "album")], settings(tiny_export, output))
    parts = sorted((output / "parts").glob("part-*.parquet"))
    written = {p: p.stat().st_mtime_ns for p in parts}

    again = ingest([str(photos / "album")], settings(tiny_export, output))
    assert (again.stored, again.already_done) == (0, first.images)
    assert {p: p.stat().st_mtime_ns for p in parts} == written  # nothing was rewritten

    lost = parts[1]  # as if a crash came before this partition was written
    lost.unlink()
    resumed = ingest([str(photos / "album")], settings(tiny_export, output))
    assert 0 < resumed.stored < first.stored
    rows = pq.ParquetDataset(output / "parts").read().to_pylist()
    assert len(rows) == first.stored  # no hole, no duplicate
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(p.stat().st_mtime_ns == written[p] for p in parts if p != lost)


def test_images_on_an_object_store_embed_as_the_same_files_on_disk(
    cluster: Cluster, object_store: str, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    bucket = boto3.client("s3", endpoint_url=object_store)
    bucket.create_bucket(Bucket="photos")
    files = [*sorted((photos / "album").glob("photo-0*.jpg")), photos / "album" / "text.png"]
    for file in files:
        bucket.put_object(Bucket="photos", Key=f"set/{file.name}", Body=file.read_bytes())
        shutil.copy(file, local / file.name)

    remote = ingest(["s3://photos/set"], settings(tiny_export, tmp_path / "remote"))
    on_disk = ingest([str(local)], settings(tiny_export, tmp_path / "on-disk"))
    assert (remote.stored, sum(remote.failures.values())) == (len(files) - 1, 1)
    rows = {r["id"]: r for r in pq.ParquetDataset(tmp_path / "remote" / "parts").read().to_pylist()}
    assert rows["photo-00.jpg"]["source"] == "s3://photos/set/photo-00.jpg"
    expected = pq.ParquetDataset(tmp_path / "on-disk" / "parts").read().to_pylist()
    assert on_disk.stored == len(expected) == len(rows)
    for row in expected:
        np.testing.assert_array_equal(rows[row["id"]]["vector"], row["vector"])


def webdataset_shards(photos: Path, into: Path) -> list[Path]:
    """Two WebDataset shards: samples of an image, a .json and a .txt; one broken image."""
    images = sorted((photos / "album").glob("photo-*.jpg"))[:8]
    shards = [into / "shard-000.tar", into / "shard-001.tar"]
    for number, shard in enumerate(shards):
        with tarfile.open(shard, "w") as archive:
            for i, image in enumerate(images[number::2]):
                key = f"sample-{number}{i:02d}"
                label = json.dumps({"label": i, "source": "web"}).encode()
                members = {f"{key}.jpg": image.read_bytes(), f"{key}.json": label}
                members[f"{key}.txt"] = f"caption {key}".encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        if number == 1:
            with tarfile.open(shard, "a") as archive:
                info = tarfile.TarInfo("broken-1.jpg")
                info.size = 5
                archive.addfile(info, io.BytesIO(b"nope!"))
    return shards


def test_webdataset_shards_embed_as_their_images_on_disk(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    shards = webdataset_shards(photos, tmp_path)
    summary = ingest([str(s) for s in shards], settings(tiny_export, tmp_path / "web"))
    assert (summary.stored, sum(summary.failures.values())) == (8, 1)
    rows = {r["id"]: r for r in pq.ParquetDataset(tmp_path / "web" / "parts").read().to_pylist()}
    assert sorted(rows)[:2] == ["sample-000", "sample-001"]
    assert json.loads(rows["sample-101"]["metadata"]) == {
        "label": "1",
        "source": "web",
        "caption": "caption sample-101",
    }
    images = sorted((photos / "album").glob("photo-*.jpg"))[:8]
    alone = ingest([str(p) for p in images[:1]], settings(tiny_export, tmp_path / "alone"))
    assert alone.stored == 1
    (expected,) = pq.ParquetDataset(tmp_path / "alone" / "parts").read().to_pylist()
    np.testing.assert_array_equal(rows["sample-000"]["vector"], expected["vector"])


def test_two_images_with_one_id_keep_one_and_record_the_other(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text(f"id,path\nphoto-02.jpg,{photos / 'album' / 'photo-03.jpg'}\n")
    sources = [str(photos / "album" / "photo-02.jpg"), str(listed)]
    output = tmp_path / "dataset"
    summary = ingest(sources, settings(tiny_export, output))
    assert (summary.images, summary.stored, summary.failures) == (2, 1, {"duplicate id": 1})
    (row,) = pq.ParquetDataset(output / "parts").read().to_pylist()
    (error,) = pq.ParquetDataset(output / "errors").read().to_pylist()
    album = (photos / "album").resolve()
    kept, other = sorted(str(album / n) for n in ("photo-02.jpg", "photo-03.jpg"))
    assert (row["id"], row["source"]) == ("photo-02.jpg", kept)  # the first by uri, every run
    assert error["source"] == other
    assert kept in error["reason"]
    again = ingest(list(reversed(sources)), settings(tiny_export, output))
    assert again.already_done == 2  # the same ids, in any order: nothing to redo


def test_an_id_is_listed_in_nfc_and_a_refused_one_is_an_error_row(
    cluster: Cluster, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    """A file named in NFD and a list row naming it in NFC are one id; a file name with a
    format character fails alone, with the reason."""
    nfc, nfd = (unicodedata.normalize(form, "café.jpg") for form in ("NFC", "NFD"))
    folder = tmp_path / "named"
    folder.mkdir()
    album = photos / "album"
    for source, name in (("photo-02.jpg", nfd), ("photo-03.jpg", "b\u202ec.jpg")):
        shutil.copy(album / source, folder / name)
    shutil.copy(album / "photo-04.jpg", folder / "plain.jpg")
    listed = tmp_path / "list.csv"
    listed.write_text(f"id,path\n{nfc},{album / 'photo-05.jpg'}\n", encoding="utf-8")
    output = tmp_path / "dataset"
    summary = ingest([str(folder), str(listed)], settings(tiny_export, output))
    assert (summary.images, summary.stored) == (4, 2)
    assert summary.failures == {"invalid id": 1, "duplicate id": 1}
    rows = pq.ParquetDataset(output / "parts").read().to_pylist()
    assert sorted(row["id"] for row in rows) == [nfc, "plain.jpg"]
    errors = {e["id"]: e["reason"] for e in pq.ParquetDataset(output / "errors").read().to_pylist()}
    assert errors["b\u202ec.jpg"] == (
        "invalid id: id contains U+202E RIGHT-TO-LEFT OVERRIDE at position 1: invisible and "
        "format characters are not allowed in ids"
    )
    assert errors[nfc].startswith("duplicate id")


def test_a_dataset_of_another_model_is_refused(
    cluster: Cluster, photos: Path, tiny_export: Path, siglip_export: Path, tmp_path: Path
) -> None:
    output = tmp_path / "dataset"
    ingest([str(photos / "list.csv")], settings(tiny_export, output))
    with pytest.raises(DatasetError, match="use another --output"):
        Dataset.open(
            output,
            identity=ModelIdentity("hub:other", 16),
            partitions=4,
            vector_dtype="f32",
            embedding=Dataset.read(output).embedding,
        )
    with pytest.raises(DatasetError, match="precision fp32"):  # made int8, as the server would
        ingest([str(photos / "list.csv")], settings(tiny_export, output, precision=Precision.FP32))
    recorded = json.loads((output / DATASET_FILE).read_text())
    assert recorded["model_family"] == "clip"
    assert recorded["manifest_sha256"] == sha256_file(tiny_export / MANIFEST_FILE)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in (output / LISTING_DIR).iterdir())
    with pytest.raises(DatasetError, match="cannot be mixed") as refused:  # another family
        ingest([str(photos / "album")], settings(siglip_export, output))
    assert "random-init:tiny (clip, 16-d)" in str(refused.value)
    assert "random-init:siglip-tiny (siglip, 32-d)" in str(refused.value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (output / LISTING_DIR).iterdir()) == (
        listing  # refused before the sources were even listed
    )


def test_the_cli_prints_a_summary_and_says_some_failed(
    cluster: Cluster,
    photos: Path,
    tiny_export: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "dataset"
    argv = ["ingest", str(photos / "album"), "--model-dir", str(tiny_export), "-o", str(output)]
    assert main(argv) == EXIT_SOME_FAILED
    out, err = capfd.readouterr()
    assert "Starting execution of Dataset" not in out + err  # Ray Data's lines: in its log
    assert "Total Progress" not in out + err
    assert f"{GOOD + BROKEN} images: {GOOD} embedded now, {BROKEN} failed" in out
    assert "worker time by stage: read" in out
    # a rerun does nothing new, but says that some failed before, and how to retry them
    assert main(argv) == EXIT_SOME_FAILED
    out = capfd.readouterr().out
    assert f"0 embedded now, 0 failed, {GOOD + BROKEN} done by an earlier run" in out
    retry = re.search(
        rf"{BROKEN} of the {GOOD + BROKEN} done by an earlier run failed then .*"
        r"to retry them once fixed, delete (.+) and run again",
        out,
    )
    assert retry is not None, out
    for part in retry[1].split():
        Path(part).unlink()  # as the message says: those partitions are embedded again
    assert main([*argv, "--verbose"]) == EXIT_SOME_FAILED  # Ray Data's own output, as before
    assert f"{BROKEN} failed" in capfd.readouterr().out
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "nowhere"),
                "--model-dir",
                str(tiny_export),
                "-o",
                str(output),
            ]
        )
        == EXIT_BAD_INPUT
    )


def many_photos(root: Path, count: int) -> Path:
    folder = root / "many"
    folder.mkdir()
    for i in range(count):
        natural(120 + i % 50, 90 + i % 40, seed=100 + i).save(folder / f"img-{i:03d}.jpg")
    return folder


def assert_one_row_per_image(output: Path, count: int) -> None:
    rows = pq.ParquetDataset(output / "parts").read().to_pylist()
    assert len(rows) == count
    assert len({row["id"] for row in rows}) == count


def test_a_killed_driver_leaves_a_dataset_a_rerun_completes_exactly(
    cluster: Cluster, tiny_export: Path, tmp_path: Path
) -> None:
    """The driver, SIGKILLed once it has written some partitions (it writes them one by one),
    leaves the others to the rerun, which finds the written ones done and embeds the rest."""
    folder, output = many_photos(tmp_path, 80), tmp_path / "dataset"
    log = tmp_path / "driver.log"
    with ingest_driver(folder, tiny_export, output, cluster.address, log) as driver:
        driver.wait_for("a partition", lambda: written_parts(output), every=BRIEF_POLL_S)
        driver.process.kill()  # SIGKILL: no cleanup, as a crashed machine would leave it
        driver.process.wait(30)
    assert driver.process.returncode == -signal.SIGKILL, driver.said()  # alive until the kill
    left = written_parts(output)
    assert 0 < len(left) < DRIVER_PARTITIONS, driver.said()  # killed mid-run
    done = pq.ParquetDataset(left).read().num_rows
    resumed = ingest([str(folder)], settings(tiny_export, output, partitions=DRIVER_PARTITIONS))
    assert (resumed.already_done, resumed.stored) == (done, 80 - done)
    assert_one_row_per_image(output, 80)
    assert not list(output.glob("*/.*.tmp"))


def test_a_lost_node_leaves_a_dataset_a_rerun_completes_exactly(
    cluster: Cluster, tiny_export: Path, tmp_path: Path
) -> None:
    """A third node joins, the run spreads onto it, and the node dies (its raylet and workers
    killed) while a worker there reads, embeds or writes this run's images, before the run is
    done. The driver then either finishes the run (Ray redoes the lost work elsewhere) or
    stops with an error, but does not hang; either way a rerun completes the dataset exactly."""
    folder, output = many_photos(tmp_path, 80), tmp_path / "dataset"
    node = cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        log = tmp_path / "driver.log"
        with ingest_driver(folder, tiny_export, output, cluster.address, log) as driver:
            job = driver.job_id()
            work = driver.wait_for(
                "this run's images handled on the new node",
                lambda: [w for w in job_workers([node], job) if w.handling_images],
                every=BRIEF_POLL_S,
            )
            parts_then = len(written_parts(output))
            assert driver.process.poll() is None, driver.said()  # the run is still going
            cluster.remove_node(node, allow_graceful=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.process.wait(DRIVER_AFTER_A_LOST_NODE_S)
            returncode = driver.process.poll()
    finally:
        if node in cluster.worker_nodes:  # the test failed before the fault
            cluster.remove_node(node)
        # the cluster marks a killed node dead only after its missed health checks (~15 s);
        # until then it still places actors there, and a Ray Data actor placed on the dead
        # node failed the rerun or the next test's run (ActorDiedError)
        cluster.wait_for_nodes(60)
    assert parts_then < DRIVER_PARTITIONS, driver.said()  # the run was not done
    (lost,) = [record for record in ray.nodes() if record["NodeID"] == node.node_id]
    died = (lost["Alive"], lost["DeathReason"])
    assert died == (False, NodeDeathInfo.UNEXPECTED_TERMINATION), (lost, work)  # killed under it
    assert returncode is not None, f"the driver hung after losing a node:\n{driver.said()}"
    resumed = ingest([str(folder)], settings(tiny_export, output, partitions=DRIVER_PARTITIONS))
    if returncode == 0:  # Ray finished the run
        assert (resumed.stored, resumed.already_done) == (0, 80), driver.said()
    else:  # the run stopped: an exit status of its own, not a signal
        assert returncode > 0, driver.said()
        assert resumed.stored + resumed.already_done == 80
    assert_one_row_per_image(output, 80)


def test_a_killed_embedding_worker_is_replaced_and_the_run_completes(
    cluster: Cluster, tiny_export: Path, tmp_path: Path
) -> None:
    """One of this run's embedding actors, SIGKILLed while it embeds a batch (before any
    partition is written), is restarted by Ray, and the run completes with every image once."""
    folder, output = many_photos(tmp_path, 120), tmp_path / "dataset"
    job = ray.get_runtime_context().get_job_id()  # ingest runs in this process, as this job
    with EmbedderKiller(cluster.list_all_nodes(), job, output) as killer:
        summary = ingest([str(folder)], settings(tiny_export, output, batch_size=4))
        returned = time.monotonic()
    kill = killer.kill
    assert kill is not None, "no embedding actor of this run was found alive to kill"
    assert kill.at < returned, kill  # killed mid-run, not after
    assert kill.parts_written == 0, kill  # before the run had written anything
    assert restarts(kill.victim.actor_id) >= 1, kill  # Ray saw it die
    assert summary.stored == 120
    assert_one_row_per_image(output, 120)


@pytest.mark.timeout(180)
def test_asking_for_an_actor_per_cpu_cannot_starve_the_readers(
    cluster: Cluster,
    photos: Path,
    tiny_export: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With every CPU held by an embedding actor, no read task could run: the run would hang."""
    summary = ingest(
        [str(photos / "album" / "nested")], settings(tiny_export, tmp_path / "d", actors=8)
    )
    assert summary.stored == 5
    assert "would take every CPU" in caplog.text
