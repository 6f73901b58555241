"""``wamp.subscription.get_events`` in the sans-I/O router: what is kept at publish time,
every keyword argument, pattern subscriptions, authorization and black/whitelists."""

from __future__ import annotations

from typing import Any

import pytest

from broker.core.authorization import Authorization, Permission, Role
from broker.core.history import HistoryRule, HistorySettings, RealmHistory
from broker.core.publication import Publication
from broker.core.settings import RealmSettings
from protocol_spec import errors
from protocol_spec.messages import Call, Error, Publish, Published, Result, Subscribe, Subscribed

from .harness import Client, World
from .test_history_store import FakeClock

GET_EVENTS = "wamp.subscription.get_events"
RULES = (
    HistoryRule("com.ticker.", match="prefix", limit=100, ttl=3600),
    HistoryRule("com.chat", limit=3),
)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def history_world(*settings: RealmSettings, rules: tuple[HistoryRule, ...] = RULES) -> World:
    realm = settings or (RealmSettings("realm1", history=HistorySettings(rules)),)
    return World(*realm)


def use_clock(world: World, clock: FakeClock, realm: str = "realm1") -> None:
    """Give the realm a history store on ``clock`` (instead of the wall clock)."""
    target = world.router.realms[realm]
    target.context.history = RealmHistory.in_memory(target.settings.history, clock)


def subscribe(client: Client, topic: str, match: str = "exact") -> int:
    client.send(Subscribe(1, {"match": match}, topic))
    return int(client.take_one(Subscribed).subscription)


def publish(client: Client, topic: str, *args: Any, **options: Any) -> int:
    client.send(Publish(2, {"acknowledge": True, **options}, topic, list(args)))
    published = [m for m in client.take() if isinstance(m, Published)]
    assert len(published) == 1, client.peer.sent[-3:]
    return int(published[0].publication)


def get_events(client: Client, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], Any]:
    client.send(Call(9, {}, GET_EVENTS, list(args), kwargs))
    reply = client.take()[-1]
    assert isinstance(reply, Result), reply
    assert reply.args is not None
    return reply.args[0], reply.kwargs


def refused(client: Client, *args: Any, **kwargs: Any) -> Error:
    client.send(Call(9, {}, GET_EVENTS, list(args), kwargs))
    reply = client.take()[-1]
    assert isinstance(reply, Error), reply
    return reply


def payloads(events: list[dict[str, Any]]) -> list[Any]:
    return [e["args"][0] for e in events]


@pytest.fixture
def world() -> World:
    return history_world()


def test_event_history_is_announced_in_welcome() -> None:
    welcome = World().client(join=False).join()
    assert welcome.details["roles"]["broker"]["features"]["event_history"] is True


def test_events_are_kept_from_publish_time_and_described_as_the_spec_says(world: World) -> None:
    clock = FakeClock(T0 + 0.25)
    use_clock(world, clock)
    publisher, reader = world.client(), world.client()
    first = publish(publisher, "com.ticker.eur", 1, disclose_me=True)  # before any subscriber
    publisher.send(Publish(3, {}, "com.ticker.eur", None, {"price": 2}))  # kwargs only
    sub = subscribe(reader, "com.ticker.eur")
    events, info = get_events(reader, sub)
    assert info == {"more": False}
    assert events[0] == {
        "timestamp": "2026-01-01T00:00:00.250Z",
        "subscription": sub,
        "publication": first,
        "details": {
            "publisher": publisher.session.id,
            "publisher_authid": publisher.session.authid,
            "publisher_authrole": "anonymous",
        },
        "args": [1],
    }
    assert "args" not in events[1] and events[1]["kwargs"] == {"price": 2}


def test_topics_without_a_rule_keep_nothing(world: World) -> None:
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.other")
    publish(publisher, "com.other", 1)
    assert get_events(reader, sub)[0] == []
    realm = world.router.realms["realm1"]
    assert realm.context.history.rule_for("com.other") is None


def test_the_per_topic_limit_keeps_the_newest(world: World) -> None:
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.chat")
    for n in range(5):
        publish(publisher, "com.chat", n)
    assert payloads(get_events(reader, sub)[0]) == [2, 3, 4]


