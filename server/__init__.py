"""Lookalike's serving side: the gRPC server over a durable image index.

Layers, each calling only the ones below: `service` (gRPC only: proto <-> plain types, `status`
for error codes) -> `core` (the application, no transport; `request_types` holds what callers
send and its checks) -> `embedders` (both towers behind their queues: `batcher`, dynamic
batching and admission, -> `preprocess` and an `engine`, the interface that `onnx_engine` runs
on ONNX Runtime) and a `Repository` (the protocol and its values in `repository`; over a data
directory `local_repository`: `store`, SQLite, the truth, and `index`, USearch; over a built
index `sharded_repository`, its shards searched by `shard_search`; shards on Ray Serve
`cluster.serving`). `app` wires them and owns their lifecycle; `config` builds the settings
once. `cluster/` also holds the offline jobs on Ray (ingest, build-index, import).

Needs no torch: install `lookalike[cpu]` or `lookalike[gpu]`.
"""

from lookalike.server.native import share_system_libstdcxx

share_system_libstdcxx()  # before any submodule imports USearch (see `native`)
