"""This node's state in Redis, and the liveness of the others.

Writes: the node record and heartbeat, the ``:sessions``, ``:subs``, ``:testaments``
and ``:regs`` hashes (through the outbox, in order), the whole snapshot on
(re)connect ("republish"). Reads: every other node's hashes when it appears or says
``hello``. Liveness: each heartbeat checks every node's heartbeat key; a node whose
key is gone is dropped, and one node reaps its state (protocol_spec/cluster.md,
"Node identity and liveness" and "Keys").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from broker.core.host import ClusterHost
from broker.core.session import Session
from protocol_spec.cluster import (
    CalleeRecord,
    ClusterProtocolError,
    ControlMessage,
    NodeGone,
    NodeHello,
    PeerRecord,
    SessionJoined,
    SessionLeft,
    SessionRecord,
    SubscriptionChanged,
    SubscriptionRecord,
    TestamentsRecord,
    decode_event,
)

from . import keys
from .claims import Claim, reclaim_reply, release_entry
from .connect import Client
from .events import EventChannels, publication_of
from .keys import CONTROL, NODES, SEP, text
from .link import ClusterTiming
from .mirror import Mirror
from .outbox import Command, Outbox

if TYPE_CHECKING:
    from broker.core.pubsub import Subscription

__all__ = ["Directory"]

log = logging.getLogger(__name__)

REAP_LOCK_MS = 30_000

_R = TypeVar("_R")


def records(
    decode: Callable[[bytes | str], _R], values: Iterable[bytes | str], where: str
) -> list[_R]:
    """Decode values read from Redis; a malformed one is logged and skipped."""
    found = []
    for value in values:
        try:
            found.append(decode(value))
        except ClusterProtocolError as exc:
            log.warning("cluster: skipping a malformed record in %s: %s", where, exc)
    return found


class Directory:
    """Keeps this node's records in Redis and the other nodes' in the mirror."""

    def __init__(
        self,
        node: str,
        host: ClusterHost,
        timing: ClusterTiming,
        outbox: Outbox,
        mirror: Mirror,
        events: EventChannels,
        incarnation: str,
    ) -> None:
        self.node = node
        self.host = host
        self.timing = timing
        self.outbox = outbox
        self.mirror = mirror
        self.events = events
        self.incarnation = incarnation
        self.connected_at = 0.0
        """When the current connection (or the last republish) started; 0 when down."""
        self.peer_record: PeerRecord | None = None
        """Where this node takes direct links (``peers``), written with every republish."""
        self.peer_known: Callable[[str, PeerRecord | None], None] = lambda node, record: None
        """Gets each loaded node's ``PeerRecord`` (None: that node takes no direct links)."""
        self._loading: dict[str, list[ControlMessage]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._hashes = dict(zip(keys.NODE_HASHES, keys.node_hashes(node), strict=True))

    def _hash(self, kind: str) -> str:
        return self._hashes[kind]

    # --- local changes -----------------------------------------------------------------
    def session_joined(self, realm: str, session: Session) -> None:
        """Write the session to the directory and announce it."""
        info = session.info()
        self.outbox.push(self._session_write(realm, session.id, info))
        env = SessionJoined(self.node, realm, info)
        self.outbox.push((self.outbox.pub, CONTROL, env.pack()))

    def session_left(self, realm: str, session: Session) -> None:
        """Remove the session (and its testaments) from the directory and announce it."""
        push = self.outbox.push
        push(("HDEL", self._hash("sessions"), str(session.id)))
        push(("HDEL", self._hash("testaments"), str(session.id)))
        env = SessionLeft(self.node, realm, session.id, session.authid, session.authrole)
        push((self.outbox.pub, CONTROL, env.pack()))

    def subscription_changed(self, realm: str, sub: Subscription) -> None:
        """Write the subscription and announce it with the next batch (coalesced)."""
        self.outbox.defer(("sub", realm, sub.id), lambda: self._sub_commands(realm, sub))

    def testaments_changed(self, realm: str, session: Session) -> None:
        """Write the session's testaments with the next batch (coalesced)."""
        self.outbox.defer(
            self.testaments_key(realm, session.id), lambda: [self._testaments_write(realm, session)]
        )

    @staticmethod
    def testaments_key(realm: str, session_id: int) -> tuple[str, str, int]:
        """The outbox key of a session's deferred testaments write."""
        return ("testaments", realm, session_id)

    def _session_write(self, realm: str, session_id: int, info: dict[str, Any]) -> Command:
        return (
            "HSET",
            self._hash("sessions"),
            str(session_id),
            SessionRecord(realm, info).pack(),
        )

    def _sub_write(self, realm: str, sub: Subscription, entry: SubscriptionRecord) -> Command:
        field = f"{realm}{SEP}{sub.id}"
        if sub.subscribers:
            return ("HSET", self._hash("subs"), field, entry.pack())
        return ("HDEL", self._hash("subs"), field)

    def _sub_commands(self, realm: str, sub: Subscription) -> Iterator[Command]:
        entry = _sub_entry(realm, sub)
        yield self._sub_write(realm, sub, entry)
        yield (self.outbox.pub, CONTROL, SubscriptionChanged(self.node, realm, entry).pack())

    def _testaments_write(self, realm: str, session: Session) -> Command:
        sid = str(session.id)
        if session.testaments and session.realm is not None:
            value = TestamentsRecord(realm, _testaments(session)).pack()
            return ("HSET", self._hash("testaments"), sid, value)
        return ("HDEL", self._hash("testaments"), sid)

    # --- the whole snapshot --------------------------------------------------------------
    async def republish(self, cmd: Client) -> None:
        """Write this node's whole state (connect, reconnect, Redis emptied).

        Everything goes through the outbox, built without awaiting after the one read,
        so later changes are ordered after this snapshot.
        """
        old_regs = await cmd.hgetall(self._hash("regs"))
        push = self.outbox.push
        push(("SADD", NODES, self.node))
        ttl = int(self.timing.node_timeout * 1000)
        push(("SET", keys.node_key(self.node), self.incarnation, "PX", ttl))
        held = self._held_claims()
        fields = {f"{c.realm}{SEP}{reg_id}{SEP}{c.session.id}".encode() for c, reg_id, _ in held}
        stale = [value for field, value in old_regs.items() if field not in fields]
        for entry in records(CalleeRecord.unpack, stale, "this node's registrations"):
            push(release_entry(entry, self.outbox.pub))
        push(("DEL", *keys.node_hashes(self.node, ("sessions", "subs", "testaments"))))
        if self.peer_record is None:
            push(("DEL", keys.peer_key(self.node)))
        else:
            push(("SET", keys.peer_key(self.node), self.peer_record.pack()))
        self.outbox.cancel_all()
        for realm in self.host.realms.values():
            for session in realm.sessions.values():
                push(self._session_write(realm.name, session.id, session.info()))
                if session.testaments:
                    push(self._testaments_write(realm.name, session))
            for sub in realm.broker.subscriptions():
                push(self._sub_write(realm.name, sub, _sub_entry(realm.name, sub)))
        for (realm_name, topic), env in self.events.owned_retained.items():
            push(("HSET", keys.retained_key(realm_name), topic, env))
        for claim, reg_id, reply in held:
            push(claim.command(self.node, reg_id, True, self.outbox.pub), reply)
        push((self.outbox.pub, CONTROL, NodeHello(self.node).pack()))

    def _held_claims(self) -> list[tuple[Claim, int, Any]]:
        """Every registration a local session holds: (claim, registration ID, reply)."""
        held = []
        for realm in self.host.realms.values():
            for reg in realm.dealer.registrations():
                for callee in reg.callees:
                    if realm.sessions.get(callee.id) is callee:
                        claim = Claim.held(realm.name, reg, callee)
                        held.append((claim, reg.id, reclaim_reply(callee, reg)))
        return held

    async def withdraw(self, cmd: Client) -> None:
        """Remove this node's state from Redis and say ``gone`` (graceful shutdown)."""
        pipe = cmd.pipeline(transaction=False)
        pipe.delete(
            *keys.node_hashes(self.node), keys.node_key(self.node), keys.peer_key(self.node)
        )
        pipe.srem(NODES, self.node)
        pipe.execute_command(self.outbox.pub, CONTROL, NodeGone(self.node).pack())
        await pipe.execute()

    # --- the other nodes -----------------------------------------------------------------
    async def load_all(self, cmd: Client) -> None:
        """Load the retained events and every other node's state."""
        for realm in self.host.realms.values():
            where = f"the retained events of {realm.name!r}"
            values = await cmd.hvals(keys.retained_key(realm.name))
            for ev in records(decode_event, values, where):
                if ev.node != self.node:
                    realm.broker.retain_remote(publication_of(ev))
        for raw in await cmd.smembers(NODES):
            node = text(raw)
            if node != self.node:
                await self._load_node(cmd, node)

    def load_later(self, cmd: Client, node: str) -> None:
        """(Re)load ``node``'s state in the background (it said ``hello``)."""
        if node in self._loading:
            return
        task = asyncio.ensure_future(self._load_node(cmd, node))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def hold(self, msg: ControlMessage) -> bool:
        """Keep a control envelope while its node's state loads; False if not loading."""
        buffered = self._loading.get(msg.node)
        if buffered is None:
            return False
        buffered.append(msg)
        return True

    async def _load_node(self, cmd: Client, node: str) -> None:
        self._loading[node] = []
        try:
            pipe = cmd.pipeline(transaction=False)
            for name in keys.node_hashes(node, ("sessions", "subs", "regs")):
                pipe.hvals(name)
            pipe.get(keys.peer_key(node))
            sessions, subs, regs, peer = await pipe.execute()
            where = f"the state of node {node!r}"
            found = records(PeerRecord.unpack, [] if peer is None else [peer], where)
            self.peer_known(node, found[0] if found else None)
            self.mirror.load_node(
                node,
                records(SessionRecord.unpack, sessions, where),
                records(SubscriptionRecord.unpack, subs, where),
                records(CalleeRecord.unpack, regs, where),
            )
        finally:
            for msg in self._loading.pop(node, []):
                self.mirror.control(msg)

    # --- liveness ------------------------------------------------------------------------
    async def heartbeat(self, cmd: Client) -> None:
        """Refresh this node's heartbeat and check the others' (runs for the connection)."""
        ttl = int(self.timing.node_timeout * 1000)
        while True:
            await asyncio.sleep(self.timing.heartbeat_interval)
            previous = await cmd.set(keys.node_key(self.node), self.incarnation, px=ttl, get=True)
            if previous is None:
                log.warning("cluster: Redis lost this node's state; republishing it")
                self.connected_at = time.monotonic()
                await self.republish(cmd)
            await self._check_nodes(cmd)

    async def _check_nodes(self, cmd: Client) -> None:
        listed = {text(raw) for raw in await cmd.smembers(NODES)} - {self.node}
        known = set(self.mirror.nodes) | listed
        if not known:
            return
        ordered = sorted(known)
        pipe = cmd.pipeline(transaction=False)
        for node in ordered:
            pipe.exists(keys.node_key(node))
        alive = await pipe.execute()
        settled = time.monotonic() - self.connected_at > self.timing.node_timeout
        for node, is_alive in zip(ordered, alive, strict=True):
            if is_alive:
                if node not in self.mirror.nodes and node not in self._loading:
                    await self._load_node(cmd, node)
            elif settled:
                log.warning("cluster: node %s stopped heartbeating; dropping it", node)
                self.mirror.drop_node(node, "callee node lost")
                if await cmd.set(keys.reap_key(node), self.node, nx=True, px=REAP_LOCK_MS):
                    await self._reap(cmd, node)

    async def reap_previous(self, cmd: Client) -> None:
        """A node restarting under the same ID reaps its previous incarnation first."""
        if await cmd.exists(*keys.node_hashes(self.node, ("sessions", "regs", "testaments"))):
            await self._reap(cmd, self.node)

    async def _reap(self, cmd: Client, node: str) -> None:
        """Publish a dead node's testaments and remove its state from Redis."""
        pipe = cmd.pipeline(transaction=False)
        where = f"the state of node {node!r}"
        testaments = await cmd.hvals(keys.node_hash(node, "testaments"))
        for record in records(TestamentsRecord.unpack, testaments, where):
            for channel, data in self.events.testaments(record):
                pipe.execute_command(self.outbox.pub, channel, data)
        regs = await cmd.hvals(keys.node_hash(node, "regs"))
        for entry in records(CalleeRecord.unpack, regs, where):
            pipe.execute_command(*release_entry(entry, self.outbox.pub))
        pipe.delete(*keys.node_hashes(node), keys.peer_key(node))
        pipe.srem(NODES, node)
        if node != self.node:
            pipe.execute_command(self.outbox.pub, CONTROL, NodeGone(node).pack())
        await pipe.execute()
        log.info("cluster: reaped node %s", node)


def _sub_entry(realm: str, sub: Subscription) -> SubscriptionRecord:
    return SubscriptionRecord(
        realm, sub.id, sub.topic, sub.match, sub.created, tuple(sub.subscribers)
    )


def _testaments(session: Session) -> list[dict[str, Any]]:
    return [
        {"topic": t.topic, "args": t.args, "kwargs": t.kwargs, "options": t.options}
        for t in session.testaments
        if t.scope == "destroyed"
    ]
