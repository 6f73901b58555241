"""The dynamic authorizer: a procedure registered by a trusted session decides what no rule does.

Realm ``dyn``: role ``client`` has a few static rules and the authorizer
``com.authz.authorize``; role ``slowpoke`` uses ``com.authz.slow`` with a short
timeout; role ``orphan`` names ``com.authz.nobody``, which is never registered;
role ``backend`` may register the authorizers. Autobahn|Python clients (and a raw
JSON client where the exact wire order matters). Tests synchronise on futures and
messages, never on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, PublishOptions, RegisterOptions, SubscribeOptions

from broker.auth.secrets import hash_ticket
from tests.broker.security._wire import (
    ERROR,
    PUBLISH,
    PUBLISHED,
    SUBSCRIBE,
    SUBSCRIBED,
    RawClient,
    autobahn_join,
)
from tests.support.processes import BrokerProcess, start_broker

NOT_AUTHORIZED = "wamp.error.not_authorized"
WHO = ("backend", "client", "slowpoke", "orphan")


def dyn_config() -> str:
    principals = "\n".join(
        f'[realm.auth.ticket.principals.{who}]\nticket_hash = "{hash_ticket(who + "-pw", iterations=1000)}"\nrole = "{who}"'
        for who in WHO
    )
    return f"""
[[realm]]
name = "dyn"
anonymous = false
[realm.auth.ticket]
{principals}

[[realm.role]]
name = "backend"
permissions = [
    {{ uri = "com.authz.", allow = ["register"] }},
    {{ uri = "com.", allow = ["publish", "subscribe", "call", "register"] }},
]

[[realm.role]]
name = "client"
authorizer = "com.authz.authorize"
authorizer_timeout = 5
permissions = [
    {{ uri = "com.static.", allow = ["publish", "subscribe"] }},
    {{ uri = "com.static.blocked.", allow = [] }},
    {{ uri = "com.dyn.ok.hidden.", allow = [] }},
]

[[realm.role]]
name = "slowpoke"
authorizer = "com.authz.slow"
authorizer_timeout = 0.3
authorizer_cache = 0

[[realm.role]]
name = "orphan"
authorizer = "com.authz.nobody"
"""


@pytest.fixture(scope="module")
def dyn_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = tmp_path_factory.mktemp("dyn") / "broker.toml"
    config.write_text(dyn_config())
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()


Join = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def join(dyn_broker: BrokerProcess) -> AsyncIterator[Join]:
    """``await join(who)``: an Autobahn session with role ``who``; all left at teardown."""
    sessions: list[Any] = []

    async def make(who: str) -> Any:
        session = await autobahn_join(
            dyn_broker.url,
            "dyn",
            authmethods=["ticket"],
            authid=who,
            on_challenge=lambda challenge: f"{who}-pw",
        )
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        if session.is_attached():
            session.leave()


class Authorizer:
    """The backend's authorizer: allows ``com.dyn.ok.*`` and records every question."""

    def __init__(self) -> None:
        self.asked: list[tuple[dict[str, Any], str, str, dict[str, Any]]] = []

    def __call__(
        self, details: dict[str, Any], uri: str, action: str, options: dict[str, Any]
    ) -> Any:
        self.asked.append((details, uri, action, options))
        if uri.startswith("com.dyn.cached."):
            return {"allow": True, "cache": True, "disclose": True}
        return uri.startswith("com.dyn.ok.")

    def actions(self) -> list[tuple[str, str]]:
        return [(action, uri) for _, uri, action, _ in self.asked]


async def assert_not_authorized(attempt: Awaitable[Any]) -> None:
    with pytest.raises(ApplicationError) as info:
        await attempt
    assert info.value.error == NOT_AUTHORIZED


