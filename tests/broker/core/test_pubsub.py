"""The broker role: subscriptions, fan-out, options, patterns, retention."""

from __future__ import annotations

from broker.core.ids import stable_id
from broker.core.realm import RealmSettings
from protocol_spec import errors
from protocol_spec.messages import (
    Error,
    Event,
    MessageType,
    Publish,
    Published,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)

from .harness import Client, World


def subscribe(client: Client, topic: str, request: int = 1, **options: object) -> int:
    client.send(Subscribe(request, dict(options), topic))
    return int(client.take_one(Subscribed).subscription)


def test_event_reaches_subscribers_with_args_kwargs_and_bytes(world: World) -> None:
    sub = world.client()
    sub_id = subscribe(sub, "com.topic")
    pub = world.client()
    pub.send(Publish(1, {}, "com.topic", [1, b"\x00\xff"], {"k": b"v"}))
    event = sub.take_one(Event)
    assert (event.subscription, event.args, event.kwargs) == (sub_id, [1, b"\x00\xff"], {"k": b"v"})
    assert event.details == {}
    assert pub.take() == []  # no acknowledge asked


def test_acknowledged_publish_gets_published_with_the_event_publication_id(world: World) -> None:
    sub = world.client()
    subscribe(sub, "com.topic")
    pub = world.client()
    pub.send(Publish(7, {"acknowledge": True}, "com.topic"))
    published = pub.take_one(Published)
    assert published.request == 7
    assert sub.take_one(Event).publication == published.publication


def test_publisher_is_excluded_by_default_and_included_on_request(world: World) -> None:
    client = world.client()
    subscribe(client, "com.topic")
    client.send(Publish(1, {}, "com.topic"))
    assert client.take() == []
    client.send(Publish(2, {"exclude_me": False}, "com.topic"))
    assert isinstance(client.take_one(Event), Event)


def test_one_event_is_encoded_once_for_all_subscribers(world: World) -> None:
    subs = [world.client() for _ in range(3)]
    for s in subs:
        subscribe(s, "com.topic")
    world.client().send(Publish(1, {}, "com.topic", ["x"]))
    caches = [s.peer.caches[-1] for s in subs]
    assert caches[0] is not None
    assert all(c is caches[0] for c in caches)


def test_subscription_id_is_shared_and_deterministic(world: World) -> None:
    a, b = world.client(), world.client()
    id_a = subscribe(a, "com.topic")
    id_b = subscribe(b, "com.topic")
    assert id_a == id_b == stable_id("realm1", "exact", "com.topic")
    assert subscribe(a, "com.topic", match="prefix") != id_a


def test_subscribing_twice_is_idempotent(world: World) -> None:
    a = world.client()
    first = subscribe(a, "com.topic", request=1)
    assert subscribe(a, "com.topic", request=2) == first
    world.client().send(Publish(1, {}, "com.topic"))
    assert len([m for m in a.take() if isinstance(m, Event)]) == 1


def test_unsubscribe_stops_events_and_unknown_ids_are_errors(world: World) -> None:
    a = world.client()
    sub_id = subscribe(a, "com.topic")
    a.send(Unsubscribe(2, sub_id))
    assert a.take_one(Unsubscribed).request == 2
    world.client().send(Publish(1, {}, "com.topic"))
    assert a.take() == []
    a.send(Unsubscribe(3, sub_id))
    error = a.take_one(Error)
    assert (error.request_type, error.request, error.error) == (
        MessageType.UNSUBSCRIBE,
        3,
        errors.NO_SUCH_SUBSCRIPTION,
    )


def test_invalid_topics_get_invalid_uri(world: World) -> None:
    a = world.client()
    for request, topic in enumerate(["com..topic", "com topic", "", "com.#"], start=1):
        a.send(Subscribe(request, {}, topic))
        assert a.take_one(Error).error == errors.INVALID_URI
    a.send(Subscribe(9, {"match": "fuzzy"}, "com.topic"))
    assert a.take_one(Error).error == errors.INVALID_ARGUMENT


def test_publish_errors_only_when_acknowledged(world: World) -> None:
    a = world.client()
    a.send(Publish(1, {}, "com..bad"))
    assert a.take() == []
    a.send(Publish(2, {"acknowledge": True}, "com..bad"))
    assert a.take_one(Error).error == errors.INVALID_URI
    a.send(Publish(3, {"acknowledge": True}, "wamp.session.on_join"))
    assert a.take_one(Error).error == errors.INVALID_URI
    a.send(Publish(4, {"acknowledge": True, "exclude": "everyone"}, "com.ok"))
    assert a.take_one(Error).error == errors.INVALID_ARGUMENT


