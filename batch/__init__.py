"""Lookalike's offline jobs on Ray: bulk embedding of large collections into a resumable
Parquet dataset (`ingest`: `sources`, `listing`, `dataset`), sharded indexes built from it
(`build_index`), a dataset loaded into a server's data directory (`importer`), and a data
directory moved to a new model (`reembed`, in one process, no Ray). Their commands are in
`lookalike.cli.offline_commands`.

Optional: needs the `cluster` extra (`pip install 'lookalike[cluster]'`). The same `OnnxEngine`
and `Preprocessor` as the server run inside the Ray workers, so an image gets the same vector
whichever path embedded it. Without a cluster address, a local Ray is started on this machine
for the run and stopped after it. Imports the server (engine, preprocessing, index formats) and
the client's file-listing rules; neither imports this package.
"""
