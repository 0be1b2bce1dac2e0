"""The HTTP transport: the application (`app`: error handlers, schema, guard), its routes
(`routes`), JSON to the core's types and back (`convert`, the bodies in `schemas`), the token
and size checks (`guard`), the web app it serves (`static/`), and the listener inside the
server's loop (`listener`)."""

from lookalike.server.http.app import HttpSettings, body_limit, create_api
from lookalike.server.http.listener import HttpListener

__all__ = ["HttpSettings", "body_limit", "create_api", "HttpListener"]
