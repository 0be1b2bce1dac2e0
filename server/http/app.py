"""The HTTP/JSON transport's application: the JSON API and the web app, over the same core as
gRPC, behind the token and size guard (and CORS, when origins are allowed).

Like the gRPC service it only translates: the routes (`routes`) turn JSON or a multipart upload
into the core's plain types (`convert`) and the core's results into JSON; its errors go through
`error_codes.http_status` to a JSON error naming the same gRPC code.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from lookalike.server.core import CoreSlot, package_version
from lookalike.server.error_codes import grpc_status, http_status
from lookalike.server.errors import LookalikeError
from lookalike.server.http.convert import explain
from lookalike.server.http.guard import API_PREFIX, Guard, error_json
from lookalike.server.http.routes import BODY_MODELS, STATIC, router
from lookalike.server.metrics import Metrics

__all__ = ["HttpSettings", "body_limit", "create_api"]

log = logging.getLogger(__name__)

# Starlette's own refusals (no such path, a method the path does not take, a malformed form)
# and the routes' 415: the gRPC code and the error class each answers with
HTTP_REFUSALS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "InvalidArgumentError"),
    404: ("NOT_FOUND", "NotFoundError"),
    405: ("UNIMPLEMENTED", "MethodNotAllowedError"),
    415: ("INVALID_ARGUMENT", "UnsupportedMediaTypeError"),
}
# Where clients that remove `.` and `..` path segments (curl, httpx, browsers: RFC 3986) send
# /v1/items/. and /v1/items/..
DOT_IDS_LAND_ON = ("/v1/items", "/v1")
BEARER = "bearer"  # the token's security scheme in the OpenAPI schema


def body_limit(max_message_bytes: int) -> int:
    """The largest HTTP body for gRPC's message limit: its bytes as base64, and room for the
    JSON around them."""
    return max_message_bytes * 4 // 3 + 2**16


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpSettings:
    token: str | None = dataclasses.field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = body_limit(64 * 2**20)
    duplicates_threshold: float | None = None  # calibrated for the model, if it was


def create_api(
    cores: CoreSlot,
    metrics: Metrics,
    settings: HttpSettings,
    *,
    not_serving: Callable[[], str | None],
) -> Any:
    """The ASGI app. `not_serving()` says why the server does not serve, or None when it does
    (what /healthz reports)."""
    app = FastAPI(
        title="Lookalike",
        summary="Image search by image, text, stored item or several examples",
        version=package_version(),
        docs_url=None,  # Swagger UI loads from a CDN: the server works offline
        redoc_url=None,
        redirect_slashes=False,  # /v1/items/. arrives as /v1/items: a 404, not a redirect
    )
    app.state.cores, app.state.settings, app.state.not_serving = cores, settings, not_serving
    _add_error_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    guarded = Guard(
        app, token=settings.token, max_body_bytes=settings.max_body_bytes, metrics=metrics
    )
    if not settings.cors_origins:
        return guarded
    # outside the guard: a preflight carries no token, and a refusal must be readable by the
    # page that asked
    return CORSMiddleware(
        guarded,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["authorization", "content-type"],
    )


def _answer(
    status: int, code: str, kind: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    retry = {"retry-after": "1"} if status in (429, 503) else {}
    return Response(
        error_json(code, kind, message),
        status,
        headers={**retry, **(headers or {})},
        media_type="application/json",
    )


async def _lookalike_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LookalikeError)
    return _answer(http_status(exc), grpc_status(exc).name, type(exc).__name__, str(exc))


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _answer(400, "INVALID_ARGUMENT", "InvalidArgumentError", explain(exc.errors()))


async def _refused(request: Request, exc: Exception) -> Response:
    """Starlette's HTTPException (and the routes' 415) in the API's error shape."""
    assert isinstance(exc, HTTPException)
    code, kind = HTTP_REFUSALS.get(exc.status_code, ("UNKNOWN", "HTTPError"))
    path, headers = request.url.path, exc.headers
    if exc.status_code == 404:
        message = f"no such path: {path} (the endpoints are listed in /openapi.json)"
        if path.rstrip("/") in DOT_IDS_LAND_ON:
            message += (
                "; an id `.` or `..` must be sent as %2E or %2E%2E: clients remove such path "
                "segments before sending"
            )
    elif exc.status_code == 405:
        headers = {"allow": _allowed_methods(request, (exc.headers or {}).get("Allow", ""))}
        message = f"{request.method} is not allowed on {path}; it takes {headers['allow']}"
    else:
        message = exc.detail
    return _answer(exc.status_code, code, kind, message, headers)


def _allowed_methods(request: Request, named: str) -> str:
    """Every method the request's path takes: those Starlette's 405 `named` (the first
    matching route's, or the static files' own), and those of the API's other routes there."""
    methods = {method.strip() for method in named.split(",") if method.strip()}
    methods.update(
        method
        for route in router.routes
        if isinstance(route, Route) and route.matches(request.scope)[0] is Match.PARTIAL
        for method in route.methods or ()
    )
    return ", ".join(sorted(methods))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("HTTP %s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return _answer(500, "INTERNAL", "InternalError", "internal error; the server logged it")


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LookalikeError, _lookalike_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _refused)
    app.add_exception_handler(Exception, _unexpected)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the models of the bodies the routes read themselves and the
    token on the API's paths, less the 422 answers FastAPI lists (bad input here is a 400)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {})
        models = components.setdefault("schemas", {})
        for model in BODY_MODELS:
            full = model.model_json_schema(ref_template="#/components/schemas/{model}")
            models.update(full.pop("$defs", {}))
            models[model.__name__] = full
        for unused in ("HTTPValidationError", "ValidationError"):
            models.pop(unused, None)
        components["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's --token; asked for only when it was started with one",
            }
        }
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if path.startswith(API_PREFIX):
                    operation["security"] = [{BEARER: []}]
        app.openapi_schema = schema
    return app.openapi_schema
