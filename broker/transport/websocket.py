"""WebSocket transport: websockets (≥ 14, asyncio API) in front of the sans-I/O router.

websockets does the HTTP handshake, ping/pong and the closing handshake. Data frames
take a shorter road than ``async for message in connection``: ``WampConnection``
(given to ``serve`` through its documented ``create_connection`` hook) hands every
complete data frame synchronously to its ``WebSocketPeer`` from ``process_event``,
which decodes it and calls the router; no task, future or queue per message.
Outgoing messages are framed once per serializer (all recipients of an EVENT share
the bytes through the core's encode cache) and written straight to the transport.

Backpressure: a peer whose transport write buffer grows past ``max_write_buffer``
bytes is a slow consumer: it is closed with 1008 ``wamp.error.slow_consumer`` (and
its TCP connection reset if it does not take the close frame within
``close_timeout``), so it never slows the others and memory stays bounded. Incoming
data is processed as it arrives, so a fast publisher is held back by TCP itself.

A frame that does not decode ends the session with ABORT
``wamp.error.protocol_violation``. A bug in the router while handling one message is
logged once with its traceback and closes only that connection (code 1011).

Security limits enforced here (protocol_spec/security.md): TLS (``tls_cert``/``tls_key``),
allowed browser Origins (HTTP 403), ``max_sessions`` per node (HTTP 503), the
``hello_timeout`` from connection to WELCOME, a per-session token bucket on incoming
messages (``message_rate``/``message_burst``; an empty bucket ABORTs the session), and
``max_message_size`` (close 1009, by websockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol

from broker.config import TransportSettings
from broker.core.interfaces import EncodeCache
from broker.core.router import Router
from broker.core.session import Session, SessionState
from broker.metrics import TransportStats
from broker.transport.encoding import frame_for
from protocol_spec import errors
from protocol_spec.errors import RATE_LIMIT_EXCEEDED, CloseCode, ProtocolError
from protocol_spec.messages import Message, MessageType
from protocol_spec.serializers import SUBPROTOCOLS, Serializer, by_subprotocol

__all__ = ["TransportSettings", "WebSocketPeer", "WebSocketTransport"]

log = logging.getLogger(__name__)

_SWEEP_INTERVAL = 1.0  # seconds between keepalive / HELLO-timeout sweeps


def _frame(payload: bytes, opcode: int) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 §5.2) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class _NoMessages:
    """Stands in for websockets' per-connection message queue, which we never read."""

    def put(self, frame: Frame) -> None:  # pragma: no cover - data frames go to the peer
        raise RuntimeError("data frames are delivered to the WAMP peer")

    def close(self) -> None:
        pass


_NO_MESSAGES = _NoMessages()
_NO_HEADERS = Headers()


