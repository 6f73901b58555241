"""The console's HTTP answers: static files from ``static/``, nothing else.

``console_response(prefix, path)`` maps a request path under ``prefix`` to a file of
the packaged ``static/`` folder. Only names from the folder's own listing (taken once,
at import) can be served, so no path (``..``, encoded or not, absolute, symlinks) reaches
outside it. ``index.html`` and ``config.json`` are never cached (it names the other files); the rest is
cacheable for an hour.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from broker.transport.http import HttpConnection, HttpRequest

__all__ = ["STATIC", "ConsoleApp", "console_response"]

STATIC = Path(__file__).with_name("static")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    "": "text/plain; charset=utf-8",  # the vendored licence
}

HttpAnswer = tuple[int, str, bytes, dict[str, str]]
"""(status, content type, body, extra headers)."""


def _files() -> dict[str, Path]:
    """Every servable file, by its relative POSIX path (``vendor/autobahn.min.js``)."""
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in STATIC.rglob("*")
        if path.is_file() and not path.is_symlink() and path.suffix in _TYPES
    }


_FILES = _files()


def console_response(prefix: str, path: str, config: bytes = b"{}") -> HttpAnswer | None:
    """The answer for ``path`` (query already stripped), or None if not under ``prefix``.

    ``prefix`` itself redirects to ``prefix/`` (relative URLs in index.html need it).
    ``prefix/config.json`` answers ``config``: the realm, role and WAMP path the page
    logs in with (no secret in it).
    """
    if path == prefix:
        return 308, "text/plain; charset=utf-8", b"", {"Location": prefix + "/"}
    if not path.startswith(prefix + "/"):
        return None
    name = unquote(path[len(prefix) + 1 :]) or "index.html"
    if name == "config.json":
        return 200, "application/json", config, {"Cache-Control": "no-store"}
    file = _FILES.get(name)
    if file is None:
        return 404, "text/plain; charset=utf-8", b"not found\n", {"Cache-Control": "no-store"}
    cache = "no-cache" if name == "index.html" else "public, max-age=3600"
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    return 200, _TYPES[file.suffix], file.read_bytes(), headers


class ConsoleApp:
    """The console as an ``HttpApp`` of the transport's HTTP layer (under ``prefix/``)."""

    def __init__(self, prefix: str, config: bytes) -> None:
        self.prefix = prefix
        self.config = config

    def handle(self, request: HttpRequest, connection: HttpConnection) -> None:
        """Answer GET/HEAD with ``console_response``; other methods get 405."""
        if request.method not in ("GET", "HEAD"):
            connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"use GET\n", {"Allow": "GET, HEAD"})
            return
        answer = console_response(self.prefix, request.path, self.config)
        if answer is None:
            answer = 404, "text/plain; charset=utf-8", b"not found\n", {}
        status, content_type, body, headers = answer
        data = b"" if request.method == "HEAD" else body
        connection.respond(HTTPStatus(status), data, {"Content-Type": content_type, **headers})
