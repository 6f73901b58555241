"""Client resume against a real broker process keeping event history.

The subscriber's socket is cut abruptly (the broker stays up and keeps its
history); a leave hook holds the client offline until the test has published what
it must miss, then the client re-joins, re-subscribes and recovers through
``wamp.subscription.get_events``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from client_sdk import (
    Backoff,
    Client,
    Event,
    Gap,
    PublishOptions,
    Session,
    SessionClosed,
    connect,
    sync,
)
from client_sdk.resume import GAP_ANCHOR_LOST, GAP_HISTORY_EMPTY
from client_sdk.transport import WebSocketTransport
from tests.support.processes import ROOT, BrokerProcess, start_broker

CONFIG = """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "com.resume."
match = "prefix"
limit = 1000

[[realm.history]]
uri = "com.resume.short"
limit = 3

[[realm]]
name = "plain"
"""

FAST = Backoff(initial=0.05, maximum=0.5, jitter=0.5)
ACK = PublishOptions(acknowledge=True)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker keeping history for ``com.resume.`` (realm1) and none in realm ``plain``."""
    path = tmp_path_factory.mktemp("resume") / "broker.toml"
    path.write_text(CONFIG, encoding="utf-8")
    proc = start_broker("--config", str(path))
    yield proc
    proc.stop()


def cut(session: Session | None) -> None:
    """Drop the session's TCP connection without a close handshake (as a network failure)."""
    assert session is not None
    transport = session._transport
    assert isinstance(transport, WebSocketTransport)
    transport.connection.transport.abort()


class Offline:
    """Holds a client offline between a cut and ``release()``; counts its joins."""

    def __init__(self, client: Client) -> None:
        self.left = asyncio.Event()
        self.joined = client.joins
        self._gate = asyncio.Event()
        self._rejoined = asyncio.Event()
        client.on_leave(self._hold)
        client.on_join(self._on_join)

    async def _hold(self, session: Session, why: SessionClosed) -> None:
        self.left.set()
        await self._gate.wait()

    def _on_join(self, session: Session) -> None:
        self.joined += 1
        if self.joined > 1:
            self._rejoined.set()

    async def release(self) -> None:
        """Let the client reconnect and wait for its next join."""
        self._gate.set()
        async with asyncio.timeout(15):
            await self._rejoined.wait()


