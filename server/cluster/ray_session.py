"""Where the cluster commands run: the Ray cluster they are pointed at, or a local one.

A cluster started the way Ray's docs start one, `ray start --head`, has token authentication on
where a token exists (`~/.ray/auth_token`, which `ray get-auth-token --generate` and any local
`ray.init()` of Ray 2.60 write); a driver that joins it by address sends the token only when
`RAY_AUTH_MODE=token` is set, and otherwise fails with "Failed to connect to Ray cluster".
So when no mode was chosen, one quick call asks the cluster first whether it wants a token (a
refused join would otherwise spend Ray's 20 s of retries first): if it does, the join is made
in token mode with the token at hand (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or that file), or
refused at once where there is none. Where the cluster cannot be asked (a `ray://` or `auto`
address), a refused join is tried once more in token mode. A join refused again says what to
check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lookalike.server.errors import LookalikeError

__all__ = ["LOCKED_DOWN", "RayConnectionError", "ray_session", "ray_settings", "reclaim_sigterm"]

log = logging.getLogger(__name__)

AUTH_MODE = "RAY_AUTH_MODE"
PROBE_TIMEOUT_S = 3.0  # the one call asking a cluster whether it wants a token
LOG_FOLDER = "/tmp/ray/session_latest/logs"  # Ray's documented link to the current session
TOKEN, TOKEN_PATH = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": every Ray service on 127.0.0.1
# Ray's settings for a Ray of one machine and its owner alone (see `_embedded_ray`)
LOCKED_DOWN = {AUTH_MODE: "token", SINGLE_MACHINE: "0"}


class RayConnectionError(LookalikeError):
    """The cluster at the given address could not be joined (at start, never in a request);
    the message says what to check."""


@contextlib.contextmanager
def ray_session(address: str | None, *, quiet: bool = False) -> Iterator[None]:
    """Join the cluster at `address` (or RAY_ADDRESS), or run an embedded Ray (see
    `_embedded_ray`) for the length of the block. A Ray already initialised is used as is.
    `quiet`: Ray's INFO lines and the workers' output stay in Ray's log files, whose folder is
    said once."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = (
        {"log_to_driver": False, "logging_level": logging.WARNING} if quiet else {}
    )
    with contextlib.ExitStack() as session:
        if address:
            _join(ray, address, options)
        else:
            session.enter_context(_embedded_ray(ray, options))
        session.callback(ray.shutdown)
        if quiet:
            where = "on the head node" if address else "on this machine"
            print(f"Ray's logs: {LOG_FOLDER} ({where}; --verbose shows them here)", file=sys.stderr)
        yield


@contextlib.contextmanager
def _embedded_ray(ray: Any, options: dict[str, Any]) -> Iterator[None]:
    """A Ray of this process's own: no dashboard, every CPU of this machine, started anew even
    where a `ray start` cluster runs here (a bare `ray.init()` would join that one).

    Unreachable from the network: it runs in Ray's single-machine mode (the one Ray uses on
    macOS and Windows), in which its GCS, raylet, workers, agents and metrics exporters all
    listen on 127.0.0.1 (`ray.init` would otherwise turn a loopback node address into the
    machine's own and bind them to every interface). And token authentication is on whatever
    RAY_AUTH_MODE says, so another user of this machine needs its Ray token too."""
    with ray_settings(LOCKED_DOWN):
        ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count(), **options)
        yield


@contextlib.contextmanager
def ray_settings(settings: Mapping[str, str]) -> Iterator[None]:
    """These environment variables for the block, for this process, its Ray and the processes
    they start; Ray's cached settings are read again on the way in and out."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    _reload_ray_config()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reload_ray_config()


def reclaim_sigterm() -> None:
    """Give SIGTERM back to the handler Python had before Ray joined, once a Ray session is
    open; off the main thread (a server embedded in another program) there is nothing to do.

    `ray.init` installs Ray's crash handler (absl's FailureSignalHandler) for SIGTERM too: it
    prints a stack trace, arms a 3 s alarm that aborts the process, then passes the signal on.
    A server draining for longer than 3 s would end in SIGABRT instead of stopping cleanly.
    Crash signals (SIGSEGV, SIGABRT, ...) keep Ray's handler and its stack traces.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:  # None: set outside Python, nothing of ours to give back
        signal.signal(signal.SIGTERM, handler)


