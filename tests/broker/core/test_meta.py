"""The meta API: sessions, subscriptions, registrations, testaments."""

from __future__ import annotations

from typing import Any

from protocol_spec import errors
from protocol_spec.messages import (
    Call,
    Error,
    Event,
    Goodbye,
    Publish,
    Register,
    Registered,
    Result,
    Subscribe,
    Subscribed,
    Unsubscribe,
)

from .harness import Client, World


def meta(client: Client, procedure: str, *args: Any, **kwargs: Any) -> Any:
    client.send(Call(99, {}, procedure, list(args), kwargs))
    reply = client.take()[-1]
    if isinstance(reply, Error):
        return reply
    assert isinstance(reply, Result), reply
    return reply.args[0] if reply.args else None


def watch(client: Client, *topics: str) -> None:
    for n, topic in enumerate(topics, start=100):
        client.send(Subscribe(n, {}, topic))
    client.take()


def test_session_count_list_get(world: World) -> None:
    a, b = world.client(), world.client(authid="bob")
    assert meta(a, "wamp.session.count") == 2
    assert sorted(meta(a, "wamp.session.list")) == sorted([a.session.id, b.session.id])
    assert meta(a, "wamp.session.count", ["nobody"]) == 0
    info = meta(a, "wamp.session.get", b.session.id)
    assert (info["session"], info["authid"], info["authrole"]) == (b.session.id, "bob", "anonymous")
    assert meta(a, "wamp.session.get", 12345).error == errors.NO_SUCH_SESSION
    assert meta(a, "wamp.session.get").error == errors.INVALID_ARGUMENT


def test_on_join_and_on_leave_events(world: World) -> None:
    watcher = world.client()
    watch(watcher, "wamp.session.on_join", "wamp.session.on_leave")
    newcomer = world.client(authid="newbie")
    joined = watcher.take_one(Event)
    assert joined.args[0]["session"] == newcomer.session.id
    assert joined.args[0]["authid"] == "newbie"
    newcomer.leave_abruptly()
    left = watcher.take_one(Event)
    assert left.args == [newcomer.session.id, "newbie", "anonymous"]


def test_kill_sends_goodbye_to_the_victim(world: World) -> None:
    admin, victim = world.client(), world.client()
    assert meta(admin, "wamp.session.kill", victim.session.id, message="bye") is None
    goodbye = victim.take_one(Goodbye)
    assert (goodbye.reason, goodbye.details["message"]) == (errors.CLOSE_KILLED, "bye")
    assert meta(admin, "wamp.session.count") == 1
    assert meta(admin, "wamp.session.kill", admin.session.id).error == errors.NO_SUCH_SESSION


def test_kill_by_authid_authrole_and_all_spare_the_caller(world: World) -> None:
    admin = world.client(authid="bob")
    bobs = [world.client(authid="bob") for _ in range(2)]
    other = world.client()
    assert meta(admin, "wamp.session.kill_by_authid", "bob") == 2
    assert all(isinstance(b.take()[-1], Goodbye) for b in bobs)
    assert meta(admin, "wamp.session.kill_by_authrole", "anonymous") == 1
    assert isinstance(other.take()[-1], Goodbye)
    world.client()
    assert meta(admin, "wamp.session.kill_all") == 1
    assert meta(admin, "wamp.session.count") == 1


def test_subscription_meta_procedures(world: World) -> None:
    a, b = world.client(), world.client()
    a.send(Subscribe(1, {}, "com.topic"))
    b.send(Subscribe(1, {}, "com.topic"))
    b.send(Subscribe(2, {"match": "prefix"}, "com."))
    sub_id = a.take_one(Subscribed).subscription
    prefix_id = b.take()[-1].subscription
    listing = meta(a, "wamp.subscription.list")
    assert listing == {"exact": [sub_id], "prefix": [prefix_id], "wildcard": []}
    assert meta(a, "wamp.subscription.lookup", "com.topic") == sub_id
    assert meta(a, "wamp.subscription.lookup", "com.", {"match": "prefix"}) == prefix_id
    assert meta(a, "wamp.subscription.lookup", "com.none") is None
    assert sorted(meta(a, "wamp.subscription.match", "com.topic")) == sorted([sub_id, prefix_id])
    info = meta(a, "wamp.subscription.get", sub_id)
    assert (info["id"], info["uri"], info["match"]) == (sub_id, "com.topic", "exact")
    assert sorted(meta(a, "wamp.subscription.list_subscribers", sub_id)) == sorted(
        [a.session.id, b.session.id]
    )
    assert meta(a, "wamp.subscription.count_subscribers", sub_id) == 2
    assert meta(a, "wamp.subscription.get", 1).error == errors.NO_SUCH_SUBSCRIPTION


