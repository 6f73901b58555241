"""Event history on the Redis backend: one stream per topic, written by the publish script.

A publication to a topic with a history rule crosses nodes through one Lua script
(``scripts.HISTORY_PUBLISH``) instead of a plain PUBLISH: it takes the topic's next
offset, appends the event to the topic's stream (``XADD … MAXLEN ~ limit``), renews
the TTLs and publishes the envelope carrying offset and epoch, so every node sees the
events of a topic with the same offsets in the same order. Topics without a rule keep
the plain PUBLISH.

Keys (protocol_spec/cluster.md, "Event history"), both with the topic's hash tag
``{t}`` (``keys.topic_tag``), the tag of its event channel, so the script (which
also publishes on that channel) touches one slot::

    wamp:{t}:h:{realm}␟{topic}:m   hash {o: last offset, e: epoch}
    wamp:{t}:h:{realm}␟{topic}:s   stream, entry ID 0-<offset>, fields u (µs), ev (envelope)
    wamp:{ctl}:h:{realm}:topics    set of the realm's topics with history (pattern queries)

``wamp.subscription.get_events`` reads those streams (``RedisHistoryReader``), so every
node gives the same answer. A read first waits until Redis ran every write this node
queued before it (``RedisHistory.flushed``: a PING through the single writer), so it
sees this node's own events published before the query (their local subscribers got
them at once, so a subscriber resuming here would otherwise miss them). A stream may hold more than ``limit`` entries (``~``); a
read keeps the ``limit`` newest offsets and drops entries older than ``ttl`` by the
Redis clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from broker.core.history import (
    HistoryPage,
    HistoryQuery,
    HistoryRule,
    QueryDone,
    RealmHistory,
    StoredEvent,
    in_time,
    select,
)
from broker.core.host import ClusterHost
from broker.core.matching import pattern_matches
from broker.core.publication import Publication
from protocol_spec.cluster import (
    HISTORY_SUFFIX,
    ClusterProtocolError,
    EventEnvelope,
    decode_event,
    publication_marker,
)
from protocol_spec.uri import MATCH_EXACT

from .events import publication_of
from .keys import CTL, SEP, topic_tag
from .outbox import Command, Outbox
from .scripts import HISTORY_PUBLISH

if TYPE_CHECKING:
    from .connect import Client

FLUSH_TIMEOUT = 5.0
"""Seconds a history read waits for this node's earlier writes (the writer's own timeout
fails them sooner when Redis hangs)."""

__all__ = [
    "HISTORY_SHA",
    "META_GRACE",
    "RedisHistory",
    "RedisHistoryReader",
    "StreamEntry",
    "history_meta_key",
    "history_stream_key",
    "history_topics_key",
    "parse_entries",
]

log = logging.getLogger(__name__)

HISTORY_SHA = hashlib.sha1(HISTORY_PUBLISH.encode()).hexdigest()
"""EVALSHA of the history publish script (loaded on every new connection)."""

SCAN = 1000
"""Entries the first newest-first read of an anchor search asks for (each next: twice)."""

META_GRACE = 86_400
"""Seconds the offset hash outlives a stream with a ttl, so offsets survive idle topics."""


def _tag(realm: str, topic: str) -> str:
    return f"wamp:{{{topic_tag(realm, topic)}}}:h:{realm}{SEP}{topic}"


def history_meta_key(realm: str, topic: str) -> str:
    """The topic's hash: ``o`` last offset, ``e`` epoch."""
    return _tag(realm, topic) + ":m"


def history_stream_key(realm: str, topic: str) -> str:
    """The topic's stream of kept events."""
    return _tag(realm, topic) + ":s"


def history_topics_key(realm: str) -> str:
    """The set of ``realm``'s topics with history (read by pattern queries)."""
    return f"{CTL}h:{realm}:topics"


StreamEntry = tuple[int, int, EventEnvelope]
"""(offset, timestamp in µs, envelope) of one stream entry."""


def parse_entries(raw: list[Any]) -> list[StreamEntry]:
    """XRANGE's reply as entries, oldest first; malformed entries are skipped (logged)."""
    out: list[StreamEntry] = []
    for entry_id, fields in raw:
        try:
            offset = int(entry_id.split(b"-", 1)[1])
            env = decode_event(fields[b"ev"])
            out.append((offset, int(fields[b"u"]), env))
        except (ClusterProtocolError, KeyError, ValueError, IndexError) as exc:
            log.warning("cluster: skipped a malformed history entry %r: %s", entry_id, exc)
    return out