def test_reverse_and_limit(world: World) -> None:
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.ticker.eur")
    for n in range(5):
        publish(publisher, "com.ticker.eur", n)
    assert payloads(get_events(reader, sub, reverse=True)[0]) == [4, 3, 2, 1, 0]
    events, info = get_events(reader, sub, limit=2)
    assert payloads(events) == [0, 1] and info == {"more": True}
    assert payloads(get_events(reader, sub, limit=2, reverse=True)[0]) == [4, 3]


def test_time_bounds(world: World) -> None:
    clock = FakeClock(T0)
    use_clock(world, clock)
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.ticker.eur")
    for n in range(4):  # at :00, :01, :02, :03
        publish(publisher, "com.ticker.eur", n)
        clock.now += 1
    at = "2026-01-01T00:00:02Z"

    def between(**kw: Any) -> list[Any]:
        return payloads(get_events(reader, sub, **kw)[0])

    assert between(from_time=at) == [2, 3]
    assert between(after_time=at) == [3]
    assert between(before_time=at) == [0, 1]
    assert between(until_time=at) == [0, 1, 2]
    assert between(after_time="2026-01-01T01:00:00.999+01:00") == [1, 2, 3]  # another zone
    assert between(from_time="2026-01-01T00:00:01.0005Z") == [2, 3]  # sub-millisecond bound
    # a timestamp the router returned selects exactly around its own event
    stamp = get_events(reader, sub)[0][1]["timestamp"]
    assert between(after_time=stamp) == [2, 3] and between(until_time=stamp) == [0, 1]


def test_publication_anchors_and_anchor_found(world: World) -> None:
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.chat")
    ids = [publish(publisher, "com.chat", n) for n in range(5)]  # only 2, 3, 4 are kept
    events, info = get_events(reader, sub, after_publication=ids[2])
    assert payloads(events) == [3, 4] and info == {"more": False, "anchor_found": True}
    events, info = get_events(reader, sub, from_publication=ids[3])
    assert payloads(events) == [3, 4] and info["anchor_found"] is True
    # the anchor was trimmed: everything kept comes back, and the caller is told
    events, info = get_events(reader, sub, after_publication=ids[0])
    assert payloads(events) == [2, 3, 4] and info["anchor_found"] is False
    assert payloads(get_events(reader, sub, before_publication=ids[4])[0]) == [2, 3]
    assert payloads(get_events(reader, sub, until_publication=ids[3])[0]) == [2, 3]


def test_pattern_subscriptions_merge_topics_and_filter_by_topic(world: World) -> None:
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.ticker", "prefix")
    wild = subscribe(reader, "com.ticker.", "wildcard")
    publish(publisher, "com.ticker.eur", "e1")
    publish(publisher, "com.ticker.usd", "u1")
    publish(publisher, "com.ticker.eur", "e2")
    events = get_events(reader, sub)[0]
    assert payloads(events) == ["e1", "u1", "e2"]
    assert [e["details"]["topic"] for e in events] == [
        "com.ticker.eur",
        "com.ticker.usd",
        "com.ticker.eur",
    ]
    assert all(e["subscription"] == sub for e in events)
    assert payloads(get_events(reader, sub, topic="com.ticker.usd")[0]) == ["u1"]
    assert payloads(get_events(reader, wild, reverse=True, limit=2)[0]) == ["e2", "u1"]


def test_testaments_are_kept_like_publications(world: World) -> None:
    dying, reader = world.client(), world.client()
    sub = subscribe(reader, "com.chat")
    dying.send(Call(5, {}, "wamp.session.add_testament", ["com.chat", ["gone"], None]))
    assert isinstance(dying.take()[-1], Result)
    dying.leave_abruptly()
    reader.take()
    assert payloads(get_events(reader, sub)[0]) == ["gone"]


def test_events_from_other_nodes_are_kept_with_their_filters(world: World) -> None:
    reader = world.client(authid="bob")
    sub = subscribe(reader, "com.chat")
    broker = world.router.realms["realm1"].broker
    remote = Publication.remote_filter
    broker.deliver_remote(Publication("com.chat", 11, {}, ["remote"]))
    not_bob = remote({"exclude_authid": ["bob"]})
    broker.deliver_remote(Publication("com.chat", 12, {}, ["not bob"], filter=not_bob))
    by_session = remote({"eligible": [1]})
    broker.deliver_remote(Publication("com.chat", 13, {}, ["by session"], filter=by_session))
    reader.take()
    events = get_events(reader, sub)[0]
    assert [(e["publication"], e["args"][0]) for e in events] == [(11, "remote")]


