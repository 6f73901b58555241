"""The Redis cluster backend: one realm served by many broker nodes.

Connections: one pub/sub connection (control channel, this node's inbox and probe
channel, the event channels local subscriptions need) and one command client whose
single writer task pipelines every PUBLISH and state write in order. On a Redis
Cluster (``redis+cluster://``, ``shards``) the pub/sub side is one connection per
shard master, every channel sharded (SSUBSCRIBE/SPUBLISH) and pattern subscriptions
go through the realm's pattern channel (``patterns``). The wire format, keys and
guarantees are in protocol_spec/cluster.md.

Roles, one module each::

    redis      RedisCluster: the core's hooks, the connection life cycle, dispatch
    link       PubSubLink: channels and patterns needed, per lane; probes and their RTT
    shards     Redis Cluster: slot map, one pub/sub lane per master
    patterns   Redis Cluster: pattern subscriptions announced, the pattern channel
    outbox     Outbox: the single writer (ordered, pipelined, coalesced writes)
    events     EventChannels: event envelopes out, deduplicated delivery in
    directory  Directory: this node's state in Redis, heartbeat, liveness, reaping
    claims     Claim: registration claim/release script calls
    mirror     Mirror: control and inbox envelopes applied to the local core
    history    RedisHistory: topics with history published through one script, get_events
    repair     GapRepair: per-topic offsets delivered here, the catch-up after an outage

    state      LinkState: the link's states and their transition table

Life cycle (``_supervise``, the table in ``state``)::

    connecting --link up, subscriptions live--> up
    up --command/pub-sub/heartbeat error or timeout--> degraded;  up --probe lost--> deaf
    degraded/deaf --backoff 0.1 s … 2 s with jitter--> connecting
    any --close--> down

Every command on the command client (and every pipelined batch of the writer) waits at
most ``command_timeout`` (1 s): a hung Redis is an error like a dead one. The state
moves the moment the failure is seen, before the connections are torn down, and the
writer's pending replies are answered then (so an acknowledged PUBLISH gets
``wamp.error.unavailable`` while ``/readyz`` already says 503).

While not up, ``available`` is false: the core refuses acknowledged publishes,
remote calls and registrations with ``wamp.error.unavailable`` and keeps serving
local traffic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from broker.core.host import ClusterHost
from broker.core.ids import random_id
from broker.core.ports import ClaimDone, Cluster, PublishDone
from broker.core.publication import Publication
from broker.core.session import Session
from broker.metrics.views import ClusterLinks, ClusterMetrics
from protocol_spec import errors
from protocol_spec.backoff import Backoff
from protocol_spec.cluster import (
    ClusterProtocolError,
    ControlMessage,
    KillSessions,
    NodeGone,
    NodeHello,
    decode_control,
    decode_event,
    decode_inboxes,
)
from protocol_spec.uri import MATCH_EXACT

from . import keys
from .barrier import ControlBarrier
from .claims import Claim, claim_reply, release_command
from .connect import (
    Client,
    Endpoint,
    connect_clients,
    parse_redis_url,
    wait_for_new_master,
    watch_master,
)
from .directory import Directory
from .events import EventChannels
from .history import RedisHistory
from .keys import CONTROL
from .link import ClusterTiming, Lane, LinkDeaf, LinkLost, PubSubLink, Route
from .mirror import Mirror
from .outbox import Command, Outbox, Tally
from .paths import CallPaths
from .patterns import Patterns
from .peers import PeerTLS
from .repair import GapRepair
from .scripts import HISTORY_PUBLISH
from .shards import connect_cluster, lanes_for, servers
from .state import LinkState, LinkStateMachine

if TYPE_CHECKING:
    from broker.core.dealer import Registration
    from broker.core.pubsub import Subscription

__all__ = ["ClusterTiming", "RedisCluster", "default_node_id"]

log = logging.getLogger(__name__)


@dataclass
class _Connection:
    """One session's clients: commands, pub/sub lanes (and their clients), Sentinel's master."""

    cmd: Client
    clients: list[Redis]
    master: Endpoint | None = None
    route: Route | None = None
    lanes: list[Lane] = field(default_factory=list)

    async def close(self) -> None:
        closers = [lane.pubsub.aclose() for lane in self.lanes]  # type: ignore[no-untyped-call]
        closers += [self.cmd.aclose(), *(client.aclose() for client in self.clients)]
        for closing in closers:
            try:
                await asyncio.wait_for(closing, 1.0)
            except Exception:  # the connection is already broken
                pass


def default_node_id() -> str:
    """A node ID unique enough without configuration: host, PID, random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisCluster(Cluster):
    """The ``Cluster`` of the core, backed by Redis."""

    distributed = True

    def __init__(
        self,
        url: str,
        node: str | None,
        host: ClusterHost,
        timing: ClusterTiming | None = None,
        peer: str | None = None,
        peer_advertise: str | None = None,
        peer_tls: PeerTLS | None = None,
    ) -> None:
        self.url = url
        self.target = parse_redis_url(url)
        """Single server, Sentinel or Redis Cluster (``broker.cluster.connect``)."""
        self.node = node or default_node_id()
        self.host = host
        self.timing = timing or ClusterTiming()
        self.backoff = Backoff(initial=0.1, maximum=self.timing.backoff_max, jitter=0.5)
        """Reconnection delays (0.1 s doubling up to ``backoff_max``, jittered)."""
        self.link_state = LinkStateMachine()
        self.patterns = Patterns(self.node, host) if self.target.cluster else None
        """Redis Cluster only: pattern subscriptions through the realms' pattern channels."""
        self.mirror = Mirror(host, self.node, self._send_inbox, self._hello, self.patterns)
        self.link = PubSubLink(self.node, self.timing)
        self.outbox = Outbox(self.timing.command_timeout, self.target.publish_command)
        self.events = EventChannels(self.node, host, self.outbox)
        self.events.patterns = self.patterns
        self.history = RedisHistory(host, lambda: self._cmd, self.outbox)
        self.history.install()
        self.repair = GapRepair(self.node, host)
        self.events.history, self.events.repair = self.history, self.repair
        self._malformed = Tally(1000)
        self.directory = Directory(
            self.node,
            host,
            self.timing,
            self.outbox,
            self.mirror,
            self.events,
            secrets.token_hex(8),
        )
        self._closing = False
        self._ever_connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cmd: Client | None = None
        self._master: Endpoint | None = None
        """Sentinel: the master of the last session that connected."""
        self._servers: tuple[Endpoint, ...] = ()
        """Redis Cluster: the servers the last session saw (seeds for the next, after --redis's)."""
        self._inbox = keys.inbox(self.node)
        self.peer, self.peer_advertise = peer, peer_advertise
        """Where to take direct links (``host:port``; None: none) and the address to give."""
        self.paths = CallPaths(
            self.node, self.mirror, self.outbox, self.link_state, self._malformed_envelope, peer_tls
        )
        self.peers = self.paths.peers
        self.paths.time_by(self.timing)
        self.barrier = ControlBarrier(self.peers, self._apply_control, self.timing.command_timeout)
        self.directory.peer_known = self.peers.known

    @property
    def available(self) -> bool:
        """Whether other nodes can be reached (the link is ``up``)."""
        return self.link_state.state is LinkState.UP  # ``LinkState.available``, inlined

    @property
    def state_text(self) -> str:
        """The link state and why, for humans (``/readyz``)."""
        return self.link_state.text

    @property
    def redis_rtt(self) -> float | None:
        """Seconds the last pub/sub probe took to come back; None while unknown."""
        return self.link.rtt if self.available else None

    def metrics(self) -> ClusterMetrics:
        """The link's state for ``/metrics`` (the ``ClusterMetrics`` contract)."""
        state = self.link_state.state
        links: ClusterLinks = {
            "redis": state.available,
            "pubsub": self.link.linked and state is not LinkState.DEAF,
        }
        return {
            "links": links,
            "redis_rtt": self.redis_rtt,
            "state": state.value,
            "outbox_dropped": self.outbox.dropped,
            "peer_links": self.peers.links_up,
            "peer_failures": self.peers.failures,
            "peer_fallbacks": len(self.peers.via_redis),
        }

    # --- life cycle ------------------------------------------------------------------------
    async def start(self, wait: float = 5.0) -> None:
        """Start connecting; wait up to ``wait`` seconds for the first connection."""
        if self.peer:
            self.directory.peer_record = await self.peers.start(self.peer, self.peer_advertise)
        self._task = asyncio.create_task(self._supervise())
        try:
            await asyncio.wait_for(self._ever_connected.wait(), wait)
        except TimeoutError:
            log.warning(
                "cluster: Redis at %s not reachable yet; serving local traffic", self.target.display
            )

    async def close(self, timeout: float = 3.0) -> None:
        """Flush what is queued, remove this node's state from Redis, disconnect."""
        if self._closing:
            return
        if self.available and self._cmd is not None:
            try:
                await asyncio.wait_for(self.outbox.drain(), timeout)
                await asyncio.wait_for(self.directory.withdraw(self._cmd), timeout)
            except Exception as exc:  # leaving anyway; the others reap us by TTL
                log.warning("cluster: could not withdraw cleanly: %s", exc)
        self._closing = True
        self.link_state.move(LinkState.DOWN, "closed")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.outbox.fail("the node is shutting down")  # whatever the writer could not send
        await self.peers.close()
        log.info("cluster: node %s left", self.node)

    async def _supervise(self) -> None:
        attempt = 0
        first = True
        while not self._closing:
            try:
                await self._session(first)
            except asyncio.CancelledError:
                self._degrade(LinkState.DOWN, "closing")
                raise
            except Exception:
                pass  # ``_session`` degraded the link the moment it failed
            # it worked for a while: start over; else wait longer each time
            attempt = 0 if self.directory.connected_at else attempt + 1
            first = False
            self.directory.connected_at = 0.0
            await self._pause(self.backoff.delay(attempt))
            self.link_state.move(LinkState.CONNECTING, "reconnecting")

    def _lost(self, exc: Exception, first: bool) -> None:
        """The session failed: degrade at once (before its connections are torn down)."""
        if self._closing:
            return  # ``close`` moves to down and answers what is pending
        if self.available or first:
            log.warning("cluster: link to Redis lost (%s); serving local traffic", exc)
        to = LinkState.DEAF if isinstance(exc, LinkDeaf) else LinkState.DEGRADED
        self._degrade(to, str(exc) or type(exc).__name__)

    async def _pause(self, delay: float) -> None:
        """The backoff step; with Sentinel it ends early once another master is named."""
        if self.target.sentinel and not self.target.cluster:
            await wait_for_new_master(self.target, self._master, delay)
        else:
            await asyncio.sleep(delay)

    def _degrade(self, to: LinkState, why: str) -> None:
        was = self.available
        self.link_state.move(to, why)
        self.link.unlink()
        self.outbox.fail(why)
        if was:
            self.mirror.abandon_calls(errors.UNAVAILABLE, "the link to the other nodes was lost")

    async def _connect(self) -> _Connection:
        """This session's clients; on a Redis Cluster one connected lane per master."""
        timeout = self.timing.command_timeout
        if self.target.cluster:
            cmd, found, subs = await connect_cluster(self.target, timeout, self._servers)
            self._servers = servers(cmd)
            conn = _Connection(cmd, subs, None, found.route)
            try:
                conn.lanes = await lanes_for(self.node, found, subs)
            except BaseException:
                await conn.close()
                raise
            return conn
        single, sub_client, master = await connect_clients(self.target, timeout)
        conn = _Connection(single, [sub_client], master)
        conn.lanes = [Lane(sub_client.pubsub(), keys.probe(self.node))]
        try:
            await conn.lanes[0].pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _session(self, first: bool) -> None:
        """One connection to Redis, from connect to the first failure."""
        conn = await self._connect()
        cmd, master = conn.cmd, conn.master
        tasks: list[asyncio.Task[None]] = []
        try:
            await cmd.ping()
            await self._history_session(cmd)
            self._cmd = cmd
            self._master = master
            self.link.relink(conn.lanes, (CONTROL, self._inbox), conn.route, self.target.cluster)
            for lane in conn.lanes:
                tasks.append(asyncio.create_task(self.link.read(lane, self._dispatch)))
                tasks.append(asyncio.create_task(self.link.subscriber(lane)))
            await self.link.probe_once(cmd)  # every subscription before it is live
            await self.repair.run(cmd, self.events.deliver, self.events.deliver_many)  # missed
            if first:
                await self.directory.reap_previous(cmd)
            self.directory.connected_at = time.monotonic()
            tasks.append(asyncio.create_task(self.outbox.write(cmd)))
            self.link_state.move(LinkState.UP)
            await self.directory.republish(cmd)
            self._announce_all()
            self._ever_connected.set()
            where = self.target.display + (
                f" (master {master.host}:{master.port})" if master else ""
            )
            log.info("cluster: node %s connected to %s", self.node, where)
            await self.directory.load_all(cmd)
            tasks.append(asyncio.create_task(self.directory.heartbeat(cmd)))
            tasks.append(asyncio.create_task(self.link.prober(cmd)))
            if master is not None:  # Sentinel: end the session when the master moves
                interval = self.timing.probe_interval
                tasks.append(asyncio.create_task(watch_master(self.target, master, interval)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            raise LinkLost("a cluster task ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(exc, first)
            raise
        finally:
            await self._end_session(tasks, conn)

    async def _end_session(self, tasks: list[asyncio.Task[None]], conn: _Connection) -> None:
        self.repair.abandon()
        self._cmd = None
        for task in tasks:
            task.cancel()
        if tasks:
            # bounded: a task stuck in a client call that swallowed the cancellation
            # must not keep this session (and the reconnect) from ending
            _done, stuck = await asyncio.wait(tasks, timeout=2.0)
            if stuck:
                log.warning("cluster: %d task(s) did not stop when cancelled", len(stuck))
        await conn.close()

    async def _history_session(self, cmd: Client) -> None:
        """Event history on a new connection: the script loaded, live events held."""
        await cmd.script_load(HISTORY_PUBLISH)
        self.history.connected()
        self.repair.begin()  # until ``repair.run`` has delivered what was missed

    # --- envelopes from and to the other nodes ---------------------------------------------
    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == CONTROL:
                self._on_control(decode_control(data))
            elif channel == self._inbox:
                found = decode_inboxes(data)
                if self.peers.failing:  # rare: a link is down; whoever sends here lives
                    self.paths.heard(found)
                self.mirror.inboxes(found, self._malformed_inbox)
            else:
                self.events.receive(decode_event(data))
        except ClusterProtocolError as exc:
            self._malformed_envelope(channel, exc)

    def _malformed_inbox(self, exc: ClusterProtocolError) -> None:
        self._malformed_envelope(self._inbox, exc)

    def _malformed_envelope(self, channel: bytes, exc: ClusterProtocolError) -> None:
        count = self._malformed.add()
        if count:
            log.warning(
                "cluster: dropped a malformed envelope on %r (%d so far): %s",
                channel,
                count,
                exc,
            )

    def _on_control(self, msg: ControlMessage) -> None:
        if msg.node != self.node:
            self.barrier.control(msg)

    def _apply_control(self, msg: ControlMessage) -> None:
        if isinstance(msg, NodeHello | NodeGone) or not self.directory.hold(msg):
            self.mirror.control(msg)

    def _hello(self, node: str) -> None:
        if self._cmd is not None:
            self.directory.load_later(self._cmd, node)

    def _send_inbox(self, channel: bytes, data: bytes) -> None:
        if self.link_state.state is LinkState.UP:  # ``available``, inlined (call path)
            self.outbox.post(channel, data)

    # --- the Cluster hooks (called by the core) --------------------------------------------
    def publish(
        self, realm: str, publication: Publication, done: PublishDone | None = None
    ) -> None:
        """Pipeline the event to its topic channel (and the retained hash).

        ``done`` (acknowledged publishes) gets None once Redis ran every write of the
        event, or why not: the link is not up, Redis refused, or the link failed first.
        """
        if self.available:
            self.events.publish(realm, publication, done)
        elif done is not None:
            done(f"the link to the other nodes is {self.link_state.state.value}")

    def watch(self, realm: str, match: str, topic: str, done: Callable[[], None]) -> None:
        """Make sure events of (match, topic) from other nodes reach this node."""
        if match != MATCH_EXACT and self.patterns is not None:
            self._watch_pattern(self.patterns, realm, match, topic, done)
            return
        target = keys.watch_target(realm, match, topic)
        if match != MATCH_EXACT or self.history.rule_for(realm, topic) is None:
            self.link.watch(target, done)
            return
        # an exact topic with history: its offset is noted first, then it goes live
        self.repair.watch_from(self._cmd, realm, topic, lambda: self.link.watch(target, done))

    def unwatch(self, realm: str, match: str, topic: str) -> None:
        """Drop the Redis subscription once no local subscription needs it."""
        if match != MATCH_EXACT and self.patterns is not None:
            self.link.unwatch((False, keys.pattern_channel(realm)))
            if self.patterns.remove(realm, match, topic) and self.available:
                self.outbox.push(self._announcement(self.patterns, realm))
        else:
            self.link.unwatch(keys.watch_target(realm, match, topic))
        if self.repair.delivered:
            self.repair.forget(realm)  # a later subscription starts from live events

    def _watch_pattern(
        self, patterns: Patterns, realm: str, match: str, topic: str, done: Callable[[], None]
    ) -> None:
        """Redis Cluster: listen on the realm's pattern channel and announce the pattern.

        ``done`` once both the channel is live and Redis ran the announcement (it is
        then on its way to every node), so publishers elsewhere copy matching events
        to the pattern channel before the subscriber hears SUBSCRIBED.
        """
        grew = patterns.add(realm, match, topic)
        waits = 2 if grew and self.available else 1

        def part(_result: Any = None) -> None:
            nonlocal waits
            waits -= 1
            if waits == 0:
                done()

        self.link.watch((False, keys.pattern_channel(realm)), part)
        if grew and self.available:
            self.outbox.push(self._announcement(patterns, realm), part)

    def _announcement(self, patterns: Patterns, realm: str) -> Command:
        return (self.outbox.pub, CONTROL, patterns.announcement(realm).pack())

    def _announce_all(self) -> None:
        """After a (re)connect: this node's patterns in every realm, to every node."""
        if self.patterns is not None:
            for msg in self.patterns.announcements():
                self.outbox.push((self.outbox.pub, CONTROL, msg.pack()))

    def subscription_changed(self, realm: str, sub: Subscription) -> None:
        """Record the subscription for the cluster-wide meta API (coalesced)."""
        if self.available:
            self.directory.subscription_changed(realm, sub)

    def session_joined(self, realm: str, session: Session) -> None:
        """Write the session to the directory and announce it."""
        if self.available:
            self.directory.session_joined(realm, session)

    def session_left(self, realm: str, session: Session) -> None:
        """Remove the session from the directory and announce it."""
        self.mirror.local_callee_left(realm, session.id)
        self.outbox.cancel(self.directory.testaments_key(realm, session.id))
        if self.available:
            self.directory.session_left(realm, session)

    def testaments_changed(self, realm: str, session: Session) -> None:
        """Keep the session's testaments in Redis so a reaper can publish them."""
        if self.available:
            self.directory.testaments_changed(realm, session)

    def claim(
        self,
        realm: str,
        session: Session,
        procedure: str,
        match: str,
        invoke: str,
        disclose: bool,
        done: ClaimDone,
    ) -> None:
        """Run the claim script (in the writer's order); answer through ``done``."""
        claim = Claim(realm, session, procedure, match, invoke, disclose)
        pub = self.outbox.pub
        reply = claim_reply(claim, self.node, self.host, done, self.outbox.push, pub)
        self.outbox.push(claim.command(self.node, random_id(), False, pub), reply)

    def release(
        self,
        realm: str,
        reg: Registration,
        session: Session,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Leave the registration's claim (in the writer's order); ``done`` after Redis ran it.

        So UNREGISTERED means the procedure is free on every node. Without Redis (or when
        the write fails) ``done`` runs at once: the dead-node reaper frees it later.
        """
        if not self.available:
            if done is not None:
                done()
            return
        command = release_command(
            self.node, realm, reg.id, reg.procedure, reg.match, session.id, self.outbox.pub
        )
        self.outbox.push(command, None if done is None else (lambda _result: done()))

    def kill(
        self,
        realm: str,
        selector: str,
        value: Any,
        except_session: int,
        reason: str,
        message: str | None,
    ) -> None:
        """Ask every node to end its matching sessions."""
        if not self.available:
            return
        env = KillSessions(self.node, realm, selector, value, except_session, reason, message)
        self.outbox.push((self.outbox.pub, CONTROL, env.pack()))
