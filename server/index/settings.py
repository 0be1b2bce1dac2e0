"""How an index is built and searched: settings only, no USearch (the CLI reads them for its
defaults without loading the index library)."""

from __future__ import annotations

import dataclasses

__all__ = [
    "BUILT_INDEX_SETTINGS",
    "DTYPES",
    "DtypeChoice",
    "IndexSettings",
    "NATIVE_BF16_KERNELS",
    "dtype_for_cpu",
]

# bf16 runs on the CPU's native bf16 dot products where it has them (AVX512-BF16: Zen 4,
# Sapphire Rapids): the fastest per query at f16's memory (benchmarks/search.py)
DTYPES = ("f32", "f16", "bf16", "i8")

# The instruction sets, as NumKong (USearch's distance kernels) names them, whose bf16 inner
# product runs on native bf16 dot products; elsewhere bf16 is widened to f32 first.
NATIVE_BF16_KERNELS = frozenset(
    {
        "genoa",  # AVX512-BF16: Zen 4, Cooper Lake
        "turin",
        "sapphire",
        "sapphireamx",
        "graniteamx",
        "diamond",
        "neonbfdot",  # Arm BF16: Graviton 3, Apple M2
        "svebfdot",
        "smebf16",
        "rvvbf16",
    }
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexSettings:
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    dtype: str = "f32"  # scalar type inside the index: one of DTYPES
    exact_search_below: int = 20_000  # smaller collections are searched exhaustively

    @property
    def metric(self) -> str:
        """What scores mean: the cosine (computed as an inner product where that is the cosine:
        `vector_index.searched_as`)."""
        return "cos"


@dataclasses.dataclass(frozen=True)
class DtypeChoice:
    dtype: str
    reason: str  # for a person: why this dtype on this CPU


def dtype_for_cpu(bf16_kernel: str) -> DtypeChoice:
    """The dtype `lookalike build-index` stores by default on a CPU whose bf16 inner product
    runs on `bf16_kernel`: bf16 where that is native (the fastest per query), f16 elsewhere
    (as fast there as emulated bf16, with recall up to 1.0 and an eighth of bf16's score drift:
    benchmarks/README.md)."""
    if bf16_kernel in NATIVE_BF16_KERNELS:
        return DtypeChoice("bf16", f"native bf16 dot products on this CPU ({bf16_kernel} kernels)")
    return DtypeChoice(
        "f16",
        f"no native bf16 dot products on this CPU ({bf16_kernel} kernels): f16 is as fast "
        "here, with recall up to 1.0",
    )


# bf16: f16's memory, and per query within 1.1x of FAISS HNSW f32 at equal recall up to 0.997
# on a CPU with AVX512-BF16 (f16: 1.5-1.6x; benchmarks/search.py). Use f16 where recall must
# reach 1.0, or on CPUs without native bf16 dot products.
BUILT_INDEX_SETTINGS = IndexSettings(dtype="bf16")  # what `lookalike build-index` builds
