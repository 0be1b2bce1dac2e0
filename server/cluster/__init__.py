"""A built index's shards served on Ray Serve (`serving`, `deployments`, `replicas`, `calls`,
`shard_queues`, `embedding`, `settings`), the Ray connection both the server and the offline
jobs use (`ray_session`), and the `lookalike cluster serve` command (`cli`).

Optional: needs the `cluster` extra (`pip install 'lookalike[cluster]'`). The offline jobs that
build what this serves live in `lookalike.batch`.
"""
