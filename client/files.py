"""Image files in a folder, and the ids they are stored under: shared by `lookalike index`
(one server) and `lookalike ingest` (Ray), so that both give a file the same id."""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "SOURCE_PATH_KEY", "image_files", "file_id"]

# the metadata key an image's source is stored under (`index`, and `build-index`/`import` from
# a dataset), for pages and tables that show the image
SOURCE_PATH_KEY = "source_path"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def image_files(directory: Path, *, recursive: bool) -> list[Path]:
    """The folder's image files (by suffix), sorted."""
    pattern = directory.rglob("*") if recursive else directory.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def file_id(path: Path, directory: Path) -> str:
    """An image's id: its path relative to the folder it was found in, with `/`."""
    return path.relative_to(directory).as_posix()
