"""How an index is built and searched: settings only, no USearch (the CLI reads them for its
defaults without loading the index library)."""

from __future__ import annotations

import dataclasses

__all__ = ["IndexSettings", "DTYPES", "BUILT_INDEX_SETTINGS"]

# bf16 runs on the CPU's native bf16 dot products where it has them (AVX512-BF16: Zen 4,
# Sapphire Rapids): the fastest per query at f16's memory (benchmarks/search.py)
DTYPES = ("f32", "f16", "bf16", "i8")


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexSettings:
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    dtype: str = "f32"  # scalar type inside the index: one of DTYPES
    exact_search_below: int = 20_000  # smaller collections are searched exhaustively

    @property
    def metric(self) -> str:
        """What scores mean: the cosine (computed as an inner product: `index.SEARCHED_AS`)."""
        return "cos"


# bf16: f16's memory, and per query within 1.1x of FAISS HNSW f32 at equal recall up to 0.997
# on a CPU with AVX512-BF16 (f16: 1.5-1.6x; benchmarks/search.py). Use f16 where recall must
# reach 1.0, or on CPUs without native bf16 dot products.
BUILT_INDEX_SETTINGS = IndexSettings(dtype="bf16")  # what `lookalike build-index` builds
