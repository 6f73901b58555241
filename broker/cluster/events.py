"""Events crossing nodes: event envelopes out, deduplicated delivery in.

An event goes to the channel ``wamp:ev:{realm}:{topic}``; nodes whose local
subscriptions need it listen on that channel or on a pattern matching it
(protocol_spec/cluster.md, "Channels" and "Envelopes").
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

from broker.core.ids import random_id
from broker.core.pubsub import DeliveryFilter
from broker.core.router import Router

from . import keys
from .keys import CONTROL, pack
from .outbox import Outbox

__all__ = ["EventChannels", "event_envelope", "event_fields"]

log = logging.getLogger(__name__)

SEEN = 4096
"""How many recent publication IDs a node remembers to deliver each event once."""


def event_envelope(
    node: str,
    realm: str,
    topic: str,
    publication: int,
    details: dict[str, Any],
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    filter_options: dict[str, Any] | None,
) -> dict[str, Any]:
    """The event envelope ``{n, r, t, p, d, a, k, f}``."""
    return {
        "n": node,
        "r": realm,
        "t": topic,
        "p": publication,
        "d": details,
        "a": args,
        "k": kwargs,
        "f": filter_options,
    }


def event_fields(
    env: dict[str, Any],
) -> tuple[str, int, dict[str, Any], Any, Any, Any]:
    """An event envelope's (topic, publication, details, args, kwargs, filter options)."""
    return env["t"], env["p"], env.get("d") or {}, env.get("a"), env.get("k"), env.get("f")


class EventChannels:
    """This node's events to the others, theirs to its local subscribers."""

    def __init__(self, node: str, router: Router, outbox: Outbox) -> None:
        self.node = node
        self.router = router
        self.outbox = outbox
        self.owned_retained: dict[tuple[str, str], bytes] = {}
        """Retained events this node published, re-written after Redis lost them."""
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()

    def publish(self, env: dict[str, Any], retain: bool) -> None:
        """Queue an event envelope for its topic channel (and the retained hash)."""
        realm, topic = env["r"], env["t"]
        try:
            data = pack(env)
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("cluster: event on %r cannot cross nodes: %s", topic, exc)
            return
        push = self.outbox.push
        push(("PUBLISH", keys.event_channel(realm, topic), data))
        if retain:
            self.owned_retained[(realm, topic)] = data
            push(("HSET", keys.retained_key(realm), topic, data))
            ctl = {"op": "retain", "n": self.node, "r": realm, "t": topic, "ev": env}
            push(("PUBLISH", CONTROL, pack(ctl)))

    def receive(self, env: dict[str, Any]) -> None:
        """Deliver an event from another node to local subscribers, once."""
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
            realm.broker.deliver_remote(*event_fields(env))

    def testaments(self, entry: dict[str, Any]) -> Iterator[tuple[bytes, bytes]]:
        """Deliver a dead session's testaments locally; yield (channel, envelope) for the rest."""
        realm = self.router.realms.get(entry.get("realm", ""))
        if realm is None:
            return
        for t in entry.get("testaments") or []:
            try:
                delivery_filter = DeliveryFilter.from_options(t.get("options") or {})
            except ValueError:
                continue
            publication = random_id()
            args, kwargs = t.get("args"), t.get("kwargs")
            realm.broker.deliver_local(
                t["topic"], publication, {}, args, kwargs, None, delivery_filter
            )
            fopts = delivery_filter.to_options() if delivery_filter is not None else None
            env = event_envelope(
                self.node, realm.name, t["topic"], publication, {}, args, kwargs, fopts
            )
            yield keys.event_channel(realm.name, t["topic"]), pack(env)
