"""End-to-end serving over gRPC: throughput and latency against concurrency, vs its ceilings.

    python benchmarks/serve.py [--quick] [--out results] [--model-dir models/random-vit-b-32]

Starts `lookalike-server` (subprocess, loopback) and drives `Embed` from separate client
processes with real JPEG payloads (640x480 and 1920x1080) at 1, 4, 16 and 64 requests in
flight. Between the load runs, while the server idles, it measures the bare engine beside it
(batch 32 on already-preprocessed tensors: the ceiling; batch 1 and decoding: the bound for a
lone request, 1.5 x their sum), and reports each run against the mean of the probes around it.
Also a naive pipeline a user might write (CLIPImageProcessor + PyTorch eager, one image at a
time, no server overhead counted), optionally a peer server, and the server's RSS idle and
under load. With a text tower: `Search` by text (k=10 over 5,000 stored vectors) at 1 and 16 in
flight, alone and beside 16 image `Embed`s in flight (texts have their own queue: what a text
query waits under image load). And the same server's two transports side by side: `Search` by
image and by text over gRPC and over HTTP/JSON (`POST /v1/search`, base64 image, keep-alive
connections) at 1 and 16 in flight: gRPC then HTTP at each level.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    entry_point,
    figure_file,
    free_port,
    lookalike_server,
    measure,
    print_table,
    write_result,
)
from benchmarks.preprocess import encoded

PAYLOADS = {"jpeg-640x480": (640, 480), "jpeg-1920x1080": (1920, 1080)}
CONCURRENCY = (1, 4, 16, 64)
CLIENT_PROCESSES = 2
# (max_batch, max_delay_ms) tried at 1 and 16 in flight, to show the latency/throughput trade
BATCHING = ((1, 0.0), (8, 2.0), (32, 5.0), (32, 20.0), (64, 50.0))
SWEEP_CONCURRENCY = (1, 16)
SINGLE_REQUEST_SLACK = 1.5  # target: p99 of a lone request <= this x (engine batch 1 + decode)
TEXT_QUERY = "a red car parked by the river at night"
TEXT_CONCURRENCY = (1, 16)
TEXT_INDEX_ITEMS = 5000  # searched by the text queries
HTTP_HEADERS = {"Content-Type": "application/json"}
TRANSPORT_CONCURRENCY = (1, 16)
TRANSPORTS = ("grpc", "http")
HTTP_TARGET = 1.15  # HTTP image search within this factor of gRPC's throughput at 16 in flight


async def _calls_in_loop(
    call, in_flight: int, seconds: float, failures: tuple[type[Exception], ...]
) -> tuple[list[float], int]:
    """`in_flight` concurrent loops of `call()` for `seconds`: each call's latency, and how
    many failed with one of `failures`."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
                latencies.append(time.perf_counter() - started)
            except failures:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies, errors


def _drive(
    address: str, payload: bytes, in_flight: int, seconds: float, queue, text: str | None = None
) -> None:
    """One client process: `in_flight` concurrent calls in a loop for `seconds`: Embed of the
    image `payload`, or with `text`, Search by that text."""
    import grpc

    from lookalike.v1 import lookalike_pb2 as pb
    from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

    async def run() -> tuple[list[float], int]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            if text is None:
                call = functools.partial(stub.Embed, pb.EmbedRequest(images=[payload]), timeout=60)
            else:
                search = pb.SearchRequest(text=text, k=10)
                call = functools.partial(stub.Search, search, timeout=60)
            return await _calls_in_loop(call, in_flight, seconds, (grpc.aio.AioRpcError,))

    queue.put(asyncio.run(run()))