class RedisHistory:
    """The history side of the Redis backend: the publish command, the readers per realm."""

    def __init__(
        self, host: ClusterHost, command: Callable[[], Client | None], outbox: Outbox | None = None
    ) -> None:
        self.host = host
        self._command = command
        self._outbox = outbox
        self._known: set[tuple[str, str]] = set()
        """Topics this connection has added to their realm's topic set."""

    def install(self) -> None:
        """Make every realm with history rules keep it in Redis (before serving)."""
        for name, realm in self.host.realms.items():
            history = realm.context.history
            if history.settings.rules:
                history.reader = RedisHistoryReader(name, history, self._command, self.flushed)

    async def flushed(self) -> None:
        """Wait until Redis ran every write this node queued before (``LinkLost`` if not)."""
        if self._outbox is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def reply(result: Any) -> None:
            if done.done():
                return
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(None)

        self._outbox.push(("PING",), reply)
        async with asyncio.timeout(FLUSH_TIMEOUT):
            await done

    def connected(self) -> None:
        """A new connection: topic sets are written again (Redis may have lost them)."""
        self._known.clear()

    def rule_for(self, realm: str, topic: str) -> HistoryRule | None:
        """The rule that keeps ``topic``'s history in Redis, None when none does."""
        found = self.host.realms.get(realm)
        if found is None or found.context.history.reader is None:
            return None
        return found.context.history.rule_for(topic)

    def rule(self, realm: str, publication: Publication) -> HistoryRule | None:
        """The rule that keeps ``publication`` in Redis, None when it is not kept."""
        found = self.host.realms.get(realm)
        if found is None or found.context.history.reader is None:
            return None
        return found.context.history.keeping(publication)

    def commands(
        self,
        realm: str,
        topic: str,
        channel: bytes,
        data: bytes,
        rule: HistoryRule,
        pub: str = "PUBLISH",
        echo: bool = False,
    ) -> list[Command]:
        """The writes of one kept event: the script (and the topic set once per connection).

        ``pub`` is the script's publish command; ``echo``: the script also returns the
        envelope it published (``[offset, envelope]``), for the realm's pattern channel.
        """
        if not data.endswith(HISTORY_SUFFIX):
            raise ValueError("event envelope does not end with the history placeholders")
        ttl = 0 if rule.ttl is None else max(1, int(rule.ttl + 0.999))
        meta_ttl = 0 if rule.ttl is None else ttl + META_GRACE
        keys = (history_meta_key(realm, topic), history_stream_key(realm, topic))
        script: Command = ("EVALSHA", HISTORY_SHA, 2, *keys, channel, data, rule.limit, ttl)
        out = [(*script, meta_ttl, pub, "1" if echo else "0")]
        if (realm, topic) not in self._known:
            self._known.add((realm, topic))
            out.append(("SADD", history_topics_key(realm), topic))
        return out


