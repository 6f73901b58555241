"""Direct links between nodes (broker/cluster/peers.py) on real loopback sockets.

Two or three ``PeerLinks`` share the test's event loop; a raw asyncio connection plays
a broken or hostile peer. Waits are on what the links report (deliveries, ``lost``,
the other end closing), each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from cryptography import x509

from broker.cluster import peer_wire, peers
from broker.cluster.barrier import ControlBarrier
from broker.cluster.peers import FRAME_BYTES, MACHINE, MAX_FRAME, PeerLinks, PeerTLS
from protocol_spec.cluster import ControlMessage, NodeGone, PeerRecord, SessionJoined, SessionLeft
from tests.support.certs import Authority, NodeCert
from tests.support.processes import free_port

WAIT = 5.0
HEADER = struct.Struct(">IB")


def frame(kind: bytes, body: bytes) -> bytes:
    return HEADER.pack(len(body) + 1, kind[0]) + body


def _rows(body: bytes) -> bytes:
    """A data frame's rows back to back: its msgpack array header taken off.

    ``PeerLinks`` sends each frame as an array header and the packed rows; the tests send
    arbitrary bytes as rows and compare those. A frame a raw test connection wrote has no
    header (its first byte is plain text here) and is kept as it is.
    """
    first = body[:1]
    if first and 0x90 <= first[0] <= 0x9F:
        return body[1:]
    if first == b"\xdc":
        return body[3:]
    if first == b"\xdd":
        return body[5:]
    return body


class Node:
    """One ``PeerLinks`` and what it reported: data frames, lost links, in one log."""

    def __init__(self, name: str, tls: PeerTLS | None = None) -> None:
        self.name = name
        self.frames: list[bytes] = []
        self.senders: list[str] = []
        """The node each data frame came from (the link's hello named it)."""
        self.lost: list[tuple[str, str]] = []
        self.log: list[object] = []
        """Deliveries (bytes) and whatever a test adds, in the order they happened."""
        self._changed = asyncio.Event()
        self.links = PeerLinks(name, self._deliver, self._lost, tls)
        self.rerouted: list[tuple[str, bytes]] = []
        """Rows of a first dial that never connected, handed back for Redis."""
        self.links.reroute = self._reroute
        self.markers: list[tuple[str, str]] = []
        """``InboxSwitch`` markers this node published (node, key); a test delivers them."""
        self.links.switch = self._switch
        self.marker_first: PeerLinks | None = None
        """When set, the marker reaches that node before the link's ``W`` frame does."""

    def _deliver(self, node: str, body: bytes) -> None:
        self.senders.append(node)
        body = _rows(body)
        self.frames.append(body)
        self.log.append(body)
        self.note()

    def _switch(self, node: str, key: str) -> bool:
        self.markers.append((node, key))
        if self.marker_first is not None:
            self.marker_first.switched(self.name, key)
        self.note()
        return True

    def _reroute(self, node: str, body: bytes) -> None:
        self.rerouted.append((node, _rows(body)))
        self.note()

    def _lost(self, node: str, why: str) -> None:
        self.lost.append((node, why))
        self.note()

    def note(self) -> None:
        self._changed.set()

    @property
    def received(self) -> bytes:
        return b"".join(self.frames)

    async def until(self, check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wait until ``check()`` holds, re-checking whenever this node reports something."""
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: {what} not reached in {timeout} s") from None

    @property
    def record(self) -> PeerRecord:
        assert self.links.record is not None
        return self.links.record


Make = Callable[..., Awaitable[list[Node]]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """``await make("x", "y")``: listening nodes that know each other's records
    (``tls={"x": PeerTLS(...)}``: those nodes take and dial links with TLS)."""
    made: list[Node] = []

    async def factory(*names: str, tls: dict[str, PeerTLS] | None = None) -> list[Node]:
        nodes = [Node(name, (tls or {}).get(name)) for name in names]
        for node in nodes:
            await node.links.start("127.0.0.1:0")
        for node in nodes:
            for other in nodes:
                if other is not node:
                    node.links.known(other.name, other.record)
        made.extend(nodes)
        return nodes

    yield factory
    for node in made:
        await node.links.close()


async def _connected(x: Node, y: Node) -> None:
    """X's link to Y is up and Y checked its hello."""
    before = len(y.received)
    x.links.send(y.name, b"!")
    await y.until(lambda: len(y.received) > before, "the first envelope")
    assert y.links.inbound(x.name)


async def _raw(y: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", y.record.port)


def _hello(y: Node, sender: str = "raw", **changes: object) -> bytes:
    hello: dict[str, object] = {
        "v": peer_wire.VERSION,
        "from": sender,
        "to": y.name,
        "token": y.links.token,
    }
    hello.update(changes)
    return frame(b"H", msgpack.packb(hello))


async def _closed_by_peer(reader: asyncio.StreamReader) -> None:
    """Read until the other side closes (EOF or reset); fail after ``WAIT`` seconds."""
    async with asyncio.timeout(WAIT):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass


# --- data --------------------------------------------------------------------------------
async def test_envelopes_of_several_sends_arrive_in_order(make: Make) -> None:
    x, y = await make("x", "y")
    sent = [b"env-%05d;" % i for i in range(3000)]
    for i, envelope in enumerate(sent):
        x.links.send("y", envelope)
        if i % 500 == 0:
            await asyncio.sleep(0)  # some sends in later loop passes: more than one frame
    expected = b"".join(sent)
    await y.until(lambda: len(y.received) >= len(expected), "all envelopes")
    assert y.received == expected
    assert len(y.frames) >= 2
    assert x.received == b""  # one way: nothing came back as data
    assert x.lost == [] and y.lost == []
    assert x.links.links_up == 1 and y.links.links_up == 0


async def test_many_small_envelopes_go_in_frames_of_about_frame_bytes(make: Make) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)  # (while dialing, envelopes wait and go in one frame)
    y.frames.clear()
    envelope = b"e" * 1000
    count = 4 * FRAME_BYTES // len(envelope)
    for _ in range(count):  # one loop pass: only the size splits them
        x.links.send("y", envelope)
    await y.until(lambda: len(y.received) >= count * len(envelope), "every envelope")
    assert y.received == envelope * count
    assert len(y.frames) >= 4
    assert all(len(body) < FRAME_BYTES + len(envelope) for body in y.frames)
    assert all(len(body) % len(envelope) == 0 for body in y.frames)  # never split inside one


async def test_an_envelope_larger_than_a_frame_arrives_whole(make: Make) -> None:
    x, y = await make("x", "y")
    big = os.urandom(3 * FRAME_BYTES + 17)
    sent = [b"before", big, b"after"]
    for envelope in sent:
        x.links.send("y", envelope)
    expected = b"".join(sent)
    await y.until(lambda: len(y.received) >= len(expected), "the large envelope")
    assert y.received == expected


async def test_frames_split_across_reads_are_put_back_together(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    (y,) = await make("y")
    reads: asyncio.Queue[int] = asyncio.Queue()
    original = peer_wire.Incoming.data_received

    def counting(self: peer_wire.Incoming, data: bytes) -> None:
        original(self, data)
        reads.put_nowait(len(data))

    monkeypatch.setattr(peer_wire.Incoming, "data_received", counting)
    _reader, writer = await _raw(y)

    async def piece(data: bytes) -> None:
        """Write ``data`` and wait until the link read all of it."""
        writer.write(data)
        await writer.drain()
        got = 0
        async with asyncio.timeout(WAIT):
            while got < len(data):
                got += await reads.get()

    hello = _hello(y)
    await piece(hello[:3])  # inside the header
    await piece(hello[3:7])  # the rest of the header, part of the body
    await piece(hello[7:])
    assert y.links.inbound("raw")
    first, second = frame(b"D", b"first-body"), frame(b"D", b"second")
    stream = first + second
    cuts = [2, 4, 5, 9, len(first) + 3, len(stream)]  # in the length, before the kind, ...
    start = 0
    for cut in cuts:
        await piece(stream[start:cut])
        start = cut
        if cut < len(first):
            assert y.frames == []
        elif cut < len(stream):
            assert y.frames == [b"first-body"]
    assert y.frames == [b"first-body", b"second"]
    writer.close()
    await y.until(lambda: y.lost != [], "the raw link reported lost")
    assert y.lost[0][0] == "raw"


# --- hostile or broken peers ---------------------------------------------------------------
@pytest.mark.parametrize(
    "hello",
    [
        pytest.param({"token": "0" * 32}, id="wrong-token"),
        pytest.param({"to": "somebody-else"}, id="wrong-to"),
        pytest.param({"v": 3}, id="wrong-version"),
        pytest.param({"from": ""}, id="no-from"),
        pytest.param({"from": 7}, id="from-not-text"),
        pytest.param({"token": "ß" * 32}, id="non-ascii-token"),
        pytest.param(b"\xc1\xc1", id="garbage"),
        pytest.param(msgpack.packb([1, 2, 3]), id="not-a-map"),
        pytest.param(None, id="data-before-hello"),
    ],
)
async def test_a_hello_that_does_not_check_out_closes_the_link(
    make: Make, hello: dict[str, object] | bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    (y,) = await make("y")
    if hello is None:
        first = b""
    elif isinstance(hello, bytes):
        first = frame(b"H", hello)
    else:
        first = _hello(y, **hello)
    reader, writer = await _raw(y)
    with caplog.at_level(logging.ERROR):
        writer.write(first + frame(b"D", b"smuggled"))
        await _closed_by_peer(reader)
    writer.close()
    assert y.frames == []
    assert not y.links.inbound("raw")
    assert y.lost == []  # nobody it knew: nothing to report
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_hello_is_answered_accepted_and_an_older_nodes_hello_is_taken_silently(
    make: Make,
) -> None:
    (y,) = await make("y")
    for version in (peer_wire.VERSION, 1):
        sender = f"v{version}"
        reader, writer = await _raw(y)
        writer.write(_hello(y, sender, v=version) + frame(b"D", b"rows"))
        await y.until(lambda: y.links.inbound(sender), f"the link of {sender}")  # noqa: B023
        y.links.sync(sender, lambda: None, WAIT)  # y's next frame on the link: a sync request
        async with asyncio.timeout(WAIT):
            first = await reader.readexactly(5)
        if version == 1:  # no answer to a hello of 1: the sync request comes first
            assert first[4:] == b"S"
        else:
            assert first == frame(b"A", b"")
            assert (await reader.readexactly(5))[4:] == b"S"
        writer.close()
    assert y.senders == ["v2", "v1"]


async def test_a_dial_whose_hello_is_refused_reaches_the_node_through_redis(make: Make) -> None:
    x, y = await make("x", "y")
    x.links.known("y", replace(y.record, token="a stale token"))
    x.links.send("y", b"refused")
    await x.until(lambda: x.lost != [], "the refused hello")
    assert "y" in x.links.via_redis and not x.links.send("y", b"through Redis")
    assert y.frames == [] and y.lost == []
    assert x.rerouted == []  # written to a connection: lost with it, never sent twice


@pytest.mark.parametrize("bad", [b"Q", b"S", b"H"], ids=["unknown", "sync-request", "hello-again"])
async def test_an_unexpected_frame_closes_the_link_and_nothing_after_it_counts(
    make: Make, bad: bytes
) -> None:
    (y,) = await make("y")
    reader, writer = await _raw(y)
    writer.write(_hello(y) + frame(b"D", b"before") + frame(bad, b"12345678") + frame(b"D", b"x"))
    await _closed_by_peer(reader)
    writer.close()
    await y.until(lambda: y.lost != [], "the link reported lost")
    assert y.frames == [b"before"]
    assert y.lost[0][0] == "raw" and "unexpected frame" in y.lost[0][1]


async def test_an_outgoing_link_sent_anything_but_sync_requests_is_lost(make: Make) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)
    incoming = y.links._in["x"]
    incoming.write(b"D"[0], b"not for a dialer")
    incoming.write(b"S"[0], b"12345678")
    await x.until(lambda: x.lost != [], "x gave up the link")
    assert x.lost[0][0] == "y" and "unexpected frame" in x.lost[0][1]
    await y.until(lambda: y.lost != [], "y saw the link end")
    assert y.lost[0][0] == "x" and y.links._syncs == {}


async def test_no_hello_in_time_closes_the_link(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_wire, "HELLO_TIMEOUT", 0.2)
    (y,) = await make("y")
    reader, writer = await _raw(y)
    writer.write(_hello(y)[:6])  # a hello that never completes
    started = time.monotonic()
    await _closed_by_peer(reader)
    assert time.monotonic() - started < 2.0
    writer.close()
    assert not y.links.inbound("raw") and y.frames == []


@pytest.mark.parametrize("size", [MAX_FRAME + 1, 0], ids=["too-large", "empty"])
async def test_a_frame_header_out_of_bounds_closes_the_link(make: Make, size: int) -> None:
    (y,) = await make("y")
    reader, writer = await _raw(y)
    writer.write(_hello(y) + frame(b"D", b"ok") + HEADER.pack(size, b"D"[0]) + b"more")
    await _closed_by_peer(reader)
    writer.close()
    assert y.frames == [b"ok"]
    await y.until(lambda: y.lost != [], "the link reported lost")
    assert y.lost[0][0] == "raw" and "frame" in y.lost[0][1]
    assert not y.links.inbound("raw")


async def test_before_its_hello_a_connection_cannot_announce_a_large_frame(make: Make) -> None:
    (y,) = await make("y")
    reader, writer = await _raw(y)
    # a header announcing 1 MiB instead of a hello: closed at once, nothing buffered
    started = time.monotonic()
    writer.write(HEADER.pack(1024 * 1024, b"H"[0]) + b"x" * 1000)
    await _closed_by_peer(reader)
    writer.close()
    assert time.monotonic() - started < 2.0  # not the hello timeout (5 s)
    assert y.frames == [] and not y.links.inbound("raw") and y.lost == []


async def test_a_second_hello_from_the_same_node_replaces_the_first_link(make: Make) -> None:
    (y,) = await make("y")
    old_reader, old_writer = await _raw(y)
    old_writer.write(_hello(y))
    _new_reader, new_writer = await _raw(y)
    await old_writer.drain()
    await y.until(lambda: y.links.inbound("raw"), "the first hello")
    first = y.links._in["raw"]
    new_writer.write(_hello(y) + frame(b"D", b"new"))
    await y.until(lambda: y.frames == [b"new"], "data on the new link")
    assert y.links._in["raw"] is not first
    await _closed_by_peer(old_reader)
    assert y.lost == []  # the replaced link is not a lost one
    old_writer.close()
    new_writer.close()


# --- sync ----------------------------------------------------------------------------------
async def test_sync_answers_after_everything_sent_before_it(make: Make) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)
    sent = [os.urandom(64 * 1024) for _ in range(64)]  # 4 MiB: many frames on the wire
    for envelope in sent:
        x.links.send("y", envelope)
    expected = b"!" + b"".join(sent)
    seen_at_done: list[int] = []
    y.links.sync("x", lambda: (seen_at_done.append(len(y.received)), y.note()), WAIT)
    assert len(y.received) < len(expected)  # nothing of it had arrived yet
    await y.until(lambda: seen_at_done != [], "the sync answer")
    assert seen_at_done == [len(expected)]
    assert y.received == expected
    assert y.links._syncs == {}


async def test_sync_answers_after_envelopes_sent_in_the_loop_pass_that_reads_it(
    make: Make,
) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)
    out = x.links._out["y"]
    assert out.transport is not None
    out.transport.pause_reading()
    seen_at_done: list[bytes] = []
    y.links.sync("x", lambda: (seen_at_done.append(y.received), y.note()), WAIT)
    sock = out.transport.get_extra_info("socket")
    for _ in range(100):  # y writes the request at the end of a loop pass
        if not y.links._in["x"]._out:
            break
        await asyncio.sleep(0)
    assert not y.links._in["x"]._out
    readable, _, _ = select.select([sock.fileno()], [], [], WAIT)  # the request is at x
    assert readable
    # the next loop pass runs this send and then reads the request, before any flush
    asyncio.get_running_loop().call_soon(x.links.send, "y", b"queued")
    out.transport.resume_reading()
    await y.until(lambda: seen_at_done != [], "the sync answer")
    assert seen_at_done == [b"!queued"]


async def test_sync_without_a_link_is_done_at_once_and_a_lost_link_ends_a_sync(
    make: Make,
) -> None:
    x, y = await make("x", "y")
    done: list[str] = []
    y.links.sync("x", lambda: done.append("no link"), WAIT)
    assert done == ["no link"]
    await _connected(x, y)
    y.links.sync("x", lambda: (done.append("lost"), y.note()), WAIT)
    x.links._out["y"].transport.abort()  # before x read the request: no answer ever
    await y.until(lambda: len(done) == 2, "the sync ended by the lost link")
    assert done == ["no link", "lost"]
    assert ("x" in [node for node, _ in y.lost]) and y.links._syncs == {}


# --- lost links ---------------------------------------------------------------------------
async def test_forgetting_a_node_reports_the_link_lost_on_the_other_side(make: Make) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)
    await _connected(y, x)
    y.links.forget("x")  # y closes both links with x, silently
    await x.until(lambda: len(x.lost) == 2, "both links with y reported lost")
    assert sorted(node for node, _ in x.lost) == ["y", "y"]
    assert y.lost == []
    assert not y.links.direct("x") and x.links.direct("y")


