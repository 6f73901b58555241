"""Direct links between nodes, the wire: frames, the hello, TLS, and the two ends.

An *outgoing* link is the connection node X dials to node Y to send Y's call envelopes;
it is Y's *incoming* link from X (broker/cluster/peers.py decides when a link is used).
Frames (protocol_spec/cluster.md, "Direct links between nodes")::

    length (4 bytes, big endian, of kind + body) | kind (1 byte) | body

    H  hello, dialer → acceptor, first frame: msgpack {v, from, to, token}
    A  accepted, acceptor → dialer: the hello checked out (empty; hellos of v 2 only)
    D  data: a msgpack array of inbox envelopes as rows (protocol_spec/cluster_rows.py)
    W  wait, dialer → acceptor: hold the data after this until the ``InboxSwitch`` with
       this key comes through Redis (a node going back from Redis to its link)
    S  sync request, acceptor → dialer: 8 bytes
    Y  sync answer, dialer → acceptor: the same 8 bytes, after all data sent before it
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, cast

import msgpack

from protocol_spec.cluster import PeerRecord
from protocol_spec.cluster_rows import array_header

if TYPE_CHECKING:
    from .peers import PeerLinks

__all__ = [
    "FRAME_BYTES",
    "MACHINE",
    "MAX_FRAME",
    "Incoming",
    "Outgoing",
    "PeerListenError",
    "PeerTLS",
    "Sink",
    "parse_peer_address",
    "reachable",
]

HEADER: Final = struct.Struct(">IB")
"""Frame header: length of kind + body, kind."""
HELLO, ACCEPTED, DATA, WAIT = b"H"[0], b"A"[0], b"D"[0], b"W"[0]
SYNC, SYNCED = b"S"[0], b"Y"[0]
VERSION: Final = 2
"""2: the acceptor answers a hello that checks out with ``A``; a hello of 1 (an older
node) is still accepted, without the answer."""
MAX_FRAME: Final = 256 * 1024 * 1024
"""A frame announcing more than this ends the link (the peer is broken or hostile)."""
FRAME_BYTES: Final = 256 * 1024
"""Envelopes queued for one link are written in frames of about this size."""
MAX_BUFFERED: Final = 64 * 1024 * 1024
"""An outgoing link whose unsent bytes pass this ends (the peer does not read)."""
MAX_HELLO: Final = 4096
"""Until its hello checked out, a connection may announce no larger frame (no memory for
whoever can reach the port)."""
HELLO_TIMEOUT: Final = 5.0
SWITCH_TIMEOUT: Final = 10.0
"""A ``W`` whose ``InboxSwitch`` does not come through Redis in this time ends the link."""


class PeerListenError(OSError):
    """The peer address cannot be listened on (in use, not this machine's, no permission)."""

    def __init__(self, where: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.where = where

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class PeerTLS:
    """Mutual TLS on direct links (``[cluster] peer_tls_*``): PEM file paths.

    Every node presents ``cert`` (with ``key``) and accepts only certificates signed by
    ``ca``; a dialing node also checks that the other node's certificate names the host it
    dials (the advertised host). TLS 1.2 at least.
    """

    cert: str
    key: str
    ca: str

    def contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(accepting, dialing) contexts; raises ``ssl.SSLError`` or ``OSError`` when a
        file is missing, is not PEM, or the key does not match the certificate."""
        accept = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca)
        accept.verify_mode = ssl.CERT_REQUIRED
        dial = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        for context in (accept, dial):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.cert, self.key)
        return accept, dial


def _machine() -> str:
    """Who shares this process's loopback: boot ID and network namespace, else the host name."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:
        return socket.gethostname()


MACHINE: Final = _machine()


def parse_peer_address(text: str, what: str = "peer address") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) → (host, port); raise ``ValueError`` when malformed."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{what} {text!r} is not host:port")
    return host, int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reachable(record: PeerRecord) -> bool:
    """Whether this node can dial ``record``'s address (loopback: same machine only)."""
    return record.machine == MACHINE or not _loopback(record.host)


