"""Lookalike's serving side: the gRPC server over a durable image index.

Layers, each calling only the ones below: `service` (gRPC only: proto <-> plain types, `status`
for error codes) -> `core` (the application, no transport; `requests` holds what callers send
and its checks) -> `batcher` (dynamic batching, admission) -> `preprocess` and an `engine`
(the interface; `onnx_engine` runs it on ONNX Runtime) and a `Repository` (`items`; the local
one is `repository`: `store`, SQLite, the truth, and `index`, USearch). `app` wires them and
owns their lifecycle; `config` builds the settings once.

Needs no torch: install `lookalike[cpu]` or `lookalike[gpu]`.
"""

from lookalike.server.native import share_system_libstdcxx

share_system_libstdcxx()  # before any submodule imports USearch (see `native`)