async def test_an_aborted_link_is_lost_on_both_sides(make: Make) -> None:
    x, y, z = await make("x", "y", "z")
    await _connected(x, y)
    await _connected(x, z)
    x.links._out["y"].transport.abort()  # type: ignore[union-attr]
    await y.until(lambda: y.lost != [], "y saw the link lost")
    await x.until(lambda: x.lost != [], "x saw the link lost")
    assert [node for node, _ in y.lost] == ["x"]
    assert [node for node, _ in x.lost] == ["y"]
    assert x.links.failures == 1 and y.links.failures == 1
    x.links.send("z", b"z still")  # the other link is untouched
    await z.until(lambda: z.received == b"!z still", "data to z")
    assert z.lost == [] and x.links.links_up == 1


async def test_a_first_dial_that_fails_puts_the_node_on_redis_until_it_advertises_anew(
    make: Make,
) -> None:
    x, y = await make("x", "y")
    bad = replace(y.record, port=free_port())  # nothing listens there
    x.links.known("y", bad)
    assert x.links.send("y", b"first") and x.links.send("y", b"second")  # queued on the dial
    await x.until(lambda: "y" in x.links.via_redis, "the failed dial")
    assert "cannot connect" in x.links.via_redis["y"] and not x.links.direct("y")
    # nothing was written: the queued rows are handed back for Redis, no call fails
    assert x.rerouted == [("y", b"firstsecond")] and x.lost == []
    assert not x.links.send("y", b"again")  # through Redis now: the caller publishes it
    x.links.known("y", bad)  # reloaded unchanged (a reconnect): still through Redis
    assert not x.links.direct("y") and x.links._out == {}
    x.links.known("y", y.record)  # another record: direct again
    assert x.links.direct("y") and x.links.via_redis == {}
    x.links.send("y", b"direct")
    await y.until(lambda: y.received == b"direct", "the envelope on the new link")


