"""A CLIP, SigLIP or SigLIP 2 checkpoint -> verified, optimized ONNX model package
(`lookalike-export`; one module per family in `families/`).

Importing this package stays light: the manifest and runtime check need no torch, so the
serving install reads manifests through `export.manifest` without the `export` extra.
"""

from lookalike.export.errors import ExportError
from lookalike.export.manifest import Manifest, ManifestError, Precision

__all__ = ["ExportError", "Manifest", "ManifestError", "Precision"]
