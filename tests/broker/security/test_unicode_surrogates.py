"""A string that is not valid Unicode is its sender's protocol violation, nobody else's.

The issue: a JSON frame holding ``"\\ud800"`` decoded fine and then broke the router on
the way out (close 1011 for the *publisher*, a retained topic poisoned for every later
subscriber, a caller left without an answer). Now such a frame ABORTs its sender with
``wamp.error.protocol_violation`` in every serializer, and values one serializer cannot
carry (NaN to JSON, 2^70 to msgpack) are the recipient's problem: dropped for it, or an
ERROR for a caller, never a close of the sender. Senders are raw clients (a real WAMP
library refuses to send a lone surrogate); receivers and callers are Autobahn|Python.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from protocol_spec import errors
from tests.broker.interop._autobahn import ClientPool
from tests.support.processes import BrokerProcess

from ._unicode_client import ERROR, EVENT, INVOCATION, RESULT, RawPeer

SERIALIZERS = ("json", "msgpack", "cbor")
SENDERS = [("json", False), ("json", True), ("msgpack", False), ("cbor", False)]
SENDER_IDS = ["json-escape", "json-utf8", "msgpack", "cbor"]
LONE = "\ud800"
TIMEOUT = 5.0


@pytest.fixture
async def pool(broker: BrokerProcess) -> AsyncIterator[ClientPool]:
    clients = ClientPool(broker.url)
    yield clients
    await clients.close_all()


async def assert_aborted_not_crashed(peer: RawPeer) -> None:
    abort, code = await peer.closed()
    assert abort is not None, f"no ABORT before close code {code}"
    assert abort[2] == errors.PROTOCOL_VIOLATION, abort
    assert code != 1011, "the router treated the frame as its own internal error"


async def autobahn_subscriber(pool: ClientPool, serializer: str, topic: str) -> asyncio.Queue[Any]:
    client = await pool.connect(serializer)
    received: asyncio.Queue[Any] = asyncio.Queue()
    await client.subscribe(lambda *a, **_k: received.put_nowait(a), topic)
    return received


@pytest.mark.parametrize(("serializer", "utf8"), SENDERS, ids=SENDER_IDS)
async def test_a_publisher_of_a_lone_surrogate_is_aborted_and_subscribers_get_the_next_event(
    broker: BrokerProcess, pool: ClientPool, serializer: str, utf8: bool
) -> None:
    topic = f"com.unicode.pub.{serializer}{int(utf8)}"
    queues = [await autobahn_subscriber(pool, name, topic) for name in SERIALIZERS]
    bad = await RawPeer.join(broker.url, serializer, utf8=utf8)
    await bad.publish(
        topic, [LONE]
    )  # the frame: [16,7,{"acknowledge":true},"t",["\ud800"]]
    await assert_aborted_not_crashed(bad)
    good = await RawPeer.join(broker.url, serializer)
    reply = await good.published(await good.publish(topic, ["after \U0001f600"]))
    assert reply[0] != ERROR, reply
    for queue in queues:
        assert await asyncio.wait_for(queue.get(), TIMEOUT) == ("after \U0001f600",)
    await good.close()


@pytest.mark.parametrize(("serializer", "utf8"), SENDERS, ids=SENDER_IDS)
async def test_a_retained_topic_is_never_poisoned_by_a_lone_surrogate(
    broker: BrokerProcess, serializer: str, utf8: bool
) -> None:
    topic = f"com.unicode.retained.{serializer}{int(utf8)}"
    owner = await RawPeer.join(broker.url)
    assert (await owner.published(await owner.publish(topic, ["kept"], retain=True)))[0] != ERROR
    bad = await RawPeer.join(broker.url, serializer, utf8=utf8)
    await bad.publish(topic, [LONE], retain=True)
    await assert_aborted_not_crashed(bad)
    for name in SERIALIZERS:
        late = await RawPeer.join(broker.url, name)
        await late.subscribe(topic, get_retained=True)
        event = await late.expect(lambda m: m[0] == EVENT)
        assert event[4] == ["kept"] and event[3].get("retained") is True, event
        # still open: the router answers this session afterwards
        reply = await late.published(await late.publish("com.unicode.ping", ["x"]))
        assert reply[0] != ERROR, reply
        await late.close()
    await owner.close()


@pytest.mark.parametrize("answer", ["yield", "error"])
@pytest.mark.parametrize(("serializer", "utf8"), SENDERS, ids=SENDER_IDS)
async def test_a_callee_answering_with_a_lone_surrogate_is_aborted_and_the_caller_answered(
    broker: BrokerProcess, pool: ClientPool, serializer: str, utf8: bool, answer: str
) -> None:
    procedure = f"com.unicode.callee.{serializer}{int(utf8)}.{answer}"
    callee = await RawPeer.join(broker.url, serializer, utf8=utf8)
    await callee.register(procedure)
    caller = await pool.connect("json")
    call = asyncio.ensure_future(caller.call(procedure, "hi"))
    invocation = await callee.expect(lambda m: m[0] == INVOCATION)
    if answer == "yield":
        await callee.send([70, invocation[1], {}, [LONE]])
    else:
        await callee.send([ERROR, INVOCATION, invocation[1], {}, "com.app.failed", [LONE]])
    await assert_aborted_not_crashed(callee)
    with pytest.raises(ApplicationError) as failure:
        await asyncio.wait_for(call, TIMEOUT)  # the caller always gets an answer
    assert failure.value.error == errors.CANCELED


@pytest.mark.parametrize(("serializer", "utf8"), SENDERS, ids=SENDER_IDS)
async def test_a_caller_sending_a_lone_surrogate_is_aborted_and_the_callee_keeps_serving(
    broker: BrokerProcess, pool: ClientPool, serializer: str, utf8: bool
) -> None:
    procedure = f"com.unicode.echo.{serializer}{int(utf8)}"
    callee = await pool.connect("cbor")
    await callee.register(lambda *args: list(args), procedure)
    bad = await RawPeer.join(broker.url, serializer, utf8=utf8)
    await bad.call(procedure, [{"k\udc00": 1}])
    await assert_aborted_not_crashed(bad)
    caller = await pool.connect(serializer)
    assert await caller.call(procedure, "\U0001f600") == ["\U0001f600"]


# --- values one serializer cannot carry: the recipient's problem, never the sender's ----


async def test_a_nan_event_skips_json_subscribers_and_keeps_the_publisher(
    pool: ClientPool,
) -> None:
    topic = "com.unicode.nan"
    json_events = await autobahn_subscriber(pool, "json", topic)
    msgpack_events = await autobahn_subscriber(pool, "msgpack", topic)
    publisher = await pool.connect("msgpack")
    await publisher.publish(topic, math.nan, options=PublishOptions(acknowledge=True, retain=True))
    await publisher.publish(topic, "after", options=PublishOptions(acknowledge=True))
    assert await asyncio.wait_for(json_events.get(), TIMEOUT) == ("after",)
    (nan,) = await asyncio.wait_for(msgpack_events.get(), TIMEOUT)
    assert math.isnan(nan)
    assert await asyncio.wait_for(msgpack_events.get(), TIMEOUT) == ("after",)
    # the retained NaN is not delivered to a JSON subscriber, which stays open
    late = await pool.connect("json")
    got: asyncio.Queue[Any] = asyncio.Queue()
    await late.subscribe(
        lambda *a: got.put_nowait(a), topic, options=SubscribeOptions(get_retained=True)
    )
    assert await late.call("wamp.session.count") >= 1
    assert got.empty()


async def test_arguments_the_callee_cannot_carry_answer_the_caller_with_an_error(
    pool: ClientPool,
) -> None:
    procedure = "com.unicode.bigint"
    callee = await pool.connect("msgpack")
    await callee.register(lambda *args: "called", procedure)
    caller = await pool.connect("cbor")  # CBOR carries 2**70 as a bignum; msgpack cannot
    with pytest.raises(ApplicationError) as failure:
        await caller.call(procedure, 2**70)
    assert failure.value.error == errors.INVALID_ARGUMENT
    assert await caller.call(procedure, 1) == "called"  # registration and callee intact


@pytest.mark.parametrize("outcome", ["result", "error"])
async def test_a_result_the_caller_cannot_carry_becomes_an_error_for_the_caller(
    pool: ClientPool, outcome: str
) -> None:
    procedure = f"com.unicode.nanresult.{outcome}"

    def handler() -> float:
        if outcome == "error":
            raise ApplicationError("com.app.failed", math.nan)
        return math.nan

    callee = await pool.connect("msgpack")
    await callee.register(handler, procedure)
    caller = await pool.connect("json")
    with pytest.raises(ApplicationError) as failure:
        await asyncio.wait_for(caller.call(procedure), TIMEOUT)
    assert failure.value.error == errors.INVALID_ARGUMENT
    other = await pool.connect("cbor")  # a caller that can carry NaN still gets it
    if outcome == "result":
        assert math.isnan(await other.call(procedure))
    else:
        with pytest.raises(ApplicationError) as carried:
            await other.call(procedure)
        assert carried.value.error == "com.app.failed"
    assert callee.is_attached()


async def test_a_raw_caller_gets_error_not_silence_for_an_unencodable_result(
    broker: BrokerProcess, pool: ClientPool
) -> None:
    procedure = "com.unicode.rawnan"
    callee = await pool.connect("cbor")
    await callee.register(lambda: math.inf, procedure)
    caller = await RawPeer.join(broker.url, "json")
    answer = await caller.answer(await caller.call(procedure, []))
    assert answer[0] == ERROR and answer[4] == errors.INVALID_ARGUMENT, answer
    assert answer[0] != RESULT
    await caller.close()
