"""Webhooks on one broker process: retries with backoff, HMAC header, bounded queue, drops."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from broker.httpapi.webhooks import signature
from tests.support.processes import BrokerProcess, start_broker

from ._support import HOOK_SECRET, Api, Receiver, config_text, metric, write_config


@dataclass
class Setup:
    broker: BrokerProcess
    flaky: Receiver
    stuck: Receiver


def hooks(flaky_url: str, stuck_url: str) -> str:
    return f"""
[[realm.webhook]]
name = "flaky"
topic = "com.hook.flaky"
url = "{flaky_url}"
secret = "{HOOK_SECRET}"
backoff_initial = 0.05
backoff_max = 0.2
max_attempts = 5
[[realm.webhook]]
name = "stuck"
topic = "com.hook.stuck."
match = "prefix"
url = "{stuck_url}"
timeout = 0.5
queue = 3
max_attempts = 1
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    flaky = Receiver(answer=lambda n: 503 if n < 2 else 200)
    stuck = Receiver(hold=threading.Event())
    text = config_text(webhooks=hooks(flaky.start(), stuck.start()))
    path = write_config(tmp_path_factory.mktemp("hooks"), text)
    broker = start_broker("--config", str(path))
    yield Setup(broker, flaky, stuck)
    broker.stop()
    flaky.stop()
    stuck.stop()


def metrics(broker: BrokerProcess) -> str:
    with urllib.request.urlopen(broker.http_base + "/metrics", timeout=5) as response:
        return str(response.read().decode())


async def wait_metric(broker: BrokerProcess, name: str, at_least: float, **labels: str) -> str:
    for _ in range(200):  # bounded: about 10 s of scrapes
        text = await asyncio.to_thread(metrics, broker)
        if metric(text, name, **labels) >= at_least:
            return text
        await asyncio.sleep(0.05)  # between scrapes, not as synchronisation
    raise AssertionError(f"{name}{labels} never reached {at_least}")


async def test_a_failing_receiver_gets_the_event_again_until_it_succeeds(setup: Setup) -> None:
    api = Api(setup.broker.http_base)
    try:
        reply = await asyncio.to_thread(
            api.post, "/publish", {"topic": "com.hook.flaky", "args": [1], "kwargs": {"k": "v"}}
        )
    finally:
        api.close()
    assert reply.status == 200
    publication = reply.json()["publication"]
    posts = await asyncio.to_thread(setup.flaky.wait_posts, 3)
    assert len(posts) == 3  # 503, 503, then 200
    for post in posts:
        assert post.json() == {
            "webhook": "flaky",
            "realm": "realm1",
            "topic": "com.hook.flaky",
            "publication": publication,
            "args": [1],
            "kwargs": {"k": "v"},
            "details": {},
        }
        stamp = post.headers["X-Broker-Timestamp"]
        assert post.headers["X-Broker-Signature"] == signature(HOOK_SECRET, stamp, post.body)
        assert post.headers["X-Broker-Publication"] == str(publication)
    text = await wait_metric(setup.broker, "wamp_webhook_delivered_total", 1, webhook="flaky")
    assert metric(text, "wamp_webhook_retries_total", webhook="flaky") == 2
    assert metric(text, "wamp_webhook_dropped_total", webhook="flaky", reason="attempts") == 0


async def test_a_receiver_that_never_answers_drops_the_oldest_and_counts(setup: Setup) -> None:
    api = Api(setup.broker.http_base)
    batch = [{"topic": f"com.hook.stuck.e{i}", "args": [i]} for i in range(20)]
    try:
        reply = await asyncio.to_thread(api.post, "/publish", batch)
    finally:
        api.close()
    assert reply.status == 200
    # the batch reaches the queue in one go (no await between its publishes): the
    # queue keeps the 3 newest, the 17 oldest are dropped
    text = await wait_metric(
        setup.broker, "wamp_webhook_dropped_total", 17, webhook="stuck", reason="queue_full"
    )
    assert metric(text, "wamp_webhook_dropped_total", webhook="stuck", reason="queue_full") == 17
    # each timed-out POST is dropped after its one attempt; the kept events are the newest
    await wait_metric(
        setup.broker, "wamp_webhook_dropped_total", 3, webhook="stuck", reason="attempts"
    )
    posts = await asyncio.to_thread(setup.stuck.wait_posts, 3)
    assert [p.json()["args"][0] for p in posts] == [17, 18, 19]
