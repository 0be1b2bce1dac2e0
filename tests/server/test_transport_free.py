"""Below the service nothing needs a transport: the core runs with grpc and protobuf unimportable.

A Ray deployment, a CLI or another transport calls the core directly; this keeps it possible.
Torch stays out too (the serving install has none).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    from pathlib import Path

    BLOCKED = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "torch",
               "transformers")
    for name in BLOCKED:
        sys.modules[name] = None  # `import name` now raises ImportError

    import lookalike.server.embed.batcher
    import lookalike.server.core
    import lookalike.server.embed.engine
    import lookalike.server.index.vector_index
    import lookalike.server.index.repository
    import lookalike.server.embed.onnx_engine
    import lookalike.server.embed.preprocess
    import lookalike.server.index.local_repository
    import lookalike.server.request_types
    import lookalike.server.index.store
    from lookalike.server.request_types import AddItem, SearchQuery
    from tests.server.fakes import open_core

    async def main() -> None:
        with tempfile.TemporaryDirectory() as scratch:
            async with open_core(Path(scratch)) as core:
                await core.add(AddItem("cat", image=b"photo of a cat"))
                result = await core.search(SearchQuery(image=b"photo of a cat", k=1))
                assert [m.item.id for m in result.matches] == ["cat"], result

    asyncio.run(main())
    loaded = [m for m in sys.modules if m.split(".")[0] in {b.split(".")[0] for b in BLOCKED}]
    assert all(sys.modules[m] is None for m in loaded), loaded
    print("ok")
    """
)


def test_the_core_and_its_layers_run_without_grpc_protobuf_or_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
