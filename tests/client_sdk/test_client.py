"""The reconnecting Client against real broker processes (killed and restarted)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client_sdk import (
    Backoff,
    Client,
    ClientState,
    Event,
    JoinError,
    NotConnected,
    PublishOptions,
    Session,
    SessionClosed,
    connect,
)
from protocol_spec import errors
from tests.client_sdk.conftest import RouterProcess, start_router
from tests.support.processes import free_port

FAST = Backoff(initial=0.05, maximum=0.5, jitter=0.5)
ACK = PublishOptions(acknowledge=True)


class Joins:
    """Counts joins and leaves of a client and lets a test await the next one."""

    def __init__(self, client: Client) -> None:
        self.joined = 0
        self.left = 0
        self._changed = asyncio.Event()
        client.on_join(self._on_join)
        client.on_leave(self._on_leave)

    def _on_join(self, session: Session) -> None:
        self.joined += 1
        self._changed.set()

    def _on_leave(self, session: Session, why: SessionClosed) -> None:
        self.left += 1
        self._changed.set()

    async def until(self, *, joined: int = 0, left: int = 0) -> None:
        async with asyncio.timeout(15):
            while self.joined < joined or self.left < left:
                self._changed.clear()
                await self._changed.wait()


async def test_client_joins_and_exposes_its_state(broker: RouterProcess) -> None:
    client = Client(broker.url, "realm1", backoff=FAST)
    assert client.state is ClientState.STOPPED
    with pytest.raises(NotConnected):
        await client.call("com.sdk.client.nothing")
    async with client:
        assert client.state is ClientState.JOINED
        assert client.session is not None and client.session.is_open
        await client.register("com.sdk.client.hello", lambda name: f"hello {name}")
        assert (await client.call("com.sdk.client.hello", "bob")).value == "hello bob"
    assert client.state is ClientState.STOPPED
    assert client.session is None


async def test_client_event_stream_and_unsubscribe(broker: RouterProcess) -> None:
    async with (
        Client(broker.url, "realm1", backoff=FAST) as client,
        connect(broker.url, "realm1") as other,
    ):
        async with client.events("com.sdk.client.stream") as stream:
            await other.publish("com.sdk.client.stream", 1, options=ACK)
            event = await asyncio.wait_for(anext(stream), 5)
            assert event.args == [1]
        got: asyncio.Queue[Event] = asyncio.Queue()
        sub = await client.subscribe("com.sdk.client.unsub", got.put_nowait)
        await sub.unsubscribe()
        assert not sub.active


async def test_refused_join_is_fatal_and_raised(broker: RouterProcess) -> None:
    client = Client(broker.url, "no.such.realm", backoff=FAST)
    with pytest.raises(JoinError) as info:
        async with client:
            pass
    assert info.value.reason in (
        errors.NO_SUCH_REALM,
        errors.NOT_AUTHORIZED,
        errors.AUTHENTICATION_FAILED,
    )
    assert client.state is ClientState.STOPPED


async def test_client_gives_up_after_max_attempts() -> None:
    client = Client(f"ws://127.0.0.1:{free_port()}/ws", "realm1", backoff=FAST, max_attempts=2)
    await client.start()
    with pytest.raises(NotConnected):
        async with asyncio.timeout(10):
            await client.wait_joined()
    assert client.attempts == 2
    await client.stop()


async def test_client_restores_subscriptions_and_registrations_after_broker_restart() -> None:
    port = free_port()
    router = start_router(port)
    fail_fast = Client(router.url, "realm1", backoff=FAST)
    patient = Client(router.url, "realm1", backoff=FAST, wait_for_join=15)
    try:
        joins = Joins(fail_fast)
        patient_joins = Joins(patient)
        news: asyncio.Queue[Event] = asyncio.Queue()

        @fail_fast.register("com.sdk.client.ping")
        def ping() -> str:
            return "pong"

        await fail_fast.subscribe("com.sdk.client.news", news.put_nowait)
        await patient.register("com.sdk.client.patient", lambda: "waited")

        async with fail_fast, patient:
            await joins.until(joined=1)
            async with connect(router.url, "realm1") as other:
                assert (await other.call("com.sdk.client.ping")).value == "pong"
                await other.publish("com.sdk.client.news", "before", options=ACK)
                assert (await asyncio.wait_for(news.get(), 5)).args == ["before"]

            router.kill()
            await joins.until(left=1)
            await patient_joins.until(left=1)
            assert fail_fast.state is not ClientState.JOINED
            with pytest.raises(NotConnected):
                await fail_fast.call("com.sdk.client.ping")
            waiting_call = asyncio.create_task(patient.call("com.sdk.client.patient"))

            router = start_router(port)
            await joins.until(joined=2)
            assert fail_fast.state is ClientState.JOINED
            assert (await asyncio.wait_for(waiting_call, 15)).value == "waited"
            async with connect(router.url, "realm1") as other:
                assert (await other.call("com.sdk.client.ping")).value == "pong"
                await other.publish("com.sdk.client.news", "after", options=ACK)
                assert (await asyncio.wait_for(news.get(), 5)).args == ["after"]
            assert (await fail_fast.call("com.sdk.client.ping")).value == "pong"
    finally:
        router.stop()


async def test_hooks_run_on_join_and_on_leave(broker: RouterProcess) -> None:
    seen: list[Any] = []
    client = Client(broker.url, "realm1", backoff=FAST)

    @client.on_join
    async def joined(session: Session) -> None:
        seen.append(("join", session.id))

    @client.on_leave
    def left(session: Session, why: SessionClosed) -> None:
        seen.append(("leave", session.id, why.reason))

    async with client:
        session_id = client.session.id if client.session else 0
    assert seen == [("join", session_id), ("leave", session_id, errors.CLOSE_NORMAL)]