async def test_authorizer_allows_and_denies_every_action(join: Join) -> None:
    backend, client = await join("backend"), await join("client")
    authorizer = Authorizer()
    await backend.register(authorizer, "com.authz.authorize")

    received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await client.subscribe(lambda x: received.set_result(x), "com.dyn.ok.topic")
    await assert_not_authorized(client.subscribe(lambda: None, "com.dyn.no.topic"))

    await client.register(lambda x: x * 2, "com.dyn.ok.double")
    await assert_not_authorized(client.register(lambda: None, "com.dyn.no.proc"))

    assert await client.call("com.dyn.ok.double", 21) == 42
    await assert_not_authorized(client.call("com.dyn.no.proc"))

    ack = PublishOptions(acknowledge=True, exclude_me=False)
    await client.publish("com.dyn.ok.topic", "hello", options=ack)
    assert await asyncio.wait_for(received, 5) == "hello"
    await assert_not_authorized(client.publish("com.dyn.no.topic", options=ack))

    assert authorizer.actions() == [
        ("subscribe", "com.dyn.ok.topic"),
        ("subscribe", "com.dyn.no.topic"),
        ("register", "com.dyn.ok.double"),
        ("register", "com.dyn.no.proc"),
        ("call", "com.dyn.ok.double"),
        ("call", "com.dyn.no.proc"),
        ("publish", "com.dyn.ok.topic"),
        ("publish", "com.dyn.no.topic"),
    ]
    details, _, _, options = authorizer.asked[0]
    assert details["session"] == client.session_id
    assert (details["authid"], details["authrole"], details["realm"]) == ("client", "client", "dyn")
    assert options["match"] == "exact"
    # plain true/false answers are not cached: asking again asks the authorizer again
    assert await client.call("com.dyn.ok.double", 1) == 2
    assert authorizer.actions()[-1] == ("call", "com.dyn.ok.double")


async def test_static_rules_decide_without_the_authorizer(join: Join) -> None:
    backend, client = await join("backend"), await join("client")
    authorizer = Authorizer()
    await backend.register(authorizer, "com.authz.authorize")
    await client.subscribe(lambda: None, "com.static.news")
    await assert_not_authorized(client.subscribe(lambda: None, "com.static.blocked.x"))
    await assert_not_authorized(client.call("com.static.news"))  # rule matches, no "call"
    # wamp.* never goes to an authorizer: privileged unless a wamp. rule grants it
    await assert_not_authorized(client.call("wamp.session.count"))
    assert authorizer.asked == []


async def test_cacheable_answer_is_asked_once_and_disclose_applies(join: Join) -> None:
    backend, client = await join("backend"), await join("client")
    authorizer = Authorizer()
    await backend.register(authorizer, "com.authz.authorize")
    callers: list[Any] = []

    def serve(details: CallDetails) -> str:
        callers.append((details.caller, details.caller_authid))
        return "ok"

    await backend.register(serve, "com.dyn.cached.proc", options=RegisterOptions(details=True))
    for _ in range(3):
        assert await client.call("com.dyn.cached.proc") == "ok"
    assert authorizer.actions() == [("call", "com.dyn.cached.proc")]
    assert callers == [(client.session_id, "client")] * 3


async def test_pattern_approved_by_the_authorizer_still_honours_static_holes(
    join: Join,
) -> None:
    backend, client = await join("backend"), await join("client")
    authorizer = Authorizer()
    await backend.register(authorizer, "com.authz.authorize")
    got: list[str] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(topic: str) -> None:
        got.append(topic)
        if topic == "com.dyn.ok.end":
            done.set_result(None)

    await client.subscribe(on_event, "com.dyn.ok.", options=SubscribeOptions(match="prefix"))
    assert authorizer.asked[-1][2:] == ("subscribe", {"match": "prefix"})
    ack = PublishOptions(acknowledge=True)
    for topic in ("com.dyn.ok.hidden.plans", "com.dyn.ok.news", "com.dyn.ok.end"):
        await backend.publish(topic, topic, options=ack)
    await asyncio.wait_for(done, 5)
    assert got == ["com.dyn.ok.news", "com.dyn.ok.end"]