def _drive_search(
    target: str, query: dict, in_flight: int, seconds: float, queue, transport: str = "grpc"
) -> None:
    """One client process: `in_flight` concurrent Searches in a loop for `seconds`, over gRPC
    (`target` an address) or HTTP (`target` a base URL: JSON, the image in base64, one
    keep-alive connection per call in flight)."""
    import base64
    import json

    import grpc
    import httpx

    from lookalike.v1 import lookalike_pb2 as pb
    from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

    async def over_grpc() -> tuple[list[float], int]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub, request = pb_grpc.ImageSearchStub(channel), pb.SearchRequest(**query)
            return await _calls_in_loop(
                lambda: stub.Search(request, timeout=60),
                in_flight,
                seconds,
                (grpc.aio.AioRpcError,),
            )

    async def over_http() -> tuple[list[float], int]:
        fields = {k: base64.b64encode(v).decode() if k == "image" else v for k, v in query.items()}
        body = json.dumps(fields).encode()
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        async with httpx.AsyncClient(base_url=target, limits=limits, timeout=60) as client:

            async def call() -> None:
                answer = await client.post("/v1/search", content=body, headers=HTTP_HEADERS)
                answer.raise_for_status()

            return await _calls_in_loop(call, in_flight, seconds, (httpx.HTTPError,))

    queue.put(asyncio.run(over_grpc() if transport == "grpc" else over_http()))


def _drive_http(url: str, body: bytes, in_flight: int, seconds: float, queue) -> None:
    """One client process for an HTTP peer: `in_flight` threads posting in a loop."""
    import concurrent.futures
    import urllib.error
    import urllib.request

    deadline = time.perf_counter() + seconds

    def worker() -> tuple[list[float], int]:
        latencies, errors = [], 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            request = urllib.request.Request(url, data=body, headers=HTTP_HEADERS)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                latencies.append(time.perf_counter() - started)
            except (urllib.error.URLError, OSError):
                errors += 1
        return latencies, errors

    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        outcomes = list(pool.map(lambda _: worker(), range(in_flight)))
    queue.put(([lat for lats, _ in outcomes for lat in lats], sum(e for _, e in outcomes)))


def load_run(
    address: str,
    payload: bytes,
    concurrency: int,
    seconds: float,
    *,
    http_body: bytes | None = None,
    text: str | None = None,
    processes: int = CLIENT_PROCESSES,
) -> dict:
    """Drive `address` (gRPC) or, with `http_body`, the HTTP URL `address` from client processes;
    with `text`, Search by that text instead of embedding `payload`."""
    if http_body is None:
        target, arguments = _drive, (payload,)
    else:
        target, arguments = _drive_http, (http_body,)
    extra = {"text": text} if text is not None else {}
    return _client_processes(target, (address, *arguments), extra, concurrency, seconds, processes)


def search_run(target: str, query: dict, transport: str, concurrency: int, seconds: float) -> dict:
    """Searches for `query` over `transport` ("grpc" or "http") from client processes."""
    extra = {"transport": transport}
    return _client_processes(
        _drive_search, (target, query), extra, concurrency, seconds, CLIENT_PROCESSES
    )


