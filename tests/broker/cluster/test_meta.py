"""The meta API answers for the whole cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import client_sdk
from client_sdk import Event, PublishOptions
from tests.support.processes import BrokerProcess

from .conftest import eventually

Connect = Callable[..., Awaitable[client_sdk.Session]]


async def test_session_count_list_and_get_cover_every_node(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    sessions = [await connect(node.url) for node in nodes]
    ids = {s.id for s in sessions}
    asker = sessions[0]

    async def all_listed() -> bool:
        listed = (await asker.call("wamp.session.list")).args[0]
        return ids <= set(listed)

    await eventually(all_listed, what="sessions of every node listed")
    count = (await asker.call("wamp.session.count")).args[0]
    assert count >= 3
    info = (await asker.call("wamp.session.get", sessions[2].id)).args[0]
    assert info["session"] == sessions[2].id and info["authrole"] == "anonymous"


async def test_on_join_and_on_leave_of_a_session_on_another_node(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    watcher = await connect(nodes[0].url)
    joined: asyncio.Queue[Event] = asyncio.Queue()
    left: asyncio.Queue[Event] = asyncio.Queue()
    await watcher.subscribe("wamp.session.on_join", joined.put_nowait)
    await watcher.subscribe("wamp.session.on_leave", left.put_nowait)
    other = await client_sdk.connect(nodes[1].url, "realm1")
    event = await asyncio.wait_for(joined.get(), 5)
    while event.args[0]["session"] != other.id:
        event = await asyncio.wait_for(joined.get(), 5)
    other_id = other.id
    await other.leave()
    event = await asyncio.wait_for(left.get(), 5)
    while event.args[0] != other_id:
        event = await asyncio.wait_for(left.get(), 5)


async def test_subscription_lookup_and_subscribers_across_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    subs = [await connect(node.url) for node in nodes[1:]]
    for session in subs:
        await session.subscribe("meta.topic", lambda e: None)
    asker = await connect(nodes[0].url)

    async def both_subscribers() -> bool:
        sub_id = (await asker.call("wamp.subscription.lookup", "meta.topic")).args[0]
        if sub_id is None:
            return False
        listed = (await asker.call("wamp.subscription.list_subscribers", sub_id)).args[0]
        return {s.id for s in subs} <= set(listed)

    await eventually(both_subscribers, what="remote subscribers listed")
    sub_id = (await asker.call("wamp.subscription.lookup", "meta.topic")).args[0]
    matched = (await asker.call("wamp.subscription.match", "meta.topic")).args[0]
    assert sub_id in matched
    info = (await asker.call("wamp.subscription.get", sub_id)).args[0]
    assert info["uri"] == "meta.topic" and info["match"] == "exact"
    assert (await asker.call("wamp.subscription.count_subscribers", sub_id)).args[0] == 2


async def test_registration_lookup_and_callees_across_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    callee = await connect(nodes[2].url)
    registration = await callee.register("meta.proc", lambda: None)
    asker = await connect(nodes[0].url)

    async def known() -> bool:
        reg = (await asker.call("wamp.registration.lookup", "meta.proc")).args[0]
        return reg is not None

    await eventually(known, what="remote registration known")
    reg_id = (await asker.call("wamp.registration.lookup", "meta.proc")).args[0]
    assert reg_id == registration.id
    callees = (await asker.call("wamp.registration.list_callees", reg_id)).args[0]
    assert callees == [callee.id]


async def test_kill_of_a_session_on_another_node(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    victim = await client_sdk.connect(nodes[1].url, "realm1")
    killer = await connect(nodes[2].url)

    async def visible() -> bool:
        listed = (await killer.call("wamp.session.list")).args[0]
        return victim.id in listed

    await eventually(visible, what="victim visible on the killer's node")
    await killer.call("wamp.session.kill", victim.id, reason="wamp.close.killed", message="bye")
    closed = await asyncio.wait_for(victim.wait_closed(), 5)
    assert "wamp.close.killed" in str(closed)


async def test_testament_of_a_session_reaches_subscribers_on_other_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    listener = await connect(nodes[0].url)
    got: asyncio.Queue[Event] = asyncio.Queue()
    await listener.subscribe("meta.testament", got.put_nowait)
    mortal = await client_sdk.connect(nodes[1].url, "realm1")
    await mortal.call("wamp.session.add_testament", "meta.testament", ["gone"], {})
    transport: Any = mortal._transport
    await transport.close()  # no GOODBYE: the testament fires
    event = await asyncio.wait_for(got.get(), 5)
    assert event.args == ["gone"]
    await listener.publish("meta.noop", options=PublishOptions(acknowledge=True))
