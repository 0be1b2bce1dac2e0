"""The model families Lookalike exports, each in its own module: how to load its checkpoints
(hub, local, random-init presets), wrap its towers, and describe its preprocessing, tokenizer
and scores. `lookalike.export.source` picks the family; the pipeline sees only `Checkpoint`."""
