"""Security across a Redis cluster: redis-server + two broker nodes sharing one config with roles.

- a role denied a topic never receives it from a publisher on the other node, even
  through a prefix or wildcard subscription (the receiving node checks each event);
- a pattern registration on node B never serves a caller on node A a procedure the
  callee's role may not register: the caller gets ``wamp.error.no_eligible_callee``,
  exactly as when both are on one node (the callee's node checks);
- ticket and wampcra authentication work (and fail the same way) on both nodes;
- a dynamic authorizer registered on one node decides for sessions on the other.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from broker.auth.secrets import hash_ticket
from tests.broker.security._wire import Aborted, autobahn_join
from tests.support.processes import (
    CLUSTER_TIMING,
    BrokerProcess,
    nodes_on_one_redis,
)

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

TICKETS = {"reader": "reader", "publisher": "backend", "callee": "callee", "caller": "backend"}


def cluster_config() -> str:
    principals = "\n".join(
        f'[realm.auth.ticket.principals.{who}]\nticket_hash = "{hash_ticket(who + "-pw", iterations=1000)}"\nrole = "{role}"'
        for who, role in TICKETS.items()
    )
    return f"""{CLUSTER_TIMING}
[[realm]]
name = "sec"
anonymous = false
[realm.auth.ticket]
{principals}
[realm.auth.wampcra.principals.wendy]
secret = "wendy-secret"
salt = "salty"
iterations = 100
keylen = 32
role = "reader"

[[realm.role]]
name = "reader"
permissions = [
    {{ uri = "com.feed.", allow = ["subscribe"] }},
    {{ uri = "com.feed.secret.", allow = [] }},
    {{ uri = "com.svc.", allow = ["call"] }},
]
authorizer = "com.authz.authorize"

[[realm.role]]
name = "callee"
permissions = [
    {{ uri = "com.svc.", allow = ["register"] }},
    {{ uri = "com.svc.admin.", allow = [] }},
]

[[realm.role]]
name = "backend"
permissions = [{{ uri = "com.", allow = ["publish", "subscribe", "call", "register"] }}]
"""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    config: Path = tmp_path_factory.mktemp("cluster-sec") / "broker.toml"
    config.write_text(cluster_config())
    with nodes_on_one_redis(config, ("a", "b")) as nodes:
        yield nodes


Join = Callable[[BrokerProcess, str], Awaitable[Any]]


@pytest.fixture
async def join() -> AsyncIterator[Join]:
    """``await join(node, who)``: an Autobahn session by ticket; all left at teardown."""
    sessions: list[Any] = []

    async def make(node: BrokerProcess, who: str) -> Any:
        session = await autobahn_join(
            node.url,
            "sec",
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


async def call_when_registered(session: Any, procedure: str, *args: Any) -> Any:
    """Call, retrying only while the registration has not reached this node yet."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return await session.call(procedure, *args)
        except ApplicationError as exc:
            if exc.error != "wamp.error.no_such_procedure" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # between round trips, not as synchronisation


@pytest.mark.parametrize(
    ("match", "pattern"), [("prefix", "com.feed."), ("wildcard", "com.feed..news")]
)
async def test_denied_topics_never_cross_nodes_through_patterns(
    two_nodes: list[BrokerProcess], join: Join, match: str, pattern: str
) -> None:
    node_a, node_b = two_nodes
    reader, publisher = await join(node_a, "reader"), await join(node_b, "publisher")
    # a pattern inside the hole is refused outright
    with pytest.raises(ApplicationError) as info:
        await reader.subscribe(
            lambda *a: None, "com.feed.secret.", SubscribeOptions(match="prefix")
        )
    assert info.value.error == "wamp.error.not_authorized"
    got: list[str] = []
    end: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(topic: str) -> None:
        got.append(topic)
        if topic == "com.feed.end.news":
            end.set_result(None)

    # SUBSCRIBED means node A's Redis subscription is live: node B's events reach it
    await reader.subscribe(on_event, pattern, SubscribeOptions(match=match))
    topics = ["com.feed.secret.news", "com.feed.public.news", "com.feed.end.news"]
    for topic in topics:
        await publisher.publish(topic, topic, options=PublishOptions(acknowledge=True))
    await asyncio.wait_for(end, 10)
    assert got == ["com.feed.public.news", "com.feed.end.news"]  # never the secret one


