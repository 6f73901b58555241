"""WebSocket transport: websockets (≥ 14, asyncio API) in front of the sans-I/O router.

One connection = one ``WebSocketPeer`` (the core's ``Peer``) with a bounded
outbound queue drained by a single writer task. Frames are decoded here and
handed to the router; a frame that does not decode ends the session with ABORT
``wamp.error.protocol_violation``. A bug in the router while handling one message
is logged once with its traceback and closes only that connection (code 1011).

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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol

from broker.core.interfaces import EncodeCache
from broker.core.router import RATE_LIMIT_EXCEEDED, Router
from broker.core.session import Session, SessionState
from broker.metrics import TransportStats
from protocol_spec import errors
from protocol_spec.errors import ProtocolError
from protocol_spec.messages import Message
from protocol_spec.serializers import SUBPROTOCOLS, Serializer, by_subprotocol

__all__ = ["TransportSettings", "WebSocketPeer", "WebSocketTransport"]

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 1008  # policy violation: the peer does not read fast enough
CLOSE_POLICY = 1008  # rate limit, HELLO timeout
CLOSE_TRY_AGAIN_LATER = 1013  # the node has max_sessions connections


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Limits and timings of the WebSocket listener."""

    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/ws"
    max_message_size: int = 4 * 1024 * 1024
    max_queue: int = 10_000
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    hello_timeout: float = 10.0
    """Seconds from the WebSocket opening to WELCOME (HELLO and authentication)."""
    max_sessions: int = 50_000
    """Open connections per node; more are refused with HTTP 503."""
    message_rate: float = 50_000.0
    """Sustained messages per second per session (token bucket refill); 0 disables."""
    message_burst: int = 100_000
    """Token bucket size: messages a session may send above the rate at once."""
    allowed_origins: tuple[str, ...] = ()
    """Browser Origins allowed to connect (empty: any); clients sending no Origin pass."""
    tls_cert: str | None = None
    """PEM certificate chain file: serve wss:// when set (with ``tls_key``)."""
    tls_key: str | None = None

    @property
    def scheme(self) -> str:
        """``wss`` with TLS, ``ws`` without."""
        return "wss" if self.tls_cert else "ws"


