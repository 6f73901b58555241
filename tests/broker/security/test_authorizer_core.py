"""The dynamic authorizer in the sans-I/O router: timeouts on a manual clock, held messages,
the backlog bound, cache expiry. No sockets, no sleeps."""

from __future__ import annotations

from typing import Any

from broker.core.authorization import Authorization, Permission, Role
from broker.core.realm import RealmSettings
from broker.core.router import MAX_BACKLOG
from protocol_spec.messages import (
    Abort,
    Error,
    Interrupt,
    Invocation,
    Publish,
    Published,
    Register,
    Registered,
    Subscribe,
    Subscribed,
    Yield,
)
from tests.broker.core.harness import Client, World

AUTHORIZER = "com.authz.authorize"
NOT_AUTHORIZED = "wamp.error.not_authorized"


def world(cache: float = 10.0) -> World:
    role = Role(
        "anonymous",
        (
            Permission(AUTHORIZER, "exact", frozenset({"register"})),
            Permission("com.static.", "prefix", frozenset({"subscribe", "publish"})),
        ),
        authorizer=AUTHORIZER,
        authorizer_timeout=1.0,
        authorizer_cache=cache,
    )
    settings = RealmSettings("realm1", authorization=Authorization([role]))
    return World(settings)


def backend_of(w: World) -> Client:
    backend = w.client()
    backend.send(Register(1, {}, AUTHORIZER))
    backend.take_one(Registered)
    return backend


def answer(backend: Client, value: Any) -> Invocation:
    invocation: Invocation = backend.take_one(Invocation)
    backend.send(Yield(invocation.request, {}, [value]))
    return invocation


def test_messages_are_held_in_order_until_the_answer() -> None:
    w = world()
    backend, client = backend_of(w), w.client()
    client.send(Subscribe(1, {}, "com.dyn.a"))
    client.send(Subscribe(2, {}, "com.static.b"))  # no authorizer needed, but waits behind 1
    client.send(Publish(3, {"acknowledge": True}, "com.static.c"))
    assert client.take() == []
    invocation = answer(backend, True)
    details, uri, action, options = invocation.args or []
    assert (uri, action, options) == ("com.dyn.a", "subscribe", {"match": "exact"})
    assert details["session"] == client.session.id and details["realm"] == "realm1"
    replies = client.take()
    assert [(type(m), m.request) for m in replies] == [
        (Subscribed, 1),
        (Subscribed, 2),
        (Published, 3),
    ]


def test_timeout_denies_and_interrupts_the_authorizer() -> None:
    w = world()
    backend, client = backend_of(w), w.client()
    client.send(Subscribe(1, {}, "com.dyn.a"))
    backend.take_one(Invocation)
    w.clock.advance(0.99)
    assert client.take() == []
    w.clock.advance(0.02)
    error = client.take_one(Error)
    assert (error.request, error.error) == (1, NOT_AUTHORIZED)
    assert isinstance(backend.take()[-1], Interrupt)


def test_backlog_is_bounded() -> None:
    w = world()
    backend_of(w)
    client = w.client()
    client.send(Subscribe(1, {}, "com.dyn.a"))
    for i in range(MAX_BACKLOG + 1):
        client.send(Publish(10 + i, {}, "com.static.x"))
    abort = client.take()[-1]
    assert isinstance(abort, Abort) and abort.reason == "wamp.error.protocol_violation"
    assert client.peer.closed is not None


def test_authorizer_leaving_denies_and_no_registration_denies() -> None:
    w = world()
    backend, client = backend_of(w), w.client()
    client.send(Subscribe(1, {}, "com.dyn.a"))
    backend.take_one(Invocation)
    backend.leave_abruptly()
    assert client.take_one(Error).error == NOT_AUTHORIZED
    client.send(Subscribe(2, {}, "com.dyn.b"))  # nobody registered it now: denied at once
    error = client.take_one(Error)
    assert (error.request, error.error) == (2, NOT_AUTHORIZED)


def test_cacheable_answers_expire() -> None:
    w = world(cache=10.0)
    backend, client = backend_of(w), w.client()
    client.send(Subscribe(1, {}, "com.dyn.a"))
    answer(backend, {"allow": False, "cache": True})
    assert client.take_one(Error).error == NOT_AUTHORIZED
    client.send(Subscribe(2, {}, "com.dyn.a"))
    assert client.take_one(Error).error == NOT_AUTHORIZED  # cached: not asked again
    assert backend.take() == []
    client.send(Subscribe(3, {"match": "prefix"}, "com.dyn.a"))  # another match: asked
    answer(backend, True)
    assert client.take_one(Subscribed).request == 3
    other = w.client()  # another session of the same role and authid shares the answer
    other.session.authid = client.session.authid
    other.send(Subscribe(1, {}, "com.dyn.a"))
    assert other.take_one(Error).error == NOT_AUTHORIZED
    w.clock.advance(10.0)
    client.send(Subscribe(4, {}, "com.dyn.a"))
    answer(backend, True)
    assert client.take_one(Subscribed).request == 4


def test_invalid_answers_deny() -> None:
    w = world()
    backend, client = backend_of(w), w.client()
    for request, value in enumerate(["yes", {"allow": 1}, {"allow": True, "root": True}], 1):
        client.send(Subscribe(request, {}, "com.dyn.a"))
        answer(backend, value)
        error = client.take_one(Error)
        assert (error.request, error.error) == (request, NOT_AUTHORIZED)


def test_an_authorizer_can_never_hand_its_own_procedure_to_a_client() -> None:
    backend_role = Role("anonymous", (Permission(AUTHORIZER, "exact", frozenset({"register"})),))
    member = Role("member", (), authorizer=AUTHORIZER, authorizer_timeout=1.0)
    auth = Authorization([backend_role, member])
    w = World(RealmSettings("realm1", authorization=auth))
    backend, client = backend_of(w), w.client()
    client.session.authrole = "member"
    # registering the authorizer itself is decided by the rules only: the authorizer
    # (which would say yes to anything here) is not even asked
    client.send(Register(1, {}, AUTHORIZER))
    assert client.take_one(Error).error == NOT_AUTHORIZED
    assert backend.take() == []
    # a broad pattern the authorizer approves never serves the authorizer's URI
    client.send(Register(2, {"match": "prefix"}, "com.authz."))
    answer(backend, True)
    assert client.take_one(Registered).request == 2
    backend.leave_abruptly()  # now only the client's pattern covers com.authz.authorize
    client.send(Subscribe(3, {}, "com.dyn.a"))
    error = client.take_one(Error)
    assert (error.request, error.error) == (3, NOT_AUTHORIZED)
    assert not any(isinstance(m, Invocation) for m in client.peer.sent)
