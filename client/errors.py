"""Typed client errors: one class per gRPC status a caller handles differently."""

from __future__ import annotations

import grpc

__all__ = [
    "LookalikeClientError",
    "InvalidRequestError",
    "ItemNotFoundError",
    "ServerUnavailableError",
    "UnauthenticatedError",
    "ServerOverloadedError",
    "from_rpc_error",
]


# Trailing metadata the server puts on every error it raises itself (its error's class name).
SERVER_ERROR_KEY = "lookalike-error"


class LookalikeClientError(Exception):
    """A call failed; `code` is the gRPC status, `details` the explanation.

    `server_error` names the server's own error (e.g. "StorageError") when the server answered;
    it is empty when the status came from gRPC itself (no connection, deadline passed).
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, target: str, server_error: str = ""
    ) -> None:
        super().__init__(details)
        self.code, self.details, self.target = code, details, target
        self.server_error = server_error

    def __str__(self) -> str:
        return self.details or self.code.name


class InvalidRequestError(LookalikeClientError):
    """Bad image, vector, id, k or metadata: fix the request."""


class ItemNotFoundError(LookalikeClientError):
    """An id that is not stored."""


class ServerUnavailableError(LookalikeClientError):
    """The server cannot be reached, is starting, draining, or its engine is failing."""

    def __str__(self) -> str:
        return f"server {self.target} is unavailable ({self.details})"


class UnauthenticatedError(LookalikeClientError):
    """Missing or wrong token."""


class ServerOverloadedError(LookalikeClientError):
    """RESOURCE_EXHAUSTED: the queue is full (retry later) or a size limit was exceeded."""


_BY_CODE: dict[grpc.StatusCode, type[LookalikeClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: ItemNotFoundError,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServerUnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerOverloadedError,
}


def from_rpc_error(error: grpc.RpcError, target: str) -> LookalikeClientError:
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or ""  # type: ignore[attr-defined]
    trailing = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    server_error = str(trailing.get(SERVER_ERROR_KEY, ""))
    return _BY_CODE.get(code, LookalikeClientError)(code, details, target, server_error)
