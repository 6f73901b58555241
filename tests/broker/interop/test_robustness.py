"""Raw clients that break the protocol get ABORT protocol_violation and are disconnected,
while Autobahn sessions already joined on the same broker carry on."""

from __future__ import annotations

import pytest

from tests.support.processes import BrokerProcess

from ._autobahn import ClientPool
from ._raw import ABORT, RawClient

# name: (join first?, frame to send: a list is JSON-encoded, a str is sent as is)
VIOLATIONS: dict[str, tuple[bool, object]] = {
    "garbage_text_before_hello": (False, "this is not JSON {"),
    "garbage_text_after_welcome": (True, "\x00\x01 garbage ]]"),
    "non_list_before_hello": (False, {"type": "HELLO", "realm": "realm1"}),
    "non_list_after_welcome": (True, "42"),
    "unknown_message_type_after_welcome": (True, [999, 1, {}]),
    "unknown_message_type_before_hello": (False, [7, 1, {}]),
    "subscribe_before_hello": (False, [32, 1, {}, "com.interop.robust.topic"]),
    "call_before_hello": (False, [48, 1, {}, "com.interop.robust.ping", [1]]),
    "second_hello": (True, [1, "realm1", {"roles": {"caller": {}}}]),
    "welcome_from_client": (True, [2, 1, {}]),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
async def test_protocol_violation_aborts_the_offender_and_others_carry_on(
    broker: BrokerProcess, clients: ClientPool, case: str
) -> None:
    callee = await clients.connect("msgpack")
    caller = await clients.connect("json")
    await callee.register(lambda n: n + 1, "com.interop.robust.ping")
    assert await caller.call("com.interop.robust.ping", 1) == 2

    join_first, frame = VIOLATIONS[case]
    raw = await RawClient.open(broker.url)
    try:
        if join_first:
            await raw.hello()
        if isinstance(frame, str):
            await raw.send_text(frame)
        else:
            await raw.send(frame)  # type: ignore[arg-type]

        abort = await raw.next_message()
        assert abort[0] == ABORT
        assert abort[2] == "wamp.error.protocol_violation"
        assert isinstance(abort[1].get("message"), str)
        await raw.wait_closed()
    finally:
        await raw.close()

    assert await caller.call("com.interop.robust.ping", 41) == 42


async def test_hello_for_an_unknown_realm_is_aborted_with_no_such_realm(
    broker: BrokerProcess,
) -> None:
    async with await RawClient.open(broker.url) as raw:
        await raw.send([1, "com.interop.no_such_realm", {"roles": {"caller": {}}}])
        abort = await raw.next_message()
        assert abort[0] == ABORT and abort[2] == "wamp.error.no_such_realm"
        await raw.wait_closed()
