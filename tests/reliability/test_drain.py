"""`lookalike-server` as an operator runs it, with a token and HTTP on: SIGTERM drains both
transports (the calls in flight finish, new ones are refused, then it exits 0, and what it
acknowledged is there after a restart), and nothing it prints holds a token, right or wrong.
Issue #43."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import h11
import httpx
import numpy as np
import pytest

from lookalike.server.core import STREAM_WINDOW
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.process import LOOPBACK, ServerProcess, announced_listeners
from tests.server.images import jpeg

TOKEN = "tok-5a1f-never-log-me"
WRONG_TOKEN = "tok-9c2e-wrong-never-log-me-either"
AUTHORISED = (("authorization", f"Bearer {TOKEN}"),)
# far longer than the drain takes here: an exit before it shows that the drain ended with its
# last call, not at the grace
GRACE_S = 60
# the server handles SIGTERM on its own event loop, and uvicorn closes its socket at its next
# 0.1 s tick: a moment after the signal, which a loaded 2-core machine may stretch to seconds
REFUSED_WITHIN_S = 15
CALL_TIMEOUT_S = 30  # any one call; only a failing test waits that long
# a new call that races the shutdown may be neither answered nor refused until the drain ends
# (gRPC's own race, grpc/grpc#10418): a probe gives up after this and is sent again
PROBE_TIMEOUT_S = 5
# what a new call may meet after SIGTERM, before it is refused: an answer (the signal is not
# handled yet), then, while the server stops, gRPC's cancel of a call that raced the shutdown
# on a connection made just before, or its probe deadline (see PROBE_TIMEOUT_S); HTTP's health
# says NOT_SERVING, or a connection accepted as uvicorn shut them is closed unanswered
REFUSED, DROPPED = "connection refused", "closed unanswered"
GRPC_BEFORE_REFUSAL = {
    grpc.StatusCode.OK,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
HTTP_BEFORE_REFUSAL = {200, 503, DROPPED}
# how long the call that finishes last stays in flight alone: a server that did not wait for
# it would have exited by then (stopping takes about a second here); it only lengthens
# the test, since a server that waits keeps running for up to GRACE_S
ALONE_S = 2
STREAMED = [f"streamed-{i}" for i in range(2 * STREAM_WINDOW)]
UPLOADED = "uploaded-at-sigterm"

Outcome = TypeVar("Outcome")


@contextlib.contextmanager
def reaped(server: ServerProcess) -> Iterator[ServerProcess]:
    """`server`, killed on the way out if a failing test left it running."""
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()


def with_token_and_http(model_dir: Path, data_dir: Path, log: Path, *flags: str) -> ServerProcess:
    return ServerProcess(
        model_dir,
        data_dir,
        log,
        "--token",
        TOKEN,
        "--http-port",
        "0",
        "--grace-s",
        str(GRACE_S),
        *flags,
    )


def http_port(server: ServerProcess) -> int:
    return announced_listeners(server.log, LOOPBACK)["HTTP"].port


def acknowledged(responses: Iterable[pb.AddStreamResponse]) -> list[str]:
    return [result.id for response in responses for result in response.results if not result.code]


class HeldStream:
    """An authorised AddStream that has sent STREAM_WINDOW of the STREAMED vectors and had the
    first group of them acknowledged (the server is at work on it); the rest wait for `finish`
    (or for `release`, set on the way out of a failing test)."""

    def __init__(self, stub: pb_grpc.ImageSearchStub) -> None:
        self.release = threading.Event()
        self._call = stub.AddStream(self._requests(), metadata=AUTHORISED, timeout=GRACE_S)
        self._acknowledged = acknowledged([next(self._call)])
        assert self._acknowledged

    def finish(self) -> list[str]:
        """Send the rest and end the stream; what the server acknowledged: everything."""
        self.release.set()
        self._acknowledged += acknowledged(self._call)
        assert self._call.code() == grpc.StatusCode.OK
        assert self._acknowledged == STREAMED
        return self._acknowledged

    def _requests(self) -> Iterator[pb.AddRequest]:
        rng = np.random.default_rng(0)
        for i, item_id in enumerate(STREAMED):
            if i == STREAM_WINDOW:
                self.release.wait(GRACE_S)
            yield pb.AddRequest(id=item_id, vector=pb.Vector(values=rng.normal(size=16)))


class HeldUpload:
    """An authorised HTTP PUT of an image whose body waits: the server's `100 Continue` says its
    route has begun reading the request; `finish` sends the body."""

    def __init__(self, port: int, item_id: str) -> None:
        self._socket = socket.create_connection((LOOPBACK, port), timeout=CALL_TIMEOUT_S)
        self._http = h11.Connection(our_role=h11.CLIENT)
        self._item_id = item_id
        image = base64.b64encode(jpeg(64, 64, seed=1)).decode()
        self._body = json.dumps({"image": image}).encode()
        headers = {
            "host": f"{LOOPBACK}:{port}",
            "authorization": f"Bearer {TOKEN}",
            "content-type": "application/json",
            "content-length": str(len(self._body)),
            "expect": "100-continue",
        }
        target = f"/v1/items/{item_id}"
        self._send(h11.Request(method="PUT", target=target, headers=[*headers.items()]))
        went_on = self._next_event()
        assert isinstance(went_on, h11.InformationalResponse), went_on
        assert went_on.status_code == 100

    def finish(self) -> list[str]:
        """Send the body and read the answer; what the server stored: the item."""
        with self._socket:
            self._send(h11.Data(data=self._body), h11.EndOfMessage())
            answer = self._next_event()
            assert isinstance(answer, h11.Response), answer
            body = b""
            while isinstance(event := self._next_event(), h11.Data):
                body += event.data
        assert answer.status_code == 200, body
        assert json.loads(body) == {"id": self._item_id, "replaced": False}
        assert (b"connection", b"close") in list(answer.headers)  # this connection ends too
        return [self._item_id]

    def _send(self, *events: h11.Event) -> None:
        for event in events:
            self._socket.sendall(self._http.send(event) or b"")

    def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        while (event := self._http.next_event()) is h11.NEED_DATA:
            self._http.receive_data(self._socket.recv(2**16))
        return event


def grpc_code(
    method: Callable[..., object],
    request: object,
    authorization: str = f"Bearer {TOKEN}",
    timeout: float = CALL_TIMEOUT_S,
) -> grpc.StatusCode:
    """The code a gRPC call sent with `authorization` ends with."""
    try:
        method(request, metadata=(("authorization", authorization),), timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def outcomes_until(attempt: Callable[[], Outcome], last: Outcome) -> list[Outcome]:
    """What `attempt` gives, tried again until it gives `last` (for up to REFUSED_WITHIN_S)."""
    outcomes = [attempt()]
    deadline = time.monotonic() + REFUSED_WITHIN_S
    while outcomes[-1] != last:
        assert time.monotonic() < deadline, f"no {last} in {REFUSED_WITHIN_S}s, {set(outcomes)}"
        time.sleep(0.05)
        outcomes.append(attempt())
    return outcomes


def stats_on_a_new_channel(port: int) -> grpc.StatusCode:
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = pb_grpc.ImageSearchStub(channel)
        return grpc_code(stub.Stats, pb.StatsRequest(), timeout=PROBE_TIMEOUT_S)


def health_on_a_new_connection(port: int) -> int | str:
    """What GET /healthz on a new connection answers, or REFUSED or DROPPED."""
    try:
        return httpx.get(f"http://{LOOPBACK}:{port}/healthz", timeout=PROBE_TIMEOUT_S).status_code
    except httpx.ConnectError:
        return REFUSED
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return DROPPED


@pytest.mark.parametrize("last", ["gRPC", "HTTP"])
def test_sigterm_finishes_the_calls_in_flight_and_refuses_new_ones(
    tiny_export: Path, tmp_path: Path, last: str
) -> None:
    """A gRPC stream and an HTTP upload are in flight at the signal, neither with its last
    bytes sent. New calls on either transport are refused; then the two finish, `last` alone
    for ALONE_S, and the server exits 0 before the grace is out, having stored them."""
    data_dir = tmp_path / "data"
    with (
        reaped(with_token_and_http(tiny_export, data_dir, tmp_path / "server.log")) as server,
        grpc.insecure_channel(f"{LOOPBACK}:{server.port}") as channel,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        stream = HeldStream(stub)
        try:
            upload = HeldUpload(http_port(server), UPLOADED)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            on_new_channels = outcomes_until(
                lambda: stats_on_a_new_channel(server.port), grpc.StatusCode.UNAVAILABLE
            )
            on_the_open_channel = outcomes_until(
                lambda: grpc_code(stub.Stats, pb.StatsRequest(), timeout=PROBE_TIMEOUT_S),
                grpc.StatusCode.UNAVAILABLE,
            )
            on_new_connections = outcomes_until(
                lambda: health_on_a_new_connection(http_port(server)), REFUSED
            )
            assert {*on_new_channels[:-1], *on_the_open_channel[:-1]} <= GRPC_BEFORE_REFUSAL
            assert set(on_new_connections[:-1]) <= HTTP_BEFORE_REFUSAL
            first, then = (upload, stream) if last == "gRPC" else (stream, upload)
            stored = first.finish()
            time.sleep(ALONE_S)
            assert server.process.poll() is None  # it waits for the last call too
            stored += then.finish()
        finally:
            stream.release.set()
        assert server.process.wait(GRACE_S) == 0, server.log.read_text()
        assert time.monotonic() - signalled < GRACE_S
    restarted = ServerProcess(tiny_export, data_dir, tmp_path / "restarted.log")
    with reaped(restarted), grpc.insecure_channel(f"{LOOPBACK}:{restarted.port}") as channel:
        stub = pb_grpc.ImageSearchStub(channel)
        for item_id in stored:
            assert stub.Get(pb.GetRequest(id=item_id), timeout=CALL_TIMEOUT_S).id == item_id
        assert stub.Stats(pb.StatsRequest(), timeout=CALL_TIMEOUT_S).items == len(stored)
        restarted.stop()


# what each call answers (gRPC Stats, gRPC Get of a missing id, HTTP GET of /v1/stats and of a
# missing item) when the server lets its caller in, and when it keeps it out
LET_IN = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, 200, 404)
KEPT_OUT = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED, 401, 401)
CALLERS = {  # the authorization each caller sends
    f"Bearer {TOKEN}": LET_IN,
    f"Bearer {WRONG_TOKEN}": KEPT_OUT,
    TOKEN: KEPT_OUT,  # the right token without its scheme
}


def test_no_token_reaches_the_output_right_or_wrong(tiny_export: Path, tmp_path: Path) -> None:
    """All the server prints, stdout and stderr, at DEBUG (a line per call on either transport;
    uvicorn's access log is off, and its own lines go to the same stderr), after calls with the
    right token, a wrong one and the right one misplaced, that succeed and that fail."""
    debug = ("--log-level", "DEBUG")
    with reaped(
        with_token_and_http(tiny_export, tmp_path / "data", tmp_path / "server.log", *debug)
    ) as server:
        base = f"http://{LOOPBACK}:{http_port(server)}"
        with (
            grpc.insecure_channel(f"{LOOPBACK}:{server.port}") as channel,
            httpx.Client(base_url=base, timeout=CALL_TIMEOUT_S) as http,
        ):
            stub = pb_grpc.ImageSearchStub(channel)
            for authorization, answers in CALLERS.items():
                headers = {"authorization": authorization}
                assert (
                    grpc_code(stub.Stats, pb.StatsRequest(), authorization),
                    grpc_code(stub.Get, pb.GetRequest(id="missing"), authorization),
                    http.get("/v1/stats", headers=headers).status_code,
                    http.get("/v1/items/missing", headers=headers).status_code,
                ) == answers
        server.stop()
    output = server.log.read_text()
    for line in ("Stats OK", "Get NOT_FOUND", "GET /v1/stats 200", "GET /v1/stats 401"):
        assert line in output  # the calls were logged
    assert [token for token in (TOKEN, WRONG_TOKEN) if token in output] == []
