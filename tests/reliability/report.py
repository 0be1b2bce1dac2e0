"""What the reliability tests did, summed up for the end-of-run table."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np


@dataclasses.dataclass
class ReliabilityReport:
    requests: int = 0
    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    kills: int = 0
    items_verified: int = 0

    def record(self, code: str, seconds: float | None = None) -> None:
        self.requests += 1
        self.codes[code] += 1
        if seconds is not None:
            self.latencies_s.append(seconds)

    def table(self) -> str:
        p99 = np.percentile(self.latencies_s, 99) * 1e3 if self.latencies_s else float("nan")
        codes = ", ".join(f"{code} {count}" for code, count in sorted(self.codes.items()))
        return "\n".join(
            [
                f"requests        {self.requests}",
                f"status codes    {codes or '-'}",
                f"p99 latency     {p99:.1f} ms",
                f"kills survived  {self.kills}",
                f"items verified  {self.items_verified}",
            ]
        )