def _join(ray, address: str, options: dict[str, Any]) -> None:
    """Join as Ray is configured, in token mode where no mode was chosen and the cluster
    wants a token. Where a join is refused, this machine has a Ray token and no mode was
    chosen, join again in token mode (a cluster without authentication must be joined
    without: a driver in token mode there never hears back from its workers)."""
    token = token_at_hand()
    if AUTH_MODE not in os.environ and _wants_token(address):
        if token is None:
            raise RayConnectionError(_refusal(address, "it requires a Ray token", None))
        log.info(
            "%s requires a token: joining with that of %s (%s=token)", address, token, AUTH_MODE
        )
        _use_token_mode()
    try:
        ray.init(address=address, **options)
        return
    except ConnectionError as exc:
        refused = exc
    if token is None or AUTH_MODE in os.environ:
        raise RayConnectionError(_refusal(address, refused, token)) from refused
    log.info("joining %s again with the Ray token of %s (%s=token)", address, token, AUTH_MODE)
    ray.shutdown()
    _use_token_mode()
    try:
        ray.init(address=address, **options)
    except ConnectionError as exc:
        raise RayConnectionError(_refusal(address, exc, token)) from exc


def _use_token_mode() -> None:
    """Token mode for this process and the workers it starts."""
    os.environ[AUTH_MODE] = "token"
    _reload_ray_config()


def _reload_ray_config() -> None:
    """Ray reads its settings from the environment into a cached config, so that is read
    again, as Ray itself does when it turns token mode on for a local cluster
    (`authentication_token_setup._enable_token_auth`); and whether it may form a cluster
    beyond this machine, at import, so that is read again too (processes Ray starts read it
    from the environment they inherit)."""
    from ray._private import ray_constants
    from ray._raylet import Config  # type: ignore[attr-defined]  # (no stub; Ray does this)

    Config.initialize("")
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(
        SINGLE_MACHINE, not ray_constants.IS_WINDOWS_OR_OSX
    )


def _wants_token(address: str) -> bool:
    """Whether the cluster's GCS at `address` (host:port) refuses a call without a token.
    False where it cannot be asked: another form of address, no stubs, or no answer (then the
    join itself says what is wrong)."""
    import grpc

    if "://" in address or ":" not in address:
        return False
    try:  # Ray's own stubs of its GCS service (another Ray may lay them out differently)
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

        stub_of = gcs_service_pb2_grpc.NodeInfoGcsServiceStub
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return False
    # straight to the cluster, as Ray's own channels go (never through an HTTP proxy)
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            stub_of(channel).GetClusterId(request, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            return bool(exc.code() == grpc.StatusCode.UNAUTHENTICATED)
    return False


def token_at_hand() -> str | None:
    """Where this machine's Ray token is (an environment variable or a file), if it has one."""
    if os.environ.get(TOKEN):
        return f"${TOKEN}"
    path = Path(os.environ.get(TOKEN_PATH) or Path.home() / ".ray" / "auth_token")
    return str(path) if path.is_file() else None


def _refusal(address: str, error: object, token: str | None) -> str:
    mode = os.environ.get(AUTH_MODE)
    if token is None:
        advice = (
            "if it was started with `ray start` (token authentication is on by default), copy "
            f"its head node's ~/.ray/auth_token to this machine or set {TOKEN} to it"
        )
    else:
        advice = (
            f"the cluster refused or did not answer with the token of {token}: check that it "
            f"is the head node's (`ray get-auth-token` there prints it)"
        )
    return (
        f"cannot join the Ray cluster at {address} ({error}; {AUTH_MODE}={mode or 'unset'}): "
        f"check the address and that the cluster is running; {advice}"
    )