def test_subscription_meta_events(world: World) -> None:
    watcher = world.client()
    watch(
        watcher,
        "wamp.subscription.on_create",
        "wamp.subscription.on_subscribe",
        "wamp.subscription.on_unsubscribe",
        "wamp.subscription.on_delete",
    )
    a = world.client()
    a.send(Subscribe(1, {}, "com.topic"))
    sub_id = a.take_one(Subscribed).subscription
    created, subscribed = watcher.take()
    assert created.args[0] == a.session.id and created.args[1]["uri"] == "com.topic"
    assert subscribed.args == [a.session.id, sub_id]
    a.send(Unsubscribe(2, sub_id))
    unsubscribed, deleted = watcher.take()
    assert unsubscribed.args == deleted.args == [a.session.id, sub_id]


def test_registration_meta_procedures_and_events(world: World) -> None:
    watcher = world.client()
    watch(
        watcher,
        "wamp.registration.on_create",
        "wamp.registration.on_register",
        "wamp.registration.on_unregister",
        "wamp.registration.on_delete",
    )
    a, b = world.client(), world.client()
    a.send(Register(1, {"invoke": "roundrobin"}, "com.p"))
    reg_id = a.take_one(Registered).registration
    b.send(Register(1, {"invoke": "roundrobin"}, "com.p"))
    b.take()
    created, _reg_a, reg_b = watcher.take()
    assert created.args[1]["invoke"] == "roundrobin" and reg_b.args == [b.session.id, reg_id]
    assert meta(a, "wamp.registration.list")["exact"] == [reg_id]
    assert meta(a, "wamp.registration.lookup", "com.p") == reg_id
    assert meta(a, "wamp.registration.match", "com.p") == reg_id
    assert meta(a, "wamp.registration.get", reg_id)["uri"] == "com.p"
    assert meta(a, "wamp.registration.list_callees", reg_id) == [a.session.id, b.session.id]
    assert meta(a, "wamp.registration.count_callees", reg_id) == 2
    a.leave_abruptly()
    b.leave_abruptly()
    events = watcher.take()
    assert [len(e.args) for e in events] == [2, 2, 2]  # unregister, unregister, delete
    assert meta(watcher, "wamp.registration.get", reg_id).error == errors.NO_SUCH_REGISTRATION


def test_testament_is_published_when_the_session_is_lost(world: World) -> None:
    listener = world.client()
    listener.send(Subscribe(1, {}, "com.gone"))
    listener.take()
    mortal = world.client()
    assert meta(mortal, "wamp.session.add_testament", "com.gone", ["bye"], {"who": 1}) is None
    mortal.leave_abruptly()
    event = listener.take_one(Event)
    assert (event.args, event.kwargs) == (["bye"], {"who": 1})


def test_testament_is_not_published_on_goodbye_or_after_flush(world: World) -> None:
    listener = world.client()
    listener.send(Subscribe(1, {}, "com.gone"))
    listener.take()
    polite = world.client()
    meta(polite, "wamp.session.add_testament", "com.gone", ["bye"])
    polite.send(Goodbye({}, errors.CLOSE_NORMAL))
    flushed = world.client()
    meta(flushed, "wamp.session.add_testament", "com.gone", ["bye"])
    assert meta(flushed, "wamp.session.flush_testaments") == 1
    flushed.leave_abruptly()
    assert listener.take() == []


def test_meta_topics_cannot_be_published_by_clients(world: World) -> None:
    a = world.client()
    a.send(Publish(1, {"acknowledge": True}, "wamp.session.on_join"))
    assert a.take_one(Error).error == errors.INVALID_URI


def test_testament_with_malformed_publish_options_is_refused(world: World) -> None:
    mortal = world.client()
    reply = meta(
        mortal, "wamp.session.add_testament", "com.gone", ["bye"], publish_options={"exclude": "x"}
    )
    assert reply.error == errors.INVALID_ARGUMENT
    assert mortal.session.testaments == []
