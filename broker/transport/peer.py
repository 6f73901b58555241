"""The WAMP session glue every transport shares: the core's ``Peer`` and the session hub.

A transport (WebSocket, RawSocket, HTTP long-poll) turns bytes into complete WAMP
message payloads and gives each to ``WampPeer.receive``, which applies the rate
limit, decodes and hands the message to the router. In the other direction the
router calls ``WampPeer.send``: the message is encoded and framed once per
(transport framing, serializer) — every recipient of an EVENT shares the bytes
through the core's encode cache — and written straight to the peer's outgoing
buffer (an asyncio transport, or the long-poll queue). A peer whose buffer holds
more than ``max_write_buffer`` bytes is a slow consumer and is closed, so it never
slows the others and memory stays bounded. The core never learns which transport
a peer uses: only ``transport_info`` (meta API) says it.

``SessionHub`` owns what the sessions of all transports share: the router, the
limits, the metrics counters, the set of open peers (``max_sessions``, drain) and
one sweeper timer for the HELLO timeout and keepalive of every peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from typing import Any, Protocol

from broker.config import TransportSettings
from broker.core.interfaces import EncodeCache
from broker.core.router import Router
from broker.core.session import Session, SessionState
from broker.metrics import TransportStats
from protocol_spec import errors
from protocol_spec.errors import RATE_LIMIT_EXCEEDED, CloseCode, ProtocolError
from protocol_spec.messages import Message, MessageType
from protocol_spec.serializers import Serializer

from .encoding import frame_for

__all__ = [
    "CorkedWriter",
    "OutgoingBuffer",
    "SessionHub",
    "WampPeer",
    "peer_address",
    "reset_connection",
]

log = logging.getLogger(__name__)

_SWEEP_INTERVAL = 1.0  # seconds between keepalive / HELLO-timeout sweeps


class OutgoingBuffer(Protocol):
    """Where a peer's frames go: an asyncio transport, or the long-poll queue."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` to be sent."""

    def get_write_buffer_size(self) -> int:
        """Bytes queued and not yet sent."""
        ...


