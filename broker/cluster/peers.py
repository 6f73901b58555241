"""Direct links between nodes: call envelopes without a trip through Redis.

A node listens on its *peer address* and advertises it in Redis (``PeerRecord``: host,
port, the machine it runs on, a random token). Node X sends the inbox envelopes for
node Y on one TCP connection X dials to Y (X's *outgoing* link to Y; Y's *incoming*
link from X), so a call crosses two hops (caller node → callee node → caller node)
instead of four, and Redis carries no call traffic. The link is one way for envelopes:
Y answers on its own outgoing link to X. Frames (protocol_spec/cluster.md, "Direct
links")::

    length (4 bytes, big endian, of kind + body) | kind (1 byte) | body

    H  hello, dialer → acceptor, first frame: msgpack {v, from, to, token}
    D  data: a msgpack array of inbox envelopes as rows (protocol_spec/cluster_rows.py)
    S  sync request, acceptor → dialer: 8 bytes
    Y  sync answer, dialer → acceptor: the same 8 bytes, after all data sent before it

A node uses the link for another node only when that node advertises an address this
node can reach (a loopback address only on the same machine and network namespace);
otherwise the inbox channel in Redis carries the envelopes, as it always did. The
choice is fixed per pair for a node's life, so one pair's envelopes never mix paths.
Whatever breaks a link (either side closing, a write failing, a frame too large, a dial
that fails) ends every call crossing between the two nodes with
``wamp.error.unavailable`` (``lost``): envelopes in flight on it are gone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Final, cast

import msgpack

from protocol_spec.cluster import PeerRecord
from protocol_spec.cluster_rows import array_header

from .keys import inbox, inbox_node

__all__ = ["MACHINE", "PeerLinks", "PeerListenError", "parse_peer_address"]

log = logging.getLogger(__name__)

HEADER: Final = struct.Struct(">IB")
"""Frame header: length of kind + body, kind."""
HELLO, DATA, SYNC, SYNCED = b"H"[0], b"D"[0], b"S"[0], b"Y"[0]
VERSION: Final = 1
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
RETRY_AFTER: Final = 0.5
"""After a failed dial, sends to that node fail at once for this long (no dial storm)."""


class PeerListenError(OSError):
    """The peer address cannot be listened on (in use, not this machine's, no permission)."""

    def __init__(self, where: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.where = where

    def __str__(self) -> str:
        return str(self.strerror)


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


class _Framed(asyncio.Protocol):
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
        self.why = ""
        """Why this side ended the connection (``fail``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's transport or uvloop's (not an ``asyncio.Transport`` subclass)
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
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
        under way is aborted as it connects (``_Outgoing.connection_made``)."""
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


class _Outgoing(_Framed):
    """This node's link to ``node``: envelopes out, sync requests in (answered in order)."""

    def __init__(self, links: PeerLinks, node: str, token: str) -> None:
        super().__init__(links)
        self.node = node
        self.token = token
        self.ready = False
        self._pending: list[bytes] = []
        self._pending_size = 0

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

    def _move_pending(self) -> None:
        pending = self._pending
        if pending:
            body = array_header(len(pending)) + b"".join(pending)
            pending.clear()
            self._pending_size = 0
            self.write(DATA, body)

    def flush(self) -> None:
        if self.ready:
            self._move_pending()
        super().flush()

    def frame(self, kind: int, body: bytes) -> None:
        if kind == SYNC:
            self._move_pending()  # everything sent before the request, then the answer
            self.write(SYNCED, body)
        else:
            self.fail(f"unexpected frame {bytes([kind])!r} on an outgoing link")

    def gone(self, why: str) -> None:
        self._pending.clear()
        self.links.outgoing_lost(self, why)


class _Incoming(_Framed):
    """Another node's link to this one: its hello, then envelopes; sync answers."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.max_frame = MAX_HELLO
        loop = asyncio.get_running_loop()
        self._hello_timer: asyncio.TimerHandle | None = loop.call_later(
            HELLO_TIMEOUT, self.fail, "no hello"
        )

    def frame(self, kind: int, body: bytes) -> None:
        if kind == DATA and self.node:
            self.links.deliver(self.node, body)
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
                and hello.get("v") == VERSION
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

    def gone(self, why: str) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.links.incoming_lost(self, why)


class _Sink:
    """Where rows go while a node's link is known to be broken: nowhere."""

    def send(self, data: bytes) -> None:
        """Drop ``data`` (the calls it belongs to were ended with the link)."""


_SINK: Final = _Sink()


class PeerLinks:
    """This node's direct links: the listener, one outgoing link per node, the incoming ones."""

    def __init__(
        self,
        node: str,
        deliver: Callable[[str, bytes], None],
        lost: Callable[[str, str], None],
    ) -> None:
        self.node = node
        self.deliver = deliver
        """Gets (sending node, body) of every data frame: a msgpack array of rows."""
        self.lost = lost
        """Called with (node, why) when a link to or from ``node`` broke."""
        self.token = secrets.token_hex(16)
        self.record: PeerRecord | None = None
        """This node's advertisement, once listening."""
        self._server: asyncio.Server | None = None
        self._known: dict[str, PeerRecord] = {}
        self._out: dict[str, _Outgoing] = {}
        self._inbox_nodes: dict[bytes, str] = {}
        self.by_channel: dict[bytes, _Outgoing] = {}
        """Outgoing links by the node's inbox channel: the call path's lookup."""
        self._in: dict[str, _Incoming] = {}
        self._retry_at: dict[str, float] = {}
        self._syncs: dict[bytes, tuple[_Incoming, Callable[[], None], asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0
        """Links that broke so far (``wamp_cluster_peer_failures_total``)."""

    # --- the listener and what is advertised --------------------------------------------
    async def start(self, listen: str, advertise: str | None = None) -> PeerRecord:
        """Listen on ``listen`` (``host:port``; port 0: a free one) and build the record."""
        host, port = parse_peer_address(listen, "[cluster] peer")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Incoming(self), host, port)
        except OSError as exc:
            raise PeerListenError(listen, exc) from None
        bound = self._server.sockets[0].getsockname()[1]
        if advertise:
            adv_host, adv_port = parse_peer_address(advertise, "[cluster] peer_advertise")
        else:
            unspecified = host in ("0.0.0.0", "::", "")
            adv_host, adv_port = (socket.gethostname() if unspecified else host), bound
        self.record = PeerRecord(adv_host, adv_port, MACHINE, self.token)
        log.info("cluster: node %s takes direct links on %s:%d", self.node, host, bound)
        return self.record

    async def close(self) -> None:
        """Stop listening and close every link (no ``lost`` calls)."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for conn in [*self._out.values(), *self._in.values()]:
            conn.drop(graceful=True)
        self._out.clear()
        self.by_channel.clear()
        self._in.clear()
        for _conn, done, timer in self._syncs.values():
            timer.cancel()
            done()
        self._syncs.clear()

    # --- the other nodes ------------------------------------------------------------------
    def known(self, node: str, record: PeerRecord | None) -> None:
        """``node``'s advertisement as loaded from Redis (None: it has none).

        A node that takes no direct links itself (``peer = "off"``) dials none either:
        "off" keeps all of its call traffic in Redis.
        """
        old = self._known.get(node)
        if record is not None and self.record is not None and reachable(record):
            self._known[node] = record
        else:
            self._known.pop(node, None)
        if old is not None and old != record:
            self._drop_outgoing(node, "the node restarted")

    def forget(self, node: str) -> None:
        """``node`` is gone: close its links without reporting them lost."""
        self._known.pop(node, None)
        self._retry_at.pop(node, None)
        for conn in (self._unlist(node), self._in.pop(node, None)):
            if conn is not None:
                conn.drop()

    def direct(self, node: str) -> bool:
        """Whether envelopes for ``node`` take the direct link (else Redis's inbox)."""
        return node in self._known

    def outgoing(self, node: str) -> _Outgoing | _Sink | None:
        """The link rows for ``node`` go on (dialed when needed); None when ``node`` takes
        no direct links (its envelopes go through Redis). Right after a failed dial it
        is a sink: ``lost`` already ends the calls, and nothing may take Redis instead.
        """
        conn = self._out.get(node)
        if conn is None:
            if node not in self._known:
                return None
            return self._dial(node) or _SINK
        return conn

    def route(self, channel: bytes) -> _Outgoing | _Sink | None:
        """``outgoing`` of the node whose inbox channel is ``channel``."""
        node = self._inbox_nodes.get(channel)
        if node is None:
            node = self._inbox_nodes[channel] = inbox_node(channel)
        return self.outgoing(node)

    def send(self, node: str, data: bytes) -> bool:
        """Send one packed row to ``node``; False when it takes no direct links."""
        link = self.outgoing(node)
        if link is None:
            return False
        link.send(data)
        return True

    def _dial(self, node: str) -> _Outgoing | None:
        record = self._known.get(node)
        loop = asyncio.get_running_loop()
        if record is None:
            return None
        if time.monotonic() < self._retry_at.get(node, 0.0):
            loop.call_soon(self.lost, node, "the direct link failed a moment ago")
            return None
        conn = _Outgoing(self, node, record.token)
        self._out[node] = self.by_channel[inbox(node)] = conn
        task = loop.create_task(self._connect(conn, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def _connect(self, conn: _Outgoing, record: PeerRecord) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                await loop.create_connection(lambda: conn, record.host, record.port)
        except (OSError, TimeoutError) as exc:
            conn.closed = True
            self.outgoing_lost(conn, f"cannot connect to {record.host}:{record.port}: {exc}")

    def _drop_outgoing(self, node: str, why: str) -> None:
        conn = self._unlist(node)
        if conn is not None:  # connected or still dialing: what it queued is lost
            conn.drop()
            self._report(node, why)

    def _unlist(self, node: str) -> _Outgoing | None:
        """Take ``node``'s outgoing link out of the tables (None: it had none)."""
        self.by_channel.pop(inbox(node), None)
        return self._out.pop(node, None)

    # --- link events ----------------------------------------------------------------------
    def outgoing_lost(self, conn: _Outgoing, why: str) -> None:
        if self._out.get(conn.node) is conn:
            self._unlist(conn.node)
            if not conn.ready:  # the dial failed: no storm of dials; a broken link redials
                self._retry_at[conn.node] = time.monotonic() + RETRY_AFTER
            self._report(conn.node, why)

    def incoming_ready(self, conn: _Incoming, node: str) -> None:
        conn.node = node
        old = self._in.get(node)
        self._in[node] = conn
        if old is not None:
            old.drop()

    def incoming_lost(self, conn: _Incoming, why: str) -> None:
        for key, (sync_conn, done, timer) in list(self._syncs.items()):
            if sync_conn is conn:
                del self._syncs[key]
                timer.cancel()
                done()
        if conn.node and self._in.get(conn.node) is conn:
            del self._in[conn.node]
            self._report(conn.node, why)

    def _report(self, node: str, why: str) -> None:
        """A link with ``node`` broke: log it (the first, then every 100th) and say so."""
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning(
                "cluster: direct link with node %s broke (%d so far): %s",
                node,
                self.failures,
                why,
            )
        self.lost(node, why)

    # --- ordering with the control channel --------------------------------------------------
    def inbound(self, node: str) -> bool:
        """Whether ``node`` has a live link to this node (its envelopes may be in flight)."""
        return node in self._in

    def sync(self, node: str, done: Callable[[], None], timeout: float) -> None:
        """Call ``done`` once every envelope ``node`` sent before now has been delivered.

        The request travels back on ``node``'s link to this node, and ``node`` answers
        after everything it queued before: the answer arrives behind them. ``done`` is
        also called when the link breaks or after ``timeout`` seconds.
        """
        conn = self._in.get(node)
        if conn is None:
            done()
            return
        key = secrets.token_bytes(8)
        timer = asyncio.get_running_loop().call_later(timeout, self._sync_timeout, key)
        self._syncs[key] = (conn, done, timer)
        conn.write(SYNC, key)

    def synced(self, conn: _Incoming, key: bytes) -> None:
        found = self._syncs.pop(key, None)
        if found is not None:
            found[2].cancel()
            found[1]()

    def _sync_timeout(self, key: bytes) -> None:
        found = self._syncs.pop(key, None)
        if found is not None:
            log.warning("cluster: node %s did not answer a sync on its direct link", found[0].node)
            found[1]()

    @property
    def links_up(self) -> int:
        """Open outgoing links (``wamp_cluster_peer_links``)."""
        return sum(1 for conn in self._out.values() if conn.ready and not conn.closed)
