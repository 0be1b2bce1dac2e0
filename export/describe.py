"""`python -m lookalike.export.describe DIR...`: print the summary of existing exports."""

from __future__ import annotations

import sys
from pathlib import Path

from lookalike.export.manifest import Manifest, ManifestError


def main(argv: list[str]) -> int:
    for argument in argv or ["."]:
        try:
            print(Manifest.load(Path(argument)).describe(Path(argument)))
        except ManifestError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
