"""Where an exact subscription with history starts: no event published once it is live is lost.

The Redis backend in-process on a real redis-server. The subscriber's node notes the
topic's offset for gap repair; an event published the moment the subscription is live
(SUBSCRIBED) whose pub/sub delivery is lost with the link must be repaired after the
reconnect. If the offset were read after the subscription went live, it could already
count that event and the repair would start after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from broker.cluster import keys
from broker.cluster.events import event_envelope
from broker.cluster.link import ClusterTiming
from broker.cluster.redis import RedisCluster
from broker.core.history import HistoryRule, HistorySettings
from broker.core.ids import random_id
from broker.core.publication import Publication
from broker.core.realm import RealmSettings
from broker.core.router import Router
from broker.core.session import Session
from broker.server import AsyncioScheduler
from protocol_spec.messages import Event, Hello, Message, Subscribe, Subscribed
from tests.support.processes import RedisProcess, start_redis

TIMING = ClusterTiming(
    heartbeat_interval=0.25, node_timeout=2.0, probe_interval=0.3, probe_timeout=0.5
)
RULE = HistoryRule("com.win.", "prefix", 1000)
TOPIC = "com.win.t"
ROLES: dict[str, Any] = {"subscriber": {"features": {}}}


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


class Subscriber:
    """A session's peer: the events it got; a hook run when SUBSCRIBED is sent."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.changed = asyncio.Event()
        self.on_subscribed: Any = None
        self.transport_info: dict[str, Any] = {"type": "test"}

    def send(self, message: Message, cache: dict[str, Any] | None = None) -> None:
        if isinstance(message, Subscribed) and self.on_subscribed is not None:
            self.on_subscribed()
        if isinstance(message, Event):
            self.events.append(message.args[0] if message.args else None)
            self.changed.set()

    def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    async def until(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def history_node(
    url: str, node_id: str
) -> AsyncIterator[tuple[Router, RedisCluster, redis.Redis]]:
    """A router keeping RULE's history on the Redis at ``url``, its backend, a client of it."""
    settings = RealmSettings("realm1", history=HistorySettings(rules=(RULE,)))
    router = Router((settings,), AsyncioScheduler())
    backend = RedisCluster(url, node_id, router, TIMING)
    for realm in router.realms.values():
        realm.cluster = backend
    client = redis.Redis.from_url(url)
    await backend.start()
    try:
        yield router, backend, client
    finally:
        client.close()
        await backend.close()


def joined(router: Router) -> tuple[Subscriber, Session]:
    """A new session of ``router`` on a ``Subscriber`` peer, joined to realm1."""
    peer = Subscriber()
    session = router.attach(peer)
    router.receive(session, Hello("realm1", {"roles": ROLES}))
    return peer, session


def publish(client: redis.Redis, backend: RedisCluster, n: int) -> None:
    """Publish event ``n`` on TOPIC as another node would: the history script, now."""
    publication = Publication(TOPIC, random_id(), {}, [n], None)
    data = event_envelope("win-other", "realm1", publication).pack()
    channel = keys.event_channel("realm1", TOPIC)
    for command in backend.history.commands("realm1", TOPIC, channel, data, RULE):
        client.execute_command(*command)


async def test_an_event_published_as_the_subscription_goes_live_is_repaired(
    own_redis: RedisProcess,
) -> None:
    async with history_node(own_redis.url, "win-a") as (router, backend, client):
        publish(client, backend, 0)  # before the subscription: never delivered
        peer, session = joined(router)

        def window() -> None:
            # live: the pub/sub connection dies, then an event is published; the node
            # never gets it live, only the repair after the reconnect can deliver it
            assert client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            publish(client, backend, 1)

        peer.on_subscribed = window
        router.receive(session, Subscribe(1, {}, TOPIC))
        await peer.until(1)
        assert peer.events == [1]
        publish(client, backend, 2)  # the subscription is live again: event 1 was repaired
        await peer.until(2)
        assert peer.events == [1, 2]
