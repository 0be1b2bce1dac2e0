"""Lookalike on a Ray cluster: bulk embedding of large collections (`ingest`), sharded indexes
built from them (`build-index`, `import`), and their shards served on Ray Serve (`serving`).

Optional: needs the `cluster` extra (`pip install 'lookalike[cluster]'`). The same `OnnxEngine`
and `Preprocessor` as the server run inside the Ray workers, so an image gets the same vector
whichever path embedded it. Without a cluster address, a local Ray is started on this machine
for the run and stopped after it.
"""