def test_eligible_and_exclude_lists(world: World) -> None:
    a, b, c = world.client(), world.client(authid="bob"), world.client()
    for s in (a, b, c):
        subscribe(s, "com.topic")
    pub = world.client()

    def receivers(options: dict[str, object]) -> set[int]:
        pub.send(Publish(1, options, "com.topic"))
        got = {s.session.id for s in (a, b, c) if any(isinstance(m, Event) for m in s.take())}
        return got

    ids = [s.session.id for s in (a, b, c)]
    assert receivers({"eligible": [ids[0], ids[2]]}) == {ids[0], ids[2]}
    assert receivers({"exclude": [ids[0]]}) == {ids[1], ids[2]}
    assert receivers({"eligible_authid": ["bob"]}) == {ids[1]}
    assert receivers({"exclude_authid": ["bob"]}) == {ids[0], ids[2]}
    assert receivers({"exclude_authrole": ["anonymous"]}) == set()
    assert receivers({"eligible_authrole": ["anonymous"], "exclude": [ids[1]]}) == {ids[0], ids[2]}


def test_disclose_me_identifies_the_publisher(world: World) -> None:
    sub = world.client()
    subscribe(sub, "com.topic")
    pub = world.client(authid="alice")
    pub.send(Publish(1, {"disclose_me": True}, "com.topic"))
    details = sub.take_one(Event).details
    assert details == {
        "publisher": pub.session.id,
        "publisher_authid": "alice",
        "publisher_authrole": "anonymous",
    }


def test_realm_disclosure_policy_overrides_the_client() -> None:
    for policy, asked, disclosed in (("always", False, True), ("never", True, False)):
        world = World(RealmSettings("realm1", disclose_publisher=policy))
        sub = world.client()
        subscribe(sub, "com.topic")
        world.client().send(Publish(1, {"disclose_me": asked}, "com.topic"))
        assert ("publisher" in sub.take_one(Event).details) is disclosed


def test_prefix_and_wildcard_subscriptions_carry_the_topic(world: World) -> None:
    prefix, wildcard, exact = world.client(), world.client(), world.client()
    prefix_id = subscribe(prefix, "com.app", match="prefix")
    wild_id = subscribe(wildcard, "com..update", match="wildcard")
    subscribe(exact, "com.app.update")
    world.client().send(Publish(1, {}, "com.app.update", [1]))
    p_event, w_event, e_event = (
        prefix.take_one(Event),
        wildcard.take_one(Event),
        exact.take_one(Event),
    )
    assert (p_event.subscription, p_event.details["topic"]) == (prefix_id, "com.app.update")
    assert (w_event.subscription, w_event.details["topic"]) == (wild_id, "com.app.update")
    assert "topic" not in e_event.details
    world.client().send(Publish(1, {}, "com.other.update"))
    assert prefix.take() == [] and exact.take() == []
    assert wildcard.take_one(Event).details["topic"] == "com.other.update"


def test_retained_event_is_delivered_on_get_retained(world: World) -> None:
    pub = world.client()
    pub.send(Publish(1, {"retain": True}, "com.state", ["first"]))
    pub.send(Publish(2, {"retain": True}, "com.state", ["latest"], {"n": 2}))
    late = world.client()
    late.send(Subscribe(1, {"get_retained": True}, "com.state"))
    subscribed, event = late.take()
    assert isinstance(subscribed, Subscribed) and isinstance(event, Event)
    assert (event.args, event.kwargs, event.details["retained"]) == (["latest"], {"n": 2}, True)
    plain = world.client()
    subscribe(plain, "com.state")  # without get_retained: nothing retained is sent
    assert plain.take() == []
    pattern = world.client()
    pattern.send(Subscribe(1, {"get_retained": True, "match": "prefix"}, "com."))
    _, event = pattern.take()
    assert isinstance(event, Event) and event.details["topic"] == "com.state"


def test_retained_event_respects_its_eligible_list(world: World) -> None:
    pub = world.client()
    pub.send(Publish(1, {"retain": True, "eligible_authid": ["carol"]}, "com.state"))
    other = world.client()
    other.send(Subscribe(1, {"get_retained": True}, "com.state"))
    assert len(other.take()) == 1  # SUBSCRIBED only
    carol = world.client(authid="carol")
    carol.send(Subscribe(1, {"get_retained": True}, "com.state"))
    assert len(carol.take()) == 2
