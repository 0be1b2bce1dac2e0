"""The HTTP transport: the JSON API (`api`, its bodies in `schemas`, the token and size checks
in `guard`), the web app it serves (`static/`), and the listener inside the server (`serving`)."""

from lookalike.server.web.api import HttpSettings, body_limit, create_api
from lookalike.server.web.serving import HttpListener

__all__ = ["HttpSettings", "body_limit", "create_api", "HttpListener"]