def reset_connection(transport: asyncio.Transport) -> None:
    """Drop a TCP connection with a reset, discarding what the kernel still buffers.

    Used for peers that stopped reading: a graceful close would keep megabytes of
    frames queued for a peer that never takes them.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def peer_address(transport: asyncio.BaseTransport) -> str:
    """``tcp4:host:port`` (or ``tcp6:``, ``unix``) for the meta API and logs."""
    address = transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        family = "tcp6" if ":" in str(address[0]) else "tcp4"
        return f"{family}:{address[0]}:{address[1]}"
    if isinstance(address, str):
        return "unix"
    return "unknown"


class CorkedWriter:
    """A peer's frames of one loop iteration leave in one ``transport.write`` (one syscall).

    ``write`` only queues; the hub flushes every writer written to once the
    callbacks of the current iteration ran (one ``call_soon`` per iteration for all
    peers). A fan-out of several events, or several INVOCATIONs for one callee,
    costs one send per recipient instead of one per message. Whoever writes to the
    transport directly (control frames, close) calls ``flush`` first, so the order
    of bytes on the wire is the order of the writes.
    """

    __slots__ = ("_hub", "_pending", "_queued", "_size", "transport")

    def __init__(self, hub: SessionHub, transport: asyncio.WriteTransport) -> None:
        self._hub = hub
        self.transport = transport
        self._pending: list[bytes] = []
        self._size = 0
        self._queued = 0  # the transport's own buffer when this iteration's first write came

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the flush at the end of this loop iteration."""
        if not self._pending:
            self._queued = self.transport.get_write_buffer_size()
            self._hub.cork(self)
        self._pending.append(data)
        self._size += len(data)

    def get_write_buffer_size(self) -> int:
        """Bytes queued here and in the transport (as of this iteration's first write)."""
        return self._size + self._queued

    def flush(self) -> None:
        """Write what is queued, now."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)


class WampPeer:
    """The core's ``Peer`` for one transport connection, and its incoming side.

    Subclasses say how a payload is framed (``frame``), how the connection is
    closed (``close``, ``close_slow``) and how a keepalive probe is sent (``ping``,
    ``ping_failed``); they set ``buffer`` before the session is attached.
    """

    __slots__ = (
        "_bucket",
        "_closing",
        "_last",
        "buffer",
        "cache_key",
        "calls_started",
        "heard",
        "hub",
        "last_seen",
        "max_write_buffer",
        "opened_at",
        "ping_sent",
        "serializer",
        "session",
        "slow",
        "stats",
        "transport_info",
    )

    kind = "transport"
    """The transport's name in ``transport_info`` and in the encode cache key."""
    keepalive = True
    """False for transports whose liveness is checked otherwise (long-poll)."""

    def __init__(self, hub: SessionHub, serializer: Serializer, address: str) -> None:
        self.hub = hub
        self.stats = hub.stats
        self.buffer: OutgoingBuffer | None = None
        self.serializer = serializer
        self.cache_key = f"{self.kind}:{serializer.name}"
        self.calls_started: dict[int, float] = {}  # CALL request id -> arrival (metrics)
        self.max_write_buffer = hub.settings.max_write_buffer
        self._closing: tuple[int, str] | None = None
        self.slow = False
        self.session: Session | None = None
        self._bucket = hub.burst  # token bucket for the message rate limit
        self._last = time.monotonic()
        self.last_seen = 0.0  # loop time the sweeper last saw ``heard`` (keepalive)
        self.heard = False  # bytes arrived since the last sweep (set by the connection)
        self.opened_at = 0.0
        self.ping_sent = False
        self.transport_info: dict[str, Any] = {
            "type": self.kind,
            "protocol": serializer.subprotocol,
            "peer": address,
        }

    @property
    def closing(self) -> bool:
        """True once a close was requested or the connection started closing."""
        return self._closing is not None

    # --- outgoing ---------------------------------------------------------------------
    def send(self, message: Message, cache: EncodeCache | None = None) -> bool:
        """Frame (once per serializer and framing when a cache is shared) and write.

        Returns False only when this peer's serializer (or framing) cannot carry the
        message (``encoding.frame_for``: logged once, never raised); True otherwise,
        also when the message is dropped because the connection is closing.
        """
        buffer = self.buffer
        if self._closing is not None or buffer is None:
            return True
        frame = frame_for(self.serializer, message, cache, self.frame, self.cache_key)
        if frame is None:
            return False
        buffer.write(frame)
        if buffer.get_write_buffer_size() > self.max_write_buffer:
            self._overflow()
            return True
        kind = message.TYPE
        self.stats.messages_out[kind] += 1
        if kind == MessageType.RESULT or kind == MessageType.ERROR:  # call latency, errors
            self.stats.replied(self.calls_started, message)
        return True

    def frame(self, payload: bytes) -> bytes:
        """The bytes that carry one message payload on this transport."""
        return payload

    def _overflow(self) -> None:
        buffer = self.buffer
        log.warning(
            "closing slow consumer %s: %d bytes waiting to be sent",
            self.transport_info["peer"],
            buffer.get_write_buffer_size() if buffer is not None else 0,
        )
        self.slow = True
        self._closing = (CloseCode.POLICY_VIOLATION, errors.SLOW_CONSUMER)
        self.close_slow()

    def close_slow(self) -> None:
        """Close a peer that does not read (its buffer is over the bound)."""
        raise NotImplementedError

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Flush what was sent, then close the transport."""
        raise NotImplementedError

    def ping(self) -> None:
        """Send a keepalive probe; any bytes received count as the answer."""

    def ping_failed(self) -> None:
        """The peer did not answer the keepalive probe in time: close it."""
        self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def mark_closing(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The connection is closing (from either side): send nothing more."""
        if self._closing is None:
            self._closing = (code, reason)

    # --- incoming ---------------------------------------------------------------------
    def receive(self, data: bytes | str) -> None:
        """Handle one complete message payload: rate limit, decode, route."""
        session = self.session
        if self._closing is not None or session is None:
            return  # the session is over: drop what the peer still sends
        hub = self.hub
        router = hub.router
        rate = hub.rate
        if rate:
            now = time.monotonic()
            tokens = min(hub.burst, self._bucket + (now - self._last) * rate)
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

    def protocol_violation(self, reason: str) -> None:
        """The peer broke the transport's framing: ABORT (if still possible) and close."""
        session = self.session
        if session is not None:
            self.hub.router.protocol_violation(session, reason)
        else:
            self.close(CloseCode.PROTOCOL_ERROR, "protocol violation")


