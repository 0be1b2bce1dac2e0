"""The server's one error family. The service maps each class to one gRPC status code."""

from __future__ import annotations

__all__ = [
    "EngineError",
    "ImageTooLargeError",
    "InvalidImageError",
    "LookalikeError",
    "ModelLoadError",
    "OverloadedError",
]


class LookalikeError(Exception):
    """Base of every failure the server explains to a caller or an operator."""


class InvalidImageError(LookalikeError):
    """The bytes are not a decodable image: empty, unknown format, truncated, corrupt."""


class ImageTooLargeError(InvalidImageError):
    """Decodable, but beyond the configured pixel or aspect-ratio limits."""


class OverloadedError(LookalikeError):
    """The queue is full; the request was refused at once instead of waiting."""


class EngineError(LookalikeError):
    """Inference failed for a whole batch (the images themselves were fine)."""


class ModelLoadError(LookalikeError):
    """The model package cannot be used: missing, corrupt, mismatched, or no runtime."""
