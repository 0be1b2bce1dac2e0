"""The stored items and their vectors, behind the `Repository` protocol (`repository`, with the
values it stores and returns). Over a data directory: `local_repository` keeps `store` (SQLite,
the truth; `sql` its schema) and `vector_index` (USearch, with `settings`) in step, one server
per directory (`datadir`). Over a built index: `built_index` (the on-disk format: versions,
shards), served by `sharded_repository`, each shard searched by `shard_search`. `search` is the
filtered nearest-neighbour search every repository shares; `native` loads the system libstdc++
before USearch. Imports nothing from the embedding runtime, the transports or the process
(only the shared `errors` and `regions`).

Importing this package stays light (no USearch): `lookalike.server` imports `native` first."""