class WampConnection(ServerConnection):
    """A ``ServerConnection`` that hands complete data frames to its ``WebSocketPeer``.

    The peer is created at the first data frame or when the handler starts, whichever
    comes first, so no frame can slip into websockets' own message queue. Control
    frames (ping, pong, close) still go to websockets.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer: WebSocketPeer | None = None
        self.open_peer: Callable[[WampConnection], WebSocketPeer] | None = None
        self._fragments: list[bytes] | None = None
        self._fragmented_text = False
        self.last_seen = 0.0  # loop time of the last frame received (keepalive sweeper)
        self.opened_at = 0.0
        self.ping_sent = False

    def release_handshake(self) -> None:
        """Drop what only the handshake needed, to keep idle connections small.

        The request and response keep their path and status but lose their header
        maps, and websockets' message queue (never used: data frames come to the
        peer) is replaced by a shared stand-in.
        """
        if self.request is not None:
            self.request = Request(self.request.path, _NO_HEADERS)
        if self.response is not None:
            self.response = Response(
                self.response.status_code, self.response.reason_phrase, _NO_HEADERS
            )
        self.recv_messages = _NO_MESSAGES  # type: ignore[assignment]

    def process_event(self, event: Any) -> None:
        if self.request is None or not isinstance(event, Frame):
            super().process_event(event)
            return
        self.last_seen = self.loop.time()
        self.ping_sent = False
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if event.fin:
                self._deliver(bytes(event.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(event.data)]
                self._fragmented_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            # websockets checks continuation order and the total size (max_size).
            if self._fragments is not None:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    data = b"".join(self._fragments)
                    self._fragments = None
                    self._deliver(data, self._fragmented_text)
        else:
            super().process_event(event)

    def _deliver(self, data: bytes, text: bool) -> None:
        peer = self.peer
        if peer is None:
            if self.open_peer is None:
                return
            peer = self.open_peer(self)
        peer.receive(data, text)


class WebSocketPeer:
    """The core's ``Peer`` for one WebSocket connection, and its incoming side."""

    __slots__ = (
        "_bucket",
        "_closer",
        "_closing",
        "_last",
        "_opcode",
        "_transport",
        "_ws",
        "calls_started",
        "max_write_buffer",
        "owner",
        "serializer",
        "session",
        "slow",
        "stats",
        "transport_info",
    )

    def __init__(
        self, ws: ServerConnection, serializer: Serializer, owner: WebSocketTransport
    ) -> None:
        self._ws = ws
        self._transport = ws.transport
        self.owner = owner
        self.stats = owner.stats
        self.calls_started: dict[int, float] = {}  # CALL request id -> arrival (metrics)
        self.serializer = serializer
        self._opcode = Opcode.BINARY if serializer.binary else Opcode.TEXT
        self.max_write_buffer = owner.settings.max_write_buffer
        self._closing: tuple[int, str] | None = None
        self._closer: asyncio.Future[None] | None = None
        self.slow = False
        self.session: Session | None = None
        self._bucket = owner.burst  # token bucket for the message rate limit
        self._last = time.monotonic()
        address = ws.remote_address
        self.transport_info: dict[str, Any] = {
            "type": "websocket",
            "protocol": serializer.subprotocol,
            "peer": f"tcp4:{address[0]}:{address[1]}" if address else "unknown",
        }

    @property
    def closing(self) -> bool:
        """True once a close was requested (by the router or by overflow)."""
        return self._closing is not None

    # --- outgoing ---------------------------------------------------------------------
    def send(self, message: Message, cache: EncodeCache | None = None) -> bool:
        """Frame (once per serializer when a cache is shared) and write a message.

        Returns False only when this peer's serializer cannot carry the message
        (``encoding.frame_for``: logged once, never raised); True otherwise, also when
        the message is dropped because the connection is closing.
        """
        if self._closing is not None or self._ws.protocol.state is not State.OPEN:
            return True
        frame = frame_for(self.serializer, message, cache, self._frame)
        if frame is None:
            return False
        transport = self._transport
        transport.write(frame)
        if transport.get_write_buffer_size() > self.max_write_buffer:
            self._overflow()
            return True
        kind = message.TYPE
        self.stats.messages_out[kind] += 1
        if kind == MessageType.RESULT or kind == MessageType.ERROR:  # call latency, errors
            self.stats.replied(self.calls_started, message)
        return True

    def _frame(self, payload: bytes) -> bytes:
        return _frame(payload, self._opcode)

    def _overflow(self) -> None:
        log.warning(
            "closing slow consumer %s: %d bytes waiting to be sent",
            self.transport_info["peer"],
            self._transport.get_write_buffer_size(),
        )
        self.slow = True
        self._closing = (CloseCode.POLICY_VIOLATION, errors.SLOW_CONSUMER)
        self._closer = asyncio.ensure_future(self._close_stalled())

    async def _close_stalled(self) -> None:
        """Send close 1008 if the peer still takes bytes; else reset the TCP connection."""
        ws = self._ws
        try:
            await asyncio.wait_for(
                ws.close(CloseCode.POLICY_VIOLATION, errors.SLOW_CONSUMER), ws.close_timeout or 5.0
            )
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            # Reset rather than close: the kernel would otherwise keep trying to
            # deliver megabytes of buffered frames to a peer that does not read.
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the WebSocket with ``code`` after what was already sent."""
        if self._closing is None:
            self._closing = (code, reason)
            self._closer = asyncio.ensure_future(self._close(code, reason[:120]))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(code, reason)

    async def finish(self, timeout: float) -> None:
        """Wait (bounded) for a close in progress to complete."""
        closer = self._closer
        if closer is None or closer.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(closer), timeout)
        except (TimeoutError, asyncio.CancelledError, ConnectionClosed):
            closer.cancel()

    # --- incoming ---------------------------------------------------------------------
    def receive(self, data: bytes, text: bool) -> None:
        """Handle one complete data frame: rate limit, decode, route."""
        session = self.session
        if self._closing is not None or session is None:
            return  # the session is over: drop what the peer still sends
        owner = self.owner
        router = owner.router
        rate = owner.settings.message_rate
        if rate:
            now = time.monotonic()
            tokens = min(owner.burst, self._bucket + (now - self._last) * rate)
            self._last = now
            if tokens < 1.0:
                log.warning("session %d exceeded its message rate: closing", session.id)
                router.abort(
                    session,
                    RATE_LIMIT_EXCEEDED,
                    "message rate limit exceeded",
                    CloseCode.POLICY_VIOLATION,
                )
                return
            self._bucket = tokens - 1.0
        try:
            message = self.serializer.decode(data)
        except ProtocolError as exc:
            router.protocol_violation(session, str(exc))
            return
        kind = message.TYPE
        self.stats.messages_in[kind] += 1
        if kind == MessageType.CALL:  # start the latency clock
            TransportStats.start_call(self.calls_started, message.request)
        try:
            router.receive(session, message)
        except Exception:
            log.exception("internal error while handling a message of session %d", session.id)
            self.close(CloseCode.INTERNAL_ERROR, "internal error")


class WebSocketTransport:
    """Accepts WebSocket connections and runs each as a WAMP session."""

    def __init__(self, router: Router, settings: TransportSettings) -> None:
        self.router = router
        self.settings = settings
        self.server: Server | None = None
        self.connections: set[ServerConnection] = set()
        self.http_routes: dict[str, Callable[[], tuple[int, str, str]]] = {
            "/healthz": lambda: (200, "text/plain; charset=utf-8", "ok\n"),
        }
        self.console: Callable[[str], tuple[int, str, bytes, dict[str, str]] | None] | None = None
        """The web console's HTTP handler (broker.console.http), set by the server."""
        self.slow_consumers = 0
        self.stats = TransportStats()
        self.burst = float(settings.message_burst)
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Start accepting connections on ``sock`` (a listening socket), or bind host:port."""
        s = self.settings
        origins: list[Origin | None] | None = None
        if s.allowed_origins:
            # clients that send no Origin (non-browsers) are not subject to the check
            origins = [None, *(Origin(o) for o in s.allowed_origins)]
        where: dict[str, Any] = {"sock": sock} if sock is not None else {}
        self.server = await serve(
            self._handle,
            None if sock is not None else s.host,
            None if sock is not None else s.port,
            **where,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            max_size=s.max_message_size,
            ping_interval=None,  # keepalive: one sweeper for all connections (_sweep)
            ping_timeout=None,
            open_timeout=s.open_timeout,
            close_timeout=s.close_timeout,
            compression=None,
            server_header="wamp-broker",
            origins=origins,
            ssl=_tls_context(s),
            create_connection=WampConnection,
        )

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self.server is not None
        for sock in self.server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("server has no socket")

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections stay."""
        if self.server is not None:
            self.server.close(close_connections=False)

    async def wait_connections_closed(self, timeout: float) -> bool:
        """Wait until every connection closed, at most ``timeout`` seconds."""
        if not self.connections:
            return True
        waiters = [asyncio.ensure_future(c.wait_closed()) for c in list(self.connections)]
        _done, pending = await asyncio.wait(waiters, timeout=timeout)
        for task in pending:
            task.cancel()
        return not pending

    async def close(self) -> None:
        """Close every connection and the server."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        answer = self.console(path) if self.console is not None else None
        if answer is not None:  # the web console (broker.console.http)
            response = connection.respond(HTTPStatus(answer[0]), "")
            response.body = answer[2]
            headers = {"Content-Type": answer[1], "Content-Length": str(len(answer[2]))}
            for name, value in {**headers, **answer[3]}.items():
                if name in response.headers:
                    del response.headers[name]
                response.headers[name] = value
            return response
        route = self.http_routes.get(path)
        if route is not None:
            status, content_type, body = route()
            response = connection.respond(HTTPStatus(status), body)
            del response.headers["Content-Type"]  # Headers is multi-valued: replace, not add
            response.headers["Content-Type"] = content_type
            return response
        if path != self.settings.path:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"WAMP is served at {self.settings.path}\n"
            )
        if len(self.connections) >= self.settings.max_sessions:
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "too many sessions on this node, retry later\n"
            )
        return None

    def _open_peer(self, ws: WampConnection) -> WebSocketPeer:
        """Create the peer and session of a connection (once)."""
        if ws.peer is not None:
            return ws.peer
        serializer = by_subprotocol(ws.subprotocol or "")
        peer = WebSocketPeer(ws, serializer, self)
        ws.peer = peer
        peer.session = self.router.attach(peer)
        self.connections.add(ws)
        ws.last_seen = ws.loop.time()
        ws.opened_at = ws.last_seen
        ws.release_handshake()
        if self._sweeper is None:
            self._sweeper = ws.loop.call_later(_SWEEP_INTERVAL, self._sweep)
        return peer

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, WampConnection)
        ws.open_peer = self._open_peer
        peer = self._open_peer(ws)
        session = peer.session
        assert session is not None
        router = self.router
        if len(self.connections) > self.settings.max_sessions:  # raced past the HTTP check
            router.abort(
                session, errors.UNAVAILABLE, "too many sessions", CloseCode.TRY_AGAIN_LATER
            )
        log.info(
            "session %d opened from %s (%s)",
            session.id,
            peer.transport_info["peer"],
            peer.serializer.subprotocol,
        )
        try:
            await ws.wait_closed()
        finally:
            router.detach(session)
            peer.session = None
            await peer.finish(self.settings.close_timeout + 1)
            self.connections.discard(ws)
            if peer.slow:
                self.slow_consumers += 1
            log.info("session %d closed (code %s)", session.id, ws.close_code)

    def _sweep(self) -> None:
        """Once a second: HELLO timeouts, keepalive pings, and peers that stopped answering.

        One timer for every connection instead of a task and a timer per connection.
        A connection idle for ``ping_interval`` gets a ping; one still silent
        ``ping_timeout`` later is closed with 1011, as websockets' keepalive does.
        """
        self._sweeper = None
        if not self.connections:
            return
        settings = self.settings
        interval, timeout = settings.ping_interval, settings.ping_timeout
        loop = asyncio.get_running_loop()
        now = loop.time()
        for ws in list(self.connections):
            assert isinstance(ws, WampConnection)
            peer = ws.peer
            if peer is None or peer.closing or ws.protocol.state is not State.OPEN:
                continue
            session = peer.session
            if (
                session is not None
                and session.state < SessionState.ESTABLISHED
                and now - ws.opened_at >= settings.hello_timeout
            ):
                self.router.abort(
                    session,
                    errors.TIMEOUT,
                    f"no WELCOME within {settings.hello_timeout:g} s",
                    CloseCode.POLICY_VIOLATION,
                )
                continue
            if not interval:
                continue
            idle = now - ws.last_seen
            if ws.ping_sent and timeout and idle >= interval + timeout:
                ws.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                ws.send_data()
            elif not ws.ping_sent and idle >= interval:
                ws.protocol.send_ping(b"keepalive")
                ws.send_data()
                ws.ping_sent = True
        self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)


def _tls_context(settings: TransportSettings) -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2+) from the configured PEM files, or None."""
    if not settings.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Pick the client's most preferred WAMP subprotocol; refuse clients offering none."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    raise NegotiationError(
        "no WAMP subprotocol offered; expected one of " + ", ".join(SUBPROTOCOLS)
    )
