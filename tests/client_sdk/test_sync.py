"""The blocking facade, used the way a plain script would."""

from __future__ import annotations

import queue
import threading

import pytest

from client_sdk import ApplicationError, Event, PublishOptions, sync
from tests.client_sdk.conftest import RouterProcess


def test_sync_session_publishes_subscribes_calls_and_registers(broker: RouterProcess) -> None:
    with (
        sync.connect(broker.url, "realm1") as callee,
        sync.connect(broker.url, "realm1", serializer="json") as caller,
    ):
        handler_threads: list[str] = []

        @callee.register("com.sdk.sync.greet")
        def greet(name: str) -> str:
            handler_threads.append(threading.current_thread().name)
            # A handler may block on the session itself without deadlocking.
            caller.publish("com.sdk.sync.greeted", name)
            return f"hello {name}"

        got: queue.Queue[Event] = queue.Queue()
        callee.subscribe("com.sdk.sync.greeted", got.put)
        assert caller.call("com.sdk.sync.greet", "ann").value == "hello ann"
        assert got.get(timeout=5).args == ["ann"]
        assert handler_threads and handler_threads[0].startswith("wamp-procedures")

        with pytest.raises(ApplicationError):
            caller.call("com.sdk.sync.missing")


def test_sync_event_iterator(broker: RouterProcess) -> None:
    with (
        sync.connect(broker.url, "realm1") as subscriber,
        sync.connect(broker.url, "realm1") as publisher,
    ):
        with subscriber.events("com.sdk.sync.stream") as events:
            for i in range(3):
                publisher.publish(
                    "com.sdk.sync.stream", i, options=PublishOptions(acknowledge=True)
                )
            assert [events.get(timeout=5).args[0] for _ in range(3)] == [0, 1, 2]
            with pytest.raises(TimeoutError):
                events.get(timeout=0.05)


def test_sync_progressive_call(broker: RouterProcess) -> None:
    with sync.connect(broker.url, "realm1") as session:

        def count(n: int):  # type: ignore[no-untyped-def]
            yield from range(n)

        session.register("com.sdk.sync.count", count)
        results = list(session.call_progress("com.sdk.sync.count", 3))
        assert [r.args for r in results] == [[0], [1], [2], []]
