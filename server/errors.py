"""The server's one error family. It knows no transport: `error_codes` maps each error to a gRPC
status code and an HTTP status."""

from __future__ import annotations

__all__ = [
    "LookalikeError",
    "InvalidArgumentError",
    "InvalidImageError",
    "NotFoundError",
    "ThumbnailMissingError",
    "LimitExceededError",
    "ImageTooLargeError",
    "TextTooLongError",
    "TextUnavailableError",
    "ReadOnlyError",
    "UnsupportedError",
    "OverloadedError",
    "NotReadyError",
    "ReplicaUnavailableError",
    "EngineError",
    "StorageError",
    "StorageFullError",
    "ModelLoadError",
    "DataDirError",
    "AddressInUseError",
]


class LookalikeError(Exception):
    """Base of every failure the server explains to a caller or an operator."""


class InvalidArgumentError(LookalikeError):
    """The request is malformed: bad vector, k, id, metadata or query."""


class InvalidImageError(InvalidArgumentError):
    """The bytes are not a decodable image: empty, unknown format, truncated, corrupt."""


class NotFoundError(LookalikeError):
    """An id that is not stored."""


class ThumbnailMissingError(NotFoundError):
    """A stored item without a thumbnail (added as a vector, with thumbnails off, or its
    thumbnail failed), or a built index, which keeps none."""


class LimitExceededError(LookalikeError):
    """A configured size or count limit (images per request, message bytes, pixels)."""


class ImageTooLargeError(InvalidImageError, LimitExceededError):
    """Decodable, but beyond the configured pixel limit (checked before decoding)."""


class TextTooLongError(InvalidArgumentError, LimitExceededError):
    """A text beyond the configured byte limit (checked before tokenising)."""


class TextUnavailableError(LookalikeError):
    """A text request to a server without a text tower (--no-text, or an image-only package)."""


class ReadOnlyError(LookalikeError):
    """A write to a server that serves a built index (read-only: `build-index` makes versions)."""


class UnsupportedError(LookalikeError):
    """A call this server's setup does not offer (e.g. clusters of a built index)."""


class OverloadedError(LookalikeError):
    """The queue is full; the request was refused at once instead of waiting."""


class NotReadyError(LookalikeError):
    """The server is starting or draining."""


class ReplicaUnavailableError(LookalikeError):
    """A shard of a cluster-served index has no replica that answers now (one is restarting,
    or none answered in time); nothing partial is returned: retry shortly."""


class EngineError(LookalikeError):
    """Inference failed for a whole batch (the images themselves were fine)."""


class StorageError(LookalikeError):
    """The database could not make a write durable (e.g. disk full); nothing was stored."""


class StorageFullError(StorageError):
    """The disk holding the data directory is full."""


class ModelLoadError(LookalikeError):
    """Startup: the model package cannot be used (missing, corrupt, mismatched, no runtime)."""


class DataDirError(LookalikeError):
    """Startup: the data directory is unusable (corrupt database, another model's data, or
    another server holds it)."""


class AddressInUseError(LookalikeError):
    """Startup: the host and port cannot be bound (another process listens there)."""
