"""The HTTP listener: uvicorn inside the server's own event loop, beside gRPC.

The socket is bound here (so that port 0 is resolved and a busy port fails at start, like
gRPC's), and uvicorn serves on it without taking over the process's signals: the server's own
shutdown stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from lookalike.server.errors import AddressInUseError

__all__ = ["HttpListener"]


class _Embedded(uvicorn.Server):
    """uvicorn, minus its signal handlers (the server that embeds it has its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpListener:
    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self._app, self._host, self._port = app, host, port
        self._tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self._server: _Embedded | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    async def start(self) -> int:
        """Bind and start answering; return the port."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # proto given: asyncio turns Nagle off (TCP_NODELAY) only on sockets that name TCP, and
        # without that a keep-alive response waited ~40 ms for the client's delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            raise AddressInUseError(
                f"cannot listen for HTTP on {self._host}:{self._port}: the port is in use by "
                "another process; pass another --http-port (0 picks a free one)"
            ) from exc
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,  # the server's logging stays as the server set it up
            log_level="warning",
            access_log=False,
            server_header=False,
            ssl_certfile=str(self._tls[0]) if self._tls else None,
            ssl_keyfile=str(self._tls[1]) if self._tls else None,
        )
        self._server = _Embedded(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # uvicorn failed to start: its error, here
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Finish the requests in flight (up to `grace_s`), then close."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(1, round(grace_s))
        self._server.should_exit = True
        await self._task
