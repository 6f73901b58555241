"""The session state machine: HELLO → WELCOME/ABORT, GOODBYE both ways, violations."""

from __future__ import annotations

import pytest

from broker.core.features import BROKER_FEATURES, DEALER_FEATURES
from broker.core.realm import RealmSettings
from protocol_spec import errors
from protocol_spec.messages import (
    Abort,
    Call,
    Error,
    Event,
    Goodbye,
    Hello,
    MessageType,
    Publish,
    Register,
    Subscribe,
    Welcome,
    Yield,
)

from .harness import ALL_ROLES, World


def test_hello_gets_welcome_with_router_roles_and_identity(world: World) -> None:
    client = world.client(join=False)
    client.send(Hello("realm1", {"roles": ALL_ROLES}))
    welcome = client.take_one(Welcome)
    assert welcome.session == client.session.id
    roles = welcome.details["roles"]
    assert set(roles) == {"broker", "dealer"}
    assert roles["broker"]["features"] == BROKER_FEATURES
    assert roles["dealer"]["features"] == DEALER_FEATURES
    assert all(v is True for v in BROKER_FEATURES.values())
    assert welcome.details["authrole"] == "anonymous"
    assert welcome.details["authmethod"] == "anonymous"
    assert welcome.details["realm"] == "realm1"
    assert welcome.details["authid"]


def test_unknown_realm_is_aborted_with_no_such_realm(world: World) -> None:
    client = world.client(join=False)
    client.send(Hello("nope", {"roles": ALL_ROLES}))
    abort = client.take_one(Abort)
    assert abort.reason == errors.NO_SUCH_REALM
    assert client.peer.closed is not None


def test_realm_without_anonymous_refuses_anonymous_hello() -> None:
    world = World(RealmSettings("closed", anonymous=False))
    client = world.client(join=False)
    client.send(Hello("closed", {"roles": ALL_ROLES}))
    assert client.take_one(Abort).reason == errors.NO_AUTH_METHOD


@pytest.mark.parametrize(
    "details",
    [{}, {"roles": {}}, {"roles": {"king": {}}}, {"roles": ALL_ROLES, "authmethods": "ticket"}],
)
def test_hello_with_bad_details_is_a_protocol_violation(world: World, details: dict) -> None:
    client = world.client(join=False)
    client.send(Hello("realm1", details))
    assert client.take_one(Abort).reason == errors.PROTOCOL_VIOLATION
    assert client.peer.closed is not None


@pytest.mark.parametrize(
    "message",
    [
        Subscribe(1, {}, "com.topic"),
        Call(1, {}, "com.proc"),
        Publish(1, {}, "com.topic"),
        Register(1, {}, "com.proc"),
        Yield(1, {}),
        Goodbye({}, errors.CLOSE_NORMAL),
    ],
    ids=lambda m: type(m).__name__,
)
def test_anything_but_hello_before_welcome_is_aborted(world: World, message: object) -> None:
    client = world.client(join=False)
    client.send(message)  # type: ignore[arg-type]
    abort = client.take_one(Abort)
    assert abort.reason == errors.PROTOCOL_VIOLATION
    assert type(message).__name__.upper() in abort.details["message"]
    assert client.peer.closed is not None
    assert client.session.id not in world.router.realms["realm1"].sessions


def test_second_hello_after_welcome_is_a_protocol_violation(world: World) -> None:
    client = world.client()
    client.send(Hello("realm1", {"roles": ALL_ROLES}))
    assert client.take_one(Abort).reason == errors.PROTOCOL_VIOLATION
    assert client.session.id not in world.router.realms["realm1"].sessions


def test_router_only_messages_from_a_client_are_violations(world: World) -> None:
    client = world.client()
    client.send(Welcome(5, {}))
    assert client.take_one(Abort).reason == errors.PROTOCOL_VIOLATION
    other = world.client()
    other.send(Event(1, 1, {}))
    assert other.take_one(Abort).reason == errors.PROTOCOL_VIOLATION


def test_error_for_anything_but_invocation_is_a_violation(world: World) -> None:
    client = world.client()
    client.send(Error(MessageType.CALL, 1, {}, "com.err"))
    assert client.take_one(Abort).reason == errors.PROTOCOL_VIOLATION


def test_client_goodbye_is_answered_and_the_transport_closed(world: World) -> None:
    client = world.client()
    client.send(Goodbye({}, errors.CLOSE_NORMAL))
    reply = client.take_one(Goodbye)
    assert reply.reason == errors.CLOSE_GOODBYE_AND_OUT
    assert client.peer.closed is not None
    assert client.session.id not in world.router.realms["realm1"].sessions


def test_shutdown_says_goodbye_and_waits_for_the_answer(world: World) -> None:
    client = world.client()
    told = world.router.shutdown()
    assert told == [client.session]
    assert client.take_one(Goodbye).reason == errors.CLOSE_SYSTEM_SHUTDOWN
    assert client.peer.closed is None
    # Stray traffic while closing is ignored, not answered.
    client.send(Publish(1, {"acknowledge": True}, "com.topic"))
    assert client.take() == []
    client.send(Goodbye({}, errors.CLOSE_GOODBYE_AND_OUT))
    assert client.peer.closed is not None


def test_router_goodbye_without_answer_closes_after_timeout(world: World) -> None:
    client = world.client()
    world.router.shutdown()
    assert client.peer.closed is None
    world.clock.advance(60)
    assert client.peer.closed is not None


def test_detach_removes_the_session_everywhere(world: World) -> None:
    client = world.client()
    client.send(Subscribe(1, {}, "com.topic"))
    client.send(Register(2, {}, "com.proc"))
    client.leave_abruptly()
    realm = world.router.realms["realm1"]
    assert client.session.id not in realm.sessions
    assert client.session.id not in world.router.sessions
    assert realm.broker.subscriptions() == []
    assert realm.dealer.registrations() == []


def test_hello_authid_is_kept_for_anonymous(world: World) -> None:
    client = world.client(join=False)
    client.send(Hello("realm1", {"roles": ALL_ROLES, "authid": "alice"}))
    assert client.take_one(Welcome).details["authid"] == "alice"
