"""Property: any string, any serializer pair, through a real router (publish, retained
delivery, call arguments, results and errors).

For each generated string (the whole Unicode range, lone surrogates included) every
sender spelling (JSON escapes, JSON raw UTF-8, msgpack, CBOR) publishes it (retained)
and calls a callee of every serializer with it; subscribers, late subscribers asking
for the retained event, and callees use each serializer: nine pairs. A valid string
arrives unchanged everywhere and comes back as the RESULT; an invalid one ABORTs only
its sender (never close 1011) and reaches nobody.
"""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol_spec import errors
from tests.protocol_spec._unicode_wire import has_lone_surrogate, has_surrogate
from tests.support.processes import BrokerProcess

from ._unicode_client import ERROR, EVENT, INVOCATION, RESULT, RawPeer

SERIALIZERS = ("json", "msgpack", "cbor")
SENDERS = (("json", False), ("json", True), ("msgpack", False), ("cbor", False))
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
STRINGS = st.one_of(
    st.text(ANY_CHAR, min_size=1, max_size=8),
    st.sampled_from(["\ud800", "\udfff", "\ud800\udc00", "a\udc00b", "\U0010ffff"]),
).filter(lambda t: not t.startswith("\x00"))  # "\0"+base64 is JSON's bytes convention
_examples = count(1)


def _meaning(s: str, serializer: str, utf8: bool) -> str | None:
    """The string the router should see from this sender, or None if it must refuse it."""
    if serializer == "json" and not utf8:  # escapes: a high+low pair is one character
        return (
            None
            if has_lone_surrogate(s)
            else s.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        )
    return None if has_surrogate(s) else s


async def _serve_one(callee: RawPeer, fail: bool) -> list[Any]:
    """Answer one INVOCATION by echoing its arguments (as YIELD, or as ERROR); return them."""
    invocation = await callee.expect(lambda m: m[0] == INVOCATION)
    if fail:
        await callee.send([ERROR, INVOCATION, invocation[1], {}, "com.prop.failed", invocation[4]])
    else:
        await callee.send([70, invocation[1], {}, invocation[4]])
    return list(invocation[4])


async def _check(url: str, s: str) -> None:
    n = next(_examples)
    topic, procedure = f"com.prop.t{n}", f"com.prop.p{n}"
    subscribers = [await RawPeer.join(url, name) for name in SERIALIZERS]
    for sub in subscribers:
        await sub.subscribe(topic)
    callees = [await RawPeer.join(url, name) for name in SERIALIZERS]
    for i, callee in enumerate(callees):
        await callee.register(f"{procedure}.{i}")
    last_retained: str | None = None
    for serializer, utf8 in SENDERS:
        sender = await RawPeer.join(url, serializer, utf8=utf8)
        meaning = _meaning(s, serializer, utf8)
        request = await sender.publish(topic, [s], retain=True)
        if meaning is None:
            abort, code = await sender.closed()
            assert abort is not None and abort[2] == errors.PROTOCOL_VIOLATION, abort
            assert code != 1011
            continue
        assert (await sender.published(request))[0] != ERROR
        last_retained = meaning
        for sub in subscribers:
            event = await sub.expect(lambda m: m[0] == EVENT)
            assert event[4] == [meaning], (serializer, sub.serializer)
        for i, callee in enumerate(callees):
            call = await sender.call(f"{procedure}.{i}", [meaning, {meaning: [meaning]}])
            payload = [meaning, {meaning: [meaning]}]
            assert await _serve_one(callee, fail=i == 0) == payload  # callee 0 answers ERROR
            answer = await sender.answer(call)
            if i == 0:
                assert answer[0] == ERROR and answer[4:6] == ["com.prop.failed", payload], answer
            else:
                assert answer[0] == RESULT and answer[3] == payload, answer
        await sender.close()
    for name in SERIALIZERS:  # retained delivery to a late subscriber of each serializer
        late = await RawPeer.join(url, name)
        await late.subscribe(topic, get_retained=True)
        if last_retained is not None:
            event = await late.expect(lambda m: m[0] == EVENT)
            assert event[4] == [last_retained]
        ping = await late.published(await late.publish("com.prop.ping", []))
        assert ping[0] != ERROR  # open and served after its retained delivery
        await late.close()
    for peer in (*subscribers, *callees):
        await peer.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(s=STRINGS)
def test_any_string_through_the_router_for_every_serializer_pair(
    broker: BrokerProcess, s: str
) -> None:
    asyncio.run(asyncio.wait_for(_check(broker.url, s), 60))
