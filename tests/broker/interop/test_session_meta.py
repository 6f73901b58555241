"""Session meta API with Autobahn|Python: count/list/get, on_join/on_leave, the kills.

Every test gets a broker of its own, so session counts are exact and the kills
cannot reach sessions of other tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError

from tests.support.processes import BrokerProcess

from ._autobahn import Client, ClientPool

TIMEOUT = 5


@pytest.fixture
def broker(fresh_broker: BrokerProcess) -> BrokerProcess:
    """A broker for this test only (overrides the module-wide one)."""
    return fresh_broker


async def killed(client: Client) -> Any:
    """The CloseDetails of a session the router ended with GOODBYE."""
    details = await asyncio.wait_for(client.left, TIMEOUT)
    await asyncio.wait_for(client.disconnected, TIMEOUT)
    return details


async def test_count_list_and_get_describe_the_joined_sessions(clients: ClientPool) -> None:
    alpha = await clients.connect("json", authid="alpha")
    beta = await clients.connect("cbor", authid="beta")

    assert await alpha.call("wamp.session.count") == 2
    assert sorted(await alpha.call("wamp.session.list")) == sorted([alpha.id, beta.id])
    assert await alpha.call("wamp.session.count", ["anonymous"]) == 2
    assert await alpha.call("wamp.session.count", ["admin"]) == 0
    assert await alpha.call("wamp.session.list", ["admin"]) == []

    info = await alpha.call("wamp.session.get", beta.id)
    assert info["session"] == beta.id
    assert info["authid"] == "beta"
    assert info["authrole"] == "anonymous"
    assert info["authmethod"] == "anonymous"
    assert isinstance(info["authprovider"], str)

    with pytest.raises(ApplicationError) as error:
        await alpha.call("wamp.session.get", 4242)
    assert error.value.error == "wamp.error.no_such_session"

    await beta.leave()
    await asyncio.wait_for(beta.disconnected, TIMEOUT)
    assert await alpha.call("wamp.session.list") == [alpha.id]


async def test_on_join_and_on_leave_announce_sessions(clients: ClientPool) -> None:
    observer = await clients.connect("msgpack")
    joins: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    leaves: asyncio.Queue[list[Any]] = asyncio.Queue()
    await observer.subscribe(joins.put_nowait, "wamp.session.on_join")
    await observer.subscribe(lambda *a: leaves.put_nowait(list(a)), "wamp.session.on_leave")

    polite = await clients.connect("json", authid="polite")
    abrupt = await clients.connect("cbor", authid="abrupt")
    for client, authid in ((polite, "polite"), (abrupt, "abrupt")):
        details = await asyncio.wait_for(joins.get(), TIMEOUT)
        assert details["session"] == client.id
        assert details["authid"] == authid
        assert details["authrole"] == "anonymous"
        assert details["authmethod"] == "anonymous"
        assert "authprovider" in details

    polite.leave()
    assert await asyncio.wait_for(leaves.get(), TIMEOUT) == [polite.id, "polite", "anonymous"]
    abrupt.drop()
    assert await asyncio.wait_for(leaves.get(), TIMEOUT) == [abrupt.id, "abrupt", "anonymous"]


async def test_kill_ends_one_session_with_goodbye(clients: ClientPool) -> None:
    killer = await clients.connect("json")
    victim = await clients.connect("msgpack")
    bystander = await clients.connect("cbor")

    assert await killer.call("wamp.session.kill", victim.id) is None

    details = await killed(victim)
    assert details.reason == "wamp.close.killed"  # protocol_spec/wamp.md: CLOSE_KILLED
    assert sorted(await bystander.call("wamp.session.list")) == sorted([killer.id, bystander.id])


async def test_kill_passes_reason_and_message_to_the_victim(clients: ClientPool) -> None:
    killer = await clients.connect("cbor")
    victim = await clients.connect("json")

    await killer.call(
        "wamp.session.kill", victim.id, reason="com.interop.go_away", message="maintenance"
    )

    details = await killed(victim)
    assert details.reason == "com.interop.go_away"
    assert details.message == "maintenance"


async def test_kill_refuses_the_caller_itself_unknown_sessions_and_bad_reasons(
    clients: ClientPool,
) -> None:
    killer = await clients.connect("json")
    other = await clients.connect("json")
    for target in (killer.id, 4242):
        with pytest.raises(ApplicationError) as error:
            await killer.call("wamp.session.kill", target)
        assert error.value.error == "wamp.error.no_such_session"
    with pytest.raises(ApplicationError) as error:
        await killer.call("wamp.session.kill", other.id, reason="not a uri!")
    assert error.value.error == "wamp.error.invalid_uri"
    assert await other.call("wamp.session.count") == 2


async def test_kill_by_authid_ends_every_other_session_with_that_authid(
    clients: ClientPool,
) -> None:
    killer = await clients.connect("json", authid="shared-id")
    victims = [
        await clients.connect("msgpack", authid="shared-id"),
        await clients.connect("cbor", authid="shared-id"),
    ]
    bystander = await clients.connect("json", authid="someone-else")

    assert await killer.call("wamp.session.kill_by_authid", "shared-id") == 2

    for victim in victims:
        assert (await killed(victim)).reason == "wamp.close.killed"
    assert sorted(await bystander.call("wamp.session.list")) == sorted([killer.id, bystander.id])


async def test_kill_by_authrole_ends_every_other_session_with_that_authrole(
    clients: ClientPool,
) -> None:
    killer = await clients.connect("cbor")
    victims = [await clients.connect(s) for s in ("json", "msgpack")]

    assert await killer.call("wamp.session.kill_by_authrole", "nobody") == 0
    assert await killer.call("wamp.session.kill_by_authrole", "anonymous") == 2

    for victim in victims:
        assert (await killed(victim)).reason == "wamp.close.killed"
    assert await killer.call("wamp.session.list") == [killer.id]


async def test_kill_all_ends_every_session_but_the_caller(clients: ClientPool) -> None:
    killer = await clients.connect("msgpack")
    victims = [await clients.connect(s, authid=f"v{i}") for i, s in enumerate(("json", "cbor"))]

    assert await killer.call("wamp.session.kill_all", message="all out") == 2

    for victim in victims:
        details = await killed(victim)
        assert details.reason == "wamp.close.killed"
        assert details.message == "all out"
    assert await killer.call("wamp.session.count") == 1
