"""The server's one error family, and the one table that maps it to gRPC status codes."""

from __future__ import annotations

import grpc

__all__ = [
    "LookalikeError",
    "InvalidArgumentError",
    "InvalidImageError",
    "NotFoundError",
    "LimitExceededError",
    "ImageTooLargeError",
    "OverloadedError",
    "NotReadyError",
    "EngineError",
    "StorageError",
    "StorageFullError",
    "ModelLoadError",
    "DataDirError",
    "AddressInUseError",
    "grpc_status",
]


class LookalikeError(Exception):
    """Base of every failure the server explains to a caller or an operator."""


class InvalidArgumentError(LookalikeError):
    """The request is malformed: bad vector, k, id, metadata or query."""


class InvalidImageError(InvalidArgumentError):
    """The bytes are not a decodable image: empty, unknown format, truncated, corrupt."""


class NotFoundError(LookalikeError):
    """An id that is not stored."""


class LimitExceededError(LookalikeError):
    """A configured size or count limit (images per request, message bytes, pixels)."""


class ImageTooLargeError(InvalidImageError, LimitExceededError):
    """Decodable, but beyond the configured pixel limit (checked before decoding)."""


class OverloadedError(LookalikeError):
    """The queue is full; the request was refused at once instead of waiting."""


class NotReadyError(LookalikeError):
    """The server is starting or draining."""


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


# The one mapping table. Looked up along the exception's MRO, most specific class first.
GRPC_CODES: dict[type[LookalikeError], grpc.StatusCode] = {
    ImageTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    EngineError: grpc.StatusCode.UNAVAILABLE,
    StorageFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StorageError: grpc.StatusCode.UNAVAILABLE,
    ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    DataDirError: grpc.StatusCode.FAILED_PRECONDITION,
}


def grpc_status(error: LookalikeError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in GRPC_CODES:
            return GRPC_CODES[cls]
    return grpc.StatusCode.INTERNAL
