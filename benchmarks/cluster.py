"""Shards on Ray Serve against one process: what the extra hops cost, and what replicas add.

    python benchmarks/cluster.py [--quick] [--vectors 50000] [--seconds 8] [--out results]

In one run, on `--vectors` synthetic unit vectors of the benchmark model's width, built into
indexes of 1, 2 and 4 shards (bf16, the build-index default; every shard searched on its HNSW
graph, `--exact-search-below 0`): vector searches (k=10) from one
client process, one at a time (latency) and 32 in flight (throughput), against
1. `lookalike-server --index` (the shards searched by threads of one process), and
2. `lookalike-server --index --shards-on-ray` on a local two-node Ray cluster
   (`ray.cluster_utils.Cluster`: both nodes share this machine's cores) with 1 and 2 replicas
   per shard: the front fans each query out to every shard's replicas through Serve's handles.
Reported: queries/s, p50 and p99 ms per setting, and the hop cost (the cluster's median
latency one at a time minus the one process's, on the same index).
"""

from __future__ import annotations

import argparse
import asyncio
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
    lookalike_server,
    print_table,
    write_result,
)
from benchmarks.datasets import unit_rows, write_dataset
from lookalike.export.manifest import Manifest, ModelIdentity

SHARDS = (1, 2, 4)
REPLICAS = (1, 2)
QUICK_SHARDS, QUICK_REPLICAS = (2,), (1,)  # --quick: one of each, briefly
IN_FLIGHT = (1, 32)
QUERIES = 500  # distinct query vectors, cycled
# Every shard on its HNSW graph, whatever its size: by default a shard under 20,000 vectors is
# searched exhaustively, which would make 4 shards of 12,500 slower for another reason
SEARCH_FLAGS = ("--no-text", "--exact-search-below", "0")


def search_load(address: str, queries: np.ndarray, in_flight: int, seconds: float) -> dict:
    """`in_flight` concurrent vector searches in a loop for `seconds`: q/s, p50, p99, errors."""
    import grpc

    from lookalike.v1 import lookalike_pb2 as pb
    from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

    requests = [pb.SearchRequest(vector=pb.Vector(values=q.tolist()), k=10) for q in queries]

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            for request in requests[:20]:  # warm: connections, pages of the shards
                await stub.Search(request, timeout=60)
            deadline = time.perf_counter() + seconds

            async def worker(offset: int) -> None:
                nonlocal errors
                sent = offset
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        await stub.Search(requests[sent % len(requests)], timeout=60)
                        latencies.append(time.perf_counter() - started)
                    except grpc.aio.AioRpcError:
                        errors += 1
                    sent += 1

            await asyncio.gather(*(worker(n) for n in range(in_flight)))
        return latencies, errors

    latencies, errors = asyncio.run(run())
    times = np.array(latencies)
    return {
        "in_flight": in_flight,
        "queries_per_s": len(times) / seconds,
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "errors": errors,
    }


def loads(address: str, queries: np.ndarray, seconds: float) -> list[dict]:
    return [search_load(address, queries, n, seconds) for n in IN_FLIGHT]


def build_indexes(
    model_dir: Path, scratch: Path, count: int, shard_counts: tuple[int, ...]
) -> dict[int, Path]:
    """One dataset of `count` synthetic vectors, built into each shard count."""
    import ray

    from lookalike.batch.build_index import BuildSettings, build_index

    manifest = Manifest.load(model_dir)
    identity = ModelIdentity.of(manifest.source, manifest.graphs["image"].output_dim)
    ids = [f"img-{i:08d}" for i in range(count)]
    write_dataset(scratch / "vectors", identity, ids, unit_rows(count, identity.dims, seed=0))
    indexes = {}
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # its own Ray
    try:
        for shards in shard_counts:
            indexes[shards] = scratch / f"index-{shards}"
            print(f"build-index: {count} vectors into {shards} shard(s) ...", flush=True)
            build_index(
                BuildSettings(dataset=scratch / "vectors", output=indexes[shards], shards=shards)
            )
    finally:
        ray.shutdown()
    return indexes