class SessionHub:
    """The open sessions of every transport, their limits, counters and sweeper."""

    def __init__(self, router: Router, settings: TransportSettings) -> None:
        self.router = router
        self.settings = settings
        self.stats = TransportStats()
        self.peers: set[WampPeer] = set()
        self.transports: set[asyncio.Transport] = set()
        """Every open connection, sessions or not (closed by ``abort_all``)."""
        self.slow_consumers = 0
        self.burst = float(settings.message_burst)
        self.rate = settings.message_rate
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Event | None = None
        self._corked: list[CorkedWriter] = []
        self._flush_scheduled = False

    def cork(self, writer: CorkedWriter) -> None:
        """Flush ``writer`` once this loop iteration's callbacks ran."""
        self._corked.append(writer)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        corked, self._corked = self._corked, []
        for writer in corked:
            writer.flush()

    @property
    def full(self) -> bool:
        """True when ``max_sessions`` sessions are open on this node."""
        return len(self.peers) >= self.settings.max_sessions

    def open(self, peer: WampPeer) -> Session:
        """Attach ``peer`` to the router: its session now waits for HELLO."""
        loop = asyncio.get_running_loop()
        session = self.router.attach(peer)
        peer.session = session
        peer.last_seen = peer.opened_at = loop.time()
        self.peers.add(peer)
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        log.info(
            "session %d opened from %s (%s over %s)",
            session.id,
            peer.transport_info["peer"],
            peer.serializer.subprotocol,
            peer.kind,
        )
        return session

    def closed(self, peer: WampPeer, detail: object = None) -> None:
        """The peer's transport is gone: detach its session (once)."""
        peer.mark_closing()
        session = peer.session
        if session is None:
            return
        peer.session = None
        self.router.detach(session)
        self.peers.discard(peer)
        if peer.slow:
            self.slow_consumers += 1
        log.info("session %d closed (%s)", session.id, detail)
        if not self.peers and self._empty is not None:
            self._empty.set()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until every session closed, at most ``timeout`` seconds."""
        if not self.peers:
            return True
        self._empty = asyncio.Event()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def abort_all(self) -> None:
        """Drop every open connection at once (the end of a drain)."""
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()

    def _sweep(self) -> None:
        """Once a second: HELLO timeouts, keepalive pings, and peers that stopped answering.

        One timer for every session instead of a task and a timer per connection.
        A peer idle for ``ping_interval`` gets a ping; one still silent
        ``ping_timeout`` later is closed (WebSocket: 1011), as websockets'
        keepalive does.
        """
        self._sweeper = None
        if not self.peers:
            return
        settings = self.settings
        interval, timeout = settings.ping_interval, settings.ping_timeout
        loop = asyncio.get_running_loop()
        now = loop.time()
        for peer in list(self.peers):
            if peer.closing:
                continue
            session = peer.session
            if (
                session is not None
                and session.state < SessionState.ESTABLISHED
                and now - peer.opened_at >= settings.hello_timeout
            ):
                self.router.abort(
                    session,
                    errors.TIMEOUT,
                    f"no WELCOME within {settings.hello_timeout:g} s",
                    CloseCode.POLICY_VIOLATION,
                )
                continue
            if peer.heard:
                peer.heard = False
                peer.last_seen = now
                peer.ping_sent = False
            if not interval or not peer.keepalive:
                continue
            idle = now - peer.last_seen
            if peer.ping_sent and timeout and idle >= interval + timeout:
                peer.ping_failed()
            elif not peer.ping_sent and idle >= interval:
                peer.ping_sent = True
                peer.ping()
        self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