class WebSocketPeer:
    """The core's ``Peer`` for one WebSocket connection."""

    __slots__ = (
        "_closing",
        "_queue",
        "_wakeup",
        "_writer",
        "_ws",
        "calls_started",
        "max_queue",
        "serializer",
        "slow",
        "stats",
        "transport_info",
    )

    def __init__(
        self,
        ws: ServerConnection,
        serializer: Serializer,
        max_queue: int,
        stats: TransportStats | None = None,
    ) -> None:
        self._ws = ws
        self.stats = stats if stats is not None else TransportStats()
        self.calls_started: dict[int, float] = {}  # CALL request id -> arrival (metrics)
        self.serializer = serializer
        self.max_queue = max_queue
        self._queue: deque[str | bytes] = deque()
        self._wakeup = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.slow = False
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

    def send(self, message: Message, cache: EncodeCache | None = None) -> None:
        """Encode (once per serializer when a cache is shared) and queue a message."""
        if self._closing is not None:
            return
        name = self.serializer.name
        if cache is not None:
            data = cache.get(name)
            if data is None:
                data = cache[name] = self._encode(message)
        else:
            data = self._encode(message)
        if data is None:
            return
        if len(self._queue) >= self.max_queue:
            self._overflow()
            return
        self._queue.append(data)
        self._wakeup.set()
        kind = message.TYPE
        self.stats.messages_out[kind] += 1
        if kind == 50 or kind == 8:  # RESULT, ERROR: call latency and errors by URI
            self.stats.replied(self.calls_started, message)

    def _encode(self, message: Message) -> str | bytes | None:
        try:
            return self.serializer.encode(message)
        except (TypeError, ValueError, OverflowError) as exc:
            # A payload another serializer accepted that this one cannot carry
            # (e.g. NaN to JSON). Drop it for this peer only.
            log.warning(
                "cannot encode %s for %s: %s", type(message).__name__, self.serializer.name, exc
            )
            return None

    def _overflow(self) -> None:
        log.warning(
            "closing slow consumer %s: %d messages queued",
            self.transport_info["peer"],
            len(self._queue),
        )
        self.slow = True
        self._queue.clear()
        self._closing = (CLOSE_SLOW_CONSUMER, errors.SLOW_CONSUMER)
        # The writer may be blocked on a peer that stopped reading: stop it and
        # close directly; websockets gives up on the handshake after close_timeout.
        if self._writer is not None:
            self._writer.cancel()
        self._writer = asyncio.ensure_future(self._close_stalled())

    async def _close_stalled(self) -> None:
        """Send close 1008 if the peer still takes bytes; else drop the TCP connection."""
        ws = self._ws
        try:
            await asyncio.wait_for(
                ws.close(CLOSE_SLOW_CONSUMER, errors.SLOW_CONSUMER), ws.close_timeout or 5.0
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

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Flush the queue, then close the WebSocket with ``code``."""
        if self._closing is None:
            self._closing = (code, reason)
            self._wakeup.set()

    def start_writer(self) -> None:
        """Start the task that drains the outbound queue."""
        self._writer = asyncio.create_task(self._run_writer())

    async def finish(self, timeout: float) -> None:
        """Wait (bounded) for the writer to flush and close; cancel it past ``timeout``."""
        writer = self._writer
        if writer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout)
        except (TimeoutError, asyncio.CancelledError):
            writer.cancel()
        except ConnectionClosed:
            pass

    async def _run_writer(self) -> None:
        """Send queued frames in order until closed."""
        ws = self._ws
        queue = self._queue
        try:
            while True:
                while queue:
                    await ws.send(queue.popleft())
                if self._closing is not None:
                    code, reason = self._closing
                    await ws.close(code, reason[:120])
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
        except ConnectionClosed:
            pass


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
        self.slow_consumers = 0
        self.stats = TransportStats()

    async def start(self) -> None:
        """Bind and start accepting connections."""
        s = self.settings
        origins: list[Origin | None] | None = None
        if s.allowed_origins:
            # clients that send no Origin (non-browsers) are not subject to the check
            origins = [None, *(Origin(o) for o in s.allowed_origins)]
        self.server = await serve(
            self._handle,
            s.host,
            s.port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            max_size=s.max_message_size,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            open_timeout=s.open_timeout,
            close_timeout=s.close_timeout,
            compression=None,
            server_header="wamp-broker",
            origins=origins,
            ssl=_tls_context(s),
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
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
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

    async def _handle(self, ws: ServerConnection) -> None:
        serializer = by_subprotocol(ws.subprotocol or "")
        peer = WebSocketPeer(ws, serializer, self.settings.max_queue, self.stats)
        router = self.router
        session = router.attach(peer)
        self.connections.add(ws)
        peer.start_writer()
        hello_timer = asyncio.get_running_loop().call_later(
            self.settings.hello_timeout, self._hello_expired, session
        )
        if len(self.connections) > self.settings.max_sessions:  # raced past the HTTP check
            router.abort(session, errors.UNAVAILABLE, "too many sessions", CLOSE_TRY_AGAIN_LATER)
        log.info(
            "session %d opened from %s (%s)",
            session.id,
            peer.transport_info["peer"],
            serializer.subprotocol,
        )
        try:
            await self._read_loop(ws, peer, serializer, session)
        finally:
            hello_timer.cancel()
            router.detach(session)
            if not peer.closing:
                peer.close(1000, "")
            await peer.finish(self.settings.close_timeout + 1)
            self.connections.discard(ws)
            if peer.slow:
                self.slow_consumers += 1
            log.info("session %d closed (code %s)", session.id, ws.close_code)

    def _hello_expired(self, session: Session) -> None:
        if session.state < SessionState.ESTABLISHED:
            self.router.abort(
                session,
                errors.TIMEOUT,
                f"no WELCOME within {self.settings.hello_timeout:g} s",
                CLOSE_POLICY,
            )

    async def _read_loop(
        self, ws: ServerConnection, peer: WebSocketPeer, serializer: Serializer, session: Session
    ) -> None:
        router = self.router
        decode = serializer.decode
        received = self.stats.messages_in
        # token bucket: ``rate`` tokens/s up to ``burst``; one per message; empty → ABORT
        rate = self.settings.message_rate
        burst = float(self.settings.message_burst)
        tokens = burst
        last = time.monotonic()
        try:
            async for data in ws:
                if rate:
                    now = time.monotonic()
                    tokens = min(burst, tokens + (now - last) * rate)
                    last = now
                    if tokens < 1.0:
                        log.warning("session %d exceeded its message rate: closing", session.id)
                        router.abort(
                            session,
                            RATE_LIMIT_EXCEEDED,
                            "message rate limit exceeded",
                            CLOSE_POLICY,
                        )
                        break
                    tokens -= 1.0
                try:
                    message = decode(data)
                except ProtocolError as exc:
                    router.protocol_violation(session, str(exc))
                    break
                received[message.TYPE] += 1
                if message.TYPE == 48:  # CALL: start the latency clock
                    TransportStats.start_call(peer.calls_started, message.request)
                try:
                    router.receive(session, message)
                except Exception:
                    log.exception(
                        "internal error while handling a message of session %d", session.id
                    )
                    peer.close(1011, "internal error")
                    break
                if peer.closing:
                    break
        except ConnectionClosed:
            return
        await self._discard_until_closed(ws)

    async def _discard_until_closed(self, ws: ServerConnection) -> None:
        """After the router closed a session, drop what the peer still sends.

        Frames the peer sent before seeing our close would otherwise sit unread
        and hide its closing handshake until ``close_timeout``.
        """
        try:
            async with asyncio.timeout(self.settings.close_timeout):
                async for _ in ws:
                    pass
        except (TimeoutError, ConnectionClosed):
            pass


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
