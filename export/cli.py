"""`lookalike-export`: a CLIP or SigLIP checkpoint in, a verified ONNX model package out."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from lookalike.export.manifest import PixelLayout, Precision

__all__ = ["main"]

PACKAGE = __name__.rpartition(".")[0]  # lookalike.export: its progress lines are shown


def build_parser() -> argparse.ArgumentParser:
    from lookalike.export.source import DEFAULT_MODEL, RANDOM_INIT_PRESETS

    parser = argparse.ArgumentParser(
        prog="lookalike-export",
        description="Export a CLIP, SigLIP or SigLIP 2 checkpoint's image and text towers "
        "(each ending in its embedding, L2-normalised) to ONNX: optimized fp32, fp16 and int8 "
        "variants, each checked against PyTorch, with the text tokenizer, described by "
        "OUTPUT/manifest.json.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hugging Face model id or local directory of a saved CLIPModel or SiglipModel "
        f"(default: {DEFAULT_MODEL})",
    )
    source.add_argument(
        "--random-init",
        choices=sorted(RANDOM_INIT_PRESETS),
        help="build a model of this family and size with RANDOM weights instead of loading one "
        "(no network needed; embeddings carry no meaning)",
    )
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) to load")
    parser.add_argument("--output", "-o", type=Path, required=True, help="directory to write")
    parser.add_argument(
        "--precision",
        action="append",
        choices=[p.value for p in Precision],
        help="variant to build; repeat for several (default: all three)",
    )
    parser.add_argument(
        "--no-text",
        action="store_true",
        help="export the image tower alone (no search by text; a smaller package)",
    )
    parser.add_argument(
        "--image-input",
        choices=[layout.value for layout in PixelLayout],
        default=PixelLayout.UINT8_NHWC.value,
        help="what the image graph takes: uint8 [batch, S, S, 3] pixels, resized and cropped "
        "(default; it rescales and normalises them itself), or float32 [batch, 3, S, S] pixels "
        "already normalised, as packages before format 4 (for a runtime that normalises itself)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT if it already exists"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="only print errors")
    verbosity.add_argument(
        "--verbose", "-v", action="store_true", help="also show the libraries' own logs"
    )
    return parser


@contextlib.contextmanager
def progress_logging(*, quiet: bool, verbose: bool) -> Iterator[None]:
    """Progress lines from the exporter; the libraries' INFO chatter only with --verbose.

    Installed for the duration of one `main` call and removed after, so calling `main`
    in-process (tests, notebooks) leaves logging as it found it.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    if not verbose:
        handler.addFilter(
            lambda record: record.name.startswith(PACKAGE) or record.levelno >= logging.ERROR
        )
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.ERROR if quiet else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with progress_logging(quiet=args.quiet, verbose=args.verbose):
        return _export(args)


def _export(args: argparse.Namespace) -> int:
    from lookalike.export.errors import ExportError
    from lookalike.export.pipeline import ExportRequest, run_export
    from lookalike.export.runtime import RuntimeMissingError

    precisions = tuple(Precision(p) for p in dict.fromkeys(args.precision or [])) or tuple(
        Precision
    )
    request = ExportRequest(
        output=args.output,
        model=args.model,
        revision=args.revision,
        random_init=args.random_init,
        precisions=precisions,
        opset=args.opset,
        overwrite=args.overwrite,
        text=not args.no_text,
        image_input=PixelLayout(args.image_input),
    )
    try:
        manifest = run_export(request)
    except (ExportError, RuntimeMissingError) as exc:
        print(f"lookalike-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lookalike-export: interrupted; nothing was written", file=sys.stderr)
        return 130
    if not args.quiet:
        print(manifest.describe(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
