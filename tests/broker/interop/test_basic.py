"""Basic Profile with Autobahn|Python: pub/sub and RPC across serializers, errors, WELCOME."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, PublishOptions

from broker.core.features import BROKER_FEATURES, DEALER_FEATURES

from ._autobahn import SERIALIZERS, ClientPool

PAIRS = list(itertools.product(SERIALIZERS, repeat=2))
PAIR_IDS = [f"{a}-to-{b}" for a, b in PAIRS]

ARGS: list[Any] = [1, "two", b"\x00\x01\xfe\xff", {"nested": [b"inner", None, True, 2.5]}]
# Features whose behaviour the tests of this directory prove with standard clients.
PROVEN_BROKER_FEATURES = {
    "publisher_exclusion",  # test_pubsub_advanced
    "subscriber_blackwhite_listing",  # test_pubsub_advanced
    "publisher_identification",  # test_pubsub_advanced, test_realm_disclosure
    "pattern_based_subscription",  # test_pubsub_advanced
    "event_retention",  # test_pubsub_advanced
    "event_history",  # test_event_history
    "subscription_meta_api",  # test_meta
    "session_meta_api",  # test_session_meta
    "testament_meta_api",  # test_meta
}
PROVEN_DEALER_FEATURES = {
    "caller_identification",  # test_rpc_advanced, test_realm_disclosure
    "call_canceling",  # test_rpc_advanced
    "call_timeout",  # test_rpc_advanced
    "progressive_call_results",  # test_rpc_advanced
    "pattern_based_registration",  # test_rpc_advanced
    "shared_registration",  # test_rpc_advanced
    "registration_meta_api",  # test_meta
    "session_meta_api",  # test_session_meta
    "testament_meta_api",  # test_meta
}

KWARGS: dict[str, Any] = {"blob": b"\xde\xad\xbe\xef", "text": "h\u00e9llo", "n": -7}


@pytest.mark.parametrize(("pub_ser", "sub_ser"), PAIRS, ids=PAIR_IDS)
async def test_event_carries_args_kwargs_and_bytes_between_serializers(
    clients: ClientPool, pub_ser: str, sub_ser: str
) -> None:
    publisher = await clients.connect(pub_ser)
    subscriber = await clients.connect(sub_ser)
    received: asyncio.Queue[tuple[tuple[Any, ...], dict[str, Any]]] = asyncio.Queue()
    topic = f"com.interop.basic.event.{pub_ser}.{sub_ser}"
    await subscriber.subscribe(lambda *a, **kw: received.put_nowait((a, kw)), topic)

    await publisher.publish(topic, *ARGS, options=PublishOptions(acknowledge=True), **KWARGS)

    args, kwargs = await asyncio.wait_for(received.get(), 5)
    assert list(args) == ARGS
    assert kwargs == KWARGS


@pytest.mark.parametrize(("pub_ser", "sub_ser"), [("msgpack", "json"), ("json", "cbor")])
async def test_events_keep_publish_order_between_serializers(
    clients: ClientPool, pub_ser: str, sub_ser: str
) -> None:
    publisher = await clients.connect(pub_ser)
    subscriber = await clients.connect(sub_ser)
    received: asyncio.Queue[int] = asyncio.Queue()
    await subscriber.subscribe(received.put_nowait, "com.interop.basic.order")

    for i in range(199):
        publisher.publish("com.interop.basic.order", i)
    await publisher.publish(
        "com.interop.basic.order", 199, options=PublishOptions(acknowledge=True)
    )

    assert [await asyncio.wait_for(received.get(), 5) for _ in range(200)] == list(range(200))


@pytest.mark.parametrize(("caller_ser", "callee_ser"), PAIRS, ids=PAIR_IDS)
async def test_call_carries_args_and_kwargs_between_serializers(
    clients: ClientPool, caller_ser: str, callee_ser: str
) -> None:
    callee = await clients.connect(callee_ser)
    caller = await clients.connect(caller_ser)
    procedure = f"com.interop.basic.echo.{caller_ser}.{callee_ser}"
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def echo(*args: Any, **kwargs: Any) -> CallResult:
        seen.append((args, kwargs))
        return CallResult(*reversed(args), answer=b"\x01\x02", **kwargs)

    await callee.register(echo, procedure)
    result = await caller.call(procedure, *ARGS, **KWARGS)

    assert seen == [(tuple(ARGS), KWARGS)]
    assert isinstance(result, CallResult)
    assert list(result.results) == list(reversed(ARGS))
    assert result.kwresults == {**KWARGS, "answer": b"\x01\x02"}


@pytest.mark.parametrize(("caller_ser", "callee_ser"), [("json", "cbor"), ("msgpack", "json")])
async def test_application_error_from_callee_reaches_caller_with_uri_args_kwargs(
    clients: ClientPool, caller_ser: str, callee_ser: str
) -> None:
    callee = await clients.connect(callee_ser)
    caller = await clients.connect(caller_ser)

    def fail(*args: Any) -> None:
        raise ApplicationError("com.interop.error.out_of_stock", "no more", 3, b"\x07", sku="X1")

    await callee.register(fail, "com.interop.basic.fail")
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.interop.basic.fail")

    assert info.value.error == "com.interop.error.out_of_stock"
    assert info.value.args == ("no more", 3, b"\x07")
    assert info.value.kwargs == {"sku": "X1"}


async def test_call_to_unregistered_procedure_fails_with_no_such_procedure(
    clients: ClientPool,
) -> None:
    caller = await clients.connect("msgpack")
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.interop.basic.nobody_home", 1)
    assert info.value.error == "wamp.error.no_such_procedure"


async def test_second_registration_of_a_procedure_fails_with_procedure_already_exists(
    clients: ClientPool,
) -> None:
    first = await clients.connect("json")
    second = await clients.connect("cbor")
    await first.register(lambda: "first", "com.interop.basic.taken")

    with pytest.raises(ApplicationError) as info:
        await second.register(lambda: "second", "com.interop.basic.taken")

    assert info.value.error == "wamp.error.procedure_already_exists"
    assert await second.call("com.interop.basic.taken") == "first"


async def test_callee_dropping_its_connection_mid_call_fails_the_call_promptly(
    clients: ClientPool,
) -> None:
    callee = await clients.connect("cbor")
    caller = await clients.connect("json")
    invoked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hang() -> None:
        invoked.set_result(None)
        await never

    await callee.register(hang, "com.interop.basic.hang")
    call = asyncio.ensure_future(caller.call("com.interop.basic.hang"))
    await asyncio.wait_for(invoked, 5)

    callee.drop()

    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(call, 5)
    assert info.value.error == "wamp.error.canceled"
    assert info.value.args == ("callee disconnected",)


@pytest.mark.parametrize("serializer", list(SERIALIZERS))
async def test_welcome_announces_only_broker_and_dealer_with_the_core_features(
    clients: ClientPool, serializer: str
) -> None:
    client = await clients.connect(serializer, authid="welcome-checker")
    welcome = client.frames.frames[0]
    assert welcome[0] == 2 and welcome[1] == client.id

    details = welcome[2]
    assert details["roles"] == {
        "broker": {"features": BROKER_FEATURES},
        "dealer": {"features": DEALER_FEATURES},
    }
    for role in details["roles"].values():
        assert all(type(value) is bool for value in role["features"].values())
    broker_on = {k for k, v in details["roles"]["broker"]["features"].items() if v}
    dealer_on = {k for k, v in details["roles"]["dealer"]["features"].items() if v}
    assert broker_on <= PROVEN_BROKER_FEATURES, "announced without an interop test"
    assert dealer_on <= PROVEN_DEALER_FEATURES, "announced without an interop test"
    assert details["realm"] == "realm1"
    assert details["authid"] == "welcome-checker"
    assert details["authrole"] == "anonymous"
    assert details["authmethod"] == "anonymous"
    assert client.welcome.authrole == "anonymous"