async def test_a_redial_that_fails_is_lost_and_sends_fail_at_once_until_the_retry(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "RETRY_AFTER", 0.3)
    x, y = await make("x", "y")
    await _connected(x, y)
    await y.links.close()  # y goes away: its listener and the link close
    await x.until(lambda: x.lost != [], "the link broke")
    x.links.send("y", b"lost")  # redials: refused
    await x.until(lambda: len(x.lost) == 2, "the failed redial")
    assert x.lost[1][0] == "y" and "cannot connect" in x.lost[1][1]
    assert x.links.direct("y") and x.links.via_redis == {}  # it connected once: no fallback
    failed_at = time.monotonic()
    dials = set(x.links._tasks)
    assert x.links.send("y", b"again")  # within RETRY_AFTER: no dial, lost at once
    assert "y" not in x.links._out and x.links._tasks == dials
    await x.until(lambda: len(x.lost) == 3, "the second send reported lost")
    assert x.lost[2] == ("y", "the direct link failed a moment ago")
    assert time.monotonic() - failed_at < 0.3
    await asyncio.sleep(0.3 - (time.monotonic() - failed_at) + 0.01)  # the retry time passes
    x.links.send("y", b"third")
    assert "y" in x.links._out  # dialing again
    await x.until(lambda: len(x.lost) == 4, "the redial failed")
    assert "cannot connect" in x.lost[3][1]


