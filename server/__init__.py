"""Lookalike's serving side: the gRPC and HTTP server over a durable image index.

One room per role; each imports only the rooms below it:
- the process, here: `app` (wiring, lifecycle), `config` (the settings, built once), `core` (the
  application without transport; `request_types` holds what callers send and its checks),
  `error_codes` (the errors' gRPC codes and HTTP statuses); beside them the vocabulary every
  room shares: `errors` (the domain errors), `regions` (boxes on an image), `item_ids` (the
  one form an id is stored in, and the characters refused in it), `metrics`;
- the transports, side by side over the core: `grpc` (proto <-> plain types) and `http` (JSON
  <-> plain types, the web app);
- `embed`: images and texts to vectors (decoding, batching, ONNX Runtime);
- `index`: the stored items and their vectors (SQLite, USearch, built indexes);
- `cluster`: a built index's shards and the embedder on Ray Serve (optional).
`embed` and `index` know nothing of each other, the transports or the process (they use only
the shared `errors`, `regions` and `metrics`).

Needs no torch: install `lookalike[cpu]` or `lookalike[gpu]`.
"""

from lookalike.server.index.native import share_system_libstdcxx

share_system_libstdcxx()  # before any submodule imports USearch (see `index.native`)
