"""The one table from the server's errors to gRPC status codes, for the service layer.

Every status a caller can get is named here and in the proto's comment; a test keeps the two in
step. Errors the server raises itself carry `ERROR_KIND_KEY` in their trailing metadata, so a
client can tell "the server said UNAVAILABLE" from "the server could not be reached".
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
)

__all__ = ["GRPC_CODES", "ERROR_KIND_KEY", "grpc_status", "error_metadata"]

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
}


def grpc_status(error: LookalikeError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in GRPC_CODES:
            return GRPC_CODES[cls]
    return grpc.StatusCode.INTERNAL


def error_metadata(kind: str) -> tuple[tuple[str, str], ...]:
    return ((ERROR_KIND_KEY, kind),)
