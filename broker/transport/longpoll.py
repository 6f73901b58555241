"""HTTP long-poll transport (WAMP spec "HTTP Longpoll Transport") under ``/lp``.

``POST <base>/open`` with ``{"protocols": [...]}`` picks the client's first
supported protocol (``wamp.2.json``, ``wamp.2.msgpack``, ``wamp.2.cbor`` and their
``.batched`` forms) and answers ``{"protocol": ..., "transport": ID}``. The ID is
128 random bits: it is the capability to act as that session, so it is never
logged in full. Then, for that ID:

- ``POST <base>/ID/send``: the body is one message (batched: JSON messages each
  followed by ``\\x1e``; msgpack/CBOR messages each after a 4-octet length); 204.
- ``POST <base>/ID/receive``: answered with the next message (batched: every
  waiting message) as soon as there is one, or 204 with no body after
  ``longpoll_receive_timeout`` seconds (below Autobahn|JS's 12 s request timeout).
- ``POST <base>/ID/close``: the session ends; 204.

An unknown or expired ID gets 404, a body over ``max_message_size`` 413, a
message that does not decode ends the session as on any transport. Messages
waiting for a receive are bounded by ``max_write_buffer`` (a slow consumer is
dropped); a session with no receive for ``longpoll_session_timeout`` seconds is
closed. Browsers from the configured ``allowed_origins`` get CORS headers (any
Origin when none is configured); others get 403. The cache-busting query
(``?x=…``) is ignored.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import struct
from http import HTTPStatus
from typing import TYPE_CHECKING

from broker.core.interfaces import EncodeCache
from protocol_spec.errors import CloseCode
from protocol_spec.messages import Message
from protocol_spec.serializers import Serializer, by_subprotocol

from .peer import SessionHub, WampPeer, peer_address

if TYPE_CHECKING:
    from .http import HttpConnection, HttpRequest

__all__ = ["LongPoll", "LongPollPeer", "LongPollQueue"]

log = logging.getLogger(__name__)

_BATCHED = ".batched"
_SEPARATOR = b"\x1e"
_LENGTH = struct.Struct("!I")
_SWEEP_INTERVAL = 1.0


class LongPollQueue:
    """A session's outgoing messages until a ``receive`` takes them (an ``OutgoingBuffer``)."""

    __slots__ = ("items", "size", "wake")

    def __init__(self) -> None:
        self.items: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.wake: HttpConnection | None = None  # the parked receive, if any

    def write(self, data: bytes) -> None:
        self.items.append(data)
        self.size += len(data)

    def get_write_buffer_size(self) -> int:
        return self.size

    def take(self, batched: bool) -> list[bytes]:
        """The next message, or every waiting message when batched."""
        if not self.items:
            return []
        taken = list(self.items) if batched else [self.items.popleft()]
        if batched:
            self.items.clear()
        self.size -= sum(len(item) for item in taken)
        return taken