def on_cluster(
    model_dir: Path,
    indexes: dict[int, Path],
    queries: np.ndarray,
    seconds: float,
    replica_counts: tuple[int, ...],
):
    """Every shard count and replica count behind a front, on a local two-node cluster."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        for shards, index in indexes.items():
            for replicas in replica_counts:
                print(f"cluster: {shards} shard(s) x {replicas} replica(s) ...", flush=True)
                options = ("--shards-on-ray", "--ray-address", cluster.address)
                options += ("--shard-replicas", str(replicas), *SEARCH_FLAGS)
                started = time.perf_counter()
                with lookalike_server(model_dir, *options, store=("--index", str(index))) as front:
                    ready_s = time.perf_counter() - started
                    runs.append(
                        {
                            "shards": shards,
                            "replicas": replicas,
                            "front_ready_s": ready_s,
                            "loads": loads(front.address, queries, seconds),
                        }
                    )
                for name in serve.status().applications:  # every shard's at once
                    serve.delete(name, _blocking=False)
                while serve.status().applications:
                    time.sleep(0.2)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per load")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2k vectors, 1 s loads")
    args = parser.parse_args()
    count = 2000 if args.quick else args.vectors
    seconds = 1.0 if args.quick else args.seconds
    model_dir = ensure_benchmark_model(args.model_dir)
    with tempfile.TemporaryDirectory() as temporary:
        shard_counts = QUICK_SHARDS if args.quick else SHARDS
        indexes = build_indexes(model_dir, Path(temporary), count, shard_counts)
        dims = Manifest.load(model_dir).graphs["image"].output_dim
        queries = unit_rows(QUERIES, dims, seed=1)
        local = []
        for shards, index in indexes.items():
            print(f"one process: {shards} shard(s) ...", flush=True)
            with lookalike_server(model_dir, *SEARCH_FLAGS, store=("--index", str(index))) as one:
                local.append({"shards": shards, "loads": loads(one.address, queries, seconds)})
        replica_counts = QUICK_REPLICAS if args.quick else REPLICAS
        cluster = on_cluster(model_dir, indexes, queries, seconds, replica_counts)
    hops = {
        run["shards"]: cluster_run["loads"][0]["p50_ms"] - run["loads"][0]["p50_ms"]
        for run in local
        for cluster_run in cluster
        if cluster_run["shards"] == run["shards"] and cluster_run["replicas"] == 1
    }
    result = {"vectors": count, "local": local, "cluster": cluster, "hop_ms_by_shards": hops}
    rows = [("one process", run["shards"], "-", *_figures(run["loads"])) for run in local] + [
        ("Ray Serve", run["shards"], run["replicas"], *_figures(run["loads"])) for run in cluster
    ]
    print()
    print_table(
        ("serving", "shards", "replicas", "q/s (1)", "p50 ms (1)", "q/s (32)", "p50 ms", "p99 ms"),
        rows,
    )
    print("hop cost (p50 one at a time, cluster minus one process), ms:", hops)
    path = write_result(
        "cluster",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "vectors": count,
            "seconds": seconds,
            "in_flight": IN_FLIGHT,
            "cluster": "ray.cluster_utils.Cluster: 2 nodes of 2 logical CPUs on this machine",
            "quick": args.quick,
        },
        results=result,
    )
    plot(result, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def _figures(loads: list[dict]) -> tuple[float, ...]:
    alone, busy = loads
    return (
        alone["queries_per_s"],
        alone["p50_ms"],
        busy["queries_per_s"],
        busy["p50_ms"],
        busy["p99_ms"],
    )


def plot(result: dict, path: Path) -> None:
    shard_counts = sorted({run["shards"] for run in result["local"]})
    with figure_file(path, columns=2, size=(11, 4.5)) as (throughput, latency):
        series = [("one process", result["local"])] + [
            (f"Ray Serve, {r} replica(s)", [c for c in result["cluster"] if c["replicas"] == r])
            for r in sorted({run["replicas"] for run in result["cluster"]})
        ]
        for label, runs in series:
            shards = [run["shards"] for run in runs]
            busy = [run["loads"][1]["queries_per_s"] for run in runs]
            throughput.plot(shards, busy, "o-", label=label)
            latency.plot(shards, [run["loads"][0]["p50_ms"] for run in runs], "o-", label=label)
        throughput.set(xlabel="shards", ylabel="queries/s (32 in flight)", xticks=shard_counts)
        latency.set(xlabel="shards", ylabel="p50 ms (one at a time)", xticks=shard_counts)
        throughput.legend()
        latency.legend()


if __name__ == "__main__":
    entry_point(main)
