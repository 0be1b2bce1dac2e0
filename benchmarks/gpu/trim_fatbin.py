"""Zero the GPU code of every architecture but one in a CUDA library, so that it compresses to
a fraction of its size (the file keeps its size and layout; only unused payloads become zeros).

    python benchmarks/gpu/trim_fatbin.py LIBRARY OUTPUT [--keep-sm 90]

onnxruntime-gpu's CUDA provider (284 MB in 1.31.1) holds each kernel as machine code for
sm_75, 80, 86, 89, 90 and 120, and no PTX. A GPU runs only its own architecture's code, so on
an H200 (sm_90) the other five are dead weight: zeroed, the library compresses from about
190 MB to about 55 MB with xz. A fat binary whose entries include none for the kept
architecture is left whole (it could not run there either way).

Layout read (CUDA's fat binary container, section .nv_fatbin): a sequence of fat binaries, each
a 16-byte header (magic 0xBA55ED50, u16 version, u16 header size, u64 payload size) followed by
entries, each a header (u16 kind, u16 version, u32 header size, u64 payload size, ..., u32 sm
at offset 28) followed by its payload.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50


def fatbin_section(path: Path) -> tuple[int, int]:
    """Offset and size of the .nv_fatbin section (readelf)."""
    listing = subprocess.run(
        ["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    for line in listing.splitlines():
        if ".nv_fatbin" in line:
            fields = line.split("]", 1)[1].split()
            return int(fields[3], 16), int(fields[4], 16)
    raise SystemExit(f"{path} has no .nv_fatbin section")


def trim(data: bytearray, offset: int, size: int, keep_sm: int) -> tuple[int, int]:
    """Zero other architectures' payloads in place; (bytes zeroed, fat binaries kept whole)."""
    position, end, zeroed, whole = offset, offset + size, 0, 0
    while position < end:
        magic, _, header_size, payload_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:  # alignment padding between fat binaries
            position += 8
            continue
        entries, cursor = [], position + header_size
        stop = cursor + payload_size
        while cursor < stop:
            _, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, cursor)
            (sm,) = struct.unpack_from("<I", data, cursor + 28)
            entries.append((sm, cursor + entry_header, entry_size))
            cursor += entry_header + entry_size
        if any(sm == keep_sm for sm, _, _ in entries):
            for sm, start, length in entries:
                if sm != keep_sm:
                    data[start : start + length] = bytes(length)
                    zeroed += length
        else:
            whole += 1
        position = stop
    return zeroed, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("library", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--keep-sm", type=int, default=90, help="architecture kept (90: H100/H200)")
    args = parser.parse_args()
    offset, size = fatbin_section(args.library)
    data = bytearray(args.library.read_bytes())
    zeroed, whole = trim(data, offset, size, args.keep_sm)
    args.output.write_bytes(data)
    print(
        f"zeroed {zeroed / 1e6:.0f} MB of {size / 1e6:.0f} MB of GPU code; "
        f"{whole} fat binaries without sm_{args.keep_sm} left whole"
    )


if __name__ == "__main__":
    main()
