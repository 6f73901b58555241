"""A role denied an action gets wamp.error.not_authorized for it over every path.

Exact URIs, pattern subscriptions and registrations (a broad pattern never leaks
a denied topic or serves a denied procedure), and the meta API (wamp.* is
privileged by default). Raw JSON clients, so the exact wire answer is checked.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client_sdk.auth import WampCraAuth
from tests.broker.security._wire import (
    CALL,
    ERROR,
    EVENT,
    INVOCATION,
    PUBLISH,
    PUBLISHED,
    REGISTER,
    REGISTERED,
    RESULT,
    SUBSCRIBE,
    SUBSCRIBED,
    YIELD,
    RawClient,
)
from tests.support.processes import BrokerProcess

NOT_AUTHORIZED = "wamp.error.not_authorized"


async def login(url: str, who: str) -> RawClient:
    """alice (user) and backend (backend) by ticket, dave (guest) by salted wampcra."""
    client = await RawClient.connect(url)
    if who == "dave":
        cra = WampCraAuth("dave", "dave-secret")
        await client.join("secure", authmethods=["wampcra"], authid="dave", sign=cra.sign)
    else:
        await client.join(
            "secure", authmethods=["ticket"], authid=who, sign=lambda extra: f"{who}-ticket"
        )
    return client


@pytest.fixture
async def clients(secure_broker: BrokerProcess) -> Any:
    made: list[RawClient] = []

    async def make(who: str) -> RawClient:
        client = await login(secure_broker.url, who)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def assert_denied(reply: list[Any], request_type: int) -> None:
    assert reply[0] == ERROR, reply
    assert reply[1] == request_type
    assert reply[4] == NOT_AUTHORIZED
    assert "not authorized" in reply[5][0]


async def test_denied_exact_actions_get_not_authorized(clients: Any) -> None:
    guest = await clients("dave")
    assert_denied(
        await guest.request([PUBLISH, {"acknowledge": True}, "com.app.public.x"], PUBLISHED),
        PUBLISH,
    )
    assert_denied(
        await guest.request([SUBSCRIBE, {}, "com.app.secret.plans"], SUBSCRIBED), SUBSCRIBE
    )
    assert_denied(await guest.request([CALL, {}, "com.app.secret.launch"], RESULT), CALL)
    assert_denied(await guest.request([CALL, {}, "com.app.private"], RESULT), CALL)
    assert_denied(await guest.request([REGISTER, {}, "com.app.x"], REGISTERED), REGISTER)
    assert_denied(await guest.request([REGISTER, {}, "com.guest.private.x"], REGISTERED), REGISTER)


async def test_unacknowledged_denied_publish_is_dropped_silently(clients: Any) -> None:
    alice, guest = await clients("alice"), await clients("dave")
    sub = await alice.request([SUBSCRIBE, {}, "com.app.public.news"], SUBSCRIBED)
    await guest.send([PUBLISH, 99, {}, "com.app.public.news", ["from guest"]])
    # the router answers nothing to the denied PUBLISH: the next reply is for the next request
    reply = await guest.request([SUBSCRIBE, {}, "com.app.public.news"], SUBSCRIBED)
    assert reply[0] == SUBSCRIBED
    await alice.send([PUBLISH, 5, {"exclude_me": False}, "com.app.public.news", ["marker"]])
    event = await alice.recv_type(EVENT)
    assert event[1] == sub[2] and event[4] == ["marker"]  # the guest's event never arrived


async def test_allowed_actions_pass(clients: Any) -> None:
    guest = await clients("dave")
    assert (await guest.request([SUBSCRIBE, {}, "com.app.public.news"], SUBSCRIBED))[
        0
    ] == SUBSCRIBED
    assert (await guest.request([REGISTER, {}, "com.guest.echo"], REGISTERED))[0] == REGISTERED


async def test_pattern_subscription_to_a_denied_prefix_is_refused(clients: Any) -> None:
    guest = await clients("dave")
    reply = await guest.request([SUBSCRIBE, {"match": "prefix"}, "com.app.secret."], SUBSCRIBED)
    assert_denied(reply, SUBSCRIBE)


async def test_broad_pattern_subscription_never_delivers_denied_topics(clients: Any) -> None:
    backend, guest = await clients("backend"), await clients("dave")
    for match, pattern in (("prefix", "com.app."), ("wildcard", "com.app..plans")):
        reply = await guest.request([SUBSCRIBE, {"match": match}, pattern], SUBSCRIBED)
        assert reply[0] == SUBSCRIBED, reply
    for topic in ("com.app.secret.plans", "com.app.open.plans", "com.app.news"):
        await backend.send([PUBLISH, 1, {"acknowledge": True}, topic, [topic]])
        assert (await backend.recv_type(PUBLISHED))[0] == PUBLISHED
    received = []
    while True:
        event = await guest.recv_type(EVENT)
        received.append(event[4][0])
        if event[4][0] == "com.app.news":
            break
    assert sorted(received) == ["com.app.news", "com.app.open.plans", "com.app.open.plans"]


async def test_pattern_registration_never_serves_denied_procedures(clients: Any) -> None:
    guest, backend = await clients("dave"), await clients("backend")
    reg = await guest.request([REGISTER, {"match": "prefix"}, "com.guest."], REGISTERED)
    assert reg[0] == REGISTERED
    denied = await backend.request([CALL, {}, "com.guest.private.read"], RESULT)
    assert denied[0] == ERROR and denied[4] == "wamp.error.no_eligible_callee"
    await backend.send([CALL, 77, {}, "com.guest.hello", ["hi"]])
    invocation = await guest.recv_type(INVOCATION)
    assert invocation[3]["procedure"] == "com.guest.hello"
    await guest.send([YIELD, invocation[1], {}, ["ok"]])
    result = await backend.recv_type(RESULT)
    assert result[1] == 77 and result[3] == ["ok"]


async def test_shared_pattern_registration_skips_callees_not_allowed_to_serve(
    clients: Any,
) -> None:
    guest, backend, caller = (
        await clients("dave"),
        await clients("backend"),
        await clients("backend"),
    )
    options = {"match": "prefix", "invoke": "roundrobin"}
    assert (await guest.request([REGISTER, options, "com.guest."], REGISTERED))[0] == REGISTERED
    assert (await backend.request([REGISTER, options, "com.guest."], REGISTERED))[0] == (REGISTERED)
    # The guest's role may not serve com.guest.private.*: every such call goes to the
    # backend, whatever the round-robin position, instead of failing half the time.
    for request in range(1, 5):
        await caller.send([CALL, request, {}, "com.guest.private.read", [request]])
        invocation = await backend.recv_type(INVOCATION)
        assert invocation[3]["procedure"] == "com.guest.private.read"
        await backend.send([YIELD, invocation[1], {}, invocation[4]])
        result = await caller.recv_type(RESULT)
        assert result[1] == request and result[3] == [request]
    # Procedures both may serve still alternate between them.
    served = []
    for request in range(10, 14):
        await caller.send([CALL, request, {}, "com.guest.hello", [request]])
        waits = {
            asyncio.ensure_future(callee.recv_type(INVOCATION)): (callee, name)
            for callee, name in ((guest, "guest"), (backend, "backend"))
        }
        done, pending = await asyncio.wait(waits, timeout=5, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        (task,) = done
        callee, name = waits[task]
        served.append(name)
        await callee.send([YIELD, task.result()[1], {}, [name]])
        assert (await caller.recv_type(RESULT))[3] == [name]
    assert set(served) == {"guest", "backend"}


async def test_meta_api_is_privileged_by_default(clients: Any) -> None:
    guest, backend = await clients("dave"), await clients("backend")
    assert_denied(await guest.request([CALL, {}, "wamp.session.count"], RESULT), CALL)
    assert_denied(await guest.request([CALL, {}, "wamp.session.kill_all"], RESULT), CALL)
    assert_denied(
        await guest.request([SUBSCRIBE, {}, "wamp.session.on_join"], SUBSCRIBED), SUBSCRIBE
    )
    assert_denied(
        await guest.request([SUBSCRIBE, {"match": "prefix"}, "wamp."], SUBSCRIBED), SUBSCRIBE
    )
    # the guest's catch-all subscribe grant (prefix "") does not reach wamp.* events
    sneaky = await guest.request([SUBSCRIBE, {"match": "wildcard"}, ".session.on_join"], SUBSCRIBED)
    assert sneaky[0] == SUBSCRIBED
    watch = await backend.request([SUBSCRIBE, {}, "wamp.session.on_join"], SUBSCRIBED)
    assert watch[0] == SUBSCRIBED
    count = await backend.request([CALL, {}, "wamp.session.count"], RESULT)
    assert count[0] == RESULT and count[3][0] >= 2
    newcomer = await clients("alice")
    assert (await backend.recv_type(EVENT))[4][0]["authid"] == "alice"
    # the guest gets nothing: its next message is the answer to its next request
    reply = await guest.request([SUBSCRIBE, {}, "com.app.public.y"], SUBSCRIBED)
    assert reply[0] == SUBSCRIBED
    await newcomer.close()


async def test_disclose_permission_reveals_the_caller(clients: Any) -> None:
    alice, callee = await clients("alice"), await clients("backend")
    assert (await callee.request([REGISTER, {}, "com.app.audited"], REGISTERED))[0] == REGISTERED
    await alice.send([CALL, 3, {}, "com.app.audited", []])
    invocation = await callee.recv_type(INVOCATION)
    assert invocation[3]["caller"] == alice.welcome[1]
    assert invocation[3]["caller_authid"] == "alice"
    await callee.send([YIELD, invocation[1], {}])
    assert (await alice.recv_type(RESULT))[1] == 3


async def test_anonymous_role_is_limited_too(secure_broker: BrokerProcess) -> None:
    client = await RawClient.connect(secure_broker.url)
    welcome = await client.join("open")
    assert welcome[2]["authrole"] == "guest" and welcome[2]["authmethod"] == "anonymous"
    ok = await client.request([PUBLISH, {"acknowledge": True}, "com.open.chat"], PUBLISHED)
    assert ok[0] == PUBLISHED
    assert_denied(
        await client.request([PUBLISH, {"acknowledge": True}, "com.other"], PUBLISHED), PUBLISH
    )
    assert_denied(await client.request([CALL, {}, "wamp.session.list"], RESULT), CALL)
    await asyncio.wait_for(client.close(), 5)
