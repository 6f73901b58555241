"""Direct links between nodes: call envelopes without a trip through Redis.

A node listens on its *peer address* and advertises it in Redis (``PeerRecord``: host,
port, the machine it runs on, a random token, TLS or not). Node X sends the inbox
envelopes for node Y on one TCP connection X dials to Y (X's *outgoing* link to Y; Y's
*incoming* link from X), so a call crosses two hops (caller node → callee node → caller
node) instead of four, and Redis carries no call traffic. The link is one way for
envelopes: Y answers on its own outgoing link to X. The frames and both ends of a link
are in broker/cluster/peer_wire.py; this module decides which path a node's envelopes
take (protocol_spec/cluster.md, "Direct links between nodes").

A node uses the link for another node only when that node advertises an address this
node can reach (a loopback address only on the same machine and network namespace) and
both sides agree on TLS (``PeerTLS``: mutual TLS with one CA, or plain TCP on both);
otherwise the inbox channel in Redis carries the envelopes, as it always did. So does a
node whose first dial was never accepted (wrong address, refused certificate): it is
*reached through Redis*, dialed again now and then, and its traffic moves back to the
link behind an ``InboxSwitch`` marker. So is a node whose link worked and then cannot be
dialed while the node is known to live (``_alive_anyway``). Whatever breaks a link
(either side closing, a write failing, a frame too large, a dial that fails) ends every
call crossing between the two nodes with ``wamp.error.unavailable`` (``lost``):
envelopes in flight on it are gone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Final

from protocol_spec.cluster import PeerRecord

from .keys import inbox, inbox_node
from .peer_wire import (
    FRAME_BYTES,
    HELLO_TIMEOUT,
    MACHINE,
    MAX_FRAME,
    SINK,
    SYNC,
    WAIT,
    Incoming,
    Outgoing,
    PeerListenError,
    PeerTLS,
    Sink,
    parse_peer_address,
    reachable,
)

__all__ = [
    "FRAME_BYTES",
    "MACHINE",
    "MAX_FRAME",
    "PeerLinks",
    "PeerListenError",
    "PeerTLS",
    "parse_peer_address",
]

log = logging.getLogger(__name__)

RETRY_AFTER: Final = 0.5
"""After a failed dial, sends to that node fail at once for this long (no dial storm)."""
RETRY_DIRECT_MAX: Final = 300.0
"""A node reached through Redis after its first dial failed is dialed again after
``PeerLinks.retry`` seconds, doubling up to this, while there is traffic for it."""
PING_TIMEOUT: Final = 2.0
"""How long a node whose redial failed has to answer on its own link to this node."""


class PeerLinks:
    """This node's direct links: the listener, one outgoing link per node, the incoming ones."""

    def __init__(
        self,
        node: str,
        deliver: Callable[[str, bytes], None],
        lost: Callable[[str, str], None],
        tls: PeerTLS | None = None,
    ) -> None:
        self.node = node
        self.tls = tls
        self.retry = 10.0
        """Seconds before a node reached through Redis is dialed again (``peer_retry``)."""
        # set by RedisCluster from ``node_timeout``: ``_alive_anyway``, ``Incoming.watch``
        self.grace, self.ping_after, self.ping_timeout = 7.0, 2.5, 5.0
        contexts = tls.contexts() if tls is not None else None
        self._accept_tls: ssl.SSLContext | None = contexts[0] if contexts else None
        self._dial_tls: ssl.SSLContext | None = contexts[1] if contexts else None
        self.deliver = deliver
        """Gets (sending node, body) of every data frame: a msgpack array of rows."""
        self.lost = lost
        """Called with (node, why) when a link to or from ``node`` broke."""
        self.switch: Callable[[str, str], bool] | None = None
        """Publishes an ``InboxSwitch`` (this node, key) to a node's inbox in Redis, behind
        everything published there before; False when it cannot (Redis is not up). Without
        it, a node reached through Redis stays there."""
        self.reroute: Callable[[str, bytes], None] | None = None
        """Gets (node, rows as a data frame's body) that waited for a first dial to ``node``
        that failed to connect: never written, they go through Redis (else: ``lost``)."""
        self.token = secrets.token_hex(16)
        self.record: PeerRecord | None = None
        """This node's advertisement, once listening."""
        self._server: asyncio.Server | None = None
        self._records: dict[str, PeerRecord] = {}
        """Every other node's advertisement, as last loaded (usable or not)."""
        self._known: dict[str, PeerRecord] = {}
        """The nodes reached on direct links, by their record."""
        self.linked: set[str] = set()
        """Nodes whose current record was connected to at least once."""
        self.via_redis: dict[str, str] = {}
        """Nodes reached through Redis, and why (``wamp_cluster_peer_fallbacks``)."""
        self._probe_at: dict[str, tuple[float, float]] = {}
        """Nodes reached through Redis whose link is tried again: (when, interval)."""
        self._probes: dict[str, Outgoing] = {}
        """Links dialed to try a node reached through Redis again (not used until accepted)."""
        self._markers: dict[str, str] = {}
        """The key of an ``InboxSwitch`` that came before its link's ``W``, per node."""
        self._out: dict[str, Outgoing] = {}
        self._inbox_nodes: dict[bytes, str] = {}
        self.by_channel: dict[bytes, Outgoing] = {}
        """Outgoing links by the node's inbox channel: the call path's lookup."""
        self._in: dict[str, Incoming] = {}
        self._retry_at: dict[str, float] = {}
        self.failing: dict[str, float] = {}  # node → when its link went down (redials fail)
        self._heard: dict[str, float] = {}  # ``failing`` node → when it was last heard via Redis
        self._syncs: dict[bytes, tuple[Incoming, Callable[[bool], None], asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0
        """Links that broke so far (``wamp_cluster_peer_failures_total``)."""

    # --- the listener and what is advertised --------------------------------------------
    async def start(self, listen: str, advertise: str | None = None) -> PeerRecord:
        """Listen on ``listen`` (``host:port``; port 0: a free one) and build the record."""
        host, port = parse_peer_address(listen, "[cluster] peer")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: Incoming(self),
                host,
                port,
                ssl=self._accept_tls,
                ssl_handshake_timeout=HELLO_TIMEOUT if self._accept_tls else None,
            )
        except OSError as exc:
            raise PeerListenError(listen, exc) from None
        bound = self._server.sockets[0].getsockname()[1]
        if advertise:
            adv_host, adv_port = parse_peer_address(advertise, "[cluster] peer_advertise")
        else:
            unspecified = host in ("0.0.0.0", "::", "")
            adv_host, adv_port = (socket.gethostname() if unspecified else host), bound
        self.record = PeerRecord(adv_host, adv_port, MACHINE, self.token, self.tls is not None)
        log.info(
            "cluster: node %s takes direct links on %s:%d%s",
            self.node,
            host,
            bound,
            " (TLS)" if self.tls else "",
        )
        return self.record

    def reload_tls(self) -> bool:
        """Load the TLS files again (SIGHUP): links made from now on present the new
        certificate, dials trust the new CA, and accepting trusts it as well as the old
        one (a CA stays trusted there until the node restarts). Open links keep theirs.
        False without TLS. Raises ``ssl.SSLError`` or ``OSError`` when the files do not
        load: the old ones stay."""
        if self.tls is None or self._accept_tls is None:
            return False
        _accept, dial = self.tls.contexts()  # they load and match: only then apply them
        self._accept_tls.load_cert_chain(self.tls.cert, self.tls.key)  # the listener's
        self._accept_tls.load_verify_locations(cafile=self.tls.ca)
        self._dial_tls = dial
        return True

    async def close(self) -> None:
        """Stop listening and close every link (no ``lost`` calls)."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for conn in [*self._out.values(), *self._in.values(), *self._probes.values()]:
            conn.drop(graceful=True)
        self._out.clear()
        self._probes.clear()
        self.by_channel.clear()
        self._in.clear()
        for _conn, answer, timer in self._syncs.values():
            timer.cancel()
            answer(False)
        self._syncs.clear()

    # --- the other nodes ------------------------------------------------------------------
    def known(self, node: str, record: PeerRecord | None) -> None:
        """``node``'s advertisement as loaded from Redis (None: it has none).

        A node that takes no direct links itself (``peer = "off"``) dials none either:
        "off" keeps all of its call traffic in Redis. The same record again changes
        nothing; another one (the node restarted or moved) drops the link to the old one
        and decides anew.
        """
        old = self._records.get(node)
        if old == record:
            return
        if record is None:
            self._records.pop(node, None)
        else:
            self._records[node] = record
        self._unprobe(node)
        self.linked.discard(node)
        self._retry_at.pop(node, None)
        self._unfail(node)
        self._known.pop(node, None)
        if record is not None and self.record is not None and reachable(record):
            if record.tls == (self.tls is not None):
                self._known[node] = record
            else:  # that will not change before the record does: never tried again
                why = "TLS on one side only ([cluster] peer_tls_*)"
                self._fall_back(node, record, why, retry=False)
        if old is not None:
            self._drop_outgoing(node, "the node restarted")

    def _fall_back(self, node: str, record: PeerRecord, why: str, retry: bool = True) -> None:
        """Reach ``node`` through Redis until it advertises another record or (``retry``)
        a later dial (``_probe``) gets accepted."""
        self._known.pop(node, None)
        self._unfail(node)
        self.via_redis[node] = why
        if retry:
            self._probe_at[node] = (time.monotonic() + self.retry, self.retry)
        log.warning(
            "cluster: no direct link to node %s at %s:%d (%s): its call traffic goes "
            "through Redis until a later dial gets through or it advertises another address",
            node,
            record.host,
            record.port,
            why,
        )

    def forget(self, node: str) -> None:
        """``node`` is gone: close its links without reporting them lost."""
        self._known.pop(node, None)
        self._records.pop(node, None)
        self._unprobe(node)
        self._markers.pop(node, None)
        self.linked.discard(node)
        self._retry_at.pop(node, None)
        self._unfail(node)
        for conn in (self._unlist(node), self._in.pop(node, None)):
            if conn is not None:
                conn.drop()

    def direct(self, node: str) -> bool:
        """Whether envelopes for ``node`` take the direct link (else Redis's inbox)."""
        return node in self._known

    def outgoing(self, node: str) -> Outgoing | Sink | None:
        """The link rows for ``node`` go on (dialed when needed); None when ``node`` takes
        no direct links (its envelopes go through Redis). Right after a failed dial it
        is a sink: ``lost`` already ends the calls, and nothing may take Redis instead.
        """
        conn = self._out.get(node)
        if conn is None:
            self._follow(node)
            if node not in self._known:
                if node in self._probe_at:
                    self._probe(node)
                return None
            return self._dial(node) or SINK
        return conn

    def route(self, channel: bytes) -> Outgoing | Sink | None:
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

    def _dial(self, node: str) -> Outgoing | None:
        record = self._known.get(node)
        loop = asyncio.get_running_loop()
        if record is None:
            return None
        if time.monotonic() < self._retry_at.get(node, 0.0):
            loop.call_soon(self.lost, node, "the direct link failed a moment ago")
            return None
        conn = self._out[node] = self.by_channel[inbox(node)] = self._start_dial(node, record)
        return conn

    def _start_dial(self, node: str, record: PeerRecord) -> Outgoing:
        """A new outgoing link to ``node``, its connection under way in a task."""
        conn = Outgoing(self, node, record.token)
        task = asyncio.get_running_loop().create_task(self._connect(conn, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def _connect(self, conn: Outgoing, record: PeerRecord) -> None:
        loop = asyncio.get_running_loop()
        tls = self._dial_tls
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                await loop.create_connection(
                    lambda: conn,
                    record.host,
                    record.port,
                    ssl=tls,
                    server_hostname=record.host if tls else None,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            conn.closed = True
            why = str(exc) or type(exc).__name__
            self.outgoing_lost(conn, f"cannot connect to {record.host}:{record.port}: {why}")

    def _drop_outgoing(self, node: str, why: str) -> None:
        conn = self._unlist(node)
        if conn is not None:  # connected or still dialing: what it queued is lost
            conn.drop()
            self._report(node, why)

    def _unlist(self, node: str) -> Outgoing | None:
        """Take ``node``'s outgoing link out of the tables (None: it had none)."""
        self.by_channel.pop(inbox(node), None)
        return self._out.pop(node, None)

    # --- back from Redis to the link ----------------------------------------------------
    def _probe(self, node: str) -> None:
        """Dial ``node`` again if it is time (its traffic keeps taking Redis meanwhile)."""
        record = self._records.get(node)
        due = time.monotonic() >= self._probe_at[node][0]
        if record is not None and self.switch is not None and due and node not in self._probes:
            self._probes[node] = self._start_dial(node, record)

    def _probe_failed(self, node: str, why: str) -> None:
        del self._probes[node]
        if node in self._probe_at:
            interval = min(self._probe_at[node][1] * 2, RETRY_DIRECT_MAX)
            self._probe_at[node] = (time.monotonic() + interval, interval)
            log.info(
                "cluster: node %s still not reachable on its direct link (%s); next try in %.0f s",
                node,
                why,
                interval,
            )

    def _unprobe(self, node: str) -> None:
        """Forget that ``node`` is reached through Redis, and any dial trying it again."""
        self.via_redis.pop(node, None)
        self._probe_at.pop(node, None)
        probe = self._probes.pop(node, None)
        if probe is not None:
            probe.drop()

    def accepted(self, conn: Outgoing) -> None:
        """``conn``'s hello was accepted; a probe takes over ``conn.node``'s traffic."""
        node = conn.node
        self.linked.add(node)
        self._unfail(node)
        if self._probes.get(node) is not conn:
            return
        del self._probes[node]
        record = self._records.get(node)
        key = secrets.token_hex(8)
        # the marker goes behind everything published for the node so far, and nothing
        # for it takes Redis after: the node holds the link's data until the marker is in
        if record is None or self.switch is None or not self.switch(node, key):
            conn.drop()
            return
        conn.write(WAIT, key.encode())
        self.via_redis.pop(node, None)
        self._probe_at.pop(node, None)
        self._known[node] = record
        self._out[node] = self.by_channel[inbox(node)] = conn
        log.info("cluster: direct link to node %s works: its call traffic leaves Redis", node)

    def hold(self, conn: Incoming, key: str) -> None:
        """``conn`` asks to wait for the ``InboxSwitch`` ``key`` (maybe already here)."""
        if self._markers.get(conn.node) == key:
            del self._markers[conn.node]
        else:
            conn.hold(key)

    def switched(self, node: str, key: str) -> None:
        """An ``InboxSwitch`` from ``node`` came through Redis: release its link's data."""
        conn = self._in.get(node)
        if conn is not None and conn.holding == key:
            conn.release()
        else:
            self._markers[node] = key

    # --- link events ----------------------------------------------------------------------
    def outgoing_lost(self, conn: Outgoing, why: str) -> None:
        node = conn.node
        if self._probes.get(node) is conn:
            self._probe_failed(node, why)
            return
        if self._out.get(node) is not conn:
            return
        record = self._known.get(node)
        if conn.accepted or record is None:  # a link that broke: the next envelope redials
            self._unlist(node)
            if record is not None:
                self.failing.setdefault(node, time.monotonic())
        elif node not in self.linked:
            # never accepted: a wrong address, a certificate or token refused, a node
            # too old for this version: that will not mend by itself
            self._unlist(node)
            self._fall_back(node, record, why)
            self._hand_over(conn, why)
            return
        elif self._alive_anyway(conn, record, why):
            return
        else:  # a redial failed (the node is going away?): no storm of dials
            self._unlist(node)
            self._retry_at[node] = time.monotonic() + RETRY_AFTER
        self._report(node, why)

    def _hand_over(self, conn: Outgoing, why: str) -> None:
        """The rows of a dial to a node now reached through Redis: if nothing was written,
        they take Redis and no call fails; else they may have been read (``lost``)."""
        if not conn.ready and self.reroute is not None:
            pending = conn.take_pending()
            if pending:
                self.reroute(conn.node, pending)
        else:
            self._report(conn.node, why)

    def _alive_anyway(self, conn: Outgoing, record: PeerRecord, why: str) -> bool:
        """A redial of a node linked once failed: is the node alive all the same?

        Yes when it is still in the cluster ``grace`` seconds after its link went down (a
        dead node is dropped before that), or when its envelopes came through Redis since:
        it is reached through Redis. Maybe when its own link to this node is up: asked
        there (``ping``), the failed dial keeps queueing until the answer. False: the dial
        failed as any other.
        """
        node = conn.node
        now = time.monotonic()
        since = self.failing.setdefault(node, now)
        if now - since >= self.grace:
            alive = f"still in the cluster {now - since:.0f} s after its link went down"
        elif self._heard.get(node, -1.0) >= since:
            alive = "its envelopes come through Redis"
        elif node in self._in and not conn.ready:
            answer = partial(self._pinged, conn, record, why)
            self.ping(node, answer, PING_TIMEOUT)
            return True
        else:
            return False
        self._unlist(node)
        self._fall_back(node, record, f"{why}; {alive}")
        self._hand_over(conn, why)
        return True

    def _follow(self, node: str) -> None:
        """Reach ``node`` through Redis without dialing when its link went down and its
        envelopes came through Redis since: that is how it reaches this node now."""
        since, record = self.failing.get(node), self._known.get(node)
        if since is not None and record is not None and self._heard.get(node, -1.0) >= since:
            self._fall_back(node, record, "its link went down, its envelopes come through Redis")

    def heard(self, node: str) -> None:
        """An envelope from ``node`` came through Redis: if its link is down, it is alive
        all the same (its next failed redial takes Redis at once)."""
        if node in self.failing:
            self._heard[node] = time.monotonic()

    def _unfail(self, node: str) -> None:
        self.failing.pop(node, None)
        self._heard.pop(node, None)

    def _pinged(self, conn: Outgoing, record: PeerRecord, why: str, answered: bool) -> None:
        node = conn.node
        if self._out.get(node) is not conn:
            return  # dropped meanwhile (a new record, or the node is gone): handled there
        self._unlist(node)
        if answered:  # alive: only the way to it is broken
            self._fall_back(node, record, f"{why}; it answers on its own link to this node")
            self._hand_over(conn, why)
        else:
            self._retry_at[node] = time.monotonic() + RETRY_AFTER
            self._report(node, why)

    def incoming_ready(self, conn: Incoming, node: str) -> None:
        conn.node = node
        old = self._in.get(node)
        self._in[node] = conn
        if old is not None:
            old.drop()
        conn.watch(self.ping_after, self.ping_timeout)

    def silent(self, conn: Incoming, why: str) -> None:
        """Nothing came on ``conn`` though asked: the way from its node is broken (or the
        node hangs), and likely the way to it: both links end (``lost`` once)."""
        node = conn.node
        if self._in.get(node) is not conn:
            return
        out = self._unlist(node)
        if out is not None:
            out.drop()
        if node in self._known:
            self.failing.setdefault(node, time.monotonic())
        conn.fail(why)

    def incoming_lost(self, conn: Incoming, why: str) -> None:
        for key, (sync_conn, answer, timer) in list(self._syncs.items()):
            if sync_conn is conn:
                del self._syncs[key]
                timer.cancel()
                answer(False)
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
        self.ping(node, lambda _answered: done(), timeout)

    def ping(self, node: str, answer: Callable[[bool], None], timeout: float) -> None:
        """``sync``, telling ``answer`` whether ``node`` answered (False: it has no link to
        this node, the link broke, or no answer came in ``timeout`` seconds)."""
        conn = self._in.get(node)
        if conn is None:
            answer(False)
        else:
            self.ping_on(conn, answer, timeout)

    def ping_on(self, conn: Incoming, answer: Callable[[bool], None], timeout: float) -> None:
        """``ping`` on the incoming link ``conn``."""
        key = secrets.token_bytes(8)
        timer = asyncio.get_running_loop().call_later(timeout, self._sync_timeout, key)
        self._syncs[key] = (conn, answer, timer)
        conn.write(SYNC, key)

    def synced(self, conn: Incoming, key: bytes) -> None:
        found = self._syncs.pop(key, None)
        if found is not None:
            found[2].cancel()
            found[1](True)

    def _sync_timeout(self, key: bytes) -> None:
        found = self._syncs.pop(key, None)
        if found is not None:
            log.warning("cluster: node %s did not answer a sync on its direct link", found[0].node)
            found[1](False)

    @property
    def links_up(self) -> int:
        """Open outgoing links (``wamp_cluster_peer_links``)."""
        return sum(1 for conn in self._out.values() if conn.ready and not conn.closed)
