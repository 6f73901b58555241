"""HTTP/1.1 on the main port: small routes, long-poll, and the hand-over to WebSocket.

``HttpConnection`` reads request heads (at most ``MAX_HEAD`` bytes, ``open_timeout``
seconds per request) and bodies given by ``Content-Length`` (at most
``max_message_size``; chunked bodies are refused with 411). A ``GET`` for the
WebSocket path is handed, with every byte read so far, to a
``WebSocketConnection`` (websockets' ``ServerProtocol`` checks the upgrade). Other
paths go to the plain routes (``/healthz``, ``/readyz``, ``/metrics``), the
long-poll transport under its base path, or get 404 with a hint. Connections are
kept alive between requests (HTTP/1.1), so a browser's long-poll reuses one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, cast

from .peer import SessionHub
from .websocket import WebSocketConnection

if TYPE_CHECKING:
    from .longpoll import LongPoll

__all__ = ["MAX_HEAD", "HttpApp", "HttpConnection", "HttpRequest", "Route"]

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
"""Bytes of request line and headers; a larger head is answered 431."""
_MAX_HEADERS = 128
_METHOD = re.compile(rb"[A-Z]{1,16}(?: |\Z)")  # what may start a request line

Route = Callable[[], tuple[int, str, str]]
"""A plain HTTP route: returns (status, content type, body)."""


class HttpApp(Protocol):
    """A handler of the requests to one path (the HTTP API, broker/httpapi).

    Registered under an exact path, or under ``prefix/`` for a whole subtree (the web
    console, broker/console).

    It answers, now or later, with ``HttpConnection.respond`` or a stream
    (``start_stream``/``write_chunk``/``end_stream``); the connection reads the next
    request only after that.
    """

    def handle(self, request: HttpRequest, connection: HttpConnection) -> None:
        """Take the request; answer through ``connection``."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed HTTP request; header names are lower case."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""
    path: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", self.target.split("?", 1)[0])


class BadRequest(Exception):
    """The request cannot be parsed: answered with ``status`` and a close."""

    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(method, target, version, headers) of a request head without its blank line."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0") or not target.startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    if len(lines) > _MAX_HEADERS + 1:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return method, target, version, headers


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection on the main port, until it upgrades or closes."""

    def __init__(
        self,
        hub: SessionHub,
        routes: Mapping[str, Route],
        longpoll: LongPoll | None,
        apps: Mapping[str, HttpApp] | None = None,
    ) -> None:
        self.hub = hub
        self.routes = routes
        self.apps = apps or {}
        self.longpoll = longpoll
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a response is pending (long-poll receive)
        self._keep_alive = True
        self.on_lost: Callable[[], None] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self._wait_request()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_HEAD + self.hub.settings.max_message_size:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
            return
        if not self._busy:
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.hub.transports.discard(self.transport)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    # --- requests -------------------------------------------------------------------------
    def _wait_request(self) -> None:
        if self._timer is None and self.transport is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.hub.settings.open_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.close()

    def _process(self) -> None:
        try:
            request = self._next_request()
        except BadRequest as exc:
            self._fail(exc.status, str(exc))
            return
        if request is None or self.transport is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._busy = True
        self._route(request)

    def _next_request(self) -> HttpRequest | None:
        """Parse one complete request off the buffer, or None while bytes are missing."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            first = buffer.find(b"\r\n")
            if first >= 0:
                parse_head(bytes(buffer[:first]))  # fail early on a bad request line
            elif not _METHOD.match(buffer[:17]):
                raise BadRequest(HTTPStatus.BAD_REQUEST, "not an HTTP request")
            if len(buffer) > MAX_HEAD:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
            return None
        if end > MAX_HEAD:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
        method, target, version, headers = parse_head(bytes(buffer[:end]))
        if target.split("?", 1)[0] == self.hub.settings.path:
            self._upgrade()
            return None
        if "transfer-encoding" in headers:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > self.hub.settings.max_message_size:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        start = end + 4
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        connection = headers.get("connection", "").lower()
        self._keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        return HttpRequest(method, target, headers, body)

    def _upgrade(self) -> None:
        """Hand the connection and every byte read so far to the WebSocket protocol."""
        transport = self.transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        data = bytes(self._buffer)
        self._buffer.clear()
        self.transport = None  # this object is done with the connection
        connection = WebSocketConnection(self.hub)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        connection.data_received(data)

    def _route(self, request: HttpRequest) -> None:
        path = request.path
        longpoll = self.longpoll
        if longpoll is not None and path.startswith(longpoll.base + "/"):
            longpoll.handle(request, self)
            return
        app = self.apps.get(path) or _prefix_app(self.apps, path)
        if app is not None:
            app.handle(request, self)
            return
        route = self.routes.get(path)
        if route is None:
            self.respond(
                HTTPStatus.NOT_FOUND,
                f"WAMP is served at {self.hub.settings.path}\n".encode(),
            )
        elif request.method not in ("GET", "HEAD"):
            self.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"use GET\n", {"Allow": "GET, HEAD"})
        else:
            status, content_type, body = route()
            data = b"" if request.method == "HEAD" else body.encode("utf-8")
            self.respond(HTTPStatus(status), data, {"Content-Type": content_type})

    # --- responses ------------------------------------------------------------------------
    def respond(
        self,
        status: HTTPStatus,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        """Send the response to the current request; then read the next one or close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        close = close or not self._keep_alive
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Server: wamp-broker",
            f"Content-Length: {len(body)}",
        ]
        given = headers or {}
        if "Content-Type" not in given:
            lines.append("Content-Type: text/plain; charset=utf-8")
        lines.extend(f"{name}: {value}" for name, value in given.items())
        if close:
            lines.append("Connection: close")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.on_lost = None
        self._busy = False
        if close:
            transport.close()
            return
        self._wait_request()
        if self._buffer:
            self._process()

    def start_stream(self, status: HTTPStatus, headers: Mapping[str, str]) -> None:
        """Begin a chunked response (HTTP/1.1): ``write_chunk`` pieces, then ``end_stream``."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Server: wamp-broker",
            "Transfer-Encoding: chunked",
        ]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def write_chunk(self, data: bytes) -> None:
        """Send one chunk of a streamed response."""
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self) -> None:
        """End a streamed response; then read the next request or close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"0\r\n\r\n")
        self.on_lost = None
        self._busy = False
        if not self._keep_alive:
            transport.close()
            return
        self._wait_request()
        if self._buffer:
            self._process()

    def _fail(self, status: HTTPStatus, text: str) -> None:
        self._buffer.clear()
        self.respond(status, (text + "\n").encode(), close=True)


def _prefix_app(apps: Mapping[str, HttpApp], path: str) -> HttpApp | None:
    """The app registered for a whole subtree: a key ending in ``/`` (e.g. the console)."""
    for key, app in apps.items():
        if key.endswith("/") and (path.startswith(key) or path + "/" == key):
            return app
    return None
