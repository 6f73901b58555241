"""Router-side gap repair: what a node's subscribers missed while its Redis link was down.

For every topic with history this node delivers events of, ``GapRepair`` remembers the
(epoch, offset) of the last event its local subscribers got (its own publications
count: they were delivered locally when published). Live events are admitted in offset
order, each once (``admit``). When the link comes back, ``begin`` holds the live events
of those topics, ``run`` reads each topic's stream after the remembered offset
(XRANGE), delivers what is missing in order, then the held live events not delivered
yet (protocol_spec/cluster.md, "Event history").

A gap that cannot be filled (the stream was trimmed past the offset, expired, Redis
lost the topic's history: its epoch changed, or Redis went back in time: the same epoch
with older offsets, reused by new events) is logged, counted (``gaps``: labels realm
and reason, ``wamp_history_gaps_total`` in /metrics) and told to subscribers: this node
publishes ``wamp.subscription.on_history_gap`` to its local sessions,
``[subscription], {topic, reason, missed}`` per local subscription the topic reaches
(protocol_spec/wamp.md, "Event history").

A rollback (a failover to a replica that lagged, a restart from an older AOF or RDB) is
found by publication: per topic the node remembers the publications of its last ``RING``
delivered offsets (``recent``); the catch-up also reads the entry at the delivered
offset. After the gap the topic continues where the new timeline diverged (cluster.md,
"Event history", "Rollback").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
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
Deliver = Callable[[EventEnvelope], None]
DeliverMany = Callable[[list[EventEnvelope]], None]

CHUNK = 2000
"""Stream entries a catch-up reads per XRANGE (the next is read while one is delivered)."""

RING = 16
"""(offset, publication) pairs remembered per topic: where a rolled-back Redis diverged."""

Ring = deque[tuple[int, int]]


class GapRepair:
    """Per topic: the last event delivered here; the catch-up after a link outage."""

    def __init__(self, node: str, host: ClusterHost) -> None:
        self.node = node
        self.host = host
        self.delivered: dict[Key, Position] = {}
        self.start: dict[Key, Position] = {}
        """Where a new exact subscription started, until its first event (``note_start``)."""
        self.recent: dict[Key, Ring] = {}
        """The last ``RING`` (offset, publication) delivered per topic (rollback detection)."""
        self.when: dict[Key, int] = {}
        """The node's clock (µs) when it last delivered an event of the topic."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[Key, list[EventEnvelope]] = {}
        self.gaps = LabelCounts(("realm", "reason"))
        """Gaps that could not be filled (``server.metrics`` replaces it with its counter)."""
        self.recovered = 0
        """Events delivered by catch-ups so far."""

    # --- live events -----------------------------------------------------------------------
    def admit(self, env: EventEnvelope, deliver: Deliver) -> None:
        """Deliver a live event of a topic with history once, in offset order (or hold it)."""
        key = (env.realm, env.topic)
        held = self._held.get(key)
        if held is not None:
            held.append(env)
            return
        self._take(key, env, deliver)

    def _take(self, key: Key, env: EventEnvelope, deliver: Deliver) -> None:
        assert env.offset is not None and env.epoch is not None
        position = self.delivered.get(key)
        if position is not None and position[0] == env.epoch and env.offset <= position[1]:
            if not self._reused(key, env.offset, env.publication):
                return  # delivered already (another channel, or the catch-up)
            self._gap(key, "lost", None, position[1])  # Redis went back in time (rollback)
            self._rewound(key, env.offset - 1)
        self.delivered[key] = (env.epoch, env.offset)
        self.start.pop(key, None)
        self._note(key, env.offset, env.publication)
        if env.node != self.node:  # our own events were delivered when published
            deliver(env)

    # --- rollback: Redis lost its latest writes, offsets are reused ------------------------
    def _note(self, key: Key, offset: int, publication: int) -> None:
        self.when[key] = time.time_ns() // 1000
        ring = self.recent.get(key)
        if ring is None:
            ring = self.recent[key] = deque(maxlen=RING)
        ring.append((offset, publication))

    def _reused(self, key: Key, offset: int, publication: int) -> bool:
        """Whether ``offset`` was delivered here as another publication (a rollback)."""
        for seen, delivered in self.recent.get(key, ()):
            if seen == offset:
                return delivered != publication
        return False

    def _rewound(self, key: Key, offset: int) -> None:
        """Continue the topic after ``offset``: forget what was delivered after it."""
        epoch = self.delivered[key][0]
        self.delivered[key] = (epoch, offset)
        ring = self.recent.get(key)
        while ring and ring[-1][0] > offset:
            ring.pop()

    def _rolled_back(self, key: Key, last: int, at: list[Any]) -> bool:
        """Whether Redis went back in time on ``key`` (its epoch unchanged).

        ``last`` is the hash's offset, ``at`` the stream's entry at the delivered offset.
        Offsets only grow in an epoch: a lower ``last`` is a rollback; so is another
        publication at the delivered offset. A missing entry with ``last`` not lower is
        a trim (``_trimmed``).
        """
        offset = self.delivered[key][1]
        if last < offset:
            return True
        entries = parse_entries(at)
        return bool(entries) and self._reused(key, offset, entries[0][2].publication)

    async def _rewind(self, cmd: Client, rolled: list[tuple[Key, int]]) -> list[Key]:
        """Report each rolled-back topic's gap; continue it where its timeline diverged.

        That is the newest remembered offset whose stored entry is still the publication
        delivered. When none is: the newest entry Redis wrote (``u``) before this node
        delivered its last event of the topic (``when``); the new timeline's entries were
        written after Redis came back, so later (Redis's and the node's clocks agreeing
        within that time). Read: up to ``CHUNK`` entries up to the delivered offset.
        """
        if not rolled:
            return []
        pipe = cmd.pipeline(transaction=False)
        for key, last in rolled:
            top = min(last, self.delivered[key][1])
            pipe.xrevrange(history_stream_key(*key), f"0-{top}", "-", count=CHUNK)
        replies = await pipe.execute()
        for (key, last), raw in zip(rolled, replies, strict=True):
            entries = parse_entries(raw)
            stored = {number: env.publication for number, _micros, env in entries}
            ring = self.recent.get(key, ())
            same = [offset for offset, pub in ring if stored.get(offset) == pub]
            when = self.when.get(key)
            before = [n for n, micros, _env in entries if when is not None and micros <= when]
            if same:
                start = same[-1]
            elif before:
                start = before[0]  # newest first
            elif when is not None and entries:  # every entry read is newer
                start = entries[-1][0] - 1
            else:  # nothing delivered here yet (a start noted), or nothing left
                start = min(last, self.delivered[key][1])
            self._gap(key, "lost", None, self.delivered[key][1])
            self._rewound(key, start)
        return [key for key, _last in rolled]

    # --- where a subscription starts --------------------------------------------------
    def watch_from(
        self, cmd: Client | None, realm: str, topic: str, then: Callable[[], None]
    ) -> None:
        """Note the topic's offset, then ``then()`` (which makes an exact subscription live).

        The offset is read *before* the subscription goes live, so every event it receives
        live has a later one: an outage before its first event is repaired from there
        without missing any (it may deliver an event published while it went live, never
        skip one). Not read when an event of the topic was delivered already.
        """
        if cmd is None or (realm, topic) in self.delivered:
            then()
            return
        task = asyncio.get_running_loop().create_task(self._note_start(cmd, realm, topic, then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _note_start(
        self, cmd: Client, realm: str, topic: str, then: Callable[[], None]
    ) -> None:
        try:
            epoch, offset = await cmd.hmget(history_meta_key(realm, topic), ["e", "o"])
        except Exception:  # the link failed: the subscription starts from live events
            then()
            return
        key = (realm, topic)
        if key not in self.delivered:
            text = epoch.decode() if isinstance(epoch, bytes) else epoch
            position = (text or NEW, int(offset or 0))
            noted = self.start.get(key)
            if noted is None or noted[0] != position[0]:  # else keep the earlier one
                self.start[key] = position
        then()

    # --- catch-up ------------------------------------------------------------------------
    def begin(self) -> None:
        """The link is coming back: hold live events of every remembered topic."""
        for key, position in self.start.items():
            self.delivered.setdefault(key, position)
        self.start.clear()
        self._held = {key: [] for key in self.delivered}
        for key in set(self.recent) - set(self.delivered):
            del self.recent[key]
            self.when.pop(key, None)

    def forget(self, realm: str) -> None:
        """Drop the positions of ``realm``'s topics no local subscription reaches any more."""
        for positions in (self.delivered, self.start):
            for key in [key for key in positions if key[0] == realm]:
                if not self._wanted(key):
                    del positions[key]
                    self.recent.pop(key, None)
                    self.when.pop(key, None)

    def abandon(self) -> None:
        """The link failed before the catch-up ended: the next one reads the held events."""
        self._held = {}

    async def run(
        self, cmd: Client, deliver: Deliver, deliver_many: DeliverMany | None = None
    ) -> None:
        """Deliver what each held topic missed, then its held live events; release them.

        ``deliver_many`` delivers one chunk of a topic's missed events at once (in order);
        without it each goes through ``deliver``.
        """
        many = deliver_many or _one_by_one(deliver)
        keys = [key for key in self._held if self._wanted(key)]
        for key in set(self._held) - set(keys):
            self.delivered.pop(key, None)
            self.recent.pop(key, None)
            self.when.pop(key, None)
        started, recovered = time.monotonic(), self.recovered
        firsts = await self._read(cmd, keys, full=False)
        read = time.monotonic() - started
        renewed: list[Key] = []
        rolled: list[tuple[Key, int]] = []
        for key, (meta, raw, at) in zip(keys, firsts, strict=True):
            epoch, offset = self.delivered[key]
            stored = meta[0].decode() if meta[0] is not None else None
            if stored == epoch and self._rolled_back(key, int(meta[1] or 0), at):
                rolled.append((key, int(meta[1] or 0)))
            elif stored == epoch:
                await self._catch_up(cmd, key, stored, int(meta[1] or 0), raw, many)
                continue
            else:
                if epoch != NEW:  # Redis lost the topic's history
                    self._gap(key, "lost", None, offset)
                del self.delivered[key]
                self.recent.pop(key, None)
                self.when.pop(key, None)
                if stored is not None:
                    renewed.append(key)
        await self._read_again(cmd, renewed, await self._rewind(cmd, rolled), many)
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

    async def _read_again(
        self, cmd: Client, renewed: list[Key], rewound: list[Key], many: DeliverMany
    ) -> None:
        """Catch up topics read again: a new epoch from its start, a rewound one after it."""
        for key, (meta, raw, _at) in zip(
            renewed, await self._read(cmd, renewed, True), strict=True
        ):
            if meta[0] is not None:  # a new epoch: every event of it was missed here
                epoch = meta[0].decode()
                self.delivered[key] = (epoch, 0)
                await self._catch_up(cmd, key, epoch, int(meta[1] or 0), raw, many)
        firsts = await self._read(cmd, rewound, False)
        for key, (meta, raw, _at) in zip(rewound, firsts, strict=True):
            epoch = self.delivered[key][0]
            if meta[0] is not None and meta[0].decode() == epoch:
                await self._catch_up(cmd, key, epoch, int(meta[1] or 0), raw, many)

    async def _read(self, cmd: Client, keys: list[Key], full: bool) -> list[tuple[Any, Any, Any]]:
        """Per topic: hash [epoch, offset], the first chunk of entries after the delivered
        offset, and (unless ``full``: from the start) the entry at that offset."""
        if not keys:
            return []
        pipe = cmd.pipeline(transaction=False)
        for realm, topic in keys:
            stream = history_stream_key(realm, topic)
            pipe.hmget(history_meta_key(realm, topic), "e", "o")
            if full:
                pipe.xrange(stream, "-", "+", count=CHUNK)
                continue
            offset = self.delivered[(realm, topic)][1]
            pipe.xrange(stream, f"(0-{offset}", "+", count=CHUNK)
            pipe.xrange(stream, f"0-{offset}", f"0-{offset}")
        replies = await pipe.execute()
        if full:
            return [(meta, raw, []) for meta, raw in zip(replies[0::2], replies[1::2], strict=True)]
        return list(zip(replies[0::3], replies[1::3], replies[2::3], strict=True))

    def _wanted(self, key: Key) -> bool:
        realm = self.host.realms.get(key[0])
        return realm is not None and bool(realm.broker.matching(key[1]))

    async def _catch_up(
        self, cmd: Client, key: Key, epoch: str, last: int, raw: list[Any], many: DeliverMany
    ) -> None:
        """Deliver the topic's entries after the delivered offset, chunk by chunk, in order.

        ``raw`` is the first chunk; while one chunk is decoded and delivered the next is
        read. Each chunk goes out in one loop iteration (one write per subscriber). A
        hole before the first entry is a gap.
        """
        chunks = _chunks(cmd, history_stream_key(*key), raw)
        try:
            first = True
            async for entries in chunks:
                if key not in self.delivered:
                    return  # no local subscription wants the topic any more
                if first:
                    ours = (number for number, _micros, env in entries if env.epoch == epoch)
                    self._trimmed(key, epoch, next(ours, last + 1))
                    first = False
                self._deliver_chunk(key, epoch, entries, many)
        finally:
            await chunks.aclose()

    def _trimmed(self, key: Key, epoch: str, first: int) -> None:
        offset = self.delivered[key][1]
        if first > offset + 1:
            self._gap(key, "trimmed", first - offset - 1, offset)
            self.delivered[key] = (epoch, first - 1)

    def _deliver_chunk(
        self, key: Key, epoch: str, entries: list[StreamEntry], deliver_many: DeliverMany
    ) -> None:
        """Deliver the entries of ``epoch`` after the delivered offset (one batch)."""
        position = self.delivered[key]
        if position[0] != epoch:
            return
        offset = position[1]
        batch = [
            env
            for number, _micros, env in entries
            if number > offset and env.epoch == epoch and env.node != self.node
        ]
        if entries:
            newest = entries[-1][0]
            if newest > offset:
                self.delivered[key] = (epoch, newest)
                self.start.pop(key, None)
            for number, _micros, env in entries[-RING:]:
                if number > offset and env.epoch == epoch:
                    self._note(key, number, env.publication)
        if batch:
            self.recovered += len(batch)
            deliver_many(batch)

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


async def _chunks(
    cmd: Client, stream: str, raw: list[Any]
) -> AsyncGenerator[list[StreamEntry], None]:
    """The parsed entries of ``raw`` (a first XRANGE reply), then of each next chunk.

    The next chunk (``COUNT CHUNK`` after the last raw entry) is asked for before the
    current one is handed out, so Redis and the network work while it is delivered.
    """
    while True:
        pending: asyncio.Future[Any] | None = None
        if len(raw) >= CHUNK:
            after = b"(" + raw[-1][0]
            pending = asyncio.ensure_future(cmd.xrange(stream, after, "+", count=CHUNK))
        try:
            if pending is not None:
                await asyncio.sleep(0)  # the read is sent before this chunk is handled
            yield parse_entries(raw)
        except BaseException:  # closed early (or failed): the read in flight is not wanted
            if pending is not None:
                pending.cancel()
            raise
        if pending is None:
            return
        raw = await pending


def _one_by_one(deliver: Deliver) -> DeliverMany:
    def many(envs: list[EventEnvelope]) -> None:
        for env in envs:
            deliver(env)

    return many
