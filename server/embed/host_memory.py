"""Page-locked ("pinned") host buffers, so that copies to a CUDA device run at the bus's rate.

From ordinary (pageable) memory the CUDA driver copies through a staging buffer: on the H200
machine of benchmarks/README.md (GPU) a batch of 256 float32 images (154 MB) took 25 ms that
way, longer than the model's 10 ms on the GPU. Memory registered with `cudaHostRegister` is
copied by DMA directly. The CUDA runtime is the one onnxruntime-gpu loaded (by soname); where
it cannot be found or registration fails, the buffer stays ordinary memory (slower, same
results).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import weakref

import numpy as np

__all__ = ["pinned_zeros", "cuda_runtime"]

log = logging.getLogger(__name__)

CUDA_RUNTIMES = ("libcudart.so.13", "libcudart.so.12")
HOST_REGISTER_PORTABLE = 1  # pinned for every CUDA context, not only the current one


def pinned_zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zeroed array in page-locked memory where CUDA allows it, else in ordinary memory."""
    array = np.zeros(shape, dtype)
    runtime = cuda_runtime()
    if runtime is None or array.nbytes == 0:
        return array
    address = array.ctypes.data
    status = runtime.cudaHostRegister(
        ctypes.c_void_p(address), ctypes.c_size_t(array.nbytes), HOST_REGISTER_PORTABLE
    )
    if status != 0:
        log.warning("cudaHostRegister failed (error %d): copies to the GPU will be slower", status)
        return array
    weakref.finalize(array, runtime.cudaHostUnregister, ctypes.c_void_p(address))
    return array


@functools.cache
def cuda_runtime() -> ctypes.CDLL | None:
    for name in CUDA_RUNTIMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    log.warning("no CUDA runtime (%s) found: host buffers are not pinned", ", ".join(CUDA_RUNTIMES))
    return None
