"""A built index's shards and the embedder served on Ray Serve: `repository`
(`ClusterRepository`: fan-out, versions, health), `deployments` (the Serve applications),
`replicas` (the classes Serve runs), `calls` (one call with failover), `shard_queues` (the
front's batching per shard), `embedding` (the front's embedders over the embedding deployment),
`settings`; and `ray_session`, the Ray connection the server and the offline jobs share.

Optional: needs the `cluster` extra (`pip install 'lookalike[cluster]'`). The offline jobs that
build what this serves live in `lookalike.batch`; `lookalike cluster serve` in `lookalike.cli`.
"""
