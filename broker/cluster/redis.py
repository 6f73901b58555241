"""The Redis cluster backend: one realm served by many broker nodes.

Connections: one pub/sub connection (control channel, this node's inbox and probe
channel, the event channels local subscriptions need) and one command client whose
single writer task pipelines every PUBLISH and state write in order. The wire
format, keys and guarantees are in protocol_spec/cluster.md.

Life cycle (``_supervise``)::

    connecting --link up, subscriptions live, state republished--> connected
    connected --command/pub-sub error, probe lost, heartbeat error--> degraded
    degraded --backoff 0.1 s … 2 s--> connecting

While not connected, ``available`` is false: the core refuses acknowledged
publishes, remote calls and registrations with ``wamp.error.unavailable`` and keeps
serving local traffic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.retry import Retry

from broker.core.cluster import ClaimDone
from broker.core.ids import random_id
from broker.core.pubsub import DeliveryFilter
from broker.core.router import Router
from broker.core.session import Session
from protocol_spec import errors

from . import keys
from .keys import CONTROL, NODES, SEP, pack, unpack
from .mirror import Mirror
from .scripts import CLAIM, RELEASE

if TYPE_CHECKING:
    from broker.core.dealer import Registration
    from broker.core.pubsub import Subscription

__all__ = ["ClusterTiming", "RedisCluster"]

log = logging.getLogger(__name__)

Command = tuple[Any, ...]
Reply = Callable[[Any], None]
MAX_OUTBOX = 200_000
SEEN = 4096


@dataclass(frozen=True, slots=True)
class ClusterTiming:
    """Liveness and reconnection timings (seconds); see protocol_spec/cluster.md."""

    heartbeat_interval: float = 1.0
    node_timeout: float = 5.0
    probe_interval: float = 2.0
    probe_timeout: float = 2.0
    backoff_max: float = 2.0


class LinkLost(Exception):
    """The connection to Redis (or the pub/sub link) is gone or deaf."""


def default_node_id() -> str:
    """A node ID unique enough without configuration: host, PID, random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisCluster:
    """The ``Cluster`` of the core, backed by Redis."""

    distributed = True

    def __init__(
        self, url: str, node: str | None, router: Router, timing: ClusterTiming | None = None
    ) -> None:
        self.url = url
        self.node = node or default_node_id()
        self.incarnation = secrets.token_hex(8)
        self.router = router
        self.timing = timing or ClusterTiming()
        self.available = False
        self.mirror = Mirror(router, self.node, self._send_inbox)
        self._linked = False
        self._closing = False
        self._ever_connected = asyncio.Event()
        self._connected_at = 0.0
        self._outbox: deque[tuple[Command, Reply | None]] = deque()
        self._wake = asyncio.Event()
        self._sub_ops: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        # Redis channel/pattern → how many local subscriptions need it
        self._targets: dict[tuple[bool, bytes], int] = {}
        self._live: set[tuple[bool, bytes]] = set()
        self._waiters: dict[tuple[bool, bytes], list[Callable[[], None]]] = {}
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._probe_token = b""
        self._probe_back = asyncio.Event()
        self._owned_retained: dict[tuple[str, str], bytes] = {}
        self._dirty_subs: dict[tuple[str, int], Subscription] = {}
        self._dirty_testaments: dict[tuple[str, int], Session] = {}
        self._loading: dict[str, list[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._cmd: Redis | None = None
        self.state_text = "connecting"

    # --- life cycle ------------------------------------------------------------------------
    async def start(self, wait: float = 5.0) -> None:
        """Start connecting; wait up to ``wait`` seconds for the first connection."""
        self._task = asyncio.create_task(self._supervise())
        try:
            await asyncio.wait_for(self._ever_connected.wait(), wait)
        except TimeoutError:
            log.warning("cluster: Redis at %s not reachable yet; serving local traffic", self.url)

    async def close(self, timeout: float = 3.0) -> None:
        """Flush what is queued, remove this node's state from Redis, disconnect."""
        if self._closing:
            return
        if self.available:
            try:
                await asyncio.wait_for(self._flush(), timeout)
                await asyncio.wait_for(self._withdraw(), timeout)
            except Exception as exc:  # leaving anyway; the others reap us by TTL
                log.warning("cluster: could not withdraw cleanly: %s", exc)
        self._closing = True
        self.available = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        log.info("cluster: node %s left", self.node)

    async def _flush(self) -> None:
        while self._outbox or self._dirty_subs or self._dirty_testaments:
            self._wake.set()
            await asyncio.sleep(0.01)  # polling the writer's queue during shutdown only

    async def _withdraw(self) -> None:
        cmd = self._cmd
        assert cmd is not None
        pipe = cmd.pipeline(transaction=False)
        for kind in ("sessions", "subs", "regs", "testaments"):
            pipe.delete(keys.node_hash(self.node, kind))
        pipe.delete(keys.node_key(self.node))
        pipe.srem(NODES, self.node)
        pipe.publish(CONTROL, pack({"op": "gone", "n": self.node}))
        await pipe.execute()

    async def _supervise(self) -> None:
        backoff = 0.1
        first = True
        while not self._closing:
            try:
                await self._session(first)
            except asyncio.CancelledError:
                self._degrade("closing")
                raise
            except Exception as exc:
                if self.available or first:
                    log.warning("cluster: link to Redis lost (%s); serving local traffic", exc)
                self._degrade(str(exc) or type(exc).__name__)
            if self._connected_at:
                backoff = 0.1  # it worked for a while: start over
            else:
                backoff = min(backoff * 2, self.timing.backoff_max)
            first = False
            self._connected_at = 0.0
            await asyncio.sleep(backoff)

    def _degrade(self, why: str) -> None:
        was = self.available
        self.available = False
        self._linked = False
        self.state_text = f"degraded: {why}"
        self._live.clear()
        while not self._sub_ops.empty():
            self._sub_ops.get_nowait()
        outbox = list(self._outbox)
        self._outbox.clear()
        for _command, reply in outbox:
            if reply is not None:
                reply(LinkLost(why))
        for waiters in self._waiters.values():
            for done in waiters:
                done()
        self._waiters.clear()
        if was:
            self.mirror.abandon_calls(errors.UNAVAILABLE, "the link to the other nodes was lost")

    async def _session(self, first: bool) -> None:
        """One connection to Redis, from connect to the first failure."""
        no_retry = Retry(NoBackoff(), 0)
        timeout = max(self.timing.probe_timeout, 1.0)
        cmd = Redis.from_url(
            self.url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=no_retry
        )
        sub_client = Redis.from_url(self.url, socket_connect_timeout=timeout, retry=no_retry)
        pubsub = sub_client.pubsub()
        tasks: list[asyncio.Task[None]] = []
        try:
            await cmd.ping()
            self._cmd = cmd
            await pubsub.subscribe(CONTROL, keys.inbox(self.node))
            tasks.append(asyncio.create_task(self._read(pubsub)))
            tasks.append(asyncio.create_task(self._subscriber(pubsub)))
            self._linked = True
            for target in self._targets:
                self._queue_sub("psubscribe" if target[0] else "subscribe", target[1])
            self._queue_sub("subscribe", keys.probe(self.node))
            await self._probe_once(cmd)  # every subscription before it is live
            if first:
                await self._reap_previous(cmd)
            self._connected_at = time.monotonic()
            tasks.append(asyncio.create_task(self._write(cmd)))
            self.available = True
            await self._republish(cmd)
            self.state_text = "connected"
            self._ever_connected.set()
            log.info("cluster: node %s connected to %s", self.node, self.url)
            await self._load_all(cmd)
            tasks.append(asyncio.create_task(self._heartbeat(cmd)))
            tasks.append(asyncio.create_task(self._prober(cmd)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            raise LinkLost("a cluster task ended")
        finally:
            self._cmd = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            closers = (pubsub.aclose(), cmd.aclose(), sub_client.aclose())  # type: ignore[no-untyped-call]
            for closing in closers:
                try:
                    await asyncio.wait_for(closing, 1.0)
                except Exception:  # the connection is already broken
                    pass

    # --- pub/sub link ----------------------------------------------------------------------
    def _queue_sub(self, op: str, target: bytes) -> None:
        self._sub_ops.put_nowait((op, target))

    async def _subscriber(self, pubsub: PubSub) -> None:
        while True:
            op, target = await self._sub_ops.get()
            await getattr(pubsub, op)(target)

    async def _read(self, pubsub: PubSub) -> None:
        inbox = keys.inbox(self.node)
        probe = keys.probe(self.node)
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
            if msg is None:
                continue
            kind = msg["type"]
            channel: bytes = msg["channel"]
            if kind == "message" or kind == "pmessage":
                try:
                    if channel == CONTROL:
                        self._on_control(unpack(msg["data"]))
                    elif channel == inbox:
                        self.mirror.inbox(unpack(msg["data"]))
                    elif channel == probe:
                        if msg["data"] == self._probe_token:
                            self._probe_back.set()
                    else:
                        self._on_event(unpack(msg["data"]))
                except Exception:
                    log.exception("cluster: cannot apply a message from %r", channel)
            elif kind == "subscribe" or kind == "psubscribe":
                target = (kind == "psubscribe", channel)
                self._live.add(target)
                for done in self._waiters.pop(target, ()):
                    done()
            elif kind == "unsubscribe" or kind == "punsubscribe":
                self._live.discard((kind == "punsubscribe", channel))

    async def _probe_once(self, cmd: Redis) -> None:
        self._probe_token = secrets.token_bytes(8)
        self._probe_back.clear()
        deadline = time.monotonic() + max(self.timing.probe_timeout, 2.0)
        while not self._probe_back.is_set():
            if time.monotonic() > deadline:
                raise LinkLost("probe not echoed on the pub/sub link")
            await cmd.publish(keys.probe(self.node), self._probe_token)
            try:
                await asyncio.wait_for(self._probe_back.wait(), 0.2)
            except TimeoutError:
                continue

    async def _prober(self, cmd: Redis) -> None:
        """Detect a silently dead pub/sub link: our own probe must come back."""
        while True:
            await asyncio.sleep(self.timing.probe_interval)
            self._probe_token = secrets.token_bytes(8)
            self._probe_back.clear()
            await cmd.publish(keys.probe(self.node), self._probe_token)
            try:
                await asyncio.wait_for(self._probe_back.wait(), self.timing.probe_timeout)
            except TimeoutError:
                raise LinkLost("pub/sub link is deaf (probe lost)") from None

    # --- writer ----------------------------------------------------------------------------
    def _push(self, command: Command, reply: Reply | None = None) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            if reply is not None:
                reply(LinkLost("cluster outbox full"))
            return
        self._outbox.append((command, reply))
        self._wake.set()

    async def _write(self, cmd: Redis) -> None:
        outbox = self._outbox
        while True:
            if not outbox and not self._dirty_subs and not self._dirty_testaments:
                self._wake.clear()
                await self._wake.wait()
            self._flush_dirty()
            batch = [outbox.popleft() for _ in range(min(len(outbox), 2000))]
            pipe = cmd.pipeline(transaction=False)
            for command, _reply in batch:
                pipe.execute_command(*command)
            try:
                results = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                for _command, reply in batch:
                    if reply is not None:
                        reply(exc)
                raise LinkLost(f"write failed: {exc}") from exc
            for (_command, reply), result in zip(batch, results, strict=False):
                if reply is not None:
                    reply(result)
                elif isinstance(result, Exception):
                    log.warning("cluster: Redis refused a command: %s", result)

    def _flush_dirty(self) -> None:
        subs, self._dirty_subs = self._dirty_subs, {}
        for (realm, sub_id), sub in subs.items():
            field = f"{realm}{SEP}{sub_id}"
            entry = _sub_entry(realm, sub)
            if sub.subscribers:
                self._outbox.append((("HSET", self._hash("subs"), field, pack(entry)), None))
            else:
                self._outbox.append((("HDEL", self._hash("subs"), field), None))
            ctl = {"op": "sub", "n": self.node, "r": realm, "sub": entry}
            self._outbox.append((("PUBLISH", CONTROL, pack(ctl)), None))
        testaments, self._dirty_testaments = self._dirty_testaments, {}
        for (realm, sid), session in testaments.items():
            if session.testaments and session.realm is not None:
                value = pack({"realm": realm, "testaments": _testaments(session)})
                self._outbox.append((("HSET", self._hash("testaments"), str(sid), value), None))
            else:
                self._outbox.append((("HDEL", self._hash("testaments"), str(sid)), None))

    def _hash(self, kind: str) -> str:
        return keys.node_hash(self.node, kind)

    def _send_inbox(self, node: str, env: dict[str, Any]) -> None:
        if not self.available:
            return
        env["n"] = self.node
        self._push(("PUBLISH", keys.inbox(node), pack(env)))

    # --- incoming ----------------------------------------------------------------------------
    def _on_event(self, env: dict[str, Any]) -> None:
        if env.get("n") == self.node:
            return  # our own echo: delivered locally already
        publication = env["p"]
        if publication in self._seen:
            return  # reached us through another of our channels/patterns
        self._seen.add(publication)
        self._seen_order.append(publication)
        if len(self._seen_order) > SEEN:
            self._seen.discard(self._seen_order.popleft())
        realm = self.router.realms.get(env.get("r", ""))
        if realm is not None:
            realm.broker.deliver_remote(
                env["t"], publication, env.get("d") or {}, env.get("a"), env.get("k"), env.get("f")
            )

    def _on_control(self, env: dict[str, Any]) -> None:
        node = env.get("n")
        if not isinstance(node, str) or node == self.node:
            return
        op = env.get("op")
        if op == "hello":
            if self._cmd is not None and node not in self._loading:
                task = asyncio.ensure_future(self._load_node(self._cmd, node))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return
        if op == "gone":
            self.mirror.drop_node(node, "callee node left")
            return
        buffered = self._loading.get(node)
        if buffered is not None:
            buffered.append(env)
            return
        self.mirror.control(env)

    # --- state in Redis ------------------------------------------------------------------
    async def _republish(self, cmd: Redis) -> None:
        """Write this node's whole state (connect, reconnect, Redis emptied).

        Everything goes through the writer queue, built without awaiting, so later
        changes are ordered after this snapshot.
        """
        node = self.node
        old_regs = await cmd.hgetall(self._hash("regs"))
        push = self._push
        push(("SADD", NODES, node))
        ttl = int(self.timing.node_timeout * 1000)
        push(("SET", keys.node_key(node), self.incarnation, "PX", ttl))
        held: list[tuple[Any, Registration, Session]] = []
        for realm in self.router.realms.values():
            for reg in realm.dealer.registrations():
                for callee in reg.callees:
                    if realm.sessions.get(callee.id) is callee:
                        held.append((realm, reg, callee))
        fields = {f"{r.name}{SEP}{reg.id}{SEP}{c.id}".encode() for r, reg, c in held}
        for field, value in old_regs.items():
            if field not in fields:
                push(self._release_entry(unpack(value)))
        for kind in ("sessions", "subs", "testaments"):
            push(("DEL", self._hash(kind)))
        self._dirty_subs.clear()
        self._dirty_testaments.clear()
        for realm in self.router.realms.values():
            for session in realm.sessions.values():
                entry = pack({"realm": realm.name, "info": session.info()})
                push(("HSET", self._hash("sessions"), str(session.id), entry))
                if session.testaments:
                    value = pack({"realm": realm.name, "testaments": _testaments(session)})
                    push(("HSET", self._hash("testaments"), str(session.id), value))
            for sub in realm.broker.subscriptions():
                field = f"{realm.name}{SEP}{sub.id}"
                push(("HSET", self._hash("subs"), field, pack(_sub_entry(realm.name, sub))))
        for (realm_name, topic), env in self._owned_retained.items():
            push(("HSET", keys.retained_key(realm_name), topic, env))
        for realm, reg, callee in held:
            command = self._claim_command(
                realm.name,
                callee,
                reg.procedure,
                reg.match,
                reg.invoke,
                reg.disclose_caller,
                reg.id,
                True,
            )
            push(command, _reclaimed(callee, reg))
        push(("PUBLISH", CONTROL, pack({"op": "hello", "n": node})))

    async def _load_all(self, cmd: Redis) -> None:
        for realm in self.router.realms.values():
            for env in await cmd.hvals(keys.retained_key(realm.name)):
                ev = unpack(env)
                if ev.get("n") != self.node:
                    self.mirror.retain(realm, ev)
        for raw in await cmd.smembers(NODES):
            node = _text(raw)
            if node != self.node:
                await self._load_node(cmd, node)

    async def _load_node(self, cmd: Redis, node: str) -> None:
        self._loading[node] = []
        try:
            pipe = cmd.pipeline(transaction=False)
            for kind in ("sessions", "subs", "regs"):
                pipe.hvals(keys.node_hash(node, kind))
            sessions, subs, regs = await pipe.execute()
            self.mirror.load_node(
                node,
                [unpack(v) for v in sessions],
                [unpack(v) for v in subs],
                [unpack(v) for v in regs],
            )
        finally:
            for env in self._loading.pop(node, []):
                self.mirror.control(env)

    async def _reap_previous(self, cmd: Redis) -> None:
        """A node restarting under the same ID reaps its previous incarnation first."""
        if await cmd.exists(
            *(keys.node_hash(self.node, k) for k in ("sessions", "regs", "testaments"))
        ):
            await self._reap(cmd, self.node)

    async def _heartbeat(self, cmd: Redis) -> None:
        ttl = int(self.timing.node_timeout * 1000)
        while True:
            await asyncio.sleep(self.timing.heartbeat_interval)
            previous = await cmd.set(keys.node_key(self.node), self.incarnation, px=ttl, get=True)
            if previous is None:
                log.warning("cluster: Redis lost this node's state; republishing it")
                self._connected_at = time.monotonic()
                await self._republish(cmd)
            await self._check_nodes(cmd)

    async def _check_nodes(self, cmd: Redis) -> None:
        listed = {_text(raw) for raw in await cmd.smembers(NODES)} - {self.node}
        known = set(self.mirror.nodes) | listed
        if not known:
            return
        ordered = sorted(known)
        pipe = cmd.pipeline(transaction=False)
        for node in ordered:
            pipe.exists(keys.node_key(node))
        alive = await pipe.execute()
        settled = time.monotonic() - self._connected_at > self.timing.node_timeout
        for node, is_alive in zip(ordered, alive, strict=True):
            if is_alive:
                if node not in self.mirror.nodes and node not in self._loading:
                    await self._load_node(cmd, node)
            elif settled:
                log.warning("cluster: node %s stopped heartbeating; dropping it", node)
                self.mirror.drop_node(node, "callee node lost")
                if await cmd.set(keys.reap_key(node), self.node, nx=True, px=30_000):
                    await self._reap(cmd, node)

    async def _reap(self, cmd: Redis, node: str) -> None:
        """Publish a dead node's testaments and remove its state from Redis."""
        pipe = cmd.pipeline(transaction=False)
        for value in await cmd.hvals(keys.node_hash(node, "testaments")):
            entry = unpack(value)
            realm = self.router.realms.get(entry.get("realm", ""))
            if realm is None:
                continue
            for t in entry.get("testaments") or []:
                options = t.get("options") or {}
                try:
                    delivery_filter = DeliveryFilter.from_options(options)
                except ValueError:
                    continue
                publication = random_id()
                args, kwargs = t.get("args"), t.get("kwargs")
                realm.broker.deliver_local(
                    t["topic"], publication, {}, args, kwargs, None, delivery_filter
                )
                fopts = delivery_filter.to_options() if delivery_filter is not None else None
                env = {"n": self.node, "r": realm.name, "t": t["topic"], "p": publication}
                env.update({"d": {}, "a": args, "k": kwargs, "f": fopts})
                pipe.publish(keys.event_channel(realm.name, t["topic"]), pack(env))
        for value in await cmd.hvals(keys.node_hash(node, "regs")):
            pipe.execute_command(*self._release_entry(unpack(value)))
        for kind in ("sessions", "subs", "regs", "testaments"):
            pipe.delete(keys.node_hash(node, kind))
        pipe.srem(NODES, node)
        if node != self.node:
            pipe.publish(CONTROL, pack({"op": "gone", "n": node}))
        await pipe.execute()
        log.info("cluster: reaped node %s", node)

    # --- the Cluster protocol (called by the core) ---------------------------------------
    def publish(
        self,
        realm: str,
        topic: str,
        publication: int,
        details: dict[str, Any],
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        filter_options: dict[str, Any] | None,
        retain: bool,
    ) -> None:
        """Pipeline the event to its topic channel (and the retained hash)."""
        if not self.available:
            return
        env = {"n": self.node, "r": realm, "t": topic, "p": publication, "d": details}
        env["a"], env["k"], env["f"] = args, kwargs, filter_options
        try:
            data = pack(env)
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("cluster: event on %r cannot cross nodes: %s", topic, exc)
            return
        self._push(("PUBLISH", keys.event_channel(realm, topic), data))
        if retain:
            self._owned_retained[(realm, topic)] = data
            self._push(("HSET", keys.retained_key(realm), topic, data))
            ctl = {"op": "retain", "n": self.node, "r": realm, "t": topic, "ev": env}
            self._push(("PUBLISH", CONTROL, pack(ctl)))

    def watch(self, realm: str, match: str, topic: str, done: Callable[[], None]) -> None:
        """Make sure events of (match, topic) from other nodes reach this node."""
        target = keys.watch_target(realm, match, topic)
        count = self._targets.get(target, 0)
        self._targets[target] = count + 1
        if not self._linked or target in self._live:
            done()
            return
        self._waiters.setdefault(target, []).append(done)
        if count == 0:
            self._queue_sub("psubscribe" if target[0] else "subscribe", target[1])

    def unwatch(self, realm: str, match: str, topic: str) -> None:
        """Drop the Redis subscription once no local subscription needs it."""
        target = keys.watch_target(realm, match, topic)
        count = self._targets.get(target, 0) - 1
        if count > 0:
            self._targets[target] = count
            return
        self._targets.pop(target, None)
        if self._linked:
            self._queue_sub("punsubscribe" if target[0] else "unsubscribe", target[1])

    def subscription_changed(self, realm: str, sub: Subscription) -> None:
        """Record the subscription for the cluster-wide meta API (coalesced)."""
        if self.available:
            self._dirty_subs[(realm, sub.id)] = sub
            self._wake.set()

    def session_joined(self, realm: str, session: Session) -> None:
        """Write the session to the directory and announce it."""
        if not self.available:
            return
        info = session.info()
        self._push(
            ("HSET", self._hash("sessions"), str(session.id), pack({"realm": realm, "info": info}))
        )
        self._push(
            ("PUBLISH", CONTROL, pack({"op": "join", "n": self.node, "r": realm, "info": info}))
        )

    def session_left(self, realm: str, session: Session) -> None:
        """Remove the session from the directory and announce it."""
        self.mirror.local_callee_left(realm, session.id)
        self._dirty_testaments.pop((realm, session.id), None)
        if not self.available:
            return
        self._push(("HDEL", self._hash("sessions"), str(session.id)))
        self._push(("HDEL", self._hash("testaments"), str(session.id)))
        env = {"op": "leave", "n": self.node, "r": realm, "s": session.id}
        env["authid"], env["authrole"] = session.authid, session.authrole
        self._push(("PUBLISH", CONTROL, pack(env)))

    def testaments_changed(self, realm: str, session: Session) -> None:
        """Keep the session's testaments in Redis so a reaper can publish them."""
        if self.available:
            self._dirty_testaments[(realm, session.id)] = session
            self._wake.set()

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
        command = self._claim_command(
            realm, session, procedure, match, invoke, disclose, random_id(), False
        )

        def reply(result: Any) -> None:
            if isinstance(result, BaseException):
                done(errors.UNAVAILABLE, "the cluster is unreachable: cannot register now", 0, 0)
                return
            status = _text(result[0])
            if status == "exists":
                done(
                    errors.PROCEDURE_ALREADY_EXISTS,
                    f"procedure {procedure!r} is already registered",
                    0,
                    0,
                )
            elif status == "conflict":
                text = f"procedure {procedure!r} is registered with invoke {_text(result[1])!r}"
                done(errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT, text, 0, 0)
            else:
                reg_id = int(result[1])
                done(None, "", reg_id, int(result[2]))
                the_realm = self.router.realms.get(realm)
                reg = the_realm.dealer.registration(reg_id) if the_realm is not None else None
                if reg is None or session not in reg.callees:
                    self._push(self._release_args(realm, reg_id, procedure, match, session.id))

        self._push(command, reply)

    def _claim_command(
        self,
        realm: str,
        session: Session,
        procedure: str,
        match: str,
        invoke: str,
        disclose: bool,
        candidate: int,
        reclaim: bool,
    ) -> Command:
        callee = session.client_roles.get("callee")
        features = callee.get("features") if isinstance(callee, dict) else None
        entry = {
            "node": self.node,
            "realm": realm,
            "uri": procedure,
            "match": match,
            "invoke": invoke,
            "disclose": disclose,
            "session": session.id,
            "authid": session.authid,
            "authrole": session.authrole,
            "features": {k: v for k, v in (features or {}).items() if isinstance(v, bool)},
        }
        return (
            "EVAL",
            CLAIM,
            3,
            keys.reg_key(realm, match, procedure),
            self._hash("regs"),
            keys.SEQ,
            invoke,
            str(candidate),
            f"{self.node}:{session.id}",
            "1" if reclaim else "0",
            pack(entry),
            CONTROL,
            self.node,
            f"{realm}{SEP}",
            str(session.id),
        )

    def release(self, realm: str, reg: Registration, session: Session) -> None:
        """Leave the registration's claim (in the writer's order)."""
        if self.available:
            self._push(self._release_args(realm, reg.id, reg.procedure, reg.match, session.id))

    def _release_args(
        self, realm: str, reg_id: int, procedure: str, match: str, sid: int, node: str = ""
    ) -> Command:
        node = node or self.node
        env = {"op": "unreg", "n": node, "r": realm, "reg": reg_id, "s": sid}
        return (
            "EVAL",
            RELEASE,
            2,
            keys.reg_key(realm, match, procedure),
            keys.node_hash(node, "regs"),
            f"{node}:{sid}",
            f"{realm}{SEP}{reg_id}{SEP}{sid}",
            CONTROL,
            pack(env),
        )

    def _release_entry(self, entry: dict[str, Any]) -> Command:
        return self._release_args(
            entry["realm"],
            int(entry["reg"]),
            entry["uri"],
            entry["match"],
            int(entry["session"]),
            entry["node"],
        )

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
        env = {"op": "kill", "n": self.node, "r": realm, "sel": selector, "v": value}
        env.update({"except": except_session, "reason": reason, "message": message})
        self._push(("PUBLISH", CONTROL, pack(env)))


def _reclaimed(callee: Session, reg: Registration) -> Reply:
    def reply(result: Any) -> None:
        if isinstance(result, BaseException) or _text(result[0]) != "ok":
            log.warning(
                "cluster: %r could not reclaim registration %r after a Redis outage: %s",
                callee,
                reg.procedure,
                result if isinstance(result, BaseException) else _text(result[0]),
            )

    return reply


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
