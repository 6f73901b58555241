"""Router-side gap repair: what a node's subscribers missed while its Redis link was down.

For every topic with history this node delivers events of, ``GapRepair`` remembers the
(epoch, offset) of the last event its local subscribers got (its own publications
count: they were delivered locally when published). Live events are admitted in offset
order, each once (``admit``). When the link comes back, ``begin`` holds the live events
of those topics, ``run`` reads each topic's stream after the remembered offset
(XRANGE), delivers what is missing in order, then the held live events not delivered
yet (protocol_spec/cluster.md, "Event history").

A gap that cannot be filled (the stream was trimmed past the offset, expired, or Redis
lost the topic's history: its epoch changed) is logged, counted (``gaps``: labels realm
and reason, ``wamp_history_gaps_total`` in /metrics) and told to subscribers: this node
publishes ``wamp.subscription.on_history_gap`` to its local sessions,
``[subscription], {topic, reason, missed}`` per local subscription the topic reaches
(protocol_spec/wamp.md, "Event history").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.core.host import ClusterHost
from broker.metrics.stats import LabelCounts
from protocol_spec import meta as names
from protocol_spec.cluster import EventEnvelope
from protocol_spec.uri import is_reserved

from .history import StreamEntry, history_meta_key, history_stream_key, parse_entries

if TYPE_CHECKING:
    from .connect import Client

__all__ = ["HISTORY_GAP", "NEW", "GapRepair", "Position"]

log = logging.getLogger(__name__)

HISTORY_GAP = names.SUBSCRIPTION_ON_HISTORY_GAP
"""The meta topic a node tells its sessions about events it could not recover on."""

Position = tuple[str, int]
"""(epoch, offset) of the last event of a topic delivered on this node."""

NEW = ""
"""The epoch of a position taken before the topic had any history (no gap to report)."""

Key = tuple[str, str]


class GapRepair:
    """Per topic: the last event delivered here; the catch-up after a link outage."""

    def __init__(self, node: str, host: ClusterHost) -> None:
        self.node = node
        self.host = host
        self.delivered: dict[Key, Position] = {}
        self.start: dict[Key, Position] = {}
        """Where a new exact subscription started, until its first event (``note_start``)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[Key, list[EventEnvelope]] = {}
        self.gaps = LabelCounts(("realm", "reason"))
        """Gaps that could not be filled (``server.metrics`` replaces it with its counter)."""
        self.recovered = 0
        """Events delivered by catch-ups so far."""

    # --- live events -----------------------------------------------------------------------
    def admit(self, env: EventEnvelope, deliver: Callable[[EventEnvelope], None]) -> None:
        """Deliver a live event of a topic with history once, in offset order (or hold it)."""
        key = (env.realm, env.topic)
        held = self._held.get(key)
        if held is not None:
            held.append(env)
            return
        self._take(key, env, deliver)

    def _take(self, key: Key, env: EventEnvelope, deliver: Callable[[EventEnvelope], None]) -> None:
        assert env.offset is not None and env.epoch is not None
        position = self.delivered.get(key)
        if position is not None and position[0] == env.epoch and env.offset <= position[1]:
            return  # delivered already (another channel, or the catch-up)
        self.delivered[key] = (env.epoch, env.offset)
        self.start.pop(key, None)
        if env.node != self.node:  # our own events were delivered when published
            deliver(env)

    # --- where a subscription starts --------------------------------------------------
    def watched(self, cmd: Client | None, realm: str, topic: str) -> None:
        """An exact subscription with history is live: note the topic's offset now.

        So an outage before its first event is repaired from there (read in the background;
        ignored once an event was delivered).
        """
        if cmd is None or (realm, topic) in self.delivered:
            return
        task = asyncio.get_running_loop().create_task(self._note_start(cmd, realm, topic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _note_start(self, cmd: Client, realm: str, topic: str) -> None:
        try:
            epoch, offset = await cmd.hmget(history_meta_key(realm, topic), ["e", "o"])
        except Exception:  # the link failed: the next session starts it again
            return
        key = (realm, topic)
        if key not in self.delivered:
            text = epoch.decode() if isinstance(epoch, bytes) else epoch
            self.start[key] = (text or NEW, int(offset or 0))

    # --- catch-up ------------------------------------------------------------------------
    def begin(self) -> None:
        """The link is coming back: hold live events of every remembered topic."""
        for key, position in self.start.items():
            self.delivered.setdefault(key, position)
        self.start.clear()
        self._held = {key: [] for key in self.delivered}

    def forget(self, realm: str) -> None:
        """Drop the positions of ``realm``'s topics no local subscription reaches any more."""
        for positions in (self.delivered, self.start):
            for key in [key for key in positions if key[0] == realm]:
                if not self._wanted(key):
                    del positions[key]

    def abandon(self) -> None:
        """The link failed before the catch-up ended: the next one reads the held events."""
        self._held = {}

    async def run(self, cmd: Client, deliver: Callable[[EventEnvelope], None]) -> None:
        """Deliver what each held topic missed, then its held live events; release them."""
        keys = [key for key in self._held if self._wanted(key)]
        for key in set(self._held) - set(keys):
            self.delivered.pop(key, None)
        started, recovered = time.monotonic(), self.recovered
        replies = await self._read(cmd, keys, full=False)
        read = time.monotonic() - started
        renewed: list[Key] = []
        for key, (meta, raw) in zip(keys, replies, strict=True):
            epoch, offset = self.delivered[key]
            stored = meta[0].decode() if meta[0] is not None else None
            if stored == epoch:
                self._catch_up(key, stored, int(meta[1] or 0), parse_entries(raw), deliver)
                continue
            if epoch != NEW:  # Redis lost the topic's history
                self._gap(key, "lost", None, offset)
            del self.delivered[key]
            if stored is not None:
                renewed.append(key)
        # a new epoch: every event of it was missed here (read from its start)
        for key, (meta, raw) in zip(renewed, await self._read(cmd, renewed, True), strict=True):
            if meta[0] is not None:
                epoch = meta[0].decode()
                self.delivered[key] = (epoch, 0)
                entries = [e for e in parse_entries(raw) if e[2].epoch == epoch]
                self._catch_up(key, epoch, int(meta[1] or 0), entries, deliver)
        held, self._held = self._held, {}
        for key, envs in held.items():
            for env in envs:
                self._take(key, env, deliver)
        if self.recovered > recovered:
            log.info(
                "cluster: recovered %d events on %d topics (read %.3f s, total %.3f s)",
                self.recovered - recovered,
                len(keys),
                read,
                time.monotonic() - started,
            )

    async def _read(self, cmd: Client, keys: list[Key], full: bool) -> list[tuple[Any, Any]]:
        """(hash [epoch, offset], stream entries after the delivered offset) of each topic."""
        if not keys:
            return []
        pipe = cmd.pipeline(transaction=False)
        for realm, topic in keys:
            start = "-" if full else f"(0-{self.delivered[(realm, topic)][1]}"
            pipe.hmget(history_meta_key(realm, topic), "e", "o")
            pipe.xrange(history_stream_key(realm, topic), start, "+")
        replies = await pipe.execute()
        return list(zip(replies[0::2], replies[1::2], strict=True))

    def _wanted(self, key: Key) -> bool:
        realm = self.host.realms.get(key[0])
        return realm is not None and bool(realm.broker.matching(key[1]))

    def _catch_up(
        self,
        key: Key,
        epoch: str,
        last: int,
        entries: list[StreamEntry],
        deliver: Callable[[EventEnvelope], None],
    ) -> None:
        """Deliver ``entries`` after the delivered offset; a hole before them is a gap."""
        offset = self.delivered[key][1]
        first = entries[0][0] if entries else last + 1
        if first > offset + 1:
            self._gap(key, "trimmed", first - offset - 1, offset)
            self.delivered[key] = (epoch, first - 1)
        for _offset, _micros, env in entries:
            before = self.delivered[key]
            self._take(key, env, deliver)
            if self.delivered[key] != before and env.node != self.node:
                self.recovered += 1

    def _gap(self, key: Key, reason: str, missed: int | None, offset: int) -> None:
        realm_name, topic = key
        log.warning(
            "cluster: history gap on %r (realm %s): %s, %s events missed after offset %d",
            topic,
            realm_name,
            reason,
            "unknown" if missed is None else missed,
            offset,
        )
        self.gaps.inc(realm_name, reason)
        realm = self.host.realms.get(realm_name)
        if realm is None or is_reserved(topic):
            return
        info = {"topic": topic, "reason": reason, "missed": missed}
        for sub in realm.broker.matching(topic):
            realm.broker.publish_meta(HISTORY_GAP, [sub.id], info)
