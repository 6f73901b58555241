"""The pub/sub link to Redis: the channels this node needs, and the probes that check it.

Local subscriptions are counted per Redis channel or pattern (``watch``/``unwatch``);
one subscriber task applies (P)SUBSCRIBE and (P)UNSUBSCRIBE in order, and the reader
marks a target live when Redis confirms it. A probe is a random token this node
publishes to its own probe channel: it must come back on the pub/sub connection
within ``probe_timeout``, or the link is deaf. The probe's round trip is kept as
``rtt`` (protocol_spec/cluster.md, "Redis outage and recovery").
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from protocol_spec.cluster import Probe

from . import keys

__all__ = ["ClusterTiming", "LinkDeaf", "LinkLost", "PubSubLink", "Target"]

log = logging.getLogger(__name__)

Target = tuple[bool, bytes]
"""What a local subscription needs from Redis: (is a pattern, channel or pattern)."""

Dispatch = Callable[[bytes, bytes], None]
"""Handle one message from a channel other than the probe's: (channel, data)."""


@dataclass(frozen=True, slots=True)
class ClusterTiming:
    """Liveness and reconnection timings (seconds); see protocol_spec/cluster.md."""

    heartbeat_interval: float = 1.0
    node_timeout: float = 5.0
    probe_interval: float = 2.0
    probe_timeout: float = 2.0
    backoff_max: float = 2.0
    command_timeout: float = 1.0
    """A Redis command or pipelined batch not answered by then: Redis counts as hung."""


class LinkLost(Exception):
    """The connection to Redis (or the pub/sub link) is gone or deaf."""


class LinkDeaf(LinkLost):
    """The pub/sub link answers nothing: this node's own probe did not come back."""