def _client_processes(
    driver, arguments: tuple, extra: dict, concurrency: int, seconds: float, processes: int
) -> dict:
    """`concurrency` calls in flight, shared among client processes running `driver`; the
    throughput and latency percentiles of their calls."""
    processes = min(processes, concurrency)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    workers = [
        context.Process(target=driver, args=(*arguments, share, seconds, queue), kwargs=extra)
        for share in shares
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes = [queue.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies = np.array([lat for lats, _ in outcomes for lat in lats])
    return {
        "concurrency": concurrency,
        "images_per_s": len(latencies) / seconds,
        "wall_seconds": elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p95_ms": float(np.percentile(latencies, 95) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "errors": sum(errors for _, errors in outcomes),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batches_so_far(address: str) -> int:
    from lookalike.client import Client

    with Client(address) as client:
        return client.stats().batches


class EngineProbe:
    """The bare engine beside the server under test: what each load level is measured against.

    Measured in this process while the server idles, between the load runs; each run is
    compared with the mean of the probes just before and just after it, so both sides see the
    same state of a machine whose speed drifts (on the shared 2-core VM of benchmarks/README.md
    int8 batch-1 latency flips between about 16.5 and 22 ms).
    """

    def __init__(self, model_dir: Path) -> None:
        from lookalike.server.embed.onnx_engine import OnnxEngine, read_manifest
        from lookalike.server.embed.preprocess import Preprocessor

        self.engine = OnnxEngine(model_dir)  # the server's defaults
        self.preprocess = Preprocessor.for_package(read_manifest(model_dir))
        self.batch = self.engine.inputs.varied(32)

    def measure(self, payload: bytes, min_seconds: float) -> dict[str, float]:
        tensor = self.preprocess(payload)[None]
        batch = measure(lambda: self.engine.embed(self.batch), min_seconds=min_seconds)
        single = measure(lambda: self.engine.embed(tensor), min_seconds=min_seconds)
        decode = measure(lambda: self.preprocess(payload), min_seconds=min_seconds)
        return {
            "bare_engine_images_per_s": len(self.batch) / batch.median,
            "engine_batch_1_ms": single.median * 1e3,
            "decode_ms": decode.median * 1e3,
        }

    @staticmethod
    def around(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        figures = {key: (before[key] + after[key]) / 2 for key in before}
        figures["lone_request_bound_ms"] = SINGLE_REQUEST_SLACK * (
            figures["engine_batch_1_ms"] + figures["decode_ms"]
        )
        return figures


def naive_pipeline(model_dir: Path, payload: bytes, min_seconds: float) -> float:
    """Images/s of CLIPImageProcessor + PyTorch eager, one image at a time, no server."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    from benchmarks.engine import pytorch_checkpoint, pytorch_image_embed
    from lookalike.export.manifest import Manifest

    manifest = Manifest.load(model_dir)
    torch_embed = pytorch_image_embed(pytorch_checkpoint(manifest, len(os.sched_getaffinity(0))))
    processor = CLIPImageProcessor(
        size={"shortest_edge": manifest.preprocess.resize_shortest_edge},
        crop_size={
            "height": manifest.preprocess.crop_height,
            "width": manifest.preprocess.crop_width,
        },
    )

    def naive() -> None:
        image = Image.open(io.BytesIO(payload))
        pixels = processor(images=image, return_tensors="np")["pixel_values"]
        torch_embed(pixels.astype(np.float32))

    return 1 / measure(naive, min_seconds=min_seconds).median


def infinity_runs(binary: Path, checkpoint: Path, payloads: dict, seconds: float) -> list[dict]:
    """The same load against infinity-emb serving a CLIP checkpoint of the same architecture."""
    import base64
    import json
    import urllib.request

    port = free_port()
    command = [
        str(binary),
        "v2",
        "--model-id",
        str(checkpoint),
        "--device",
        "cpu",
        "--engine",
        "torch",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--batch-size",
        "32",
        "--no-bettertransformer",
    ]
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    with tempfile.TemporaryFile() as log:
        peer = subprocess.Popen(command, stdout=log, stderr=log, env=environment)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(900):
                try:
                    models = json.loads(urllib.request.urlopen(f"{base}/models", timeout=2).read())
                    break
                except OSError:
                    if peer.poll() is not None:
                        log.seek(0)
                        raise SystemExit(
                            f"infinity-emb died:\n{log.read().decode()[-3000:]}"
                        ) from None
                    time.sleep(0.2)
            model = models["data"][0]["id"]
            runs = []
            for name, size in payloads.items():
                uri = (
                    "data:image/jpeg;base64,"
                    + base64.b64encode(encoded(size, "JPEG", seed=1)).decode()
                )
                body = json.dumps({"model": model, "input": [uri], "modality": "image"}).encode()
                for concurrency in CONCURRENCY:
                    print(f"  infinity-emb: {name}, {concurrency} in flight ...", flush=True)
                    run = load_run(f"{base}/embeddings", b"", concurrency, seconds, http_body=body)
                    runs.append({"payload": name, **run})
            return runs
        finally:
            peer.terminate()
            peer.wait(60)


def server_has_text(address: str) -> bool:
    from lookalike.client import Client

    with Client(address) as client:
        return client.stats().text_enabled


def store_random_vectors(address: str) -> None:
    """Something to search: TEXT_INDEX_ITEMS random unit vectors."""
    from lookalike.client import Client, NewItem

    vectors = np.random.default_rng(0).normal(size=(TEXT_INDEX_ITEMS, 512)).astype(np.float32)
    with Client(address) as client:
        dims = client.stats().dims
        items = (NewItem(f"vector-{i}", vector=v[:dims]) for i, v in enumerate(vectors))
        for _ in client.add_many(items):
            pass


def text_query_runs(address: str, payload: bytes, seconds: float) -> list[dict]:
    """Search by text at 1 and 16 in flight, alone and beside 16 image Embeds in flight."""
    runs = []
    for image_load in (False, True):
        for concurrency in TEXT_CONCURRENCY:
            label = "beside 16 image requests" if image_load else "alone"
            print(f"  text queries, {concurrency} in flight, {label} ...", flush=True)
            with concurrent.futures.ThreadPoolExecutor(1) as background:
                images = (
                    background.submit(load_run, address, payload, 16, seconds)
                    if image_load
                    else None
                )
                run = load_run(address, b"", concurrency, seconds, text=TEXT_QUERY)
                image_run = images.result() if images else None
            runs.append(
                {
                    **run,
                    "texts_per_s": run.pop("images_per_s"),
                    "image_load_in_flight": 16 if image_load else 0,
                    "images_per_s_beside": image_run["images_per_s"] if image_run else None,
                }
            )
    print_table(
        ("in flight", "image load", "texts/s", "p50 ms", "p99 ms", "errors", "img/s beside"),
        [
            (
                r["concurrency"],
                r["image_load_in_flight"],
                r["texts_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
                r["images_per_s_beside"] or "",
            )
            for r in runs
        ],
    )
    return runs


def transport_runs(
    address: str, url: str, payload: bytes, seconds: float, *, text: bool, quick: bool
) -> list[dict]:
    """Search by image (and by text, with a text tower) over gRPC and over HTTP, at 1 and 16 in
    flight (quick: by image at 16); gRPC then HTTP at each level, so that both see the machine
    in the same state."""
    queries: dict[str, dict] = {"image": {"image": payload, "k": 10}}
    if text and not quick:
        queries["text"] = {"text": TEXT_QUERY, "k": 10}
    runs = []
    for kind, query in queries.items():
        for concurrency in TRANSPORT_CONCURRENCY[-1:] if quick else TRANSPORT_CONCURRENCY:
            level = {}
            for transport in TRANSPORTS:
                print(f"  search by {kind} over {transport}, {concurrency} in flight ...")
                target = address if transport == "grpc" else url
                level[transport] = search_run(target, query, transport, concurrency, seconds)
            for transport, run in level.items():
                run.update(
                    query=kind,
                    transport=transport,
                    searches_per_s=run.pop("images_per_s"),
                )
                run["grpc_over_this"] = level["grpc"]["searches_per_s"] / run["searches_per_s"]
                runs.append(run)
    print_table(
        ("query", "in flight", "transport", "searches/s", "p50 ms", "p99 ms", "errors", "gRPC/it"),
        [
            (
                r["query"],
                r["concurrency"],
                r["transport"],
                r["searches_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
                f"{r['grpc_over_this']:.2f}x",
            )
            for r in runs
        ],
    )
    image_16 = next(
        r for r in runs if (r["query"], r["concurrency"], r["transport"]) == ("image", 16, "http")
    )
    verdict = "met" if image_16["grpc_over_this"] <= HTTP_TARGET else "missed"
    print(
        f"HTTP image search at 16 in flight: gRPC is {image_16['grpc_over_this']:.2f}x its "
        f"throughput (target <= {HTTP_TARGET}x: {verdict})"
    )
    return runs


def batching_sweep(model_dir: Path, seconds: float) -> list[dict]:
    """640x480 JPEGs at 1 and 16 in flight under several (max_batch, max_delay_ms)."""
    payload = encoded(PAYLOADS["jpeg-640x480"], "JPEG", seed=1)
    sweep = []
    for max_batch, max_delay in BATCHING:
        flags = ("--max-batch", str(max_batch), "--max-delay-ms", str(max_delay))
        with lookalike_server(model_dir, *flags) as server:
            for concurrency in SWEEP_CONCURRENCY:
                print(
                    f"  max_batch {max_batch}, max_delay {max_delay} ms, "
                    f"{concurrency} in flight ...",
                    flush=True,
                )
                run = load_run(server.address, payload, concurrency, seconds)
                sweep.append({"max_batch": max_batch, "max_delay_ms": max_delay, **run})
    print_table(
        ("max_batch", "max_delay_ms", "in flight", "img/s", "p50 ms", "p99 ms"),
        [
            (
                r["max_batch"],
                r["max_delay_ms"],
                r["concurrency"],
                r["images_per_s"],
                r["p50_ms"],
                r["p99_ms"],
            )
            for r in sweep
        ],
    )
    return sweep


def transports_only(model_dir: Path, seconds: float, out: Path) -> None:
    http_port = free_port()
    with lookalike_server(model_dir, "--http-port", str(http_port)) as server:
        payload = encoded(PAYLOADS["jpeg-640x480"], "JPEG", seed=1)
        store_random_vectors(server.address)
        url = f"http://127.0.0.1:{http_port}"
        has_text = server_has_text(server.address)
        runs = transport_runs(server.address, url, payload, seconds, text=has_text, quick=False)
    path = write_result(
        "serve",
        out,
        settings={
            "model_dir": str(model_dir),
            "seconds_per_level": seconds,
            "transports_only": True,
        },
        results={"transports": runs},
    )
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--seconds", type=float, default=10.0, help="per load level")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 s per level, 640x480")
    parser.add_argument("--infinity", type=Path, help="infinity_emb executable (its own venv)")
    parser.add_argument(
        "--infinity-model", type=Path, help="a saved CLIP checkpoint directory for infinity-emb"
    )
    parser.add_argument(
        "--transports-only",
        action="store_true",
        help="only the gRPC and HTTP searches side by side (a few minutes)",
    )
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    payloads = dict(list(PAYLOADS.items())[:1]) if args.quick else PAYLOADS
    model_dir = ensure_benchmark_model(args.model_dir)
    if args.transports_only:
        transports_only(model_dir, seconds, args.out)
        return

    results, rows = [], []
    probe_seconds = min(seconds / 4, 2.0)
    http_port = free_port()
    with lookalike_server(model_dir, "--http-port", str(http_port)) as server:
        idle_rss = peak_rss = rss_mb(server.pid)
        probe = EngineProbe(model_dir)
        for name, size in payloads.items():
            payload = encoded(size, "JPEG", seed=1)
            engine_before = probe.measure(payload, probe_seconds)
            for concurrency in CONCURRENCY:
                print(f"  {name}, {concurrency} in flight ...", flush=True)
                before = batches_so_far(server.address)
                run = load_run(server.address, payload, concurrency, seconds)
                after = batches_so_far(server.address)
                peak_rss = max(peak_rss, rss_mb(server.pid))
                engine_after = probe.measure(payload, probe_seconds)
                engine = probe.around(engine_before, engine_after)
                engine_before = engine_after
                served = run["images_per_s"] * seconds
                run.update(
                    payload=name,
                    mean_batch_size=served / max(after - before, 1),
                    engine=engine,
                    fraction_of_bare_engine=run["images_per_s"]
                    / engine["bare_engine_images_per_s"],
                )
                if concurrency == 1:
                    run["p99_of_lone_request_bound"] = (
                        run["p99_ms"] / engine["lone_request_bound_ms"]
                    )
                results.append(run)
        del probe
        texts = []
        payload = encoded(PAYLOADS["jpeg-640x480"], "JPEG", seed=1)
        store_random_vectors(server.address)
        has_text = server_has_text(server.address)
        if has_text:
            texts = text_query_runs(server.address, payload, seconds)
        url = f"http://127.0.0.1:{http_port}"
        transports = transport_runs(
            server.address, url, payload, seconds, text=has_text, quick=args.quick
        )
    server_rss = {"idle_mb": idle_rss, "under_load_peak_mb": peak_rss}
    sweep = [] if args.quick else batching_sweep(model_dir, seconds)
    peer = []
    if args.infinity and args.infinity_model:
        peer = infinity_runs(args.infinity, args.infinity_model, payloads, seconds)
        for run in results:
            match = next(
                p
                for p in peer
                if (p["payload"], p["concurrency"]) == (run["payload"], run["concurrency"])
            )
            run["vs_infinity_emb"] = run["images_per_s"] / match["images_per_s"]
    print("  naive pipeline ...", flush=True)
    naive = {
        name: naive_pipeline(model_dir, encoded(size, "JPEG", seed=1), 1.0 if args.quick else 5.0)
        for name, size in payloads.items()
    }
    for run in results:
        run["vs_naive"] = run["images_per_s"] / naive[run["payload"]]
        rows.append(
            (
                run["payload"],
                run["concurrency"],
                run["images_per_s"],
                run["p50_ms"],
                run["p95_ms"],
                run["p99_ms"],
                run["mean_batch_size"],
                run["errors"],
                f"{run['fraction_of_bare_engine']:.0%}",
                f"{run['vs_naive']:.1f}x",
            )
        )
    print()
    print_table(
        (
            "payload",
            "in flight",
            "img/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "batch",
            "errors",
            "of engine",
            "vs naive",
        ),
        rows,
    )
    for name, rate in naive.items():
        print(f"{name}: naive pipeline {rate:.1f} img/s")
    for run in results:
        engine = run["engine"]
        print(
            f"{run['payload']}, {run['concurrency']} in flight: bare engine beside it "
            f"{engine['bare_engine_images_per_s']:.1f} img/s"
        )
        if run["concurrency"] == 1:
            print(
                f"  lone request p99 {run['p99_ms']:.1f} ms = "
                f"{run['p99_of_lone_request_bound']:.0%} of its bound "
                f"{engine['lone_request_bound_ms']:.1f} ms = {SINGLE_REQUEST_SLACK} x "
                f"(engine batch 1 {engine['engine_batch_1_ms']:.1f} ms "
                f"+ decode {engine['decode_ms']:.1f} ms)"
            )
    idle, loaded = server_rss["idle_mb"], server_rss["under_load_peak_mb"]
    print(f"server RSS: idle {idle:.0f} MB, under load {loaded:.0f} MB")
    if peer:
        print("\ninfinity-emb on the same payloads and cores:")
        print_table(
            ("payload", "in flight", "img/s", "p50 ms", "p99 ms", "errors", "lookalike vs it"),
            [
                (
                    p["payload"],
                    p["concurrency"],
                    p["images_per_s"],
                    p["p50_ms"],
                    p["p99_ms"],
                    p["errors"],
                    f"{r['vs_infinity_emb']:.1f}x",
                )
                for p, r in zip(peer, results, strict=True)
            ],
        )
    path = write_result(
        "serve",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "seconds_per_level": seconds,
            "concurrency": CONCURRENCY,
            "client_processes": CLIENT_PROCESSES,
            "quick": args.quick,
        },
        results={
            "runs": results,
            "naive_images_per_s": naive,
            "server_rss": server_rss,
            "text_queries": texts,
            "transports": transports,
            "batching_sweep": sweep,
        },
    )
    plot(results, naive, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(results: list[dict], naive: dict[str, float], path: Path) -> None:
    with figure_file(path, columns=2, size=(11, 4.2)) as (throughput, latency):
        for name, naive_rate in naive.items():
            runs = [r for r in results if r["payload"] == name]
            concurrency = [r["concurrency"] for r in runs]
            (line,) = throughput.plot(
                concurrency, [r["images_per_s"] for r in runs], "o-", label=f"{name} end to end"
            )
            colour = line.get_color()
            throughput.plot(
                concurrency,
                [r["engine"]["bare_engine_images_per_s"] for r in runs],
                "--",
                color=colour,
                label=f"{name}: bare engine beside it",
            )
            throughput.axhline(naive_rate, color=colour, linestyle=":", label=f"{name} naive")
            latency.plot(
                concurrency, [r["p99_ms"] for r in runs], "o-", color=colour, label=f"{name} p99"
            )
            latency.plot(
                concurrency, [r["p50_ms"] for r in runs], "s--", color=colour, label=f"{name} p50"
            )
        for axis in (throughput, latency):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("requests in flight")
            axis.legend(fontsize=7)
        throughput.set_ylabel("images / s")
        latency.set_ylabel("latency ms")
        latency.set_yscale("log")


if __name__ == "__main__":
    entry_point(main)
