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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from broker.core.router import Router
from broker.core.session import Session

from . import keys
from .claims import Claim, reclaim_reply, release_entry
from .events import EventChannels
from .keys import CONTROL, NODES, SEP, pack, text, unpack
from .link import ClusterTiming
from .mirror import Mirror
from .outbox import Command, Outbox

if TYPE_CHECKING:
    from broker.core.pubsub import Subscription

__all__ = ["Directory"]

log = logging.getLogger(__name__)

REAP_LOCK_MS = 30_000


class Directory:
    """Keeps this node's records in Redis and the other nodes' in the mirror."""

    def __init__(
        self,
        node: str,
        router: Router,
        timing: ClusterTiming,
        outbox: Outbox,
        mirror: Mirror,
        events: EventChannels,
        incarnation: str,
    ) -> None:
        self.node = node
        self.router = router
        self.timing = timing
        self.outbox = outbox
        self.mirror = mirror
        self.events = events
        self.incarnation = incarnation
        self.connected_at = 0.0
        """When the current connection (or the last republish) started; 0 when down."""
        self._loading: dict[str, list[dict[str, Any]]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._hashes = dict(zip(keys.NODE_HASHES, keys.node_hashes(node), strict=True))

    def _hash(self, kind: str) -> str:
        return self._hashes[kind]

    # --- local changes -----------------------------------------------------------------
    def session_joined(self, realm: str, session: Session) -> None:
        """Write the session to the directory and announce it."""
        info = session.info()
        self.outbox.push(self._session_write(realm, session.id, info))
        env = {"op": "join", "n": self.node, "r": realm, "info": info}
        self.outbox.push(("PUBLISH", CONTROL, pack(env)))

    def session_left(self, realm: str, session: Session) -> None:
        """Remove the session (and its testaments) from the directory and announce it."""
        push = self.outbox.push
        push(("HDEL", self._hash("sessions"), str(session.id)))
        push(("HDEL", self._hash("testaments"), str(session.id)))
        env = {"op": "leave", "n": self.node, "r": realm, "s": session.id}
        env["authid"], env["authrole"] = session.authid, session.authrole
        push(("PUBLISH", CONTROL, pack(env)))

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
            pack({"realm": realm, "info": info}),
        )

    def _sub_write(self, realm: str, sub: Subscription, entry: dict[str, Any]) -> Command:
        field = f"{realm}{SEP}{sub.id}"
        if sub.subscribers:
            return ("HSET", self._hash("subs"), field, pack(entry))
        return ("HDEL", self._hash("subs"), field)

    def _sub_commands(self, realm: str, sub: Subscription) -> Iterator[Command]:
        entry = _sub_entry(realm, sub)
        yield self._sub_write(realm, sub, entry)
        yield ("PUBLISH", CONTROL, pack({"op": "sub", "n": self.node, "r": realm, "sub": entry}))

    def _testaments_write(self, realm: str, session: Session) -> Command:
        sid = str(session.id)
        if session.testaments and session.realm is not None:
            value = pack({"realm": realm, "testaments": _testaments(session)})
            return ("HSET", self._hash("testaments"), sid, value)
        return ("HDEL", self._hash("testaments"), sid)

    # --- the whole snapshot --------------------------------------------------------------
    async def republish(self, cmd: Redis) -> None:
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
        for field, value in old_regs.items():
            if field not in fields:
                push(release_entry(unpack(value)))
        push(("DEL", *keys.node_hashes(self.node, ("sessions", "subs", "testaments"))))
        self.outbox.cancel_all()
        for realm in self.router.realms.values():
            for session in realm.sessions.values():
                push(self._session_write(realm.name, session.id, session.info()))
                if session.testaments:
                    push(self._testaments_write(realm.name, session))
            for sub in realm.broker.subscriptions():
                push(self._sub_write(realm.name, sub, _sub_entry(realm.name, sub)))
        for (realm_name, topic), env in self.events.owned_retained.items():
            push(("HSET", keys.retained_key(realm_name), topic, env))
        for claim, reg_id, reply in held:
            push(claim.command(self.node, reg_id, True), reply)
        push(("PUBLISH", CONTROL, pack({"op": "hello", "n": self.node})))

    def _held_claims(self) -> list[tuple[Claim, int, Any]]:
        """Every registration a local session holds: (claim, registration ID, reply)."""
        held = []
        for realm in self.router.realms.values():
            for reg in realm.dealer.registrations():
                for callee in reg.callees:
                    if realm.sessions.get(callee.id) is callee:
                        claim = Claim.held(realm.name, reg, callee)
                        held.append((claim, reg.id, reclaim_reply(callee, reg)))
        return held

    async def withdraw(self, cmd: Redis) -> None:
        """Remove this node's state from Redis and say ``gone`` (graceful shutdown)."""
        pipe = cmd.pipeline(transaction=False)
        pipe.delete(*keys.node_hashes(self.node), keys.node_key(self.node))
        pipe.srem(NODES, self.node)
        pipe.publish(CONTROL, pack({"op": "gone", "n": self.node}))
        await pipe.execute()

    # --- the other nodes -----------------------------------------------------------------
    async def load_all(self, cmd: Redis) -> None:
        """Load the retained events and every other node's state."""
        for realm in self.router.realms.values():
            for env in await cmd.hvals(keys.retained_key(realm.name)):
                ev = unpack(env)
                if ev.get("n") != self.node:
                    self.mirror.retain(realm, ev)
        for raw in await cmd.smembers(NODES):
            node = text(raw)
            if node != self.node:
                await self._load_node(cmd, node)

    def load_later(self, cmd: Redis, node: str) -> None:
        """(Re)load ``node``'s state in the background (it said ``hello``)."""
        if node in self._loading:
            return
        task = asyncio.ensure_future(self._load_node(cmd, node))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def hold(self, node: str, env: dict[str, Any]) -> bool:
        """Keep a control envelope of ``node`` while its state loads; False if not loading."""
        buffered = self._loading.get(node)
        if buffered is None:
            return False
        buffered.append(env)
        return True

    async def _load_node(self, cmd: Redis, node: str) -> None:
        self._loading[node] = []
        try:
            pipe = cmd.pipeline(transaction=False)
            for name in keys.node_hashes(node, ("sessions", "subs", "regs")):
                pipe.hvals(name)
            sessions, subs, regs = await pipe.execute()
            self.mirror.load_node(
                node,
                [unpack(v) for v in sessions],
                [unpack(v) for v in subs],
                [unpack(v) for v in regs],
            )
        finally:
            for env in self._loading.pop(node, []):
                self.mirror.control(node, env)

    # --- liveness ------------------------------------------------------------------------
    async def heartbeat(self, cmd: Redis) -> None:
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

    async def _check_nodes(self, cmd: Redis) -> None:
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

    async def reap_previous(self, cmd: Redis) -> None:
        """A node restarting under the same ID reaps its previous incarnation first."""
        if await cmd.exists(*keys.node_hashes(self.node, ("sessions", "regs", "testaments"))):
            await self._reap(cmd, self.node)

    async def _reap(self, cmd: Redis, node: str) -> None:
        """Publish a dead node's testaments and remove its state from Redis."""
        pipe = cmd.pipeline(transaction=False)
        for value in await cmd.hvals(keys.node_hash(node, "testaments")):
            for channel, data in self.events.testaments(unpack(value)):
                pipe.publish(channel, data)
        for value in await cmd.hvals(keys.node_hash(node, "regs")):
            pipe.execute_command(*release_entry(unpack(value)))
        pipe.delete(*keys.node_hashes(node))
        pipe.srem(NODES, node)
        if node != self.node:
            pipe.publish(CONTROL, pack({"op": "gone", "n": node}))
        await pipe.execute()
        log.info("cluster: reaped node %s", node)


def _sub_entry(realm: str, sub: Subscription) -> dict[str, Any]:
    return {
        "realm": realm,
        "id": sub.id,
        "uri": sub.topic,
        "match": sub.match,
        "created": sub.created,
        "subscribers": list(sub.subscribers),
    }


def _testaments(session: Session) -> list[dict[str, Any]]:
    return [
        {"topic": t.topic, "args": t.args, "kwargs": t.kwargs, "options": t.options}
        for t in session.testaments
        if t.scope == "destroyed"
    ]