class LongPollPeer(WampPeer):
    """The core's ``Peer`` for one long-poll transport."""

    __slots__ = ("batched", "cors", "last_poll", "owner", "queue", "receive_timer", "transport_id")

    kind = "longpoll"
    keepalive = False  # liveness: a receive at least every longpoll_session_timeout

    def __init__(
        self,
        owner: LongPoll,
        serializer: Serializer,
        address: str,
        transport_id: str,
        batched: bool,
    ) -> None:
        super().__init__(owner.hub, serializer, address)
        self.owner = owner
        self.transport_id = transport_id
        self.batched = batched
        self.queue = LongPollQueue()
        self.buffer = self.queue
        self.last_poll = asyncio.get_running_loop().time()
        self.receive_timer: asyncio.TimerHandle | None = None
        self.cors: dict[str, str] = {}  # CORS headers for the parked receive's answer

    def frame(self, payload: bytes) -> bytes:
        return payload

    def send(self, message: Message, cache: EncodeCache | None = None) -> bool:
        """Queue the message; answer the parked receive, if any."""
        sent = super().send(message, cache)
        if self.queue.items and self.queue.wake is not None:
            self.owner.deliver(self)
        return sent

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End once the waiting messages (ABORT, GOODBYE) were received."""
        if self._closing is None:
            self._closing = (code, reason)
        if not self.queue.items:
            self.end_soon(reason or "closed")

    def close_slow(self) -> None:
        self.queue.items.clear()
        self.queue.size = 0
        self.end_soon("slow consumer")

    def end_soon(self, detail: str) -> None:
        """End the session on the next loop turn."""
        # Not from inside the router's call (a fan-out may be iterating its subscribers).
        asyncio.get_running_loop().call_soon(self.owner.end, self, detail)


class LongPoll:
    """The long-poll sessions of this node, by transport ID."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub
        settings = hub.settings
        self.base = (settings.longpoll_path or "/lp").rstrip("/")
        self.sessions: dict[str, LongPollPeer] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        origins = settings.allowed_origins
        self._origins = frozenset(origins) if origins else None

    # --- requests -------------------------------------------------------------------------
    def handle(self, request: HttpRequest, conn: HttpConnection) -> None:
        """Answer one request under the base path."""
        origin = request.headers.get("origin")
        cors: dict[str, str] = {}
        if origin is not None:
            if self._origins is not None and origin not in self._origins:
                conn.respond(HTTPStatus.FORBIDDEN, b"origin not allowed\n")
                return
            cors = {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            }
        if request.method == "OPTIONS":  # CORS preflight
            cors["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            cors["Access-Control-Allow-Headers"] = request.headers.get(
                "access-control-request-headers", "content-type"
            )
            cors["Access-Control-Max-Age"] = "86400"
            conn.respond(HTTPStatus.NO_CONTENT, b"", cors)
            return
        if request.method != "POST":
            conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"use POST\n", {"Allow": "POST", **cors})
            return
        parts = request.path[len(self.base) + 1 :].split("/")
        if parts == ["open"]:
            self._open(request, conn, cors)
            return
        peer = self.sessions.get(parts[0]) if len(parts) == 2 else None
        if peer is None:
            conn.respond(HTTPStatus.NOT_FOUND, b"no such long-poll transport\n", cors)
            return
        action = parts[1]
        peer.last_poll = asyncio.get_running_loop().time()
        if action == "send":
            self._send(peer, request.body, conn, cors)
        elif action == "receive":
            self._receive(peer, conn, cors)
        elif action == "close":
            self.end(peer, "closed by the client")
            conn.respond(HTTPStatus.NO_CONTENT, b"", cors)
        else:
            conn.respond(HTTPStatus.NOT_FOUND, b"no such long-poll action\n", cors)

    def _open(self, request: HttpRequest, conn: HttpConnection, cors: dict[str, str]) -> None:
        try:
            offered = json.loads(request.body)["protocols"]
            if not isinstance(offered, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            conn.respond(HTTPStatus.BAD_REQUEST, b'expected {"protocols": [...]}\n', cors)
            return
        chosen = next((p for p in offered if isinstance(p, str) and _serializer(p)), None)
        if chosen is None:
            conn.respond(HTTPStatus.BAD_REQUEST, b"no supported protocol offered\n", cors)
            return
        if self.hub.full:
            conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, b"too many sessions\n", cors)
            return
        serializer = _serializer(chosen)
        assert serializer is not None
        transport_id = secrets.token_urlsafe(16)
        address = peer_address(conn.transport) if conn.transport else "unknown"
        peer = LongPollPeer(self, serializer, address, transport_id, chosen.endswith(_BATCHED))
        self.sessions[transport_id] = peer
        self.hub.open(peer)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        body = json.dumps({"protocol": chosen, "transport": transport_id}).encode()
        conn.respond(HTTPStatus.OK, body, {"Content-Type": "application/json", **cors})

    def _send(
        self, peer: LongPollPeer, body: bytes, conn: HttpConnection, cors: dict[str, str]
    ) -> None:
        try:
            messages = _split(body, peer.serializer, peer.batched)
        except ValueError as exc:
            conn.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode(), cors)
            return
        for message in messages:
            peer.receive(message)
        conn.respond(HTTPStatus.NO_CONTENT, b"", cors)

    def _receive(self, peer: LongPollPeer, conn: HttpConnection, cors: dict[str, str]) -> None:
        queue = peer.queue
        previous = queue.wake
        if previous is not None:  # one receive at a time: the older one ends empty
            self._answer(peer, previous, [])
        queue.wake = conn
        conn.on_lost = lambda: self._lost(peer, conn)
        peer.cors = cors
        if queue.items:
            self.deliver(peer)
            return
        loop = asyncio.get_running_loop()
        peer.receive_timer = loop.call_later(
            self.hub.settings.longpoll_receive_timeout, self._answer, peer, conn, []
        )

    # --- answers --------------------------------------------------------------------------
    def deliver(self, peer: LongPollPeer) -> None:
        """Answer the parked receive with what is waiting."""
        conn = peer.queue.wake
        if conn is not None:
            self._answer(peer, conn, peer.queue.take(peer.batched))

    def _answer(self, peer: LongPollPeer, conn: HttpConnection, items: list[bytes]) -> None:
        if peer.queue.wake is conn:
            peer.queue.wake = None
        if peer.receive_timer is not None:
            peer.receive_timer.cancel()
            peer.receive_timer = None
        peer.last_poll = asyncio.get_running_loop().time()
        cors = peer.cors
        if not items:
            conn.respond(HTTPStatus.NO_CONTENT, b"", cors)
        else:
            body = _join(items, peer.serializer, peer.batched)
            kind = "application/json" if not peer.serializer.binary else "application/octet-stream"
            conn.respond(HTTPStatus.OK, body, {"Content-Type": kind, **cors})
        if peer.closing and not peer.queue.items:
            peer.end_soon("closed")

    def _lost(self, peer: LongPollPeer, conn: HttpConnection) -> None:
        """The client dropped a parked receive: the messages stay queued."""
        if peer.queue.wake is conn:
            peer.queue.wake = None
            if peer.receive_timer is not None:
                peer.receive_timer.cancel()
                peer.receive_timer = None

    # --- session end ----------------------------------------------------------------------
    def end(self, peer: LongPollPeer, detail: str) -> None:
        """Forget the transport ID and detach the session."""
        if self.sessions.pop(peer.transport_id, None) is None:
            return
        conn = peer.queue.wake
        if conn is not None:
            self._answer(peer, conn, peer.queue.take(True))
        if peer.receive_timer is not None:
            peer.receive_timer.cancel()
            peer.receive_timer = None
        self.hub.closed(peer, f"long-poll {detail}")

    def close_all(self) -> None:
        """End every long-poll session (the server is closing)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for peer in list(self.sessions.values()):
            self.end(peer, "server closing")

    def _sweep(self) -> None:
        """Close sessions whose client stopped polling."""
        self._sweeper = None
        if not self.sessions:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = self.hub.settings.longpoll_session_timeout
        for peer in list(self.sessions.values()):
            if peer.queue.wake is None and now - peer.last_poll > timeout:
                log.info("long-poll session from %s timed out", peer.transport_info["peer"])
                self.end(peer, "timed out")
        self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)


def _serializer(protocol: str) -> Serializer | None:
    name = protocol[: -len(_BATCHED)] if protocol.endswith(_BATCHED) else protocol
    try:
        return by_subprotocol(name)
    except KeyError:
        return None


def _split(body: bytes, serializer: Serializer, batched: bool) -> list[bytes]:
    """The messages of a ``send`` body."""
    if not batched:
        return [body]
    if not serializer.binary:
        return [part for part in body.split(_SEPARATOR) if part]
    messages, pos = [], 0
    while pos < len(body):
        if len(body) - pos < 4:
            raise ValueError("truncated length prefix")
        (size,) = _LENGTH.unpack_from(body, pos)
        if len(body) - pos - 4 < size:
            raise ValueError("a length prefix promises more bytes than follow")
        messages.append(body[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return messages


def _join(items: list[bytes], serializer: Serializer, batched: bool) -> bytes:
    """The body of a ``receive`` answer."""
    if not batched:
        return items[0]
    if not serializer.binary:
        return b"".join(item + _SEPARATOR for item in items)
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)
