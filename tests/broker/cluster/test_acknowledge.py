"""Acknowledged publishes on a distributed backend: answered only once the cluster decided.

The core is driven sans-I/O (``World``) against a backend that holds each publish's
``done`` until the test answers it (the port, not Redis, is what is replaced here);
the writer's command timeout is checked against a real redis-server stopped with
SIGSTOP; the setting is read from TOML.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from broker.cluster.events import accepted
from broker.cluster.link import ClusterTiming, LinkLost
from broker.cluster.outbox import Outbox
from broker.config import ConfigError, settings_from_toml
from broker.core.ports import Cluster, PublishDone
from broker.core.publication import Publication
from protocol_spec import errors
from protocol_spec.messages import Error, Event, Publish, Published, Subscribe, Subscribed
from tests.broker.core.harness import Client, World
from tests.support.processes import RedisProcess, start_redis

ACK = {"acknowledge": True}


class HeldCluster(Cluster):
    """A distributed backend that keeps every publish's ``done`` for the test to answer."""

    distributed = True

    def __init__(self) -> None:
        self.held: list[tuple[Publication, PublishDone | None]] = []

    def publish(
        self, realm: str, publication: Publication, done: PublishDone | None = None
    ) -> None:
        self.held.append((publication, done))

    def answer(self, index: int, error: str | None = None) -> None:
        done = self.held[index][1]
        assert done is not None
        done(error)


def _world() -> tuple[World, HeldCluster, Client, Client]:
    world = World()
    cluster = HeldCluster()
    world.router.realms["realm1"].cluster = cluster
    subscriber = world.client()
    subscriber.send(Subscribe(1, {}, "ack.topic"))
    subscriber.take_one(Subscribed)
    return world, cluster, subscriber, world.client()


def test_published_waits_for_the_cluster_and_unavailable_says_why() -> None:
    _, cluster, subscriber, publisher = _world()
    publisher.send(Publish(7, ACK, "ack.topic", ["one"]))
    subscriber.take_one(Event)  # local subscribers are never held
    assert publisher.take() == []
    cluster.answer(0)
    published = publisher.take_one(Published)
    assert (published.request, published.publication) == (7, cluster.held[0][0].id)

    publisher.send(Publish(8, ACK, "ack.topic", ["two"]))
    cluster.answer(1, "Redis did not answer within 1 s")
    error = publisher.take_one(Error)
    assert (error.request, error.error) == (8, errors.UNAVAILABLE)
    assert "Redis did not answer within 1 s" in error.args[0]
    cluster.answer(1)  # a second verdict for the same publish is ignored
    assert publisher.take() == []


def test_answers_keep_the_order_of_the_requests() -> None:
    _, cluster, _subscriber, publisher = _world()
    publisher.send(Publish(1, ACK, "ack.topic", []))
    publisher.send(Publish(2, ACK, "ack.topic", []))
    publisher.send(Publish(3, ACK, "not a uri!", []))  # refused at once, but held behind
    publisher.send(Publish(4, {}, "ack.topic", []))  # unacknowledged: no answer at all
    assert len(cluster.held) == 3 and cluster.held[2][1] is None
    cluster.answer(1)
    assert publisher.take() == []
    cluster.answer(0, "link lost")
    answers = publisher.take()
    assert [(type(m).__name__, m.request) for m in answers] == [
        ("Error", 1),
        ("Published", 2),
        ("Error", 3),
    ]
    assert isinstance(answers[2], Error) and answers[2].error == errors.INVALID_URI
    assert world_acks_empty(publisher)


def test_a_publisher_that_left_before_its_answer_gets_nothing_and_nothing_breaks() -> None:
    _, cluster, subscriber, publisher = _world()
    publisher.send(Publish(1, ACK, "ack.topic", ["x"]))
    publisher.leave_abruptly()
    cluster.answer(0)
    assert publisher.take() == []
    assert world_acks_empty(publisher)
    subscriber.take_one(Event)


def world_acks_empty(client: Client) -> bool:
    return client.router.realms["realm1"].broker.acks.held(client.session) == 0


def test_accepted_answers_once_every_write_ran_or_at_the_first_failure() -> None:
    verdicts: list[str | None] = []
    reply = accepted(verdicts.append, 3)
    reply(1)
    reply(True)
    assert verdicts == []
    reply(0)
    assert verdicts == [None]
    failing = accepted(verdicts.append, 3)
    failing(1)
    failing(LinkLost("gone"))
    failing(1)
    assert verdicts == [None, "gone"]


@pytest.fixture
async def stoppable_redis() -> AsyncIterator[RedisProcess]:
    server = start_redis()
    yield server
    server.proc.send_signal(signal.SIGCONT)
    server.kill()


async def test_a_hung_redis_fails_the_batch_in_flight_then_the_queue_in_order(
    stoppable_redis: RedisProcess,
) -> None:
    outbox = Outbox(command_timeout=0.3)
    cmd = Redis.from_url(stoppable_redis.url)
    replies: list[tuple[int, Any]] = []
    first = asyncio.Event()

    def reply(n: int) -> Any:
        def got(result: Any) -> None:
            replies.append((n, result))
            first.set()

        return got

    writer = asyncio.create_task(outbox.write(cmd))
    try:
        outbox.push(("PUBLISH", b"c", b"0"), reply(0))
        await asyncio.wait_for(first.wait(), 5)
        assert replies == [(0, 0)]  # PUBLISH ran: no receivers
        stoppable_redis.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        outbox.push(("PUBLISH", b"c", b"1"), reply(1))
        for _ in range(3):
            await asyncio.sleep(0)  # let the writer take command 1 into flight
        outbox.push(("PUBLISH", b"c", b"2"), reply(2))  # queued (or in the same batch)
        with pytest.raises(LinkLost, match=r"did not answer within 0\.3 s"):
            await asyncio.wait_for(writer, 5)
        assert 0.25 < time.monotonic() - started < 2.0
        assert len(replies) == 1 and outbox.pending
        outbox.fail("hung")
        assert [n for n, _ in replies] == [0, 1, 2]
        assert all(isinstance(r, LinkLost) and str(r) == "hung" for _, r in replies[1:])
        assert not outbox.pending
    finally:
        writer.cancel()
        stoppable_redis.proc.send_signal(signal.SIGCONT)
        await cmd.aclose()  # type: ignore[no-untyped-call]


def test_command_timeout_is_a_cluster_timing_read_from_toml() -> None:
    settings = settings_from_toml({"cluster": {"command_timeout": 0.5}})
    assert ClusterTiming(**settings.cluster_timing).command_timeout == 0.5
    assert ClusterTiming().command_timeout == 1.0
    with pytest.raises(ConfigError, match="command_timeout must be positive"):
        settings_from_toml({"cluster": {"command_timeout": 0}})
