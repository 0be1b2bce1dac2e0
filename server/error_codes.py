"""The tables from the server's errors to gRPC status codes and to HTTP statuses, for the
transports.

Every status a caller can get is named here and in the proto's comment; a test keeps the two in
step. Errors the server raises itself carry `ERROR_KIND_KEY` in their trailing metadata, so a
client can tell "the server said UNAVAILABLE" from "the server could not be reached". Over HTTP
an error is a JSON body naming the same gRPC code and error class.
"""

from __future__ import annotations

import grpc

from lookalike.server.errors import (
    DataDirError,
    EngineError,
    ImageTooLargeError,
    InvalidArgumentError,
    LimitExceededError,
    LookalikeError,
    ModelLoadError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    ReadOnlyError,
    ReplicaUnavailableError,
    StorageError,
    StorageFullError,
    TextTooLongError,
    TextUnavailableError,
    UnsupportedError,
)

__all__ = [
    "GRPC_CODES",
    "HTTP_STATUSES",
    "ERROR_KIND_KEY",
    "grpc_status",
    "http_status",
    "error_metadata",
]

ERROR_KIND_KEY = "lookalike-error"  # trailing metadata: the error's class name

# Looked up along the exception's MRO, most specific class first.
GRPC_CODES: dict[type[LookalikeError], grpc.StatusCode] = {
    ImageTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TextTooLongError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    EngineError: grpc.StatusCode.UNAVAILABLE,
    ReplicaUnavailableError: grpc.StatusCode.UNAVAILABLE,
    StorageFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StorageError: grpc.StatusCode.UNAVAILABLE,
    ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    DataDirError: grpc.StatusCode.FAILED_PRECONDITION,
    TextUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,
    ReadOnlyError: grpc.StatusCode.FAILED_PRECONDITION,
    UnsupportedError: grpc.StatusCode.FAILED_PRECONDITION,
}


# The same errors over HTTP: a size limit is 413 (retrying the same request cannot help), a
# full queue 429 (retry with backoff), a full disk 507, what the server's setup refuses 409.
HTTP_STATUSES: dict[type[LookalikeError], int] = {
    ImageTooLargeError: 413,
    TextTooLongError: 413,
    InvalidArgumentError: 400,
    NotFoundError: 404,
    LimitExceededError: 413,
    OverloadedError: 429,
    NotReadyError: 503,
    EngineError: 503,
    ReplicaUnavailableError: 503,
    StorageFullError: 507,
    StorageError: 503,
    ModelLoadError: 409,
    DataDirError: 409,
    TextUnavailableError: 409,
    ReadOnlyError: 409,
    UnsupportedError: 409,
}


def grpc_status(error: LookalikeError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in GRPC_CODES:
            return GRPC_CODES[cls]
    return grpc.StatusCode.INTERNAL


def http_status(error: LookalikeError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUSES:
            return HTTP_STATUSES[cls]
    return 500


def error_metadata(kind: str) -> tuple[tuple[str, str], ...]:
    return ((ERROR_KIND_KEY, kind),)
