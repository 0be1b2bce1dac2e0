"""Run a benchmark as on a CPU with AVX2 and no AVX-512 (Haswell to Zen 3), on a newer CPU.

The kernels are what differs: USearch takes its distance kernels from NumKong, which picks them
from the capabilities `nk_capabilities()` reports; a preloaded shim (native/
numkong_capabilities.c, built with the system's C compiler) masks that answer down to NumKong's
`haswell` set. FAISS is held at its AVX2 level (FAISS_SIMD_LEVEL). Everything else (caches,
clocks, memory) stays this machine's: the figures show what the AVX2 code paths cost here, not
what an AVX2 CPU measures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

__all__ = ["FLAG", "kernels", "run_as_avx2", "check_emulated"]

FLAG = "LOOKALIKE_EMULATED_AVX2"
SHIM_SOURCE = Path(__file__).with_name("native") / "numkong_capabilities.c"
# NumKong 7.8's capability bits: serial (bit 0) and haswell (AVX2, FMA, F16C: bit 2)
HASWELL_MASK = 0b101


def run_as_avx2(argv: list[str]) -> NoReturn:
    """Run this script again with the AVX2 kernels, and exit with its status."""
    build = Path(tempfile.mkdtemp(prefix="lookalike-avx2-"))
    shim = build / "numkong_capabilities.so"
    compiler = os.environ.get("CC", "cc")
    try:
        subprocess.run(
            [compiler, "-O2", "-shared", "-fPIC", "-o", str(shim), str(SHIM_SOURCE), "-ldl"],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--emulate-avx2 needs a C compiler ({compiler}): {exc}") from None
    environment = {
        **os.environ,
        FLAG: "1",
        "LD_PRELOAD": " ".join(filter(None, [str(shim), os.environ.get("LD_PRELOAD")])),
        "NK_CAPABILITIES_MASK": hex(HASWELL_MASK),
        "FAISS_SIMD_LEVEL": "AVX2",
    }
    raise SystemExit(subprocess.run([sys.executable, *argv], env=environment).returncode)


def kernels() -> dict[str, str]:
    """The instruction set of USearch's distance kernel here, per index dtype."""
    from lookalike.server.index.settings import DTYPES
    from lookalike.server.index.vector_index import kernel

    return {dtype: kernel(dtype, 512) for dtype in DTYPES}


def check_emulated() -> dict[str, str]:
    """In the emulated run: every kernel is NumKong's haswell one (else the shim's mask no
    longer matches this NumKong's bits) and FAISS runs at AVX2."""
    import faiss

    found = kernels()
    if set(found.values()) != {"haswell"}:
        raise SystemExit(
            f"AVX2 emulation failed: USearch's kernels are {found}; NumKong's capability bits "
            "may have moved (benchmarks/avx2.py HASWELL_MASK)"
        )
    level = faiss.SIMDConfig.get_level_name()
    if level != "AVX2":
        raise SystemExit(f"AVX2 emulation failed: FAISS runs at {level}")
    return {**found, "faiss": level}