class Framed(asyncio.Protocol):
    """Length-prefixed frames in both directions; writes coalesced per loop iteration."""

    def __init__(self, links: PeerLinks) -> None:
        self.links = links
        self.transport: asyncio.Transport | None = None
        self.node = ""
        """The other node (incoming: known once its hello checked out)."""
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_soon = False
        self.max_frame = MAX_FRAME
        self.closed = False
        self.heard = False
        """Bytes came in since ``Incoming.watch`` last looked (no clock on the data path)."""
        self.why = ""
        """Why this side ended the connection (``fail``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's transport or uvloop's (not an ``asyncio.Transport`` subclass)
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 5:
            size, kind = HEADER.unpack_from(buf, pos)
            if size < 1 or size > self.max_frame:
                self.fail(f"a frame of {size} bytes")
                return
            if end - pos - 4 < size:
                break
            body = bytes(buf[pos + 5 : pos + 4 + size])
            pos += 4 + size
            self.frame(kind, body)
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def frame(self, kind: int, body: bytes) -> None:
        raise NotImplementedError

    def write(self, kind: int, body: bytes) -> None:
        """Queue one frame; queued frames go out together at the end of this loop pass."""
        self._out.append(HEADER.pack(len(body) + 1, kind))
        self._out.append(body)
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_soon and self.transport is not None:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_soon = False
        transport = self.transport
        if self.closed or transport is None or not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            self.fail(f"more than {MAX_BUFFERED} bytes unsent")

    def fail(self, why: str) -> None:
        """End the connection (``connection_lost`` reports it)."""
        if not self.closed and self.transport is not None:
            self.why = self.why or why
            self.closed = True  # no frame after this one counts (``data_received`` stops)
            self.transport.abort()

    def drop(self, graceful: bool = False) -> None:
        """End the connection without it counting as a failure (no ``lost``); a dial still
        under way is aborted as it connects (``Outgoing.connection_made``)."""
        self.closed = True
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._out.clear()
        self.gone(self.why or (str(exc) if exc else "closed by the other side"))

    def gone(self, why: str) -> None:
        raise NotImplementedError


class Outgoing(Framed):
    """This node's link to ``node``: envelopes out, sync requests in (answered in order)."""

    def __init__(self, links: PeerLinks, node: str, token: str) -> None:
        super().__init__(links)
        self.node = node
        self.token = token
        self.ready = False
        """Connected (and the TLS handshake done): the hello and envelopes go out."""
        self.accepted = False
        """The other node accepted the hello (``A``): the address and token work."""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._accept_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.closed:  # dropped while dialing
            assert self.transport is not None
            self.transport.abort()
            return
        hello = {"v": VERSION, "from": self.links.node, "to": self.node, "token": self.token}
        self.write(HELLO, msgpack.packb(hello))
        self.ready = True
        self._move_pending()
        self._accept_timer = asyncio.get_running_loop().call_later(
            HELLO_TIMEOUT, self._not_accepted
        )

    def _not_accepted(self) -> None:
        if not self.accepted:  # a node too old to answer, or a way that swallows data
            self.fail(f"the hello was not accepted in {HELLO_TIMEOUT:.0f} s")

    def send(self, data: bytes) -> None:
        """Queue one packed inbox envelope for the node."""
        self._pending.append(data)
        size = self._pending_size = self._pending_size + len(data)
        if size >= FRAME_BYTES:
            if size > MAX_BUFFERED:
                self.fail(f"more than {MAX_BUFFERED} bytes waiting for the connection")
            elif self.ready:
                self._move_pending()
        elif self.ready and not self._flush_soon:
            self._schedule()

    def take_pending(self) -> bytes:
        """The envelopes not yet written, as a data frame's body (b"" when none), removed."""
        pending = self._pending
        if not pending:
            return b""
        body = array_header(len(pending)) + b"".join(pending)
        pending.clear()
        self._pending_size = 0
        return body

    def _move_pending(self) -> None:
        body = self.take_pending()
        if body:
            self.write(DATA, body)

    def flush(self) -> None:
        if self.ready:
            self._move_pending()
        super().flush()

    def frame(self, kind: int, body: bytes) -> None:
        if kind == SYNC:
            self._move_pending()  # everything sent before the request, then the answer
            self.write(SYNCED, body)
        elif kind == ACCEPTED and not self.accepted:
            self.accepted = True
            if self._accept_timer is not None:
                self._accept_timer.cancel()
            self.links.accepted(self)
        else:
            self.fail(f"unexpected frame {bytes([kind])!r} on an outgoing link")

    def gone(self, why: str) -> None:
        self._pending.clear()
        if self._accept_timer is not None:
            self._accept_timer.cancel()
        self.links.outgoing_lost(self, why)


