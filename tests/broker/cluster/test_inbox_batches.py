"""Inbox envelopes queued back to back for one node travel in one PUBLISH.

A real redis-server; the writer runs on the test's event loop and a plain pub/sub
client shows what Redis delivered (protocol_spec/cluster.md, "Envelopes").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from broker.cluster import keys
from broker.cluster.outbox import POST_BYTES, Outbox
from protocol_spec import cluster as wire
from tests.support.processes import RedisProcess, start_redis


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


def _invocation(request: int) -> wire.InboxInvocation:
    return wire.InboxInvocation("a", "realm1", 7, request, 3, {}, [request], None)


async def _published(url: str, outbox: Outbox, channels: list[bytes], count: int) -> list[bytes]:
    """Run the writer until ``count`` messages arrived on ``channels``; their (channel, data)."""
    listener = Redis.from_url(url)
    pubsub = listener.pubsub()
    cmd = Redis.from_url(url)
    await pubsub.subscribe(*channels)
    writer = asyncio.create_task(outbox.write(cmd))
    got: list[bytes] = []
    try:
        async with asyncio.timeout(10):
            while len(got) < count:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    got.append(msg["channel"] + b" " + msg["data"])
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await cmd.aclose()
    return got


async def test_consecutive_envelopes_for_one_inbox_share_a_publish_in_order(
    own_redis: RedisProcess,
) -> None:
    inbox_b, inbox_c = keys.inbox("b"), keys.inbox("c")
    outbox = Outbox()
    for request in (1, 2, 3):
        outbox.post(inbox_b, _invocation(request).pack())
    outbox.push(("PUBLISH", inbox_c, b"between"))  # another command ends the batch
    outbox.post(inbox_b, _invocation(4).pack())
    outbox.post(inbox_c, _invocation(5).pack())  # another inbox: its own PUBLISH
    got = await _published(own_redis.url, outbox, [inbox_b, inbox_c], 4)
    channels = [item.split(b" ", 1)[0] for item in got]
    assert channels == [inbox_b, inbox_c, inbox_b, inbox_c]
    first = wire.decode_inboxes(got[0].split(b" ", 1)[1])
    assert [m.request for m in first if isinstance(m, wire.InboxMessage)] == [1, 2, 3]
    assert got[1].split(b" ", 1)[1] == b"between"
    assert wire.decode_inboxes(got[2].split(b" ", 1)[1]) == [_invocation(4)]
    assert wire.decode_inboxes(got[3].split(b" ", 1)[1]) == [_invocation(5)]


async def test_a_post_is_closed_at_its_size_bound(own_redis: RedisProcess) -> None:
    inbox_b = keys.inbox("b")
    outbox = Outbox()
    big = wire.InboxInvocation("a", "realm1", 7, 1, 3, {}, ["x" * (POST_BYTES // 2)], None)
    for _ in range(3):
        outbox.post(inbox_b, big.pack())
    got = await _published(own_redis.url, outbox, [inbox_b], 2)
    sizes = [len(wire.decode_inboxes(item.split(b" ", 1)[1])) for item in got]
    assert sizes == [2, 1]


def test_a_malformed_envelope_in_a_batch_drops_only_itself() -> None:
    bad = wire.InboxInvocation("a", "realm1", 7, 2, 3, {}, None, None).pack()
    bad = bad.replace(b"\xa3inv", b"\xa3xyz")  # an unknown op
    found = wire.decode_inboxes(_invocation(1).pack() + bad + _invocation(3).pack())
    assert found[0] == _invocation(1) and found[2] == _invocation(3)
    assert isinstance(found[1], wire.ClusterProtocolError)
    assert "unknown inbox envelope op" in str(found[1])


def test_a_truncated_batch_is_refused() -> None:
    data = _invocation(1).pack() + _invocation(2).pack()
    with pytest.raises(wire.ClusterProtocolError):
        wire.decode_inboxes(data[:-3])
    with pytest.raises(wire.ClusterProtocolError):
        wire.decode_inboxes(b"")