def test_authid_and_authrole_lists_filter_each_reader(world: World) -> None:
    publisher, admin, bob = world.client(), world.client(), world.client(authid="bob")
    admin.session.authrole = "admin"  # a second role without configuring authentication
    sub = subscribe(admin, "com.ticker.eur")
    subscribe(bob, "com.ticker.eur")
    publish(publisher, "com.ticker.eur", "all")
    publish(publisher, "com.ticker.eur", "admins", eligible_authrole=["admin"])
    publish(publisher, "com.ticker.eur", "not bob", exclude_authid=["bob"])
    publish(publisher, "com.ticker.eur", "bob only", eligible_authid=["bob"])
    publish(publisher, "com.ticker.eur", "not admins", exclude_authrole=["admin"])
    assert payloads(get_events(admin, sub)[0]) == ["all", "admins", "not bob"]
    assert payloads(get_events(bob, sub)[0]) == ["all", "bob only", "not admins"]


def test_session_id_lists_are_never_kept(world: World) -> None:
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.ticker.eur")
    publish(publisher, "com.ticker.eur", "x", eligible=[reader.session.id])
    publish(publisher, "com.ticker.eur", "y", exclude=[publisher.session.id])
    publish(publisher, "com.ticker.eur", "z")
    reader.take()
    assert payloads(get_events(reader, sub)[0]) == ["z"]


def secured_world() -> World:
    user = Role(
        "user",
        (
            Permission("com.ticker.", "prefix", frozenset({"subscribe", "publish"})),
            Permission("com.ticker.secret", "exact", frozenset({"publish"})),
            Permission("com.chat", "exact", frozenset({"publish"})),
            Permission("wamp.subscription.", "prefix", frozenset({"call"})),
        ),
    )
    admin = Role(
        "admin",
        (
            Permission("", "prefix", frozenset({"subscribe", "publish"})),
            Permission("wamp.", "prefix", frozenset({"call"})),
        ),
    )
    settings = RealmSettings(
        "realm1",
        anonymous_role="user",
        history=HistorySettings(RULES),
        authorization=Authorization([user, admin]),
    )
    return World(settings)


def test_a_caller_that_may_not_subscribe_gets_no_history() -> None:
    world = secured_world()
    publisher, other, reader = world.client(), world.client(), world.client()
    publish(publisher, "com.chat", "hidden")
    # the subscription exists (made by a session of another role), the reader may not subscribe
    other.session.authrole = "admin"
    sub = subscribe(other, "com.chat")
    assert refused(reader, sub).error == errors.NOT_AUTHORIZED
    assert payloads(get_events(other, sub)[0]) == ["hidden"]


def test_a_pattern_subscription_shows_only_topics_the_role_may_subscribe_to() -> None:
    world = secured_world()
    publisher, reader = world.client(), world.client()
    sub = subscribe(reader, "com.ticker.", "prefix")
    publish(publisher, "com.ticker.eur", "open")
    publish(publisher, "com.ticker.secret", "secret")
    reader.take()
    assert payloads(get_events(reader, sub)[0]) == ["open"]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"reverse": 1}, "reverse must be true or false"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"limit": True}, "limit must be a positive integer"),
        ({"from_time": "yesterday"}, "is not an RFC 3339 timestamp"),
        ({"until_time": "2026-01-01T00:00:00"}, "needs a time zone"),
        ({"after_time": 12}, "must be an RFC 3339 timestamp string"),
        ({"after_publication": 0}, "after_publication must be a publication ID"),
        ({"before_publication": "7"}, "before_publication must be a publication ID"),
        ({"topic": "com..x"}, "topic must be a topic URI"),
        ({"revers": True}, "unknown keyword argument(s) revers"),
    ],
)
def test_invalid_arguments_say_which(world: World, kwargs: dict[str, Any], text: str) -> None:
    reader = world.client()
    sub = subscribe(reader, "com.chat")
    error = refused(reader, sub, **kwargs)
    assert error.error == errors.INVALID_ARGUMENT
    assert error.args is not None and text in error.args[0]


def test_unknown_or_missing_subscription(world: World) -> None:
    reader = world.client()
    assert refused(reader, 424242).error == errors.NO_SUCH_SUBSCRIPTION
    assert refused(reader).error == errors.INVALID_ARGUMENT
    assert refused(reader, "com.chat").error == errors.INVALID_ARGUMENT