class Incoming(Framed):
    """Another node's link to this one: its hello, then envelopes; sync answers."""

    holding: str | None = None
    """The key of the ``W`` whose ``InboxSwitch`` this link waits for (data held)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.held: list[bytes] = []
        self.held_size = 0
        self._hold_timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._pinging = False
        self.max_frame = MAX_HELLO
        loop = asyncio.get_running_loop()
        self._hello_timer: asyncio.TimerHandle | None = loop.call_later(
            HELLO_TIMEOUT, self.fail, "no hello"
        )

    def frame(self, kind: int, body: bytes) -> None:
        if kind == DATA and self.node:
            if self.holding is None:
                self.links.deliver(self.node, body)
            else:
                self.held.append(body)
                self.held_size += len(body)
                if self.held_size > MAX_BUFFERED:
                    self.fail(f"more than {MAX_BUFFERED} bytes held for a switch marker")
        elif kind == WAIT and self.node and self.holding is None:
            self.links.hold(self, body.decode("ascii", "replace"))
        elif kind == SYNCED and self.node:
            self.links.synced(self, body)
        elif kind == HELLO and not self.node:
            self._hello(body)
        else:
            self.fail(f"unexpected frame {bytes([kind])!r} on an incoming link")

    def _hello(self, body: bytes) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        try:
            hello = msgpack.unpackb(body)
            ok = (
                isinstance(hello, dict)
                and hello.get("v") in (1, VERSION)
                and hello.get("to") == self.links.node
                and secrets.compare_digest(
                    str(hello.get("token", "")).encode(), self.links.token.encode()
                )
                and isinstance(hello.get("from"), str)
                and bool(hello["from"])
            )
        except (ValueError, msgpack.UnpackException):
            ok = False
        if not ok:
            self.fail("a hello that does not check out (wrong node or token)")
            return
        self.max_frame = MAX_FRAME
        self.links.incoming_ready(self, hello["from"])
        if hello["v"] >= 2:
            self.write(ACCEPTED, b"")

    def watch(self, every: float, timeout: float) -> None:
        """Every ``every`` seconds: when nothing came in since the last look, ask the other
        node (``S``); when nothing at all comes in ``timeout`` seconds after asking, the
        way from it is broken (or it hangs): ``PeerLinks.silent``."""
        if self.closed:
            return
        if not self._pinging:
            if self.heard:
                self.heard = False
            else:
                self._pinging = True
                self.links.ping_on(self, partial(self._answered, timeout), timeout)
        loop = asyncio.get_running_loop()
        self._watch = loop.call_later(every, self.watch, every, timeout)

    def _answered(self, timeout: float, answered: bool) -> None:
        self._pinging = False
        if not answered and not self.closed and not self.heard:  # nothing since asking
            self.links.silent(self, f"nothing came on it for {timeout:g} s, asked or not")

    def hold(self, key: str) -> None:
        """Hold data frames until ``release`` (or end the link after ``SWITCH_TIMEOUT``)."""
        self.holding = key
        self._hold_timer = asyncio.get_running_loop().call_later(
            SWITCH_TIMEOUT, self.fail, "its switch marker did not come through Redis in time"
        )

    def release(self) -> None:
        """Deliver the held data frames, in order, and what comes after as it comes."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self.held, self.holding, self.held_size = self.held, [], None, 0
        for body in held:
            if self.closed:
                return
            self.links.deliver(self.node, body)

    def gone(self, why: str) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self._watch is not None:
            self._watch.cancel()
        self.held = []
        self.links.incoming_lost(self, why)


class Sink:
    """Where rows go while a node's link is known to be broken: nowhere."""

    def send(self, data: bytes) -> None:
        """Drop ``data`` (the calls it belongs to were ended with the link)."""


SINK: Final = Sink()
