"""Native libraries that must be loaded in a certain way before the extensions that use them.

USearch's extension carries its own static copy of libstdc++. Loaded before the system's
libstdc++ is in the global namespace, its copy's locale state wins, and ONNX Runtime imported
afterwards crashes in `std::codecvt` (SIGSEGV at `import onnxruntime`; seen with usearch 2.26 and
onnxruntime 1.32 whenever USearch was imported first and nothing had loaded the system
libstdc++ yet). `lookalike.server`'s `__init__` loads the system libstdc++ globally first, so
every later extension shares that one copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

__all__ = ["share_system_libstdcxx"]


def share_system_libstdcxx() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # no system libstdc++ (e.g. musl): nothing to share
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
