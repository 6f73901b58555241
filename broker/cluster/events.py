"""Events crossing nodes: event envelopes out, deduplicated delivery in.

An event goes to its topic's channel (``keys.event_channel``); nodes whose local
subscriptions need it listen on that channel or on a pattern matching it; on a Redis
Cluster, where no sharded pattern subscription exists, it also goes to the realm's
pattern channel when another node may have a pattern matching it (``patterns``)
(protocol_spec/cluster.md, "Channels", "Envelopes" and "Redis Cluster"). An event of a topic with
history goes through the history publish script instead (``history``), and arrives
with its topic's offset: ``repair`` then delivers it once, in offset order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from broker.core.host import ClusterHost
from broker.core.ids import random_id
from broker.core.ports import PublishDone
from broker.core.publication import DeliveryFilter, Publication
from protocol_spec.cluster import EventEnvelope, RetainedChanged, TestamentsRecord, pack_event

from . import keys
from .keys import CONTROL
from .outbox import Outbox, Reply

if TYPE_CHECKING:
    from .history import RedisHistory
    from .patterns import Patterns
    from .repair import GapRepair

__all__ = ["EventChannels", "accepted", "event_envelope", "publication_of"]

log = logging.getLogger(__name__)

SEEN = 4096
"""How many recent publication IDs a node remembers to deliver each event once."""


def event_envelope(node: str, realm: str, publication: Publication) -> EventEnvelope:
    """The event envelope of a publication made on ``node``."""
    return EventEnvelope(
        node,
        realm,
        publication.topic,
        publication.id,
        publication.details,
        publication.args,
        publication.kwargs,
        publication.filter_options(),
    )


def publication_of(env: EventEnvelope) -> Publication:
    """The publication an event envelope from another node carries (never retained here)."""
    found = env.filter
    return Publication(
        env.topic,
        env.publication,
        env.details,
        env.args,
        env.kwargs,
        None if found is None else Publication.remote_filter(found),
    )


def accepted(done: PublishDone, writes: int) -> Reply:
    """One outbox reply for each of ``writes`` commands; ``done`` once, when all are in.

    ``done(None)`` when Redis ran every one; the first failure (an exception, as the
    outbox gives it) answers at once with its text and the rest are ignored.
    """
    left = writes

    def reply(result: Any) -> None:
        nonlocal left
        if left <= 0:
            return
        if isinstance(result, Exception):
            left = 0
            done(str(result) or type(result).__name__)
            return
        left -= 1
        if left == 0:
            done(None)

    return reply


class EventChannels:
    """This node's events to the others, theirs to its local subscribers."""

    def __init__(self, node: str, host: ClusterHost, outbox: Outbox) -> None:
        self.node = node
        self.host = host
        self.outbox = outbox
        self.owned_retained: dict[tuple[str, str], bytes] = {}
        """Retained events this node published, re-written after Redis lost them."""
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self.history: RedisHistory | None = None
        """Writes events of topics with history through the history script (when set)."""
        self.repair: GapRepair | None = None
        """Admits events carrying an offset once, in order (when set)."""
        self.patterns: Patterns | None = None
        """Redis Cluster: the pattern subscriptions an event may have to reach (when set)."""

    def publish(
        self, realm: str, publication: Publication, done: PublishDone | None = None
    ) -> None:
        """Queue the event for its topic channel (and the retained hash when retained).

        ``done`` hears once Redis ran all of the event's writes (``accepted``), or why not.
        """
        topic = publication.topic
        found = publication.filter
        try:
            data = pack_event(
                self.node,
                realm,
                topic,
                publication.id,
                publication.details,
                publication.args,
                publication.kwargs,
                None if found is None else found.to_options(),
                None,
                None,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("cluster: event on %r cannot cross nodes: %s", topic, exc)
            if done is not None:
                done(f"the event cannot cross nodes: {exc}")
            return
        push, pub = self.outbox.push, self.outbox.pub
        channel = keys.event_channel(realm, topic)
        pattern = None if self.patterns is None else self._pattern_copy(realm, topic)
        rule = None if self.history is None else self.history.rule(realm, publication)
        if rule is None or self.history is None:
            writes = [(pub, channel, data)]
            if pattern is not None:
                writes.append((pub, pattern, data))
            echo = None
        else:
            echo = pattern
            writes = self.history.commands(realm, topic, channel, data, rule, pub, echo is not None)
        count = len(writes) + (2 if publication.retain else 0) + (1 if echo else 0)
        reply = None if done is None else accepted(done, count)
        push(writes[0], reply if echo is None else self._echo(echo, reply))
        for command in writes[1:]:
            push(command, reply)
        if publication.retain:
            self.owned_retained[(realm, topic)] = data
            push(("HSET", keys.retained_key(realm), topic, data), reply)
            env = event_envelope(self.node, realm, publication)
            changed = RetainedChanged(self.node, realm, topic, env).pack()
            push((pub, CONTROL, changed), reply)

    def _pattern_copy(self, realm: str, topic: str) -> bytes | None:
        """Redis Cluster: the realm's pattern channel when another node's pattern may match."""
        if self.patterns is None or not self.patterns.reaches(realm, topic):
            return None
        return keys.pattern_channel(realm)

    def _echo(self, pattern: bytes, reply: Reply | None) -> Reply:
        """The history script's reply: send the envelope it returned on ``pattern`` too."""

        def echoed(result: Any) -> None:
            if not isinstance(result, Exception):
                self.outbox.push((self.outbox.pub, pattern, result[1]), reply)
            if reply is not None:
                reply(result)

        return echoed

    def receive(self, env: EventEnvelope) -> None:
        """Deliver an event from another node to local subscribers, once."""
        if env.offset is not None and self.repair is not None:
            self.repair.admit(env, self.deliver)
            return
        if env.node == self.node:
            return  # our own echo: delivered locally already
        publication = env.publication
        if publication in self._seen:
            return  # reached us through another of our channels/patterns
        self._seen.add(publication)
        self._seen_order.append(publication)
        if len(self._seen_order) > SEEN:
            self._seen.discard(self._seen_order.popleft())
        self.deliver(env)

    def deliver(self, env: EventEnvelope) -> None:
        """Deliver an event envelope to the local subscribers of its realm."""
        realm = self.host.realms.get(env.realm)
        if realm is not None:
            realm.broker.deliver_remote(publication_of(env))

    def deliver_many(self, envs: list[EventEnvelope]) -> None:
        """Deliver envelopes of one realm and topic, in order (a catch-up's chunk)."""
        realm = self.host.realms.get(envs[0].realm) if envs else None
        if realm is not None:
            realm.broker.deliver_remote_batch([publication_of(env) for env in envs])

    def testaments(self, record: TestamentsRecord) -> Iterator[tuple[bytes, bytes]]:
        """Deliver a dead session's testaments locally; yield (channel, envelope) for the rest."""
        realm = self.host.realms.get(record.realm)
        if realm is None:
            return
        for t in record.testaments:
            try:
                delivery_filter = DeliveryFilter.from_options(t.get("options") or {})
            except (ValueError, AttributeError):
                continue
            publication = Publication(
                t["topic"], random_id(), {}, t.get("args"), t.get("kwargs"), delivery_filter
            )
            realm.broker.deliver_local(publication)
            env = event_envelope(self.node, realm.name, publication)
            data = env.pack()
            yield keys.event_channel(realm.name, publication.topic), data
            pattern = self._pattern_copy(realm.name, publication.topic)
            if pattern is not None:
                yield pattern, data
