"""Per-realm disclosure settings from a config file: disclose_publisher / disclose_caller.

One broker for the module, started with a TOML config holding three realms whose
settings are ``client`` (the default), ``always`` and ``never``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from autobahn.wamp.types import (
    CallDetails,
    EventDetails,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

from tests.support.processes import BrokerProcess, start_broker

from ._autobahn import Client, ClientPool
from ._raw import PUBLISHED, RESULT, RawClient

CONFIG = """
[[realm]]
name = "realm1"

[[realm]]
name = "realm_always"
disclose_publisher = "always"
disclose_caller = "always"

[[realm]]
name = "realm_never"
disclose_publisher = "never"
disclose_caller = "never"
"""

TOPIC = "com.interop.realm.topic"
PROCEDURE = "com.interop.realm.proc"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker serving the three realms of CONFIG (overrides the default broker)."""
    path = tmp_path_factory.mktemp("disclosure") / "broker.toml"
    path.write_text(CONFIG, encoding="utf-8")
    proc = start_broker("--config", str(path))
    yield proc
    proc.stop()


async def _subscribe(client: Client) -> asyncio.Queue[EventDetails]:
    queue: asyncio.Queue[EventDetails] = asyncio.Queue()
    await client.subscribe(
        lambda *a, details: queue.put_nowait(details),
        TOPIC,
        options=SubscribeOptions(details=True),
    )
    return queue


async def _register(client: Client) -> asyncio.Queue[CallDetails]:
    queue: asyncio.Queue[CallDetails] = asyncio.Queue()

    def handler(*args: object, details: CallDetails) -> str:
        queue.put_nowait(details)
        return "ok"

    await client.register(handler, PROCEDURE, options=RegisterOptions(details_arg="details"))
    return queue


async def test_realm_disclose_publisher_always_discloses_without_disclose_me(
    clients: ClientPool,
) -> None:
    subscriber = await clients.connect("msgpack", realm="realm_always")
    publisher = await clients.connect("json", realm="realm_always", authid="loud")
    events = await _subscribe(subscriber)

    await publisher.publish(TOPIC, options=PublishOptions(acknowledge=True))

    details = await asyncio.wait_for(events.get(), 5)
    assert details.publisher == publisher.id
    assert details.publisher_authid == "loud"
    assert details.publisher_authrole == "anonymous"


async def test_realm_disclose_publisher_never_hides_even_with_disclose_me(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    subscriber = await clients.connect("cbor", realm="realm_never")
    events = await _subscribe(subscriber)
    async with await RawClient.open(broker.url) as raw:
        await raw.hello("realm_never")
        assert (await raw.publish(TOPIC, disclose_me=True))[0] == PUBLISHED

    details = await asyncio.wait_for(events.get(), 5)
    assert details.publisher is None
    assert details.publisher_authid is None
    assert details.publisher_authrole is None


async def test_default_realm_setting_honours_disclose_me(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    subscriber = await clients.connect("json", realm="realm1")
    events = await _subscribe(subscriber)
    async with await RawClient.open(broker.url) as raw:
        await raw.hello("realm1")
        assert (await raw.publish(TOPIC, disclose_me=True))[0] == PUBLISHED
        assert (await raw.publish(TOPIC))[0] == PUBLISHED

    assert (await asyncio.wait_for(events.get(), 5)).publisher == raw.session_id
    assert (await asyncio.wait_for(events.get(), 5)).publisher is None


async def test_realm_disclose_caller_always_discloses_without_disclose_me(
    clients: ClientPool,
) -> None:
    callee = await clients.connect("cbor", realm="realm_always")
    caller = await clients.connect("msgpack", realm="realm_always", authid="known-caller")
    invocations = await _register(callee)

    assert await caller.call(PROCEDURE) == "ok"

    details = invocations.get_nowait()
    assert details.caller == caller.id
    assert details.caller_authid == "known-caller"
    assert details.caller_authrole == "anonymous"


async def test_realm_disclose_caller_never_hides_even_with_disclose_me(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    callee = await clients.connect("json", realm="realm_never")
    invocations = await _register(callee)
    async with await RawClient.open(broker.url) as raw:
        await raw.hello("realm_never")
        request = await raw.call(PROCEDURE, disclose_me=True)
        assert (await raw.answer(request))[0] == RESULT

    details = invocations.get_nowait()
    assert details.caller is None
    assert details.caller_authid is None
    assert details.caller_authrole is None
