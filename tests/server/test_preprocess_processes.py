"""`--preprocess-processes`: a server that decodes in worker processes answers as one that
decodes in its own threads, vector for vector and error for error."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import grpc
import numpy as np
from PIL import Image
from skimage import data as photographs

from lookalike.v1 import lookalike_pb2 as pb
from tests.server.images import encode, jpeg
from tests.server.serving import config_for, connected


def answers(model: Path, data: Path, processes: int) -> tuple[int, np.ndarray, list[str], object]:
    """(worker processes running, vectors of photographs, a box search's matches, a refusal)"""
    photos = [
        encode(Image.fromarray(getattr(photographs, name)()).convert("RGB"), "JPEG")
        for name in ("astronaut", "chelsea", "coffee")
    ]
    config = config_for(model, data, preprocess_processes=processes)
    others = set(multiprocessing.active_children())
    with connected(config) as (server, channel):
        stub = server.stub(channel)
        embedded = stub.Embed(pb.EmbedRequest(images=photos), timeout=60).embeddings
        for number, photo in enumerate(photos):
            stub.Add(pb.AddRequest(id=f"photo-{number}", image=photo), timeout=60)
        box = pb.Region(x0=0.2, y0=0.1, x1=0.7, y1=0.8)
        found = stub.Search(pb.SearchRequest(image=photos[1], box=box, k=3), timeout=60)
        try:
            stub.Embed(pb.EmbedRequest(images=[jpeg(400, 300)[:1500]]), timeout=60)
            refusal: object = None
        except grpc.RpcError as error:
            refusal = (error.code(), error.details())
        workers = len(set(multiprocessing.active_children()) - others)
    vectors = np.array([list(e.values) for e in embedded], dtype=np.float32)
    return workers, vectors, [f"{m.id} {m.score:.6f}" for m in found.matches], refusal


def test_a_server_decoding_in_processes_answers_as_one_decoding_in_threads(
    tiny_export: Path, tmp_path: Path
) -> None:
    threads = answers(tiny_export, tmp_path / "threads", 0)
    processes = answers(tiny_export, tmp_path / "processes", 2)
    assert (threads[0], processes[0]) == (0, 2)
    np.testing.assert_array_equal(processes[1], threads[1])
    assert processes[2:] == threads[2:]
    assert processes[3] is not None
    assert processes[3][0] == grpc.StatusCode.INVALID_ARGUMENT