class RedisHistoryReader:
    """``HistoryReader`` of one realm: reads the topic streams on the command client."""

    def __init__(
        self,
        realm: str,
        history: RealmHistory,
        command: Callable[[], Client | None],
        flushed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.realm = realm
        self.history = history
        self._command = command
        self._flushed = flushed
        self._tasks: set[asyncio.Task[None]] = set()

    def query(
        self, query: HistoryQuery, accept: Callable[[StoredEvent], bool], done: QueryDone
    ) -> None:
        """Read the streams of the subscription's topics; answer ``done`` on the loop."""
        cmd = self._command()
        if cmd is None:
            done("the link to Redis is down")
            return
        task = asyncio.get_running_loop().create_task(self._run(cmd, query, accept, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        cmd: Client,
        query: HistoryQuery,
        accept: Callable[[StoredEvent], bool],
        done: QueryDone,
    ) -> None:
        try:
            if self._flushed is not None:
                await self._flushed()  # this node's earlier writes are in the streams
                cmd = self._command() or cmd
            page = await self.read(cmd, query, accept)
        except Exception as exc:  # the link failed: the caller hears it, the link recovers
            done(str(exc) or type(exc).__name__)
            return
        done(page)

    async def _topics(self, cmd: Client, query: HistoryQuery) -> list[str]:
        if query.topic is not None or query.match == MATCH_EXACT:
            topic = query.topic if query.topic is not None else query.uri
            return [topic] if _matches(query, topic) else []
        members = await cmd.smembers(history_topics_key(self.realm))
        names = (m.decode() if isinstance(m, bytes) else str(m) for m in members)
        return sorted(t for t in names if _matches(query, t))

    async def read(
        self, cmd: Client, query: HistoryQuery, accept: Callable[[StoredEvent], bool]
    ) -> HistoryPage:
        """The page ``query`` selects from the streams of its topics (same on every node)."""
        topics = [t for t in await self._topics(cmd, query) if self.history.rule_for(t)]
        if len(topics) == 1 and _after_only(query):
            page = await self._after_anchor(cmd, topics[0], query, accept)
            if page is not None:
                return page
        pipe = cmd.pipeline(transaction=False)
        pipe.time()
        for topic in topics:
            pipe.hget(history_meta_key(self.realm, topic), "o")
            pipe.xrange(history_stream_key(self.realm, topic))
        replies = await pipe.execute()
        seconds, micros = replies[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        events: list[tuple[int, str, StoredEvent]] = []
        for index, topic in enumerate(topics):
            last, raw = replies[1 + 2 * index], replies[2 + 2 * index]
            rule = self.history.rule_for(topic)
            if last is None or rule is None:
                continue
            oldest = int(last) - rule.limit
            for offset, micros_ts, env in parse_entries(raw):
                stored = _stored(offset, micros_ts, env)
                if offset > oldest and not _expired(stored.timestamp, rule, now_ms):
                    events.append((micros_ts, topic, stored))
        events.sort(key=lambda item: (item[0], item[1], item[2].offset))
        return select([s for _, _, s in events if accept(s)], query)

    async def _after_anchor(
        self, cmd: Client, topic: str, query: HistoryQuery, accept: Callable[[StoredEvent], bool]
    ) -> HistoryPage | None:
        """The page after ``query.after_publication`` of one topic, without the whole stream.

        Reads the stream newest first (``XREVRANGE``, ``SCAN`` entries, then twice as
        many each time) until the anchor, found by its packed bytes; decodes only the
        entries after it, and those only until the page is full. None when this cannot
        answer exactly as ``read`` would (the anchor is not kept or not visible, the
        entries are not in time order): the caller reads the whole stream.
        """
        rule = self.history.rule_for(topic)
        anchor = query.after_publication
        if rule is None or anchor is None:
            return None
        marker = publication_marker(anchor)
        stream = history_stream_key(self.realm, topic)
        count = max(SCAN, (query.limit or 0) + 1)
        pipe = cmd.pipeline(transaction=False)
        pipe.time()
        pipe.hget(history_meta_key(self.realm, topic), "o")
        pipe.xrevrange(stream, "+", "-", count=count)
        (seconds, micros), last, raw = await pipe.execute()
        if last is None:
            return None
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        oldest = int(last) - rule.limit
        newer: list[Any] = []  # raw entries after the anchor, newest first
        while True:
            for entry in raw:
                if marker in entry[1].get(b"ev", b""):
                    found = parse_entries([entry])
                    if found and found[0][2].publication == anchor:
                        newer.reverse()
                        found_at = _stored(*found[0])
                        return _page_after(found_at, newer, query, accept, rule, oldest, now_ms)
                newer.append(entry)
            if len(raw) < count or _offset(raw[-1][0]) <= oldest:
                return None  # not in what is kept: the whole read says so
            count *= 2
            raw = await cmd.xrevrange(stream, b"(" + raw[-1][0], "-", count=count)


def _after_only(query: HistoryQuery) -> bool:
    """A forward query whose only publication anchor is ``after_publication`` (resume)."""
    return (
        query.after_publication is not None
        and not query.reverse
        and query.from_publication is None
        and query.before_publication is None
        and query.until_publication is None
    )


def _offset(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[1])


def _page_after(
    anchor: StoredEvent,
    raw: list[Any],
    query: HistoryQuery,
    accept: Callable[[StoredEvent], bool],
    rule: HistoryRule,
    oldest: int,
    now_ms: int,
) -> HistoryPage | None:
    """``select``'s page after a found ``anchor`` from the raw entries after it (oldest first).

    None unless the anchor is kept and visible and the entries are in Redis time order
    (as ``read`` sorts them): then nothing after the anchor is expired either.
    """
    if anchor.offset <= oldest or _expired(anchor.timestamp, rule, now_ms) or not accept(anchor):
        return None
    previous = anchor.order
    try:
        for _entry_id, fields in raw:
            stamp = int(fields[b"u"])
            if stamp < previous:
                return None
            previous = stamp
    except (KeyError, ValueError):
        return None
    chosen: list[StoredEvent] = []
    limit = query.limit
    for start in range(0, len(raw), 256):
        for offset, micros, env in parse_entries(raw[start : start + 256]):
            stored = _stored(offset, micros, env)
            if in_time(stored.timestamp, query) and accept(stored):
                chosen.append(stored)
        if limit is not None and len(chosen) > limit:
            break
    more = limit is not None and len(chosen) > limit
    return HistoryPage(tuple(chosen[:limit] if more else chosen), True, more)


def _matches(query: HistoryQuery, topic: str) -> bool:
    return pattern_matches(query.match, query.uri, topic)


def _expired(timestamp: int, rule: HistoryRule, now_ms: int) -> bool:
    return rule.ttl is not None and now_ms - timestamp > rule.ttl * 1000


def _stored(offset: int, micros: int, env: EventEnvelope) -> StoredEvent:
    return StoredEvent(publication_of(env), offset, micros, micros // 1000, 0)
