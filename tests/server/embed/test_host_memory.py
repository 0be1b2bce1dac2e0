"""Pinned host buffers where CUDA is absent (CI, CPU-only installs): ordinary, zeroed memory."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lookalike.server.embed import host_memory


def test_without_a_cuda_runtime_the_buffer_is_ordinary_zeroed_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host_memory.cuda_runtime.cache_clear()
    with caplog.at_level(logging.WARNING, logger="lookalike.server.embed.host_memory"):
        buffer = host_memory.pinned_zeros((4, 3, 8, 8), np.dtype(np.float32))
    assert buffer.shape == (4, 3, 8, 8)
    assert buffer.dtype == np.float32
    assert not buffer.any()
    buffer[:] = 1.5  # writable, the engine's run buffer
    assert float(buffer.sum()) == 1.5 * buffer.size
    if host_memory.cuda_runtime() is None:  # this machine has no CUDA runtime: it says so
        assert "host buffers are not pinned" in caplog.text
