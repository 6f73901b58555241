"""The pub/sub link to Redis: the channels this node needs, and the probes that check it.

The link is one or more *lanes*, each a pub/sub connection: one on a single Redis or
Sentinel, one per shard master on a Redis Cluster, where every channel is sharded
(SSUBSCRIBE) and routed to the lane of the master serving its slot. Local
subscriptions are counted per Redis channel or pattern (``watch``/``unwatch``); one
subscriber task per lane applies (S/P)SUBSCRIBE and (S/P)UNSUBSCRIBE in order, and the
lane's reader marks a target live when Redis confirms it. A probe is a random token
this node publishes to its own probe channel, one per lane (on a Redis Cluster its
name hashes into that lane's shard): every one must come back on its lane within
``probe_timeout``, or the link is deaf. The slowest probe's round trip is kept as
``rtt`` (protocol_spec/cluster.md, "Redis outage and recovery"). A sharded channel
Redis unsubscribes on its own (its slot moved to another shard) ends the link.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection

from protocol_spec.cluster import Probe

from .connect import Client
from .resp import RespProtocol

__all__ = ["ClusterTiming", "Lane", "LinkDeaf", "LinkLost", "PubSubLink", "Route", "Target"]

log = logging.getLogger(__name__)

Target = tuple[bool, bytes]
"""What a local subscription needs from Redis: (is a pattern, channel or pattern)."""

Dispatch = Callable[[bytes, bytes], None]
"""Handle one message from a channel other than the probe's: (channel, data)."""

Route = Callable[[bytes], int]
"""The index of the lane a channel is subscribed on."""


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
    peer_retry: float = 10.0
    """A node reached through Redis because its direct link could not be dialed is dialed
    again after this (doubling up to 300 s) while there is traffic for it."""


class LinkLost(Exception):
    """The connection to Redis (or the pub/sub link) is gone or deaf."""


class LinkDeaf(LinkLost):
    """The pub/sub link answers nothing: this node's own probe did not come back."""


class Lane:
    """One pub/sub connection: its ordered (un)subscriptions and its probe."""

    __slots__ = ("back", "ops", "probe", "probe_channel", "pubsub", "rtt", "sent")

    def __init__(self, pubsub: PubSub, probe_channel: bytes) -> None:
        self.pubsub = pubsub
        self.probe_channel = probe_channel
        self.ops: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.probe = Probe(b"")
        self.sent = 0.0
        self.back = asyncio.Event()
        self.rtt: float | None = None

    def new_probe(self) -> None:
        self.probe = Probe(secrets.token_bytes(Probe.SIZE))
        self.back.clear()


