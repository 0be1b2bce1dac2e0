"""Lookalike's serving side: the gRPC server over a durable image index.

Layers, each calling only the one below: `service` (gRPC: validation, proto <-> plain types,
`status` for error codes) -> `batcher` (dynamic batching, admission) -> `preprocess` and
`engine` (ONNX Runtime) -> `repository` (`store`: SQLite, the truth; `index`: USearch).
`app` wires them and owns their lifecycle; `config` builds the settings once.

Needs no torch: install `lookalike[cpu]` or `lookalike[gpu]`.
"""