async def test_pattern_registration_on_b_never_serves_a_denied_procedure_to_a(
    two_nodes: list[BrokerProcess], join: Join
) -> None:
    node_a, node_b = two_nodes
    callee, caller = await join(node_b, "callee"), await join(node_a, "caller")
    served: list[str] = []

    def serve(*args: Any, details: Any) -> str:
        served.append(details.procedure)
        return details.procedure  # type: ignore[no-any-return]

    await callee.register(
        serve, "com.svc.", options=RegisterOptions(match="prefix", details_arg="details")
    )
    assert await call_when_registered(caller, "com.svc.echo") == "com.svc.echo"
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.svc.admin.reset")
    assert info.value.error == "wamp.error.no_eligible_callee"
    # the same answer when caller and callee share a node
    local_caller = await join(node_b, "caller")
    with pytest.raises(ApplicationError) as info:
        await local_caller.call("com.svc.admin.reset")
    assert info.value.error == "wamp.error.no_eligible_callee"
    assert served == ["com.svc.echo"]


def _wampcra(secret: str) -> Callable[[Any], str]:
    def sign(challenge: Any) -> str:
        extra = challenge.extra
        key = ab_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
        return str(ab_auth.compute_wcs(key, extra["challenge"]).decode("ascii"))

    return sign


async def test_authentication_works_and_fails_alike_on_both_nodes(
    two_nodes: list[BrokerProcess],
) -> None:
    for node in two_nodes:
        ticket = await autobahn_join(
            node.url,
            "sec",
            authmethods=["ticket"],
            authid="reader",
            on_challenge=lambda c: "reader-pw",
        )
        assert (ticket.details.authid, ticket.details.authrole) == ("reader", "reader")
        ticket.leave()
        cra = await autobahn_join(
            node.url,
            "sec",
            authmethods=["wampcra"],
            authid="wendy",
            on_challenge=_wampcra("wendy-secret"),
        )
        assert (cra.details.authid, cra.details.authmethod) == ("wendy", "wampcra")
        cra.leave()
        for kwargs in (
            {"authmethods": ["ticket"], "authid": "reader", "on_challenge": lambda c: "nope"},
            {"authmethods": ["wampcra"], "authid": "wendy", "on_challenge": _wampcra("nope")},
            {"authmethods": ["ticket"], "authid": "mallory", "on_challenge": lambda c: "x"},
        ):
            with pytest.raises(Aborted) as info:
                await autobahn_join(node.url, "sec", **kwargs)  # type: ignore[arg-type]
            assert info.value.reason == "wamp.error.authentication_failed"
            assert info.value.details["message"] == "authentication failed"


async def test_authorizer_on_one_node_decides_for_the_other(
    two_nodes: list[BrokerProcess], join: Join
) -> None:
    node_a, node_b = two_nodes
    backend = await join(node_b, "caller")  # role backend may register com.authz.*
    asked: list[tuple[str, str, str]] = []

    def authorize(details: dict[str, Any], uri: str, action: str, options: Any) -> bool:
        asked.append((details["authid"], action, uri))
        return uri.startswith("com.open.")

    await backend.register(authorize, "com.authz.authorize")
    await backend.register(lambda: "pong", "com.open.ping")
    await backend.register(lambda: "secret", "com.closed.ping")
    reader = await join(node_a, "reader")
    # wait until node A knows the authorizer: before that the answer is a (clean) denial
    deadline = time.monotonic() + 5.0
    while True:
        try:
            assert await reader.call("com.open.ping") == "pong"
            break
        except ApplicationError as exc:
            if exc.error != "wamp.error.not_authorized" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # between round trips, not as synchronisation
    with pytest.raises(ApplicationError) as info:
        await reader.call("com.closed.ping")
    assert info.value.error == "wamp.error.not_authorized"
    assert asked[-2:] == [
        ("reader", "call", "com.open.ping"),
        ("reader", "call", "com.closed.ping"),
    ]
