"""Lookalike's serving side: preprocessing, ONNX Runtime engine, dynamic batcher.

Needs no torch: install `lookalike[cpu]` or `lookalike[gpu]`.
"""