async def _broken_one_way(make: Make) -> tuple[Node, Node]:
    """x and y linked both ways, then y takes no links any more (its listener and x's link
    to it close) while its own link to x stays up."""
    x, y = await make("x", "y")
    await _connected(x, y)
    await _connected(y, x)
    assert y.links._server is not None
    y.links._server.close()
    y.links._in["x"].drop()
    await x.until(lambda: x.lost != [], "x's link to y broke")
    return x, y


async def test_a_redial_that_fails_while_the_node_answers_on_its_own_link_takes_redis(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _y = await _broken_one_way(make)
    ping = x.links.ping

    def ping_then_send(node: str, answer: Callable[[bool], None], timeout: float) -> None:
        ping(node, answer, timeout)
        assert x.links.send("y", b"-during")  # the dial failed, no answer yet: it waits

    monkeypatch.setattr(x.links, "ping", ping_then_send)
    assert x.links.send("y", b"first") and x.links.send("y", b"-second")  # redial: refused
    await x.until(lambda: "y" in x.links.via_redis, "the fallback")
    assert "it answers on its own link to this node" in x.links.via_redis["y"]
    # nothing was written: every row that waited takes Redis, no call fails
    assert x.rerouted == [("y", b"first-second-during")] and len(x.lost) == 1  # the break
    assert not x.links.send("y", b"then") and not x.links.direct("y")  # through Redis now
    assert "y" in x.links._probe_at  # and dialed again later, as any node on Redis


async def test_a_redial_that_fails_while_the_node_does_not_answer_is_lost(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "PING_TIMEOUT", 0.2)
    x, y = await _broken_one_way(make)
    monkeypatch.setattr(y.links._out["x"], "frame", lambda kind, body: None)  # y hangs
    x.links.send("y", b"lost")
    await x.until(lambda: len(x.lost) == 2, "the failed redial reported")
    assert "cannot connect" in x.lost[1][1]
    assert x.links.via_redis == {} and x.rerouted == [] and x.links.direct("y")
    assert x.links.send("y", b"again")  # the retry hold: lost at once, no dial
    await x.until(lambda: len(x.lost) == 3, "the send in the retry hold reported")
    assert x.lost[2] == ("y", "the direct link failed a moment ago")


async def test_redials_that_fail_longer_than_the_grace_period_take_redis(make: Make) -> None:
    x, _y = await _link_went_down(make)  # no link from y either: nobody to ask
    x.links.send("y", b"lost")
    await x.until(lambda: len(x.lost) == 2, "the failed redial")
    assert x.links.direct("y")  # y may be going away: the cluster drops it within the grace
    x.links.failing["y"] -= x.links.grace  # the grace period passes, y still known
    del x.links._retry_at["y"]  # and so does the retry hold
    x.links.send("y", b"kept")
    await x.until(lambda: "y" in x.links.via_redis, "the fallback")
    assert "still in the cluster" in x.links.via_redis["y"]
    assert x.rerouted == [("y", b"kept")] and len(x.lost) == 2


async def _link_went_down(make: Make) -> tuple[Node, Node]:
    x, y = await make("x", "y")
    await _connected(x, y)
    await y.links.close()
    await x.until(lambda: x.lost != [], "the link broke")
    return x, y


async def test_a_redial_that_fails_after_the_node_was_heard_through_redis_takes_redis(
    make: Make,
) -> None:
    x, _y = await _link_went_down(make)
    assert x.links.send("y", b"kept")  # a redial starts
    x.links.heard("y")  # meanwhile an envelope from y came through Redis: y lives
    await x.until(lambda: "y" in x.links.via_redis, "the fallback")
    assert "its envelopes come through Redis" in x.links.via_redis["y"]
    assert x.rerouted == [("y", b"kept")] and len(x.lost) == 1


async def test_a_node_heard_through_redis_after_its_link_went_down_is_not_redialed(
    make: Make,
) -> None:
    x, _y = await _link_went_down(make)
    x.links.heard("y")  # y reaches x through Redis now
    dials = set(x.links._tasks)
    assert not x.links.send("y", b"through Redis")  # the caller publishes it: no wait
    assert x.links._tasks == dials and "y" not in x.links._out
    assert "its link went down" in x.links.via_redis["y"] and len(x.lost) == 1
    assert "y" in x.links._probe_at  # the link is tried again later


async def test_a_dial_whose_hello_is_never_accepted_ends_after_the_hello_timeout(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address that takes the connection and swallows everything (a stalled proxy, a
    node too old to answer ``A``): the dialer gives up and reaches the node through Redis."""
    monkeypatch.setattr(peer_wire, "HELLO_TIMEOUT", 0.2)
    (x,) = await make("x")
    swallowed: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            swallowed.append(data)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        x.links.known("z", PeerRecord("127.0.0.1", port, MACHINE, "t" * 32))
        x.links.send("z", b"swallowed")
        await x.until(lambda: "z" in x.links.via_redis, "the dial given up")
        assert "not accepted in" in x.links.via_redis["z"]
        assert swallowed  # it was written: its calls fail (they may have been read)
        assert x.lost[0][0] == "z" and x.rerouted == []
    finally:
        server.close()


async def _quiet(make: Make) -> tuple[Node, Node]:
    """x and y linked both ways; y asks after 0.1 s of silence on its link from x, and x
    answers no ``S`` any more (it hangs, or the way from it swallows everything)."""
    x, y = await make("x", "y")
    y.links.ping_after, y.links.ping_timeout = 0.1, 0.5
    await _connected(x, y)
    await _connected(y, x)
    x_out = x.links._out["y"]
    frame = x_out.frame
    x_out.frame = lambda kind, body: None if kind == peer_wire.SYNC else frame(kind, body)  # type: ignore[method-assign]
    return x, y


async def test_a_link_silent_though_asked_ends_with_the_link_the_other_way(make: Make) -> None:
    _x, y = await _quiet(make)
    await y.until(lambda: y.lost != [], "the silent link ended")
    assert y.lost == [("x", "nothing came on it for 0.5 s, asked or not")]  # once
    assert "x" not in y.links._in and "x" not in y.links._out  # both ways
    assert "x" in y.links.failing  # and a redial that fails may soon take Redis


async def test_a_link_that_carries_data_is_not_ended_for_unanswered_pings(make: Make) -> None:
    x, y = await _quiet(make)
    for n in range(12):  # data every 0.05 s for 0.6 s: never 0.5 s of silence
        row = b"%d," % n
        x.links.send("y", row)
        await y.until(lambda row=row: y.received.endswith(row), "the row")  # type: ignore[misc]
        await asyncio.sleep(0.05)
    assert y.lost == [] and y.links.inbound("x")


# --- back from Redis to the link --------------------------------------------------------------
async def _fallen_back(make: Make) -> tuple[Node, Node]:
    """x reaches y through Redis: y was not listening when x first dialed (y's port)."""
    x, y = await make("x", "y")
    await y.links.close()
    port = free_port()
    record = replace(y.record, port=port)
    y.links = PeerLinks("y", y._deliver, y._lost)
    y.links.switch = y._switch
    x.links.known("y", record)
    x.links.send("y", b"early")
    await x.until(lambda: "y" in x.links.via_redis, "the failed dial")
    assert x.rerouted == [("y", b"early")]
    y.links.token = record.token
    await y.links.start(f"127.0.0.1:{port}")  # y now answers at the advertised address
    return x, y


async def _switching(make: Make, marker_first: bool = False) -> tuple[Node, Node]:
    """x reaches y through Redis, dials it again and switches: its marker is published (not
    delivered to y, unless ``marker_first``: then before the link's ``W``)."""
    x, y = await _fallen_back(make)
    if marker_first:
        x.marker_first = y.links
    _due(x, "y")
    x.links.send("y", b"redis")
    await x.until(lambda: x.markers != [], "the marker")
    return x, y


def _due(x: Node, node: str) -> None:
    """Make the retry of ``node``'s link due now (instead of waiting ``peer_retry``)."""
    x.links._probe_at[node] = (0.0, x.links._probe_at[node][1])


async def _link_synced(y: Node, node: str) -> None:
    """Everything ``node`` wrote on its link before now has reached y (held or not)."""
    done = asyncio.Event()
    y.links.sync(node, done.set, WAIT)
    async with asyncio.timeout(WAIT):
        await done.wait()


async def test_a_node_reached_through_redis_gets_its_link_back_behind_a_marker(
    make: Make,
) -> None:
    x, y = await _fallen_back(make)
    assert not x.links.send("y", b"not yet")  # not due: Redis, and no dial
    assert x.links._probes == {}
    _due(x, "y")
    assert not x.links.send("y", b"still redis")  # due: this one takes Redis, a dial starts
    assert "y" in x.links._probes and not x.links.direct("y")
    await x.until(lambda: x.markers != [], "the accepted dial published its marker")
    ((node, key),) = x.markers
    assert node == "y" and x.links.direct("y") and x.links.via_redis == {}
    assert x.links.send("y", b"after the switch")  # on the link now
    await _link_synced(y, "x")
    incoming = y.links._in["x"]
    assert incoming.holding == key and _rows(b"".join(incoming.held)) == b"after the switch"
    assert y.frames == []  # held until the marker comes through Redis
    y.links.switched("x", key)
    assert y.received == b"after the switch" and incoming.holding is None
    x.links.send("y", b"then")
    await y.until(lambda: y.received.endswith(b"then"), "later data delivered at once")
    assert x.lost == [] and y.lost == []


async def test_a_marker_that_comes_before_the_wait_frame_holds_nothing(make: Make) -> None:
    x, y = await _switching(make, marker_first=True)
    x.links.send("y", b"direct")
    await y.until(lambda: y.received == b"direct", "the data, not held")
    assert y.links._in["x"].holding is None and y.links._markers == {}


async def test_a_wait_whose_marker_never_comes_ends_the_link(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_wire, "SWITCH_TIMEOUT", 0.2)
    x, y = await _switching(make)  # the marker is never delivered
    x.links.send("y", b"held, then lost")
    await y.until(lambda: y.lost != [], "y ended the link")
    assert "switch marker" in y.lost[0][1] and y.frames == []
    await x.until(lambda: x.lost != [], "x saw the link end")
    assert x.links.direct("y")  # it was accepted: the next envelope redials, no fallback


async def test_data_held_for_a_marker_is_bounded(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_wire, "MAX_BUFFERED", 1000)
    x, y = await _switching(make)  # the marker is never delivered
    x.links.send("y", b"a" * 600)
    await _link_synced(y, "x")
    assert y.links._in["x"].held_size > 0 and y.lost == []  # held, within the bound
    x.links.send("y", b"b" * 600)
    await y.until(lambda: y.lost != [], "y ended the link")
    assert "held for a switch marker" in y.lost[0][1] and y.frames == []


async def test_a_retry_that_fails_backs_off_and_fails_no_call(make: Make) -> None:
    (x,) = await make("x")
    x.links.known("z", PeerRecord("127.0.0.1", free_port(), MACHINE, "t" * 32))
    x.links.send("z", b"first")
    await x.until(lambda: "z" in x.links.via_redis, "the failed dial")
    interval = x.links._probe_at["z"][1]
    _due(x, "z")
    x.links.send("z", b"again")
    probe = x.links._probes["z"]
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*x.links._tasks)  # the background dial, refused
    assert "z" not in x.links._probes and probe.closed and x.links._probe_at["z"][1] == 2 * interval
    assert x.links._probe_at["z"][0] > time.monotonic() + interval  # not before 2x
    assert x.lost == [] and x.markers == [] and "z" in x.links.via_redis


# --- TLS ------------------------------------------------------------------------------------
def _tls(cert: NodeCert, ca: Path | None = None) -> PeerTLS:
    return PeerTLS(str(cert.cert), str(cert.key), str(ca or cert.ca))


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


async def test_links_with_tls_carry_envelopes_and_are_encrypted(
    make: Make, authority: Authority
) -> None:
    tls = {name: _tls(authority.issue(name)) for name in "xy"}
    x, y = await make("x", "y", tls=tls)
    assert x.record.tls and y.record.tls
    x.links.send("y", b"secret-1" * 10)
    x.links.send("y", b"secret-2")
    await y.until(lambda: y.received.endswith(b"secret-2"), "the envelopes")
    assert y.received == b"secret-1" * 10 + b"secret-2" and y.senders == ["x"]
    conn = x.links._out["y"]
    assert conn.transport is not None and conn.transport.get_extra_info("ssl_object") is not None
    # a plain-TCP hello is a bad TLS handshake: nothing reaches the node, nothing is lost
    reader, writer = await _raw(y)
    writer.write(_hello(y) + frame(b"D", b"plain"))
    await _closed_by_peer(reader)
    writer.close()
    assert not y.links.inbound("raw") and y.lost == []


@pytest.mark.parametrize(
    "fault",
    ["another-ca", "wrong-host", "no-client-cert"],
)
async def test_a_tls_peer_that_does_not_verify_gets_no_link(
    make: Make, authority: Authority, tmp_path: Path, fault: str
) -> None:
    """The dialer checks the acceptor's certificate (CA and host name) and the acceptor the
    dialer's (CA): either failing ends the dial, and the node is reached through Redis."""
    tls = {"y": _tls(authority.issue("y"))}
    if fault == "another-ca":  # x trusts only its own CA, which did not sign y's
        tls["x"] = _tls(Authority(tmp_path, "other").issue("x"))
    elif fault == "wrong-host":
        tls["x"] = _tls(authority.issue("x"))
        tls["y"] = _tls(authority.issue("y", hosts=("node-y.internal",)))
    else:  # x trusts y, but presents a certificate y's CA did not sign
        tls["x"] = _tls(Authority(tmp_path, "other").issue("x"), authority.ca)
        tls["y"] = _tls(authority.issue("y"))
    x, y = await make("x", "y", tls=tls)
    x.links.send("y", b"unverified")
    await x.until(lambda: "y" in x.links.via_redis, "the failed dial")
    if fault == "no-client-cert":
        # TLS 1.3: the dialer's handshake is over before the acceptor checks its
        # certificate; the link closes before the hello is accepted, what it wrote is lost
        assert "closed by the other side" in x.links.via_redis["y"]
        assert x.lost[0][0] == "y" and x.rerouted == []
    else:  # the handshake failed on the dialer: nothing written, it all takes Redis
        assert "certificate verify failed" in x.links.via_redis["y"]
        assert x.rerouted == [("y", b"unverified")] and x.lost == []
    assert not x.links.send("y", b"through Redis")
    assert y.frames == [] and not y.links.inbound("x")


def _serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def _peer_serial(transport: asyncio.BaseTransport | None) -> int:
    assert transport is not None
    return int(transport.get_extra_info("peercert")["serialNumber"], 16)


async def test_reloaded_tls_files_serve_new_links_and_open_links_keep_going(
    make: Make, authority: Authority
) -> None:
    certs = {name: authority.issue(name) for name in "xy"}
    x, y = await make("x", "y", tls={name: _tls(cert) for name, cert in certs.items()})
    await _connected(x, y)
    old = y.links._in["x"]
    assert _peer_serial(old.transport) == _serial(certs["x"].cert)
    renewed = {name: authority.issue(name) for name in "xy"}  # over the same files
    assert x.links.reload_tls() and y.links.reload_tls()
    x.links.send("y", b"on the open link")
    await y.until(lambda: y.received.endswith(b"on the open link"), "the open link's data")
    assert y.links._in["x"] is old  # not redialed
    # y's listener shows its renewed certificate (to a client with one the CA signed)
    context = ssl.create_default_context(cafile=str(authority.ca))
    context.load_cert_chain(str(renewed["x"].cert), str(renewed["x"].key))
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", y.record.port, ssl=context, server_hostname="127.0.0.1"
    )
    assert _peer_serial(writer.transport) == _serial(renewed["y"].cert)
    writer.close()
    # and a new link from x presents x's renewed certificate
    x.links.forget("y")
    x.links.known("y", y.record)
    x.links.send("y", b"on a new link")
    await y.until(lambda: y.received.endswith(b"on a new link"), "the new link's data")
    assert _peer_serial(y.links._in["x"].transport) == _serial(renewed["x"].cert)


async def test_tls_files_that_do_not_reload_leave_the_old_ones_working(
    make: Make, authority: Authority
) -> None:
    certs = {name: authority.issue(name) for name in "xy"}
    x, y = await make("x", "y", tls={name: _tls(cert) for name, cert in certs.items()})
    certs["y"].key.write_text("not a key")
    with pytest.raises(ssl.SSLError):
        y.links.reload_tls()
    await _connected(x, y)  # a new link: y still accepts with what it had
    assert _peer_serial(y.links._in["x"].transport) == _serial(certs["x"].cert)


async def test_tls_on_one_side_only_reaches_the_node_through_redis_without_dialing(
    make: Make, authority: Authority
) -> None:
    x, y = await make("x", "y", tls={"y": _tls(authority.issue("y"))})
    assert y.record.tls and not x.record.tls
    assert not x.links.direct("y") and "TLS on one side only" in x.links.via_redis["y"]
    assert not y.links.direct("x") and "TLS on one side only" in y.links.via_redis["x"]
    assert not x.links.send("y", b"through Redis") and x.links._out == {}
    assert x.lost == [] and y.lost == []
    assert "y" not in x.links._probe_at  # only another record can change that: no retry


def test_peer_tls_refuses_files_that_do_not_load(authority: Authority, tmp_path: Path) -> None:
    good = authority.issue("x")
    other = authority.issue("z")
    with pytest.raises(ssl.SSLError):
        PeerTLS(str(good.cert), str(other.key), str(good.ca)).contexts()  # key of another cert
    (tmp_path / "junk.pem").write_text("not PEM")
    with pytest.raises(ssl.SSLError):
        PeerTLS(str(good.cert), str(good.key), str(tmp_path / "junk.pem")).contexts()


# --- records --------------------------------------------------------------------------------
async def test_only_reachable_records_make_a_node_direct(make: Make) -> None:
    (x,) = await make("x")
    here = PeerRecord("127.0.0.1", 7070, MACHINE, "t")
    x.links.known("a", here)
    x.links.known("b", replace(here, machine="another-machine"))
    x.links.known("c", replace(here, host="localhost", machine="another-machine"))
    x.links.known("d", replace(here, host="::1", machine="another-machine"))
    x.links.known("e", replace(here, host="10.1.2.3", machine="another-machine"))
    x.links.known("f", replace(here, host="node-f.internal", machine="another-machine"))
    x.links.known("g", None)
    direct = {node: x.links.direct(node) for node in "abcdefg"}
    assert direct == dict(a=True, b=False, c=False, d=False, e=True, f=True, g=False)
    x.links.send("b", b"nowhere")  # not direct: the caller sends through Redis instead
    assert x.links._out == {} and x.lost == []


async def test_a_changed_record_drops_the_outgoing_link(make: Make) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)
    x.links.known("y", y.record)  # the same record again: nothing changes
    assert "y" in x.links._out and x.lost == []
    x.links.known("y", replace(y.record, token="restarted"))
    assert "y" not in x.links._out
    assert x.lost == [("y", "the node restarted")]
    await y.until(lambda: y.lost != [], "y saw the link end")
    assert y.lost[0][0] == "x"
    x.links.known("y", y.record)  # back to the real one: the next send dials anew
    x.links.send("y", b"after")
    await y.until(lambda: y.received.endswith(b"after"), "data on the new link")