class PubSubLink:
    """The Redis channels and patterns this node listens to, and the link's probes."""

    def __init__(self, node: str, timing: ClusterTiming) -> None:
        self.timing = timing
        self.node = node
        self.linked = False
        self.lanes: list[Lane] = []
        self.sharded = False
        """Redis Cluster: sharded channels (SSUBSCRIBE, SPUBLISH), one lane per master."""
        # Redis channel/pattern → how many local subscriptions need it
        self._targets: dict[Target, int] = {}
        self._base: tuple[bytes, ...] = ()
        self._route: Route = lambda channel: 0
        self._live: set[Target] = set()
        self._waiters: dict[Target, list[Callable[[], None]]] = {}
        self._leaving: Counter[bytes] = Counter()
        """Sharded channels this node unsubscribed, by confirmations still to come."""
        self._pending: Counter[Target] = Counter()
        """SUBSCRIBEs queued and not confirmed yet: watchers wait for the last one's."""

    @property
    def rtt(self) -> float | None:
        """Seconds the last probe (the slowest lane's) took to come back; None while unknown."""
        rtts = [lane.rtt for lane in self.lanes]
        if not rtts or any(rtt is None for rtt in rtts):
            return None
        return max(rtt for rtt in rtts if rtt is not None)

    # --- subscriptions -----------------------------------------------------------------
    def watch(self, target: Target, done: Callable[[], None]) -> None:
        """Count one more local need for ``target``; ``done`` once Redis delivers it."""
        count = self._targets.get(target, 0)
        self._targets[target] = count + 1
        if not self.linked or target in self._live:
            done()
            return
        self._waiters.setdefault(target, []).append(done)
        if count == 0:
            self._subscribe(target)

    def _subscribe(self, target: Target) -> None:
        self._pending[target] += 1
        self._queue(True, target)

    def unwatch(self, target: Target) -> None:
        """Count one less; unsubscribe once nothing local needs ``target``."""
        count = self._targets.get(target, 0) - 1
        if count > 0:
            self._targets[target] = count
            return
        self._targets.pop(target, None)
        # not live from now on: a watch before Redis confirms the unsubscribe must
        # subscribe again (the confirmation will drop it)
        self._live.discard(target)
        if self.linked:
            self._queue(False, target)

    def relink(
        self,
        lanes: list[Lane],
        base: tuple[bytes, ...],
        route: Route | None = None,
        sharded: bool = False,
    ) -> None:
        """New pub/sub connections: subscribe ``base`` channels, everything needed, the probes."""
        self.lanes = lanes
        self._base = base
        self._route = route or (lambda channel: 0)
        self.sharded = sharded
        self._leaving.clear()
        self.linked = True
        for channel in base:
            self._queue(True, (False, channel))
        for target in self._targets:
            self._subscribe(target)
        for lane in lanes:
            lane.ops.put_nowait((self._op(True, False), lane.probe_channel))

    def unlink(self) -> None:
        """The connection is gone: nothing is live, pending watchers are answered."""
        self.linked = False
        self.lanes = []
        self._live.clear()
        self._pending.clear()
        for waiters in self._waiters.values():
            for done in waiters:
                done()
        self._waiters.clear()

    def _op(self, on: bool, pattern: bool) -> str:
        kind = "p" if pattern else ("s" if self.sharded else "")
        return f"{kind}subscribe" if on else f"{kind}unsubscribe"

    def _queue(self, on: bool, target: Target) -> None:
        pattern, channel = target
        lane = self.lanes[0 if pattern else self._route(channel)]
        if not on and self.sharded:
            self._leaving[channel] += 1
        lane.ops.put_nowait((self._op(on, pattern), channel))

    async def subscriber(self, lane: Lane) -> None:
        """Apply the lane's queued (un)subscriptions in order (runs for the connection's life)."""
        while True:
            op, target = await lane.ops.get()
            await getattr(lane.pubsub, op)(target)

    async def read(self, lane: Lane, dispatch: Dispatch) -> None:
        """Read a lane: confirmations, probe echoes, and messages for ``dispatch``.

        The lane's connection is read by ``_LaneReader`` (``resp``), which handles every
        message in the loop pass that received it; this waits until the connection
        ends and raises ``LinkLost``. A pub/sub object without a connection of redis-py's
        own kind is read with ``get_message``.
        """
        pubsub = lane.pubsub
        conn = pubsub.connection if type(pubsub) is PubSub else None
        if conn is not None:
            reader = _LaneReader(conn, self, lane, dispatch)
            raise LinkLost(str(await reader.ended))
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
            if msg is not None:
                self._handle(lane, msg, dispatch)

    def _handle(self, lane: Lane, msg: dict[str, Any], dispatch: Dispatch) -> None:
        kind = msg["type"]
        channel: bytes = msg["channel"]
        if kind in ("message", "pmessage", "smessage"):
            self._receive(lane, channel, msg["data"], dispatch)
        elif kind in ("subscribe", "psubscribe", "ssubscribe"):
            target = (kind == "psubscribe", channel)
            if self._pending[target] > 1:  # an UNSUBSCRIBE and another SUBSCRIBE follow
                self._pending[target] -= 1
                return
            self._pending.pop(target, None)
            self._live.add(target)
            for done in self._waiters.pop(target, ()):
                done()
        elif kind in ("unsubscribe", "punsubscribe", "sunsubscribe"):
            self._live.discard((kind == "punsubscribe", channel))
            if kind == "sunsubscribe" and not self._left(lane, channel):
                raise LinkLost(f"Redis moved {channel!r} to another shard")

    def _left(self, lane: Lane, channel: bytes) -> bool:
        """Whether this node asked to leave ``channel`` (else Redis dropped it: slot moved)."""
        if self._leaving[channel] > 0:
            self._leaving[channel] -= 1
            if not self._leaving[channel]:
                del self._leaving[channel]
            return True
        wanted = channel == lane.probe_channel or channel in self._base
        return not wanted and (False, channel) not in self._targets

    def _receive(self, lane: Lane, channel: bytes, data: Any, dispatch: Dispatch) -> None:
        if channel == lane.probe_channel:
            if data == lane.probe.token:
                lane.rtt = time.monotonic() - lane.sent
                lane.back.set()
            return
        try:
            dispatch(channel, data)
        except Exception:
            log.exception("cluster: cannot apply a message from %r", channel)

    # --- probes ----------------------------------------------------------------------
    async def _send_probe(self, cmd: Client, lane: Lane) -> None:
        lane.sent = time.monotonic()
        pub = "SPUBLISH" if self.sharded else "PUBLISH"
        await cmd.execute_command(pub, lane.probe_channel, lane.probe.pack())

    async def _probe_lane_once(self, cmd: Client, lane: Lane) -> None:
        lane.new_probe()
        deadline = time.monotonic() + max(self.timing.probe_timeout, 2.0)
        wait = 0.01  # the first probe usually beats the queued subscriptions
        while not lane.back.is_set():
            if time.monotonic() > deadline:
                raise LinkDeaf("probe not echoed on the pub/sub link")
            await self._send_probe(cmd, lane)
            try:
                await asyncio.wait_for(lane.back.wait(), wait)
            except TimeoutError:
                wait = min(wait * 2, 0.2)

    async def probe_once(self, cmd: Client) -> None:
        """Probe every lane until its echo comes back: every subscription queued before is live."""
        await asyncio.gather(*(self._probe_lane_once(cmd, lane) for lane in self.lanes))

    async def prober(self, cmd: Client) -> None:
        """Detect a silently dead pub/sub link: every lane's own probe must come back."""
        while True:
            await asyncio.sleep(self.timing.probe_interval)
            lanes = list(self.lanes)
            for lane in lanes:
                lane.new_probe()
                await self._send_probe(cmd, lane)
            for lane in lanes:
                left = lane.sent + self.timing.probe_timeout - time.monotonic()
                if lane.back.is_set():
                    continue
                try:
                    await asyncio.wait_for(lane.back.wait(), max(left, 0.0))
                except TimeoutError:
                    raise LinkDeaf("pub/sub link is deaf (probe lost)") from None


class _LaneReader(RespProtocol):
    """A lane's pub/sub connection, read as messages arrive (RESP2: plain arrays)."""

    def __init__(
        self, conn: AbstractConnection, link: PubSubLink, lane: Lane, dispatch: Dispatch
    ) -> None:
        super().__init__(conn)
        self.ended: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
        """Why the connection ended (a result, not an exception: nobody may be waiting)."""
        self.link = link
        self.lane = lane
        self.dispatch = dispatch

    def reply(self, value: Any) -> None:
        if not isinstance(value, list) or len(value) < 3:
            return  # not a pub/sub reply (nothing else is asked on this connection)
        kind = value[0]
        if kind == b"message" or kind == b"smessage":
            self.link._receive(self.lane, value[1], value[2], self.dispatch)
        elif kind == b"pmessage" and len(value) == 4:
            self.link._receive(self.lane, value[2], value[3], self.dispatch)
        else:  # a (un)subscription's confirmation
            msg = {"type": kind.decode(), "channel": value[1], "data": value[2]}
            self.link._handle(self.lane, msg, self.dispatch)

    def lost(self, exc: Exception) -> None:
        if not self.ended.done():
            self.ended.set_result(exc)