async def test_no_authorizer_registered_denies(join: Join) -> None:
    orphan = await join("orphan")
    await assert_not_authorized(orphan.subscribe(lambda: None, "com.anything"))
    await assert_not_authorized(orphan.call("com.anything"))
    await assert_not_authorized(orphan.register(lambda: None, "com.anything"))
    await assert_not_authorized(
        orphan.publish("com.anything", options=PublishOptions(acknowledge=True))
    )


async def test_slow_authorizer_times_out_and_denies(join: Join) -> None:
    backend, slow = await join("backend"), await join("slowpoke")
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[str] = loop.create_future()
    release: asyncio.Future[bool] = loop.create_future()

    async def authorize(details: Any, uri: str, action: str, options: Any) -> bool:
        if not asked.done():
            asked.set_result(uri)
        return await release  # answers only after the router gave up

    await backend.register(authorize, "com.authz.slow")
    try:
        await assert_not_authorized(slow.call("com.slow.proc"))
        assert asked.result() == "com.slow.proc"
    finally:
        if not release.done():  # the router's INTERRUPT may have cancelled it already
            release.set_result(True)


async def test_authorizer_leaving_denies_the_waiting_action(join: Join) -> None:
    backend, client = await join("backend"), await join("client")
    asked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def authorize(details: Any, uri: str, action: str, options: Any) -> bool:
        asked.set_result(None)
        await asyncio.Event().wait()  # never answers
        return True

    await backend.register(authorize, "com.authz.authorize")
    pending = asyncio.ensure_future(client.call("com.dyn.ok.proc"))
    await asyncio.wait_for(asked, 5)
    backend.leave()
    await assert_not_authorized(pending)


async def test_messages_wait_in_order_for_the_authorizer(
    join: Join, dyn_broker: BrokerProcess
) -> None:
    backend = await join("backend")
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[str] = loop.create_future()
    gate: asyncio.Future[bool] = loop.create_future()

    async def authorize(details: Any, uri: str, action: str, options: Any) -> bool:
        if not asked.done():
            asked.set_result(uri)
        return await gate

    await backend.register(authorize, "com.authz.authorize")
    seen: asyncio.Future[Any] = loop.create_future()
    await backend.subscribe(lambda x: seen.set_result(x), "com.static.after")
    raw = await RawClient.connect(dyn_broker.url)
    await raw.join("dyn", authmethods=["ticket"], authid="client", sign=lambda e: "client-pw")
    # 1 waits for the authorizer; 2 and 3 need no authorizer but must wait behind 1
    await raw.send([SUBSCRIBE, 1, {}, "com.dyn.gated"])
    await raw.send([SUBSCRIBE, 2, {}, "com.static.ok"])
    await raw.send([PUBLISH, 3, {"acknowledge": True}, "com.static.after", ["after"]])
    assert await asyncio.wait_for(asked, 5) == "com.dyn.gated"
    assert not seen.done()  # the held PUBLISH has not reached the subscriber
    gate.set_result(True)
    first, second, third = [await raw.recv() for _ in range(3)]
    assert (first[0], first[1]) == (SUBSCRIBED, 1)
    assert (second[0], second[1]) == (SUBSCRIBED, 2)
    assert (third[0], third[1]) == (PUBLISHED, 3)
    assert await asyncio.wait_for(seen, 5) == "after"
    await raw.close()


async def test_denied_by_authorizer_on_the_wire(join: Join, dyn_broker: BrokerProcess) -> None:
    backend = await join("backend")
    await backend.register(Authorizer(), "com.authz.authorize")
    raw = await RawClient.connect(dyn_broker.url)
    await raw.join("dyn", authmethods=["ticket"], authid="client", sign=lambda e: "client-pw")
    reply = await raw.request([SUBSCRIBE, {"match": "prefix"}, "com.dyn.no."], SUBSCRIBED)
    assert reply[0] == ERROR and reply[1] == SUBSCRIBE and reply[4] == NOT_AUTHORIZED
    assert reply[5] == ["session is not authorized to subscribe to 'com.dyn.no.'"]
    await raw.close()