class PubSubLink:
    """The Redis channels and patterns this node listens to, and the link's probes."""

    def __init__(self, node: str, timing: ClusterTiming) -> None:
        self.timing = timing
        self.probe_channel = keys.probe(node)
        self.linked = False
        self.rtt: float | None = None
        """Seconds the last probe took to come back; None while unknown."""
        # Redis channel/pattern → how many local subscriptions need it
        self._targets: dict[Target, int] = {}
        self._live: set[Target] = set()
        self._waiters: dict[Target, list[Callable[[], None]]] = {}
        self._pending: dict[Target, int] = {}  # SUBSCRIBEs queued, not confirmed yet
        self._ops: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._probe = Probe(b"")
        self._probe_sent = 0.0
        self._probe_back = asyncio.Event()

    # --- subscriptions -----------------------------------------------------------------
    def watch(self, target: Target, done: Callable[[], None]) -> None:
        """Count one more local need for ``target``; ``done`` once Redis delivers it.

        A target nothing needed is subscribed again even while it looks live: its
        UNSUBSCRIBE may still be queued or unconfirmed and would end it silently. ``done``
        waits for the confirmation of the last SUBSCRIBE queued, not an earlier one.
        """
        count = self._targets.get(target, 0)
        self._targets[target] = count + 1
        if not self.linked:
            done()
            return
        if count == 0:
            self._subscribe(target)
        elif target in self._live and not self._pending.get(target):
            done()
            return
        self._waiters.setdefault(target, []).append(done)

    def _subscribe(self, target: Target) -> None:
        self._pending[target] = self._pending.get(target, 0) + 1
        self._queue("psubscribe" if target[0] else "subscribe", target[1])

    def unwatch(self, target: Target) -> None:
        """Count one less; unsubscribe once nothing local needs ``target``."""
        count = self._targets.get(target, 0) - 1
        if count > 0:
            self._targets[target] = count
            return
        self._targets.pop(target, None)
        if self.linked:
            self._queue("punsubscribe" if target[0] else "unsubscribe", target[1])

    def relink(self) -> None:
        """A new pub/sub connection: subscribe everything needed, and the probe channel."""
        self.linked = True
        for target in self._targets:
            self._subscribe(target)
        self._queue("subscribe", self.probe_channel)

    def unlink(self) -> None:
        """The connection is gone: nothing is live, pending watchers are answered."""
        self.linked = False
        self.rtt = None
        self._live.clear()
        self._pending.clear()
        while not self._ops.empty():
            self._ops.get_nowait()
        for waiters in self._waiters.values():
            for done in waiters:
                done()
        self._waiters.clear()

    def _queue(self, op: str, target: bytes) -> None:
        self._ops.put_nowait((op, target))

    async def subscriber(self, pubsub: PubSub) -> None:
        """Apply queued (un)subscriptions in order (runs for the connection's life)."""
        while True:
            op, target = await self._ops.get()
            await getattr(pubsub, op)(target)

    async def read(self, pubsub: PubSub, dispatch: Dispatch) -> None:
        """Read the connection: confirmations, probe echoes, and messages for ``dispatch``.

        Messages (the hot path) are taken from the connection's raw replies; everything
        else goes through redis-py's ``handle_message``, which keeps its subscription
        bookkeeping. A pub/sub object of another kind is read with ``get_message``.
        """
        conn = pubsub.connection if type(pubsub) is PubSub else None
        while True:
            if conn is None:
                msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
            else:
                raw = await conn.read_response(
                    timeout=math.inf, disconnect_on_error=False, push_request=True
                )
                if type(raw) is list:
                    kind = raw[0]
                    if kind == b"message" and len(raw) == 3:
                        self._receive(raw[1], raw[2], dispatch)
                        continue
                    if kind == b"pmessage" and len(raw) == 4:
                        self._receive(raw[2], raw[3], dispatch)
                        continue
                msg = await pubsub.handle_message(raw, ignore_subscribe_messages=False)
            if msg is not None:
                self._handle(msg, dispatch)

    def _handle(self, msg: dict[str, Any], dispatch: Dispatch) -> None:
        kind = msg["type"]
        channel: bytes = msg["channel"]
        if kind == "message" or kind == "pmessage":
            self._receive(channel, msg["data"], dispatch)
        elif kind == "subscribe" or kind == "psubscribe":
            target = (kind == "psubscribe", channel)
            left = self._pending.pop(target, 1) - 1
            if left > 0:  # an UNSUBSCRIBE and another SUBSCRIBE follow: wait for that one
                self._pending[target] = left
                return
            self._live.add(target)
            for done in self._waiters.pop(target, ()):
                done()
        elif kind == "unsubscribe" or kind == "punsubscribe":
            self._live.discard((kind == "punsubscribe", channel))

    def _receive(self, channel: bytes, data: Any, dispatch: Dispatch) -> None:
        if channel == self.probe_channel:
            if data == self._probe.token:
                self.rtt = time.monotonic() - self._probe_sent
                self._probe_back.set()
            return
        try:
            dispatch(channel, data)
        except Exception:
            log.exception("cluster: cannot apply a message from %r", channel)

    # --- probes ----------------------------------------------------------------------
    async def _send_probe(self, cmd: Redis) -> None:
        self._probe_sent = time.monotonic()
        await cmd.publish(self.probe_channel, self._probe.pack())

    def _new_probe(self) -> None:
        self._probe = Probe(secrets.token_bytes(Probe.SIZE))
        self._probe_back.clear()

    async def probe_once(self, cmd: Redis) -> None:
        """Probe until the echo comes back: every subscription queued before is live."""
        self._new_probe()
        deadline = time.monotonic() + max(self.timing.probe_timeout, 2.0)
        while not self._probe_back.is_set():
            if time.monotonic() > deadline:
                raise LinkDeaf("probe not echoed on the pub/sub link")
            await self._send_probe(cmd)
            try:
                await asyncio.wait_for(self._probe_back.wait(), 0.2)
            except TimeoutError:
                continue

    async def prober(self, cmd: Redis) -> None:
        """Detect a silently dead pub/sub link: our own probe must come back."""
        while True:
            await asyncio.sleep(self.timing.probe_interval)
            self._new_probe()
            await self._send_probe(cmd)
            try:
                await asyncio.wait_for(self._probe_back.wait(), self.timing.probe_timeout)
            except TimeoutError:
                raise LinkDeaf("pub/sub link is deaf (probe lost)") from None