# --- the control barrier with real links -----------------------------------------------------
async def test_a_leave_waits_for_the_link_and_later_control_keeps_its_order(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = await make("x", "y")
    answered: list[bytes] = []
    frame_of, flush_of = peer_wire.Outgoing.frame, peer_wire.Outgoing.flush

    def answering(self: peer_wire.Outgoing, kind: int, body: bytes) -> None:
        frame_of(self, kind, body)
        answered.append(bytes([kind]))

    def flushing(self: peer_wire.Outgoing) -> None:
        flush_of(self)
        x.note()

    monkeypatch.setattr(peer_wire.Outgoing, "frame", answering)
    monkeypatch.setattr(peer_wire.Outgoing, "flush", flushing)
    await _connected(x, y)
    applied: list[ControlMessage] = []

    def apply(msg: ControlMessage) -> None:
        applied.append(msg)
        y.log.append(msg)
        y.note()

    barrier = ControlBarrier(y.links, apply, WAIT)
    incoming = y.links._in["x"]
    assert incoming.transport is not None
    incoming.transport.pause_reading()
    result = b"the result sent before the leave"
    x.links.send("y", result)
    left = SessionLeft("x", "realm1", 42)
    joined = SessionJoined("x", "realm1", {"session": 43})
    barrier.control(left)
    barrier.control(joined)
    other = SessionLeft("z", "realm1", 7)  # a node without a link: applied at once
    barrier.control(other)
    assert applied == [other] and barrier.holding == 2
    # x got the sync request and wrote the data and its answer: on the wire, unread
    out = x.links._out["y"]
    await x.until(lambda: answered == [b"A", b"S"] and not out._out, "x answered the sync")
    assert out.transport is not None and out.transport.get_write_buffer_size() == 0
    assert applied == [other] and y.frames == [b"!"]
    incoming.transport.resume_reading()
    await y.until(lambda: len(applied) == 3, "the held envelopes applied")
    assert y.log[-3:] == [result, left, joined]
    assert barrier.holding == 0


async def test_a_gone_syncs_too_and_a_broken_link_releases_the_barrier(make: Make) -> None:
    x, y = await make("x", "y")
    await _connected(x, y)
    applied: list[ControlMessage] = []
    barrier = ControlBarrier(y.links, lambda msg: (applied.append(msg), y.note()), WAIT)
    gone = NodeGone("x")
    barrier.control(gone)
    assert applied == [] and barrier.holding == 1
    x.links._out["y"].transport.abort()  # before x read the sync request: no answer ever
    await y.until(lambda: applied == [gone], "the gone applied after the link broke")
    assert barrier.holding == 0


async def test_a_node_forgotten_while_its_link_is_dialing_gets_no_link(make: Make) -> None:
    x, y = await make("x", "y")
    x.links.send("y", b"queued")  # the dial starts; the connection is not made yet
    dialing = x.links._out["y"]
    assert dialing.transport is None
    x.links.forget("y")  # the node is gone
    async with asyncio.timeout(WAIT):
        while x.links._tasks:  # the dial finishes (connects, then is dropped)
            await asyncio.wait(set(x.links._tasks))
    assert dialing.transport is not None and dialing.transport.is_closing()
    assert not dialing.ready and x.links.links_up == 0 and x.lost == []
    assert y.frames == []
