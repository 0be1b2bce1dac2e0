"""Images and texts to vectors: `embedders` (both towers behind their queues, the `Embedder`
interface the core sees) -> `batcher` (dynamic batching and admission) -> `preprocess` (decode,
resize, pixels; `tokenizer` for texts) and an `engine` (the interface; `onnx_engine` runs it on
ONNX Runtime, with `host_memory` for its pinned buffers), loaded as `settings` (`EmbedSettings`)
says. `thumbnails` makes the small JPEG kept per item. Imports nothing from the index, the
transports or the process (only the shared `errors`, `regions` and `metrics`)."""
