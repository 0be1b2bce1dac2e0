"""Lookalike's serving side: the gRPC (and HTTP) server over a durable image index.

Layers, each calling only the ones below: the transports, `service` (gRPC: proto <-> plain
types) and `web` (HTTP: JSON <-> plain types, and the web app's files), both with `status` for
error codes, finding the core through `core.CoreSlot` -> `core` (the application, no transport;
`request_types` holds what callers send and its checks) -> `embedders` (both towers behind
their queues: `batcher`, dynamic batching and admission, -> `preprocess` and an `engine`, the
interface that `onnx_engine` runs on ONNX Runtime) and a `Repository` (the protocol and its
values in `repository`; over a data directory `local_repository`: `store`, SQLite, the truth,
and `index`, USearch; over a built index `sharded_repository`, its shards searched by
`shard_search`; shards on Ray Serve `cluster.serving`; `thumbnails` makes the small JPEG kept
per item). `app` wires them and owns their lifecycle; `config` builds the settings once.

Needs no torch: install `lookalike[cpu]` or `lookalike[gpu]`.
"""

from lookalike.server.native import share_system_libstdcxx

share_system_libstdcxx()  # before any submodule imports USearch (see `native`)
