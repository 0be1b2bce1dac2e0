"""What every HTTP request passes before a route sees it, as one ASGI middleware: the bearer
token on the API, the request size limit, and one metric and log line per request.

Pure ASGI (no per-request task or body copy) so that HTTP costs about what gRPC does.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lookalike.server.metrics import Metrics

__all__ = ["Guard", "API_PREFIX", "error_json"]

log = logging.getLogger(__name__)

API_PREFIX = "/v1/"  # what the token guards; the page, its files, /healthz and the schema are open
CLIENT_GONE = 499  # the status a request's metric gets when its client left mid-body (nginx's)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_json(code: str, kind: str, message: str) -> bytes:
    """The body of every error answer: the gRPC code's name, the error class, a sentence."""
    return json.dumps({"error": {"code": code, "type": kind, "message": message}}).encode()


class Guard:
    def __init__(
        self, app: App, *, token: str | None, max_body_bytes: int, metrics: Metrics
    ) -> None:
        self._app, self._max_body, self._metrics = app, max_body_bytes, metrics
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started, path = time.perf_counter(), scope["path"]
        status, recorded = 500, False

        def record() -> None:
            """Count the call once: as its answer's last bytes go out (a client that reads
            the metrics after its answer finds its call counted), or when it ends without."""
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = scope.get("route")
            name = f"{scope['method']} {getattr(route, 'path', 'unrouted')}"
            elapsed = time.perf_counter() - started
            self._metrics.requests.labels(f"http {name}", str(status)).inc()
            self._metrics.request_seconds.labels(f"http {name}").observe(elapsed)
            log.debug("HTTP %s %s %d %.1fms", scope["method"], path, status, elapsed * 1e3)

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _answer(send_recording, *refusal)
                return
            headers = dict(scope["headers"])
            if b"content-length" not in headers and scope["method"] in ("POST", "PUT"):
                try:
                    body = await self._whole_body(receive)  # chunked: read it, up to the limit
                except _ClientGoneError:
                    status = CLIENT_GONE
                    return
                if body is None:
                    await _answer(send_recording, 413, self._too_large(self._max_body + 1), [])
                    return
                receive = _replay(body, receive)
            await self._app(scope, receive, send_recording)
        finally:
            record()

    def _refusal(self, scope: Scope) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """A 401 or 413 answer, if the request gets one before any route runs."""
        if self._expected is not None and scope["path"].startswith(API_PREFIX):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = error_json(
                    "UNAUTHENTICATED",
                    "UnauthenticatedError",
                    "missing or wrong token: send 'Authorization: Bearer <token>'",
                )
                return 401, body, [(b"www-authenticate", b"Bearer")]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            return 413, self._too_large(int(length)), []
        return None

    def _too_large(self, size: int) -> bytes:
        return error_json(
            "RESOURCE_EXHAUSTED",
            "LimitExceededError",
            f"request body is {size:,} bytes or more; the limit is {self._max_body:,} "
            "(the server's --max-message-bytes, plus base64's third)",
        )

    async def _whole_body(self, receive: Receive) -> bytes | None:
        """A body sent without Content-Length, or None once it outgrows the limit;
        _ClientGoneError if the client leaves before its end."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGoneError
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self._max_body:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


class _ClientGoneError(Exception):
    """The client disconnected while sending its body: there is no one to answer."""


def _replay(body: bytes, then: Receive) -> Receive:
    """The body already read, then what the connection says next (e.g. that it closed)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await then()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
