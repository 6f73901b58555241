"""The Redis cluster backend: one realm served by many broker nodes.

Connections: one pub/sub connection (control channel, this node's inbox and probe
channel, the event channels local subscriptions need) and one command client whose
single writer task pipelines every PUBLISH and state write in order. The wire
format, keys and guarantees are in protocol_spec/cluster.md.

Roles, one module each::

    redis      RedisCluster: the core's hooks, the connection life cycle, dispatch
    link       PubSubLink: channels and patterns needed, probes and their RTT
    outbox     Outbox: the single writer (ordered, pipelined, coalesced writes)
    events     EventChannels: event envelopes out, deduplicated delivery in
    directory  Directory: this node's state in Redis, heartbeat, liveness, reaping
    claims     Claim: registration claim/release script calls
    mirror     Mirror: control and inbox envelopes applied to the local core

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from broker.core.cluster import ClaimDone, Cluster
from broker.core.ids import random_id
from broker.core.router import Router
from broker.core.session import Session
from broker.metrics.views import ClusterLinks, ClusterMetrics, ClusterState
from protocol_spec import errors

from . import keys
from .claims import Claim, claim_reply, release_command
from .directory import Directory
from .events import EventChannels, event_envelope
from .keys import CONTROL, pack, unpack
from .link import ClusterTiming, LinkLost, PubSubLink
from .mirror import Mirror
from .outbox import Outbox

if TYPE_CHECKING:
    from broker.core.dealer import Registration
    from broker.core.pubsub import Subscription

__all__ = ["ClusterTiming", "RedisCluster", "default_node_id"]

log = logging.getLogger(__name__)


def default_node_id() -> str:
    """A node ID unique enough without configuration: host, PID, random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisCluster(Cluster):
    """The ``Cluster`` of the core, backed by Redis."""

    distributed = True

    def __init__(
        self, url: str, node: str | None, router: Router, timing: ClusterTiming | None = None
    ) -> None:
        self.url = url
        self.node = node or default_node_id()
        self.router = router
        self.timing = timing or ClusterTiming()
        self.available = False
        self.state_text = "connecting"
        self.mirror = Mirror(router, self.node, self._send_inbox)
        self.link = PubSubLink(self.node, self.timing)
        self.outbox = Outbox()
        self.events = EventChannels(self.node, router, self.outbox)
        self.directory = Directory(
            self.node,
            router,
            self.timing,
            self.outbox,
            self.mirror,
            self.events,
            secrets.token_hex(8),
        )
        self._closing = False
        self._ever_connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cmd: Redis | None = None
        self._inbox = keys.inbox(self.node)

    @property
    def redis_rtt(self) -> float | None:
        """Seconds the last pub/sub probe took to come back; None while unknown."""
        return self.link.rtt if self.available else None

    def metrics(self) -> ClusterMetrics:
        """The state ``/metrics`` reports (the ``ClusterMetrics`` contract).

        This backend has one connection state for both links, and does not count
        dropped outbox commands yet (``outbox_dropped`` stays 0).
        """
        if self._closing:
            state: ClusterState = "down"
        elif self.available:
            state = "up"
        elif self.state_text == "connecting":
            state = "connecting"
        else:
            state = "degraded"
        links: ClusterLinks = {"redis": self.available, "pubsub": self.available}
        return {"links": links, "redis_rtt": self.redis_rtt, "state": state, "outbox_dropped": 0}

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
        if self.available and self._cmd is not None:
            try:
                await asyncio.wait_for(self.outbox.drain(), timeout)
                await asyncio.wait_for(self.directory.withdraw(self._cmd), timeout)
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
            if self.directory.connected_at:
                backoff = 0.1  # it worked for a while: start over
            else:
                backoff = min(backoff * 2, self.timing.backoff_max)
            first = False
            self.directory.connected_at = 0.0
            await asyncio.sleep(backoff)

    def _degrade(self, why: str) -> None:
        was = self.available
        self.available = False
        self.state_text = f"degraded: {why}"
        self.link.unlink()
        self.outbox.fail(why)
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
            tasks.append(asyncio.create_task(self.link.read(pubsub, self._dispatch)))
            tasks.append(asyncio.create_task(self.link.subscriber(pubsub)))
            self.link.relink()
            await self.link.probe_once(cmd)  # every subscription before it is live
            if first:
                await self.directory.reap_previous(cmd)
            self.directory.connected_at = time.monotonic()
            tasks.append(asyncio.create_task(self.outbox.write(cmd)))
            self.available = True
            await self.directory.republish(cmd)
            self.state_text = "connected"
            self._ever_connected.set()
            log.info("cluster: node %s connected to %s", self.node, self.url)
            await self.directory.load_all(cmd)
            tasks.append(asyncio.create_task(self.directory.heartbeat(cmd)))
            tasks.append(asyncio.create_task(self.link.prober(cmd)))
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

    # --- envelopes from and to the other nodes ---------------------------------------------
    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == CONTROL:
            self._on_control(unpack(data))
        elif channel == self._inbox:
            self.mirror.inbox(unpack(data))
        else:
            self.events.receive(unpack(data))

    def _on_control(self, env: dict[str, Any]) -> None:
        node = env.get("n")
        if not isinstance(node, str) or node == self.node:
            return
        op = env.get("op")
        if op == "hello":
            if self._cmd is not None:
                self.directory.load_later(self._cmd, node)
        elif op == "gone":
            self.mirror.drop_node(node, "callee node left")
        elif not self.directory.hold(node, env):
            self.mirror.control(node, env)

    def _send_inbox(self, channel: bytes, env: dict[str, Any]) -> None:
        if self.available:
            self.outbox.push(("PUBLISH", channel, pack(env)))

    # --- the Cluster hooks (called by the core) --------------------------------------------
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
        if self.available:
            env = event_envelope(
                self.node, realm, topic, publication, details, args, kwargs, filter_options
            )
            self.events.publish(env, retain)

    def watch(self, realm: str, match: str, topic: str, done: Callable[[], None]) -> None:
        """Make sure events of (match, topic) from other nodes reach this node."""
        self.link.watch(keys.watch_target(realm, match, topic), done)

    def unwatch(self, realm: str, match: str, topic: str) -> None:
        """Drop the Redis subscription once no local subscription needs it."""
        self.link.unwatch(keys.watch_target(realm, match, topic))

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
        reply = claim_reply(claim, self.node, self.router, done, self.outbox.push)
        self.outbox.push(claim.command(self.node, random_id(), False), reply)

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
        command = release_command(self.node, realm, reg.id, reg.procedure, reg.match, session.id)
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
        env = {"op": "kill", "n": self.node, "r": realm, "sel": selector, "v": value}
        env.update({"except": except_session, "reason": reason, "message": message})
        self.outbox.push(("PUBLISH", CONTROL, pack(env)))
