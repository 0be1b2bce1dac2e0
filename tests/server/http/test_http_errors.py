"""Every error the HTTP API answers has its documented shape (`ErrorOut`), over real HTTP on
loopback: unknown paths, methods a path does not take, odd ids, malformed forms, and bodies
that do not say they are JSON (or a form, where a form is taken)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lookalike.server.http.schemas import ErrorOut
from tests.server.http.conftest import http_client, http_server


@pytest.fixture(scope="module")
def api(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        http_server(tiny_export, tmp_path_factory.mktemp("data")) as (_, base),
        http_client(base) as client,
    ):
        yield client


def documented_error(answer: httpx.Response, status: int, code: str) -> str:
    """The answer's message, once its status, content type, shape and gRPC code are checked."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = ErrorOut.model_validate_json(answer.content).error
    assert error.code == code
    return error.message


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/nothing-here", "/static/nothing.js"])
def test_an_unknown_path_is_a_404_naming_it(api: httpx.Client, path: str) -> None:
    message = documented_error(api.get(path), 404, "NOT_FOUND")
    assert f"no such path: {path}" in message
    assert "/openapi.json" in message


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/v1/items/cat", "DELETE, GET, PUT"),  # Starlette alone names the first: PUT
        ("GET", "/v1/search", "POST"),
        ("POST", "/v1/stats", "GET"),
        ("POST", "/static/app.js", "GET, HEAD"),
        ("DELETE", "/openapi.json", "GET, HEAD"),
    ],
)
def test_a_method_the_path_does_not_take_is_a_405_that_lists_those_it_does(
    api: httpx.Client, method: str, path: str, allowed: str
) -> None:
    answer = api.request(method, path)
    message = documented_error(answer, 405, "UNIMPLEMENTED")
    assert answer.headers["allow"] == allowed
    assert message == f"{method} is not allowed on {path}; it takes {allowed}"


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v1/items/.", "%2E"),  # sent as /v1/items: clients drop the `.` segment
        ("/v1/items/..", "%2E%2E"),  # sent as /v1
        ("/v1/items/%2E", "no item with id '.'"),
        ("/v1/items/%2E%2E", "no item with id '..'"),
        ("/v1/items/a%2F..%2Fb", "no item with id 'a/../b'"),
        ("/v1/items/%2F", "no item with id '/'"),
        ("/v1/items/%2F/thumbnail", "no item with id '/'"),
    ],
)
def test_an_odd_id_is_a_404_in_the_documented_shape_not_a_redirect(
    api: httpx.Client, path: str, says: str
) -> None:
    answer = api.get(path, follow_redirects=False)
    assert "location" not in answer.headers
    assert says in documented_error(answer, 404, "NOT_FOUND")


def test_a_malformed_form_is_a_400_in_the_documented_shape(api: httpx.Client) -> None:
    no_boundary = {"content-type": "multipart/form-data"}
    answer = api.post("/v1/search", content=b"--x\r\n", headers=no_boundary)
    assert "boundary" in documented_error(answer, 400, "INVALID_ARGUMENT")


FORM_OR_JSON = "application/json or multipart/form-data"
JSON_BODIES = [  # each route that reads a body, a valid JSON one, and the types it takes
    ("POST", "/v1/search", {"text": "a cat"}, FORM_OR_JSON),
    ("PUT", "/v1/items/cat", {"vector": [1.0] * 16}, FORM_OR_JSON),  # the tiny model's dims
    ("POST", "/v1/embeddings", {"input": "a cat"}, "application/json;"),
    ("POST", "/v1/delete", {"ids": ["cat"]}, "application/json;"),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), JSON_BODIES)
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]
)
def test_a_body_not_sent_as_json_is_a_415_naming_the_type_expected(
    api: httpx.Client,
    method: str,
    path: str,
    body: object,
    expected: str,
    content_type: str | None,
) -> None:
    """A page on another origin may send text/plain (or a urlencoded form) without a CORS
    preflight: were it read as JSON, a server without a token would act on it."""
    headers = {} if content_type is None else {"content-type": content_type}
    answer = api.request(method, path, content=json.dumps(body), headers=headers)
    message = documented_error(answer, 415, "INVALID_ARGUMENT")
    assert f"Content-Type must be {expected}" in message
    assert (content_type or "names none") in message
    assert api.get("/v1/items/cat").status_code == 404  # nothing was stored


@pytest.mark.parametrize(("method", "path", "body", "expected"), JSON_BODIES)
def test_json_with_a_charset_is_json(
    api: httpx.Client, method: str, path: str, body: object, expected: str
) -> None:
    json_utf8 = {"content-type": "Application/JSON; charset=utf-8"}
    try:
        answer = api.request(method, path, content=json.dumps(body), headers=json_utf8)
        assert answer.status_code == 200, answer.text
    finally:
        api.delete("/v1/items/cat")