class Received:
    """The events a handler received, awaitable by count."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._more = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._more.set()

    @property
    def numbers(self) -> list[Any]:
        return [event.args[0] for event in self.events]

    async def until(self, count: int) -> None:
        async with asyncio.timeout(15):
            while len(self.events) < count:
                self._more.clear()
                await self._more.wait()


async def publish_range(session: Session, topic: str, numbers: range) -> list[int]:
    """Publish each number with acknowledge, in order; return the publication IDs."""
    ids = []
    for n in numbers:
        publication = await session.publish(topic, n, options=ACK)
        assert publication is not None
        ids.append(publication)
    return ids


async def test_resumed_subscriber_gets_every_event_once_in_order(broker: BrokerProcess) -> None:
    topic = "com.resume.ticks"
    received, gaps = Received(), list[Gap]()
    client = Client(broker.url, "realm1", backoff=FAST)
    offline = Offline(client)
    async with client, connect(broker.url, "realm1") as publisher:
        sub = await client.subscribe(topic, received, resume=True, on_gap=gaps.append)
        await publish_range(publisher, topic, range(0, 10))
        await received.until(10)

        cut(client.session)
        await asyncio.wait_for(offline.left.wait(), 15)
        missed = await publish_range(publisher, topic, range(10, 60))
        # keep publishing while the client re-joins and replays: live events wait
        # in its buffer and those also found in the history are dropped once
        live = asyncio.create_task(publish_range(publisher, topic, range(60, 200)))
        await offline.release()
        await asyncio.wait_for(live, 15)
        assert await asyncio.wait_for(sub.recovered(), 15) is True
        await received.until(200)

    assert received.numbers == list(range(200))
    assert [e.publication for e in received.events[10:60]] == missed
    assert all(e.replayed for e in received.events[10:60])
    assert not any(e.replayed for e in received.events[:10])
    assert sub.complete is True
    assert gaps == [] and sub.gaps == []
    assert sub.last_publication == received.events[-1].publication


async def test_subscriber_away_longer_than_the_history_is_told(broker: BrokerProcess) -> None:
    topic = "com.resume.short"  # 3 events kept
    received, gaps = Received(), list[Gap]()
    told = asyncio.Event()

    def on_gap(gap: Gap) -> None:
        gaps.append(gap)
        told.set()

    client = Client(broker.url, "realm1", backoff=FAST)
    offline = Offline(client)
    async with client, connect(broker.url, "realm1") as publisher:
        sub = await client.subscribe(topic, received, resume=True, on_gap=on_gap)
        ids = await publish_range(publisher, topic, range(0, 5))
        await received.until(5)

        cut(client.session)
        await asyncio.wait_for(offline.left.wait(), 15)
        await publish_range(publisher, topic, range(5, 15))
        await offline.release()
        await asyncio.wait_for(told.wait(), 15)
        assert await asyncio.wait_for(sub.recovered(), 15) is False
        await publish_range(publisher, topic, range(15, 17))
        await received.until(10)

    assert received.numbers == [0, 1, 2, 3, 4, 12, 13, 14, 15, 16]
    (gap,) = gaps
    assert gap.reason == GAP_ANCHOR_LOST
    assert gap.topic == topic
    assert gap.after_publication == ids[-1]
    assert gap.replayed == 0  # the gap sits before the replayed events
    assert sub.current is not None and gap.subscription == sub.current.id
    assert sub.complete is False and sub.gaps == [gap]


async def test_realm_without_history_reports_the_gap(broker: BrokerProcess) -> None:
    topic = "com.resume.plain"
    received, gaps = Received(), list[Gap]()
    told = asyncio.Event()

    def on_gap(gap: Gap) -> None:
        gaps.append(gap)
        told.set()

    client = Client(broker.url, "plain", backoff=FAST)
    offline = Offline(client)
    async with client, connect(broker.url, "plain") as publisher:
        sub = await client.subscribe(topic, received, resume=True, on_gap=on_gap)
        ids = await publish_range(publisher, topic, range(0, 3))
        await received.until(3)

        cut(client.session)
        await asyncio.wait_for(offline.left.wait(), 15)
        await publish_range(publisher, topic, range(3, 6))  # lost: nothing keeps them
        await offline.release()
        await asyncio.wait_for(told.wait(), 15)
        assert await asyncio.wait_for(sub.recovered(), 15) is False
        await publish_range(publisher, topic, range(6, 8))
        await received.until(5)

    assert received.numbers == [0, 1, 2, 6, 7]
    (gap,) = gaps
    assert gap.reason == GAP_HISTORY_EMPTY
    assert gap.after_publication == ids[-1]
    assert sub.complete is False


def test_sync_client_resumes_with_handlers_in_its_event_thread(broker: BrokerProcess) -> None:
    topic = "com.resume.sync"
    numbers: list[int] = []
    threads: set[str] = set()
    arrived = threading.Condition()

    def on_event(event: Event) -> None:
        with arrived:
            numbers.append(event.args[0])
            threads.add(threading.current_thread().name)
            arrived.notify_all()

    def until(count: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(numbers) >= count, 15), numbers

    with (
        sync.SyncClient(broker.url, "realm1", backoff=FAST) as client,
        sync.connect(broker.url, "realm1") as publisher,
    ):
        runner = client._runner
        offline = runner.run(_offline(client.client))
        sub = client.subscribe(topic, on_event, resume=True, on_gap=print)
        for n in range(5):
            publisher.publish(topic, n, options=ACK)
        until(5)
        runner.loop.call_soon_threadsafe(cut, client.client.session)
        runner.run(asyncio.wait_for(offline.left.wait(), 15))
        for n in range(5, 25):
            publisher.publish(topic, n, options=ACK)
        runner.run(offline.release())
        assert client.recovered(sub, 15) is True
        publisher.publish(topic, 25, options=ACK)
        until(26)

    assert numbers == list(range(26))
    assert len(threads) == 1 and threads != {threading.main_thread().name}
    assert sub.complete and sub.gaps == []


async def _offline(client: Client) -> Offline:
    return Offline(client)


async def wampc(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client_sdk.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


async def stderr_line(proc: asyncio.subprocess.Process, text: str) -> str:
    """The first stderr line of ``proc`` containing ``text`` (15 s at most)."""
    assert proc.stderr is not None
    async with asyncio.timeout(15):
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise AssertionError(f"wampc exited before printing {text!r}")
            if text in line:
                return line


async def test_wampc_sub_resume_prints_missed_events_once_in_order(broker: BrokerProcess) -> None:
    topic = "com.resume.cli"
    proc = await wampc("sub", topic, "--resume", "--url", broker.url, "--count", "20")
    try:
        await stderr_line(proc, f"subscribed to {topic}")
        async with connect(broker.url, "realm1") as publisher:
            await publish_range(publisher, topic, range(0, 5))
            listed = await publisher.call("wamp.session.list")
            (victim,) = [sid for sid in listed.args[0] if sid != publisher.id]
            await publisher.call("wamp.session.kill", victim)
            await publish_range(publisher, topic, range(5, 15))
            resumed = await stderr_line(proc, f"resumed {topic}")
            await publish_range(publisher, topic, range(15, 20))
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [line["args"][0] for line in lines] == list(range(20))
    assert "complete" in resumed and "gap" not in resumed


async def test_client_event_stream_resumes(broker: BrokerProcess) -> None:
    topic = "com.resume.short.stream"  # prefix rule: 1000 kept
    told: asyncio.Queue[Gap] = asyncio.Queue()

    async def on_gap(gap: Gap) -> None:
        await told.put(gap)

    client = Client(broker.url, "realm1", backoff=FAST)
    offline = Offline(client)
    async with client, connect(broker.url, "realm1") as publisher:
        async with client.events(topic, resume=True, on_gap=on_gap) as stream:
            sub = stream.subscription
            await publish_range(publisher, topic, range(0, 3))
            got = [(await asyncio.wait_for(anext(stream), 15)).args[0] for _ in range(3)]
            cut(client.session)
            await asyncio.wait_for(offline.left.wait(), 15)
            await publish_range(publisher, topic, range(3, 8))
            await offline.release()
            assert await asyncio.wait_for(sub.recovered(), 15) is True
            await publish_range(publisher, topic, range(8, 10))
            for _ in range(7):
                event = await asyncio.wait_for(anext(stream), 15)
                got.append(event.args[0])
                assert event.replayed == (3 <= event.args[0] < 8)
    assert got == list(range(10))
    assert told.empty() and sub.replayed == 5 and stream.dropped == 0
